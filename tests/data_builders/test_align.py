"""fer_jax.data.align: the stored transform says where each source pixel
went, to a fraction of a pixel, for eye, box and centre alignment."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fer_jax.data import align


def _centroid(img: np.ndarray) -> np.ndarray:
  w = img.astype(np.float64)
  ys, xs = np.indices(w.shape)
  return np.array([(w * xs).sum(), (w * ys).sum()]) / w.sum()


@pytest.mark.parametrize("size, affine_of", [
    (48, lambda s: align.eye_affine([60.0, 50.0], [100.0, 40.0], s)),
    (48, lambda s: align.centre_affine(160, 120, s)),  # shrinks 3.5x
    (32, lambda s: align.box_affine(90, 30, 20, 20, s)),  # enlarges
])
def test_warp_puts_a_source_dot_where_the_affine_says(size, affine_of):
  spec = align.AlignSpec(image_size=size, margin=0.2)
  affine = affine_of(spec)
  src = np.zeros((120, 160), np.uint8)
  src[40:42, 100:102] = 255  # a 2x2 dot centred at (100.5, 40.5)
  out = np.asarray(align.warp(Image.fromarray(src), affine, size))
  assert out.shape == (size, size)
  want = align.apply_affine(affine, [100.5, 40.5])
  np.testing.assert_allclose(_centroid(out), want, atol=0.25)


def test_eye_affine_levels_spaces_and_places_the_eyes():
  spec = align.AlignSpec(image_size=100, eye_distance=0.3, eye_height=0.45)
  left, right = np.array([30.0, 70.0]), np.array([80.0, 40.0])
  a = align.eye_affine(left, right, spec)
  l2, r2 = align.apply_affine(a, np.stack([left, right]))
  np.testing.assert_allclose(l2[1], r2[1], atol=1e-9)
  np.testing.assert_allclose(r2[0] - l2[0], 30.0, atol=1e-9)
  np.testing.assert_allclose((l2 + r2) / 2, [49.5, 45.0], atol=1e-9)


def test_eye_centres_and_validation():
  pts = np.zeros((68, 2))
  pts[36:42] = [10, 20]
  pts[42:48] = [30, 20]
  left, right = align.eye_centres(pts)
  np.testing.assert_allclose(left, [10, 20])
  np.testing.assert_allclose(right, [30, 20])
  with pytest.raises(ValueError, match="68, 2"):
    align.eye_centres(np.zeros((5, 2)))
  with pytest.raises(ValueError, match="coincide"):
    align.eye_affine([1, 1], [1, 1], align.AlignSpec())
  with pytest.raises(ValueError, match="eye_distance"):
    align.AlignSpec(eye_distance=1.5)
  with pytest.raises(ValueError, match="no area"):
    align.box_affine(0, 0, 0, 5, align.AlignSpec())
