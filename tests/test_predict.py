"""fer_jax.predict: photos in, every face's class out, through the Python API
and the command line, from a trained run and from its export."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from fer_jax import evaluate, faces, predict

pytest.importorskip("cv2")
skdata = pytest.importorskip("skimage.data")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
  """A folder: the astronaut photo (JPEG), a photo made with two copies of
  her head (PNG), and a grey image with no face."""
  d = tmp_path_factory.mktemp("photos")
  a = skdata.astronaut()
  Image.fromarray(a).save(d / "astronaut.jpg", quality=95)
  canvas = np.full((400, 900, 3), 128, np.uint8)
  head = a[20:220, 130:330]
  canvas[100:300, 550:750] = head
  canvas[120:270, 80:230] = np.asarray(
      Image.fromarray(head).resize((150, 150), Image.Resampling.BILINEAR))
  Image.fromarray(canvas).save(d / "two.png")
  Image.new("RGB", (120, 90), (90, 90, 90)).save(d / "wall.png")
  return d


def test_every_face_is_classified_from_its_aligned_crop(baseline_run, photos,
                                                        tmp_path):
  model = evaluate.load(baseline_run)
  spec = predict.alignment_of(model)
  assert spec == faces.training_alignment(model.config.data)
  paths = faces.image_files([str(photos)])
  out = tmp_path / "out"
  results = predict.predict_photos(model, paths, out_dir=str(out))
  assert [os.path.basename(r.file) for r in results] == [
      "astronaut.jpg", "two.png", "wall.png"]
  assert [len(r.faces) for r in results] == [1, 2, 0]
  classes = list(model.classes)
  for r in results:
    found = faces.find_faces(faces.read_image(r.file), spec)
    assert [f.box for f in found] == [p.box for p in r.faces]
    if not found:
      continue
    # The class and probabilities are the model's on the aligned faces.
    crops = np.stack([f.crop for f in found])
    np.testing.assert_array_equal(r.crops, crops)
    probs = model.probabilities(crops)
    for p, q in zip(r.faces, probs):
      assert p.label == classes[int(q.argmax())]
      assert p.probability == pytest.approx(float(q.max()), rel=1e-6)
      np.testing.assert_allclose(list(p.probabilities.values()), q,
                                 rtol=1e-6)
      assert list(p.probabilities) == classes
  # The pictures: the photo with its boxes drawn, at the photo's size; the
  # aligned faces; predictions.json with the same rows.
  photo = np.asarray(Image.open(out / "astronaut.png"))
  original = faces.read_image(results[0].file)
  assert photo.shape == original.shape
  x, y, w, _ = results[0].faces[0].box
  assert not np.array_equal(photo[y, x:x + w], original[y, x:x + w])
  assert (out / "astronaut_faces.png").exists()
  assert (out / "two_faces.png").exists()
  assert (out / "wall.png").exists() and not (out / "wall_faces.png").exists()
  saved = json.loads((out / "predictions.json").read_text())
  assert saved["classes"] == classes
  assert [[f["label"] for f in p["faces"]] for p in saved["photos"]] == [
      [f.label for f in r.faces] for r in results]
  assert saved["photos"][1]["faces"][0]["box"] == list(
      results[1].faces[0].box)
  table = predict.format_table(results).splitlines()
  assert table[0].split()[:3] == ["file", "face", "box"]
  assert len(table) == 2 + 1 + 2 + 1
  assert "no face found" in table[-1]


def test_arrays_and_a_given_alignment(baseline_run):
  model = evaluate.load(baseline_run)
  spec = faces.align.AlignSpec(image_size=48, eye_distance=0.3,
                               eye_height=0.45)
  (r,) = predict.predict_photos(model, [("mine", skdata.astronaut())],
                                spec=spec)
  assert r.file == "mine" and r.crops.shape == (1, 48, 48, 3)
  (face,) = faces.find_faces(skdata.astronaut(), spec)
  np.testing.assert_array_equal(r.crops[0], face.crop)


def _cli(*args, cwd=ROOT):
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=600,
                        check=False)


def test_the_command_prints_the_table_from_a_run_and_from_its_export(
    baseline_run, photos, tmp_path):
  model = evaluate.load(baseline_run)
  expected = predict.predict_photos(model, faces.image_files([str(photos)]))
  out = tmp_path / "out"
  res = _cli("fer_jax.predict", f"--workdir={baseline_run}", f"--out_dir={out}",
             str(photos))
  assert res.returncode == 0, res.stderr[-3000:]
  lines = res.stdout.splitlines()
  rows = [ln.split() for ln in lines[2:] if ln.startswith(str(photos))]
  assert [(os.path.basename(r[0]), r[1], r[-2]) for r in rows if r[1] != "-"
          ] == [(os.path.basename(p.file), str(i + 1), f.label)
                for p in expected for i, f in enumerate(p.faces)]
  assert "fer_jax: done: 3 faces in 3 images" in res.stdout
  assert (out / "predictions.json").exists()
  assert "Traceback" not in res.stderr

  # The same photos through the exported model: the same classes.
  export = tmp_path / "export"
  res = _cli("fer_jax.export", f"--workdir={baseline_run}",
             f"--out_dir={export}", "--platforms=cpu")
  assert res.returncode == 0, res.stderr[-3000:]
  res = _cli("fer_jax.predict", f"--workdir={export}",
             f"--out_dir={tmp_path / 'out2'}", str(photos))
  assert res.returncode == 0, res.stderr[-3000:]
  again = json.loads((tmp_path / "out2" / "predictions.json").read_text())
  first = json.loads((out / "predictions.json").read_text())
  assert ([[f["label"] for f in p["faces"]] for p in again["photos"]]
          == [[f["label"] for f in p["faces"]] for p in first["photos"]])
  for p, q in zip(again["photos"], first["photos"]):
    for f, g in zip(p["faces"], q["faces"]):
      assert f["probability"] == pytest.approx(g["probability"], abs=1e-5)


def test_the_command_names_what_is_wrong(baseline_run, tmp_path):
  res = _cli("fer_jax.predict", f"--workdir={baseline_run}",
             str(tmp_path / "nothing.jpg"))
  assert res.returncode == 2
  assert res.stderr.strip().splitlines()[-1] == (
      f"fer_jax: error: {tmp_path / 'nothing.jpg'}: no such file or folder")
  (tmp_path / "a.png").write_bytes(b"")
  res = _cli("fer_jax.predict", f"--workdir={tmp_path / 'norun'}",
             str(tmp_path / "a.png"))
  assert res.returncode == 2 and "Traceback" not in res.stderr
  assert "config.json does not exist" in res.stderr
  res = _cli("fer_jax.predict", f"--workdir={baseline_run}")
  assert res.returncode != 0 and "IMAGE_OR_FOLDER" in res.stderr


class _FakeModel(evaluate.Model):
  """A Model without a checkpoint: enough to trace a method's predict."""

  def __init__(self, config, method, state):  # pylint: disable=super-init-not-called
    self.config, self.method, self.workdir = config, method, "/runs/x"
    self.loop = {"model": state}
    from fer_jax.data import protocols  # pylint: disable=import-outside-toplevel
    self.slot = protocols.EXAMPLE_KINDS[method.eval_kind][0]


