"""Faces in ordinary photos: detected, their eyes found, aligned as the
training data were.

A model only knows faces framed the way its data set framed them, so a photo
is cut the same way: the eye centres go through the similarity transform of
``fer_jax.data.align`` (the builders' own code) at the eye distance, eye
height and size of the run's data set (:func:`training_alignment`).

Detection uses OpenCV's Haar cascades (frontal face, then eyes inside the
face's upper part), whose model files ship inside the ``opencv-python``
wheels (``cv2.data.haarcascades``): nothing is downloaded at run time. When
the eyes are not found (glasses, closed eyes, a small face), they are placed
where the frontal cascade's box puts them on average (``BOX_EYES``), so the
crop is still about right, without the roll correction.

  pip install 'fer_jax[predict]'   # opencv-python-headless
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from fer_jax.data import align
from fer_jax.data import registry
from fer_jax.imports import import_symbol

FACE_CASCADE = "haarcascade_frontalface_default.xml"
EYE_CASCADE = "haarcascade_eye.xml"
# Where the eye centres sit in a frontal-cascade face box (x, y as fractions
# of the box side from its corner, image-left eye first): the eye cascade's
# on scikit-image's astronaut photo (box 177, 67, 93 x 93; eyes 0.27 and
# 0.75 across, 0.36 and 0.38 down), the fallback when the eye cascade finds
# no plausible pair.
BOX_EYES = ((0.27, 0.37), (0.75, 0.37))
# An eye pair is plausible when its centres are this far apart (fraction of
# the box side) and the line through them is within MAX_ROLL_DEG of level.
EYE_SPAN = (0.25, 0.70)
MAX_ROLL_DEG = 30.0
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff",
                    ".webp")


def _cv2():
  try:
    import cv2  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError("face detection needs OpenCV: pip install "
                      "'fer_jax[predict]' (opencv-python-headless)") from e
  return cv2


_CASCADES: dict[str, Any] = {}


def _cascade(name: str):
  if name not in _CASCADES:
    cv2 = _cv2()
    path = os.path.join(cv2.data.haarcascades, name)
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
      raise RuntimeError(f"OpenCV could not read its cascade {path}")
    _CASCADES[name] = cascade
  return _CASCADES[name]


@dataclasses.dataclass(frozen=True)
class Face:
  """One face of a photo: its detector box (x, y, w, h in pixels), its eye
  centres (image-left first, (x, y) with pixel (i, j) centred at x=i, y=j,
  as fer_jax.data.align counts), whether the eye cascade found them (False:
  placed by ``BOX_EYES``), the 2x3 photo -> crop affine and the crop."""
  box: tuple[int, int, int, int]
  eyes: np.ndarray
  eyes_found: bool
  affine: np.ndarray
  crop: np.ndarray

  @property
  def roll_deg(self) -> float:
    """The face's roll in the photo (positive: clockwise on screen)."""
    d = self.eyes[1] - self.eyes[0]
    return float(np.degrees(np.arctan2(d[1], d[0])))


def read_image(path: str) -> np.ndarray:
  """A photo as uint8 RGB (H, W, 3), turned upright by its EXIF tag."""
  try:
    with Image.open(path) as im:
      im = ImageOps.exif_transpose(im)
      return np.asarray(im.convert("RGB"))
  except (OSError, ValueError) as e:
    raise ValueError(f"{path}: not an image this can read ({e})") from None


def as_rgb(image: np.ndarray) -> np.ndarray:
  """uint8 (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) -> uint8 (H, W, 3)."""
  x = np.asarray(image)
  if x.dtype != np.uint8:
    raise ValueError(f"expected a uint8 image, got {x.dtype}")
  if x.ndim == 2:
    x = x[..., None]
  if x.ndim != 3 or x.shape[-1] not in (1, 3, 4):
    raise ValueError(f"expected an (H, W[, 1|3|4]) image, got {x.shape}")
  if x.shape[-1] == 1:
    x = np.repeat(x, 3, -1)
  return np.ascontiguousarray(x[..., :3])


def _grey(image: np.ndarray) -> np.ndarray:
  cv2 = _cv2()
  return cv2.equalizeHist(cv2.cvtColor(as_rgb(image), cv2.COLOR_RGB2GRAY))


def detect_faces(image: np.ndarray, min_size: int = 32, grey=None
                 ) -> list[tuple[int, int, int, int]]:
  """Frontal face boxes (x, y, w, h), left to right (``grey``: the image's
  equalised grey version, if already computed)."""
  boxes = _cascade(FACE_CASCADE).detectMultiScale(
      _grey(image) if grey is None else grey, scaleFactor=1.1,
      minNeighbors=5, minSize=(min_size, min_size))
  return sorted((tuple(int(v) for v in b) for b in np.reshape(boxes, (-1, 4))),
                key=lambda b: (b[0], b[1]))


def box_eyes(box) -> np.ndarray:
  """Where the eyes of a frontal-cascade box usually are (``BOX_EYES``)."""
  x, y, w, h = box
  side = (w + h) / 2
  return np.array([[x - 0.5 + fx * side, y - 0.5 + fy * side]
                   for fx, fy in BOX_EYES])


