"""Face alignment for the builders: one similarity transform per image.

A face is brought to a fixed output square either by its eye centres (rotate
so the eyes are level, scale to a set inter-ocular distance, put their
midpoint at a set height) or by a box (face box or, for sets that ship
neither landmarks nor boxes, a centred square) grown by a margin. Every
transform is a 2x3 affine in pixel-index coordinates (pixel (i, j) has its
centre at x=i, y=j, as landmark files count), so a builder can store it and
map landmarks into the output image with :func:`apply_affine`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

# iBUG-68 eye contours: the subject's right eye (left in the image) and left.
RIGHT_EYE = slice(36, 42)
LEFT_EYE = slice(42, 48)


@dataclasses.dataclass(frozen=True)
class AlignSpec:
  """Output geometry. eye_distance and eye_height are fractions of the
  output size; margin grows a box by that fraction of its side on each side
  (negative tightens it)."""
  image_size: int = 256
  eye_distance: float = 0.36
  eye_height: float = 0.40
  margin: float = 0.2

  def __post_init__(self):
    if self.image_size < 8:
      raise ValueError(f"image_size={self.image_size} must be >= 8")
    if not 0 < self.eye_distance < 1:
      raise ValueError(f"eye_distance={self.eye_distance} must be in (0, 1)")
    if not 0 < self.eye_height < 1:
      raise ValueError(f"eye_height={self.eye_height} must be in (0, 1)")
    if not -0.5 < self.margin < 2:
      raise ValueError(f"margin={self.margin} must be in (-0.5, 2)")


def eye_centres(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(image-left eye centre, image-right eye centre) of iBUG-68 landmarks."""
  pts = np.asarray(landmarks, np.float64)
  if pts.shape != (68, 2):
    raise ValueError(f"expected (68, 2) landmarks, got {pts.shape}")
  return pts[RIGHT_EYE].mean(0), pts[LEFT_EYE].mean(0)


def eye_affine(left: np.ndarray, right: np.ndarray,
               spec: AlignSpec) -> np.ndarray:
  """2x3 similarity taking the eye centres to level, centred, spaced points."""
  left, right = np.asarray(left, np.float64), np.asarray(right, np.float64)
  d = right - left
  dist = float(np.hypot(*d))
  if dist < 1e-6:
    raise ValueError("eye centres coincide: cannot align")
  scale = spec.eye_distance * spec.image_size / dist
  angle = np.arctan2(d[1], d[0])
  cos, sin = scale * np.cos(-angle), scale * np.sin(-angle)
  lin = np.array([[cos, -sin], [sin, cos]])
  centre = (left + right) / 2
  target = np.array([(spec.image_size - 1) / 2,
                     spec.eye_height * spec.image_size])
  return np.concatenate([lin, (target - lin @ centre)[:, None]], 1)


def landmark_affine(landmarks: np.ndarray, spec: AlignSpec) -> np.ndarray:
  return eye_affine(*eye_centres(landmarks), spec)


def box_affine(x: float, y: float, w: float, h: float,
               spec: AlignSpec) -> np.ndarray:
  """2x3 scale+shift mapping the square around box (x, y, w, h), grown by the
  margin, onto the output square (no rotation)."""
  if w <= 0 or h <= 0:
    raise ValueError(f"box ({x}, {y}, {w}, {h}) has no area")
  side = max(w, h) * (1 + 2 * spec.margin)
  scale = spec.image_size / side
  cx, cy = x + w / 2 - 0.5, y + h / 2 - 0.5  # box edges -> pixel centres
  half = (spec.image_size - 1) / 2
  return np.array([[scale, 0, half - scale * cx],
                   [0, scale, half - scale * cy]])


def centre_affine(width: int, height: int, spec: AlignSpec) -> np.ndarray:
  """For faces without landmarks or boxes: the centred square of the shorter
  side, grown by the margin."""
  side = min(width, height)
  return box_affine((width - side) / 2, (height - side) / 2, side, side, spec)


def apply_affine(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
  """(..., 2) points through a 2x3 affine."""
  pts = np.asarray(points, np.float64)
  return pts @ affine[:, :2].T + affine[:, 2]


def warp(image: Image.Image, affine: np.ndarray, size: int) -> Image.Image:
  """The output square: image resampled through ``affine`` (bilinear, black
  outside the source; box-averaged first when shrinking by 2x or more, so
  large photos do not alias)."""
  scale = float(np.sqrt(abs(np.linalg.det(affine[:, :2]))))
  factor = int(1 / scale) if scale < 0.5 else 1
  if factor > 1:
    image = image.reduce(factor)
    # Reduced pixel k averages pixels [k f, (k + 1) f): index x -> (x + .5)/f - .5
    red = np.array([[1 / factor, 0, 0.5 / factor - 0.5],
                    [0, 1 / factor, 0.5 / factor - 0.5], [0, 0, 1]])
    affine = (np.vstack([affine, [0, 0, 1]]) @ np.linalg.inv(red))[:2]
  # PIL asks, for each output pixel, where to read in the input, in
  # continuous coordinates (pixel i spans [i, i + 1)): invert, then shift
  # index coordinates by half a pixel on both sides.
  inv = np.linalg.inv(np.vstack([affine, [0, 0, 1]]))
  shift = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
  unshift = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1]])
  m = shift @ inv @ unshift
  return image.transform((size, size), Image.Transform.AFFINE,
                         data=tuple(m[:2].ravel()),
                         resample=Image.Resampling.BILINEAR)
