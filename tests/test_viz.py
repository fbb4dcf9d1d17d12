"""fer_jax.viz: labelled image grids a reader can follow."""

import numpy as np

from fer_jax import viz


def test_grid_labels_upscale_and_place_every_tile():
  rng = np.random.default_rng(0)
  rows = [rng.integers(0, 256, (3, 16, 16, 3), np.uint8) for _ in range(2)]
  bare = viz.grid_image(rows, min_tile=16)
  # 2 rows x 3 tiles of 16 px with 2 px padding, nothing else.
  assert bare.shape == (2 * 18 + 2, 3 * 18 + 2, 3)
  np.testing.assert_array_equal(bare[2:18, 2:18], rows[0][0])
  np.testing.assert_array_equal(bare[20:36, 38:54], rows[1][2])

  labelled = viz.grid_image(
      rows, row_labels=["input", "G(input)"],
      col_labels=viz.captions(["neutral", "happy", "sad"], [0, 1, 2],
                              [0, 2, 2]),
      title="a title", legend=viz.HEAT_LEGEND, min_tile=48)
  h, w = labelled.shape[:2]
  assert h > 2 * 48 + 40 and w > 3 * 48 + 30  # title, header, legend, labels
  # Tiles are upscaled 3x (nearest): each source pixel is a 3x3 block, and
  # the last tile's bottom-right pixel sits at the grid's bottom-right.
  ys, xs = np.nonzero((labelled != 255).any(-1))
  assert ys.size and xs.size
  # Text is drawn (dark pixels) left of the first tile and above it.
  tile = np.repeat(np.repeat(rows[0][0], 3, 0), 3, 1)
  hits = [(y, x) for y in range(h - 47) for x in range(w - 47)
          if labelled[y, x, 0] == tile[0, 0, 0]
          and np.array_equal(labelled[y:y + 48, x:x + 48], tile)]
  assert len(hits) == 1
  y0, x0 = hits[0]
  assert (labelled[:y0, x0:x0 + 48] < 128).any()   # column caption above
  assert (labelled[y0:y0 + 48, :x0] < 128).any()   # row label to the left


def test_captions_name_true_and_predicted_classes():
  assert viz.captions(["a", "b"], [1, 0], [1, 1]) == ["true b\npred b",
                                                      "true a\npred b"]
  assert viz.captions(["a", "b"], np.array([0])) == ["true a"]


def test_label_boxes_outlines_each_box_and_writes_its_text_above_it():
  image = np.full((200, 300, 3), 255, np.uint8)
  out = viz.label_boxes(image, [(50, 80, 60, 40), (200, 0, 50, 50)],
                        ["happiness 91%", "anger 40%"])
  assert out.shape == image.shape and out.dtype == np.uint8
  np.testing.assert_array_equal(image, 255)  # the input is not drawn on
  gold = np.array([255, 215, 0])
  # The outline: every pixel of the box's edges, none inside it.
  np.testing.assert_array_equal(out[80, 50:110], np.tile(gold, (60, 1)))
  np.testing.assert_array_equal(out[80:120, 109], np.tile(gold, (40, 1)))
  np.testing.assert_array_equal(out[90:110, 60:100], 255)
  # Text on a black band just above the first box; below the second,
  # which touches the top edge.
  above = out[60:79, 50:110]
  assert (above == 0).all(-1).mean() > 0.5 and (above == gold).all(-1).any()
  below = out[52:70, 200:250]
  assert (below == 0).all(-1).mean() > 0.5 and (below == gold).all(-1).any()


def test_every_grid_the_package_saves_is_labelled():
  """Issue 22: every image grid a run or a prediction writes has row and
  column labels, a title and a legend (a reader needs no docs). Checked on
  the source: each ``viz.save_grid`` call passes all four."""
  import ast  # pylint: disable=import-outside-toplevel
  import os  # pylint: disable=import-outside-toplevel
  root = os.path.dirname(os.path.abspath(viz.__file__))
  needed = {"row_labels", "col_labels", "title", "legend"}
  calls, missing = 0, []
  for folder, _, names in os.walk(root):
    for name in names:
      if not name.endswith(".py") or name == "viz.py":
        continue
      path = os.path.join(folder, name)
      tree = ast.parse(open(path, encoding="utf-8").read())
      for node in ast.walk(tree):
        if (isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "save_grid"):
          calls += 1
          lacks = needed - {k.arg for k in node.keywords}
          if lacks:
            missing.append(f"{os.path.relpath(path, root)}:{node.lineno} "
                           f"lacks {sorted(lacks)}")
  assert calls >= 7  # ifgan 3, groupgan, sna, cgan_wsc, predict
  assert not missing, "\n".join(missing)