def find_eyes(image: np.ndarray, box, grey=None) -> np.ndarray | None:
  """The eye centres inside a face box (image-left first), or None when the
  eye cascade finds no plausible pair: one eye in each half of the box's
  upper 60%, EYE_SPAN apart, within MAX_ROLL_DEG of level."""
  x, y, w, h = box
  grey = _grey(image) if grey is None else grey
  top = grey[y:y + int(0.6 * h), x:x + w]
  found = _cascade(EYE_CASCADE).detectMultiScale(
      top, scaleFactor=1.05, minNeighbors=3,
      minSize=(max(5, w // 10), max(5, w // 10)), maxSize=(w // 2, w // 2))
  centres = [(ex + (ew - 1) / 2, ey + (eh - 1) / 2, ew * eh)
             for ex, ey, ew, eh in np.reshape(found, (-1, 4))]
  left = [c for c in centres if c[0] < w / 2]
  right = [c for c in centres if c[0] >= w / 2]
  if not left or not right:
    return None
  # The largest detection on each side: small ones are nostrils or brows.
  a = max(left, key=lambda c: c[2])
  b = max(right, key=lambda c: c[2])
  eyes = np.array([[x + a[0], y + a[1]], [x + b[0], y + b[1]]], np.float64)
  d = eyes[1] - eyes[0]
  span = float(np.hypot(*d)) / w
  roll = abs(float(np.degrees(np.arctan2(d[1], d[0]))))
  if not EYE_SPAN[0] <= span <= EYE_SPAN[1] or roll > MAX_ROLL_DEG:
    return None
  return eyes


def align_face(image: np.ndarray, eyes: np.ndarray,
               spec: align.AlignSpec) -> tuple[np.ndarray, np.ndarray]:
  """(crop uint8 (S, S, 3), 2x3 affine): ``image`` resampled so the eyes land
  where ``spec`` puts them (fer_jax.data.align.eye_affine, as the builders)."""
  affine = align.eye_affine(eyes[0], eyes[1], spec)
  crop = align.warp(Image.fromarray(as_rgb(image)), affine, spec.image_size)
  return np.asarray(crop), affine


def find_faces(image: np.ndarray, spec: align.AlignSpec, min_size: int = 32,
               max_faces: int | None = None) -> list[Face]:
  """Every frontal face of a photo, detected, eye-located and aligned to
  ``spec``; left to right (the ``max_faces`` largest if set)."""
  image = as_rgb(image)
  grey = _grey(image)
  boxes = detect_faces(image, min_size, grey)
  if max_faces is not None:
    keep = sorted(boxes, key=lambda b: -b[2] * b[3])[:max_faces]
    boxes = [b for b in boxes if b in keep]
  faces = []
  for box in boxes:
    eyes = find_eyes(image, box, grey)
    found = eyes is not None
    if not found:
      eyes = box_eyes(box)
    crop, affine = align_face(image, eyes, spec)
    faces.append(Face(box, eyes, found, affine, crop))
  return faces


def image_files(paths) -> list[str]:
  """Files named, and the image files (by extension) in folders named,
  folders sorted by name and not descended into; ValueError naming a path
  that does not exist or a folder without images."""
  out = []
  for p in paths:
    if os.path.isdir(p):
      found = sorted(os.path.join(p, n) for n in os.listdir(p)
                     if n.lower().endswith(IMAGE_EXTENSIONS)
                     and os.path.isfile(os.path.join(p, n)))
      if not found:
        raise ValueError(f"{p}: the folder holds no image files "
                         f"({', '.join(IMAGE_EXTENSIONS)})")
      out += found
    elif os.path.isfile(p):
      out.append(p)
    else:
      raise ValueError(f"{p}: no such file or folder")
  return out


# ------------------------------------------- the data set's own alignment

def training_alignment(data_cfg) -> align.AlignSpec:
  """The crop geometry of the faces a run trained on (``config.data``).

  fer_synth: an aligned profile's eye distance and height; the 'classic'
  profile's unaligned faces, their mean eye geometry over the set's
  landmarks (roll and scale vary around it). A real set: its builder
  config's (FaceConfig) geometry. Sets a builder aligns by box rather than
  by eyes (no landmarks, e.g. JAFFE) are only approximated by it.
  """
  if data_cfg.name == "fer_synth":
    return _synth_alignment(data_cfg.synth)
  builder = registry.builder_class(data_cfg.name)
  configs = {c.name: c for c in builder.BUILDER_CONFIGS}
  name = data_cfg.get("builder_config") or builder.BUILDER_CONFIGS[0].name
  if name not in configs:
    raise ValueError(f"config.data.builder_config={name!r} is not one of "
                     f"{data_cfg.name}'s: {', '.join(configs)}")
  cfg = configs[name]
  return align.AlignSpec(image_size=cfg.image_size,
                         eye_distance=cfg.eye_distance,
                         eye_height=cfg.eye_height, margin=cfg.margin)


_SYNTH = "fer_jax.data_builders.fer_synth.generator"


def _synth_alignment(synth) -> align.AlignSpec:
  profiles = import_symbol(f"{_SYNTH}:PROFILES")
  spec_cls = import_symbol(f"{_SYNTH}:SynthSpec")
  sequence_landmarks = import_symbol(f"{_SYNTH}:sequence_landmarks")
  size = int(synth.image_size)
  prof = profiles[synth.profile]
  if prof.aligned:
    return align.AlignSpec(image_size=size, eye_distance=prof.eye_distance,
                           eye_height=prof.eye_height)
  spec = spec_cls(**dict(synth))
  distance, height = [], []
  for subject in range(min(spec.num_subjects, 8)):
    for seq in range(spec.sequences_per_subject):
      for pts in sequence_landmarks(spec, subject, seq)["landmarks"]:
        left, right = align.eye_centres(pts)
        distance.append(np.hypot(*(right - left)))
        # Landmarks count pixel centres at half-integers; align at integers.
        height.append((left[1] + right[1]) / 2 - 0.5)
  return align.AlignSpec(image_size=size,
                         eye_distance=float(np.mean(distance)) / size,
                         eye_height=float(np.mean(height)) / size)
