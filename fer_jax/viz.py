"""PNG pictures users look at: confusion matrices and image grids."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np


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
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  fig.savefig(path)
  plt.close(fig)


def to_uint8(images: np.ndarray) -> np.ndarray:
  """[-1, 1] floats (or uint8) -> uint8 RGB, grey broadcast to 3 channels."""
  x = np.asarray(images)
  if x.dtype != np.uint8:
    x = np.clip((x.astype(np.float32) + 1.0) * 127.5, 0, 255).round()
    x = x.astype(np.uint8)
  if x.shape[-1] == 1:
    x = np.repeat(x, 3, axis=-1)
  return x


def save_grid(path: str, rows: Sequence[np.ndarray], pad: int = 2) -> None:
  """Saves rows of equally sized images (each row (N, H, W, C)) as one PNG."""
  import jax  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel
  if jax.process_index():
    return
  rows = [to_uint8(r) for r in rows]
  h, w = rows[0].shape[1:3]
  ncol = max(len(r) for r in rows)
  canvas = np.full((len(rows) * (h + pad) + pad, ncol * (w + pad) + pad, 3),
                   255, np.uint8)
  for i, row in enumerate(rows):
    for j, img in enumerate(row):
      y, x = pad + i * (h + pad), pad + j * (w + pad)
      canvas[y:y + h, x:x + w] = img
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  Image.fromarray(canvas).save(path)


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
