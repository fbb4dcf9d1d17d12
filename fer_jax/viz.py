"""PNG pictures users look at: confusion matrices and image grids.

Every PNG is written whole through ``fer_jax.files`` (local or gs://)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from fer_jax import files


def save_figure(path: str, fig) -> None:
  """A matplotlib figure as a PNG at ``path`` (local or gs://), closed."""
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  files.save_png(path, lambda f: fig.savefig(f, format="png"))
  plt.close(fig)


def save_confusion_matrix(path: str, matrix: np.ndarray,
                          classes: Sequence[str], title: str = "") -> None:
  """Row-normalised confusion matrix (rows = true class) with counts."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  m = np.asarray(matrix, np.float64)
  norm = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
  n = len(classes)
  fig, ax = plt.subplots(figsize=(1.0 + 0.8 * n, 0.8 + 0.75 * n), dpi=100)
  ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
  ax.set_xticks(range(n), classes, rotation=45, ha="right")
  ax.set_yticks(range(n), classes)
  ax.set_xlabel("predicted")
  ax.set_ylabel("true")
  for i in range(n):
    for j in range(n):
      ax.text(j, i, f"{norm[i, j]:.2f}\n({int(m[i, j])})", ha="center",
              va="center", fontsize=7,
              color="white" if norm[i, j] > 0.5 else "black")
  if title:
    ax.set_title(title, fontsize=9)
  fig.tight_layout()
  save_figure(path, fig)


def to_uint8(images: np.ndarray) -> np.ndarray:
  """[-1, 1] floats (or uint8) -> uint8 RGB, grey broadcast to 3 channels."""
  x = np.asarray(images)
  if x.dtype != np.uint8:
    x = np.clip((x.astype(np.float32) + 1.0) * 127.5, 0, 255).round()
    x = x.astype(np.uint8)
  if x.shape[-1] == 1:
    x = np.repeat(x, 3, axis=-1)
  return x


MIN_TILE = 96  # faces are upscaled (nearest) to at least this many pixels
HEAT_LEGEND = "heat maps: black = low, white/yellow = high (per map)"


def _font(size: int):
  from PIL import ImageFont  # pylint: disable=import-outside-toplevel
  try:
    return ImageFont.load_default(size=size)  # scalable (Pillow >= 10.1)
  except TypeError:
    return ImageFont.load_default()


def _text_size(draw, text: str, font) -> tuple[int, int]:
  box = draw.multiline_textbbox((0, 0), text, font=font, spacing=2)
  return box[2] - box[0], box[3] - box[1]


def grid_image(rows: Sequence[np.ndarray], *,
               row_labels: Sequence[str] | None = None,
               col_labels: Sequence[str] | None = None,
               title: str = "", legend: str = "", pad: int = 2,
               min_tile: int = MIN_TILE) -> np.ndarray:
  """Rows of equally sized images (each (N, H, W, C)) as one uint8 RGB
  picture a reader can follow without the docs: a title, a label left of
  each row and above each column (multi-line with '\n'), and a legend
  line underneath. Tiles are upscaled by an integer factor to at least
  ``min_tile`` pixels so 64 px faces and their labels stay legible."""
  from PIL import Image, ImageDraw  # pylint: disable=import-outside-toplevel
  rows = [to_uint8(r) for r in rows]
  h, w = rows[0].shape[1:3]
  k = max(1, -(-min_tile // max(h, w)))
  h, w = h * k, w * k
  ncol = max(len(r) for r in rows)
  font = _font(12)
  probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
  size = lambda t: _text_size(probe, t, font)  # noqa: E731
  row_labels = list(row_labels or [])
  col_labels = list(col_labels or [])
  left = (max((size(t)[0] for t in row_labels), default=0) + 2 * pad + 4
          if row_labels else 0)
  head = (max((size(t)[1] for t in col_labels), default=0) + 2 * pad + 4
          if col_labels else 0)
  top = size(title)[1] + 3 * pad + 4 if title else 0
  foot = size(legend)[1] + 3 * pad + 4 if legend else 0
  width = max(left + ncol * (w + pad) + pad,
              size(title)[0] + 4 * pad if title else 0,
              size(legend)[0] + 4 * pad if legend else 0)
  height = top + head + len(rows) * (h + pad) + pad + foot
  canvas = Image.new("RGB", (width, height), (255, 255, 255))
  draw = ImageDraw.Draw(canvas)
  if title:
    draw.multiline_text((2 * pad, 2 * pad), title, fill=(0, 0, 0),
                        font=font, spacing=2)
  for j, text in enumerate(col_labels[:ncol]):
    tw, _ = size(text)
    x = left + pad + j * (w + pad) + max(0, (w - tw) // 2)
    draw.multiline_text((x, top + pad), text, fill=(0, 0, 0), font=font,
                        spacing=2, align="center")
  y0 = top + head
  for i, row in enumerate(rows):
    y = y0 + pad + i * (h + pad)
    if i < len(row_labels):
      _, th = size(row_labels[i])
      draw.multiline_text((pad, y + max(0, (h - th) // 2)), row_labels[i],
                          fill=(0, 0, 0), font=font, spacing=2)
    for j, img in enumerate(row):
      tile = np.repeat(np.repeat(img, k, axis=0), k, axis=1)
      canvas.paste(Image.fromarray(tile), (left + pad + j * (w + pad), y))
  if legend:
    draw.multiline_text((2 * pad, height - foot + pad), legend,
                        fill=(60, 60, 60), font=font, spacing=2)
  return np.asarray(canvas)


def save_grid(path: str, rows: Sequence[np.ndarray], pad: int = 2,
              **labels) -> None:
  """Saves ``grid_image(rows, **labels)`` as a PNG (process 0 only)."""
  import jax  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel
  if jax.process_index():
    return
  canvas = grid_image(rows, pad=pad, **labels)
  files.save_png(path, lambda f: Image.fromarray(canvas).save(f, "PNG"))


def captions(classes: Sequence[str], labels, preds=None) -> list[str]:
  """One caption per example: 'true happy' or 'true happy\npred sad'."""
  out = []
  for i, y in enumerate(np.asarray(labels)):
    text = f"true {classes[int(y)]}"
    if preds is not None:
      text += f"\npred {classes[int(np.asarray(preds)[i])]}"
    out.append(text)
  return out


def heatmap(values: np.ndarray, size: int, marker=None) -> np.ndarray:
  """A 2-D map as a (size, size, 3) uint8 'hot' image, nearest-upscaled,
  with an optional cross at the (row, col) fraction ``marker``."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  v = np.asarray(values, np.float64)
  v = (v - v.min()) / max(v.max() - v.min(), 1e-12)
  reps = max(1, size // v.shape[0])
  v = np.kron(v, np.ones((reps, reps)))[:size, :size]
  out = (matplotlib.colormaps["hot"](v)[..., :3] * 255).astype(np.uint8)
  if marker is not None:
    r, c = int(marker[0] * size), int(marker[1] * size)
    out[max(r - 2, 0):r + 3, c] = (0, 255, 255)
    out[r, max(c - 2, 0):c + 3] = (0, 255, 255)
  return out


def label_boxes(image: np.ndarray, boxes, texts: Sequence[str],
                colour=(255, 215, 0)) -> np.ndarray:
  """A photo (uint8 RGB) with each (x, y, w, h) box outlined and its text
  on a dark band above it (below it when the box touches the top edge)."""
  from PIL import Image, ImageDraw  # pylint: disable=import-outside-toplevel
  canvas = Image.fromarray(to_uint8(image))
  draw = ImageDraw.Draw(canvas)
  side = min(canvas.size)
  font = _font(max(12, side // 40))
  width = max(2, side // 250)
  for (x, y, w, h), text in zip(boxes, texts):
    draw.rectangle((x, y, x + w - 1, y + h - 1), outline=colour, width=width)
    tw, th = _text_size(draw, text, font)
    ty = y - th - 7 if y - th - 7 >= 0 else y + h + 1  # beside the edge
    draw.rectangle((x, ty, x + tw + 6, ty + th + 6), fill=(0, 0, 0))
    draw.multiline_text((x + 3, ty + 2), text, fill=colour, font=font,
                        spacing=2)
  return np.asarray(canvas)
