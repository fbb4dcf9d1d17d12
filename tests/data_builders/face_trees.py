"""Tiny copies of the face archives, in their owners' layouts, for the
builder tests: a few subjects, 32-64 px images, real file names and label
formats, one corrupt image each. Every writer returns what a correct build
must contain."""

from __future__ import annotations

import os

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from fer_jax.data import protocols
from fer_jax.data.classes import canonical_index


def face_points(cx: float, cy: float, iod: float, angle: float,
                rng: np.random.Generator) -> np.ndarray:
  """68 iBUG points with the eye contours (36-41, 42-47) centred ``iod``
  apart at angle ``angle`` (radians) around (cx, cy); the rest scattered."""
  pts = rng.uniform(-0.8, 0.8, (68, 2)) * iod + [cx, cy + 0.4 * iod]
  u = np.array([np.cos(angle), np.sin(angle)])
  left, right = np.array([cx, cy]) - u * iod / 2, np.array([cx, cy]) + u * iod / 2
  ring = 0.12 * iod * np.stack([np.cos(np.arange(6) * np.pi / 3),
                                np.sin(np.arange(6) * np.pi / 3)], 1)
  pts[36:42] = left + ring
  pts[42:48] = right + ring
  return pts


def face_image(w: int, h: int, rng: np.random.Generator, grey=False,
               eyes=None) -> Image.Image:
  """Noise with bright 3x3 dots at the eye centres, if given."""
  arr = rng.integers(0, 60, (h, w, 3), np.uint8)
  for x, y in eyes or ():
    xi, yi = round(float(x)), round(float(y))
    arr[max(0, yi - 1):yi + 2, max(0, xi - 1):xi + 2] = 255
  im = Image.fromarray(arr)
  return im.convert("L") if grey else im


def save(im: Image.Image, path: str) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fmt = {".jpeg": "JPEG", ".jpg": "JPEG", ".tiff": "TIFF", ".tif": "TIFF",
         ".bmp": "BMP", ".png": "PNG"}[os.path.splitext(path)[1].lower()]
  im.save(path, format=fmt)
  return path


def corrupt(path: str) -> None:
  """Truncates an image file to half its bytes (header intact, data cut)."""
  with open(path, "rb") as f:
    data = f.read()
  head = data[:len(data) // 2]
  with open(path, "wb") as f:
    f.write(head)


def build(cls, manual_dir, data_dir, config=None):
  builder = cls(config=config, data_dir=os.fspath(data_dir))
  builder.download_and_prepare(
      file_format="array_record",
      download_config=tfds.download.DownloadConfig(
          manual_dir=os.fspath(manual_dir)))
  return builder


def records(builder, split="train") -> list[dict]:
  src = builder.as_data_source(split=split)
  return [src[i] for i in range(len(src))]


def text(x) -> str:
  return x.decode() if isinstance(x, bytes) else str(x)


def assert_no_subject_leakage(table, num_folds: int) -> None:
  """Every fold of the subject-independent protocol: test, val and train
  hold disjoint subjects, and every subject is tested exactly once."""
  tested = []
  for fold in range(num_folds):
    masks = protocols.fold_rows(table, num_folds, fold, val_folds=1, seed=0)
    sets = {k: set(table.subject_id[m].tolist()) for k, m in masks.items()}
    assert not sets["train"] & sets["test"]
    assert not sets["train"] & sets["val"]
    assert not sets["val"] & sets["test"]
    assert sets["test"]
    tested += sorted(sets["test"])
  assert sorted(tested) == sorted(set(table.subject_id.tolist()))


# ------------------------------------------------------------------ CK+

CK_SEQUENCES = [
    # (subject, sequence, frames, emotion code or None = unlabelled)
    (5, 1, 5, 1), (5, 2, 4, 5),
    (10, 1, 6, 7), (10, 3, 4, None),
    (11, 1, 4, 2),
    (22, 1, 5, 3), (22, 4, 4, 6),
    (37, 2, 4, 4),
]
CK_CORRUPT = (22, 1, 2)  # subject, sequence, frame position
CK_SIZE = (64, 48)


def write_ckplus(root, variant: bool = False, seed: int = 0) -> dict:
  """CK+ as distributed (``variant``: the nested Emotion_labels/Emotion and
  Landmarks/Landmarks of some copies, under one top folder, grey frames)."""
  rng = np.random.default_rng(seed)
  top = os.path.join(os.fspath(root), "CK+") if variant else os.fspath(root)
  emo_dir = os.path.join(top, "Emotion_labels", "Emotion") if variant else \
      os.path.join(top, "Emotion")
  mark_dir = os.path.join(top, "Landmarks", "Landmarks") if variant else \
      os.path.join(top, "Landmarks")
  expected = {}
  codes = {0: "neutral", 1: "anger", 2: "contempt", 3: "disgust", 4: "fear",
           5: "happiness", 6: "sadness", 7: "surprise"}
  for s, q, n, code in CK_SEQUENCES:
    subj, seq = f"S{s:03d}", f"{q:03d}"
    angle = rng.uniform(-0.3, 0.3)
    for i in range(n):
      stem = f"{subj}_{seq}_{i + 1:08d}"
      pts = face_points(32 + i, 20, 18, angle, rng)
      eyes = [pts[36:42].mean(0), pts[42:48].mean(0)]
      im = face_image(*CK_SIZE, rng, grey=variant, eyes=eyes)
      path = save(im, os.path.join(top, "cohn-kanade-images", subj, seq,
                                   stem + ".png"))
      if (s, q, i) == CK_CORRUPT:
        corrupt(path)
      os.makedirs(os.path.join(mark_dir, subj, seq), exist_ok=True)
      np.savetxt(os.path.join(mark_dir, subj, seq, stem + "_landmarks.txt"),
                 pts, fmt="   %.7e")
      expected[(s, q, i)] = {
          "points": pts, "num_frames": n,
          "label": None if code is None else canonical_index(codes[code])}
    if code is not None:
      os.makedirs(os.path.join(emo_dir, subj, seq), exist_ok=True)
      with open(os.path.join(emo_dir, subj, seq,
                             f"{subj}_{seq}_{n:08d}_emotion.txt"), "w") as f:
        f.write(f"   {code:.7e}\n")
    # A FACS folder, as shipped, which the builder must ignore.
    os.makedirs(os.path.join(top, "FACS", subj, seq), exist_ok=True)
    with open(os.path.join(top, "FACS", subj, seq,
                           f"{subj}_{seq}_{n:08d}_facs.txt"), "w") as f:
      f.write("   1.0000000e+00   0.0000000e+00\n")
  return expected