def _method(name, **overrides):
  import test_train  # pylint: disable=import-outside-toplevel
  from fer_jax.registry import method_class  # pylint: disable=import-outside-toplevel
  cfg = test_train.tiny_config(name)
  with cfg.unlocked():
    for path, value in overrides.items():
      section, field = path.split(".")
      cfg[section][field] = value
  return cfg, method_class(name)(cfg, num_classes=7,
                                 count_examples=lambda kind, role: 8)


def test_methods_without_a_one_face_classifier_are_refused(monkeypatch):
  cfg, method = _method("cgan_wsc")
  model = _FakeModel(cfg, method, {})
  with pytest.raises(ValueError, match="'cgan_wsc' has no classifier"):
    model.require_classifier()
  cfg, method = _method("gndl", **{"gndl.neutral_source": "real"})
  model = _FakeModel(cfg, method, {"params": {}, "batch_stats": {}})
  with pytest.raises(ValueError, match="needs 'neutral' too"):
    model.require_classifier()
  with pytest.raises(ValueError, match="needs 'neutral' too"):
    predict.predict_photos(model, [np.zeros((64, 64, 3), np.uint8)])
  # predict.load_model asks before anything runs.
  monkeypatch.setattr(evaluate, "load", lambda workdir, step=None: model)
  with pytest.raises(ValueError, match="needs 'neutral' too"):
    predict.load_model("/runs/x")
