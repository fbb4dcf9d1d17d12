"""On-device augmentation: exact geometry, shared per-example transforms."""

import jax
import numpy as np
import pytest

from fer_jax.data.augment import (AugmentSpec, augment, augment_slots,
                                  augment_with_landmarks)

LUMA = np.array([0.299, 0.587, 0.114])


def frames(b=4, v=1, h=16, c=3, seed=0):
  """Random uint8 frames (B, V, H, H, C)."""
  return np.random.default_rng(seed).integers(
      0, 256, (b, v, h, h, c), np.uint8)


def scaled(x):
  """uint8 -> the [-1, 1] output scale, in float64."""
  return np.asarray(x, np.float64) / 127.5 - 1.0


# Jitted as in the train step (and far faster than op-by-op dispatch).
augment_jit = jax.jit(augment, static_argnums=(0, 3))


def run(spec, x, train, key=0):
  return np.asarray(augment_jit(spec, jax.random.key(key), x, train))


@pytest.mark.parametrize("train", [False, True])
def test_identity_transform(train):
  """resize = crop = H, no flip/rotation/noise: output is image/127.5 - 1."""
  x = frames(h=16)
  spec = AugmentSpec(resize=16, crop=16, flip=False)
  out = run(spec, x, train)
  assert out.dtype == np.float32
  np.testing.assert_allclose(out, scaled(x), atol=1e-5)
  assert out.min() >= -1 - 1e-6 and out.max() <= 1 + 1e-6


def test_single_channel_input_broadcasts():
  """(.., 1) grey frames become 3 equal channels when grey=False."""
  x = frames(c=1)
  out = run(AugmentSpec(16, 16, flip=False), x, False)
  assert out.shape == x.shape[:-1] + (3,)
  np.testing.assert_allclose(out, np.repeat(scaled(x), 3, -1), atol=1e-5)


def test_eval_centre_crop_matches_numpy():
  """Eval with resize = H = 16, crop 10: exactly x[3:13, 3:13], no flip even
  when flip is enabled."""
  x = frames(h=16)
  out = run(AugmentSpec(resize=16, crop=10, flip=True, rotate_deg=30.0,
                        noise_std=0.5), x, train=False)
  np.testing.assert_allclose(out, scaled(x[:, :, 3:13, 3:13]), atol=1e-5)


def test_train_crop_is_an_integer_window():
  """Train crop 12 of 16, no flip: each example is some x[i:i+12, j:j+12]
  with 0 <= i, j <= 4, the same window for every view."""
  x = frames(b=8, v=2, h=16)
  out = run(AugmentSpec(resize=16, crop=12, flip=False), x, True, key=5)
  offsets = set()
  for b in range(8):
    hits = [(i, j) for i in range(5) for j in range(5)
            if np.allclose(out[b], scaled(x[b, :, i:i + 12, j:j + 12]),
                           atol=1e-5)]
    assert len(hits) == 1, f"example {b} is no crop window"
    offsets.add(hits[0])
  assert len(offsets) > 1  # examples get their own offsets


def test_flip_only_gives_image_or_exact_mirror():
  """With only flip possible each example is the image or its mirror, the
  same choice for all its views, and both choices occur."""
  x = frames(b=32, v=2, h=16)
  out = run(AugmentSpec(resize=16, crop=16, flip=True), x, True, key=1)
  same = [np.allclose(out[b], scaled(x[b]), atol=1e-5) for b in range(32)]
  mirror = [np.allclose(out[b], scaled(x[b, :, :, ::-1]), atol=1e-5)
            for b in range(32)]
  assert all(s != m for s, m in zip(same, mirror))
  assert any(same) and any(mirror)


def test_views_share_geometry_and_noise():
  """Views x and 255 - x of one example: bilinear sampling is affine in
  intensity, so with a shared transform out(x) + out(255-x) = 0 exactly
  (no noise), and with noise both views get the same noise field."""
  x = frames(b=6, v=1, h=20)
  views = np.concatenate([x, 255 - x, x], axis=1)
  geo = dict(resize=18, crop=14, flip=True, rotate_deg=15.0)
  clean = run(AugmentSpec(**geo), views, True, key=2)
  np.testing.assert_allclose(clean[:, 0] + clean[:, 1], 0.0, atol=1e-5)
  np.testing.assert_array_equal(clean[:, 0], clean[:, 2])
  noisy = run(AugmentSpec(**geo, noise_std=0.1), views, True, key=2)
  noise = noisy - clean  # same key: same geometry, plus the noise field
  np.testing.assert_allclose(noise[:, 0], noise[:, 1], atol=1e-5)
  np.testing.assert_allclose(noise[:, 0], noise[:, 2], atol=1e-5)
  assert abs(noise[:, 0].std() - 0.1) < 0.01
  # Examples get independent noise fields.
  assert not np.allclose(noise[0, 0], noise[1, 0], atol=1e-3)


def test_examples_get_different_transforms():
  """Identical examples under a random transform come out pairwise different."""
  x = np.repeat(frames(b=1, v=1, h=16), 8, axis=0)
  out = run(AugmentSpec(16, 12, flip=True, rotate_deg=10.0), x, True, key=3)
  for i in range(8):
    for j in range(i):
      assert not np.allclose(out[i], out[j], atol=1e-4), (i, j)


def test_downscale_by_two_is_box_average():
  """Eval, resize = crop = H/2: output is the 2x2 box mean of the image."""
  x = frames(h=16)
  box = x.astype(np.float64).reshape(4, 1, 8, 2, 8, 2, 3).mean(axis=(3, 5))
  out = run(AugmentSpec(resize=8, crop=8), x, False)
  np.testing.assert_allclose(out, scaled(box), atol=1e-5)


def test_downscale_by_four_is_box_average():
  """Eval, resize = crop = H/4: output is the 4x4 box mean."""
  x = frames(h=16)
  box = x.astype(np.float64).reshape(4, 1, 4, 4, 4, 4, 3).mean(axis=(3, 5))
  out = run(AugmentSpec(resize=4, crop=4), x, False)
  np.testing.assert_allclose(out, scaled(box), atol=1e-5)


def test_upscale_by_two_half_pixel_bilinear():
  """Eval, H=4 -> resize 8: half-pixel-centred bilinear, e.g. output column
  1 samples source x = 0.25 (3/4 of col 0 + 1/4 of col 1); edges clamp."""
  x = frames(b=1, h=4)
  out = run(AugmentSpec(resize=8, crop=8, flip=False), x, False)
  src = np.asarray(x[0, 0], np.float64)
  coords = (np.arange(8) + 0.5) / 2 - 0.5  # -0.25, 0.25, 0.75, ...
  c = np.clip(coords, 0, 3)
  lo = np.floor(c).astype(int)
  hi = np.minimum(lo + 1, 3)
  w = c - lo
  rows = src[lo] * (1 - w)[:, None, None] + src[hi] * w[:, None, None]
  ref = rows[:, lo] * (1 - w)[None, :, None] + rows[:, hi] * w[None, :, None]
  np.testing.assert_allclose(out[0, 0], scaled(ref), atol=1e-5)


def test_grey_uses_luma_weights():
  """grey=True: one channel = 0.299 R + 0.587 G + 0.114 B (then scaled)."""
  x = frames(h=8)
  spec = AugmentSpec(8, 8, flip=False, grey=True)
  assert spec.channels == 1
  out = run(spec, x, False)
  assert out.shape == x.shape[:-1] + (1,)
  np.testing.assert_allclose(out[..., 0], scaled(x @ LUMA), atol=1e-5)


def test_deterministic_for_a_key():
  """The same key gives identical output; another key a different one."""
  x = frames(b=4, v=2, h=16)
  spec = AugmentSpec(16, 12, flip=True, rotate_deg=10.0, noise_std=0.05)
  np.testing.assert_array_equal(run(spec, x, True, 7), run(spec, x, True, 7))
  assert not np.allclose(run(spec, x, True, 7), run(spec, x, True, 8))


def test_eval_has_no_noise():
  """noise_std only applies in training."""
  x = frames(h=16)
  out = run(AugmentSpec(16, 16, flip=False, noise_std=0.3), x, False)
  np.testing.assert_allclose(out, scaled(x), atol=1e-5)


def test_rotation_keeps_centre_pixel():
  """Odd size 15: small random rotations (and flips) about the centre leave
  pixel (7, 7) exactly as it was, while other pixels move."""
  x = frames(b=8, v=2, h=15)
  out = run(AugmentSpec(15, 15, flip=True, rotate_deg=8.0), x, True, key=4)
  np.testing.assert_allclose(out[:, :, 7, 7], scaled(x[:, :, 7, 7]),
                             atol=1e-5)
  moved = [not np.allclose(out[b], scaled(x[b]), atol=1e-3) and
           not np.allclose(out[b], scaled(x[b, :, :, ::-1]), atol=1e-3)
           for b in range(8)]
  assert all(moved)


def test_rotation_of_a_ramp_is_a_rotated_ramp():
  """I(y, x) = 128 + 8 (x - 7) rotated by theta about the centre (bilinear is
  exact on planes): inside the radius-7 disk the output is the plane
  128 + 8 (+-cos(theta) dx - sin(theta) dy), gradient norm 8 (a rotation,
  not a scale), |theta| <= rotate_deg, both rotation signs occur."""
  size, deg = 15, 10.0
  ramp = (128 + 8 * (np.arange(size) - 7)).astype(np.uint8)
  img = np.broadcast_to(ramp[None, :, None], (size, size, 3))
  x = np.broadcast_to(img, (16, 1) + img.shape).copy()
  out = run(AugmentSpec(size, size, flip=True, rotate_deg=deg), x, True,
            key=11)
  yy, xx = np.meshgrid(np.arange(size) - 7.0, np.arange(size) - 7.0,
                       indexing="ij")
  disk = yy**2 + xx**2 <= 6.5**2
  design = np.stack([np.ones(disk.sum()), xx[disk], yy[disk]], 1)
  angles = []
  for b in range(16):
    vals = (out[b, 0, ..., 0][disk] + 1.0) * 127.5
    coef, *_ = np.linalg.lstsq(design, vals, rcond=None)
    np.testing.assert_allclose(design @ coef, vals, atol=2e-3)  # a plane
    c0, gx, gy = coef
    assert abs(c0 - 128) < 1e-3
    assert abs(np.hypot(gx, gy) - 8) < 1e-3
    angles.append(np.degrees(np.arctan2(-gy, abs(gx))))
  angles = np.array(angles)
  assert np.all(np.abs(angles) <= deg + 1e-3)
  assert angles.min() < -1 and angles.max() > 1
  # All channels identical (channels are sampled together).
  np.testing.assert_allclose(out[..., 0], out[..., 2], atol=1e-6)


def test_augment_slots_splits_views():
  """augment_slots stacks the slots as views and returns one array per slot,
  with the same transform (neutral = 255 - image gives negated output)."""
  x = frames(b=4, v=1, h=16)[:, 0]
  batch = {"image": x, "neutral": 255 - x}
  spec = AugmentSpec(16, 12, flip=True, rotate_deg=5.0)
  slots_jit = jax.jit(augment_slots, static_argnums=(0, 3, 4))
  a, b = slots_jit(spec, jax.random.key(0), batch, ("image", "neutral"), True)
  np.testing.assert_allclose(np.asarray(a) + np.asarray(b), 0.0, atol=1e-5)
  full = run(spec, np.stack([x, 255 - x], 1), True, key=0)
  np.testing.assert_allclose(a, full[:, 0], atol=1e-5)


def test_bad_inputs_raise():
  """crop > resize names config.data.crop; 4-D frames are rejected."""
  with pytest.raises(ValueError, match=r"config\.data\.crop"):
    AugmentSpec(resize=8, crop=10)
  with pytest.raises(ValueError, match="views"):
    augment(AugmentSpec(16, 16), jax.random.key(0), frames()[:, 0], True)


def test_eval_centre_crop_odd_margin_is_pixel_exact():
  """resize 16, crop 11: eval output should be a pixel-exact window
  (torchvision: x[2:13] or x[3:14]), not an interpolation between them."""
  x = frames(b=2, h=16)
  out = run(AugmentSpec(resize=16, crop=11, flip=False), x, False)
  windows = [scaled(x[:, :, i:i + 11, i:i + 11]) for i in (2, 3)]
  assert any(np.allclose(out, w, atol=1e-5) for w in windows)


def _dots(size, points, sigma=1.5):
  """uint8 (B, size, size, 3): a Gaussian dot at each (x, y) point (pixel
  centres at +0.5), one image per point set."""
  u = np.arange(size) + 0.5
  yy, xx = np.meshgrid(u, u, indexing="ij")
  out = []
  for pts in points:
    img = sum(np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
              for x, y in pts)
    out.append(np.repeat((255 * np.clip(img, 0, 1))[..., None], 3, -1))
  return np.asarray(out, np.uint8)


def _centroid(img):
  w = np.clip(np.asarray(img)[..., 0] + 1.0, 0, None)  # [-1, 1] -> weight
  w = np.where(w > 0.2, w, 0.0)
  u = np.arange(w.shape[0]) + 0.5
  yy, xx = np.meshgrid(u, u, indexing="ij")
  return np.array([(w * xx).sum(), (w * yy).sum()]) / w.sum()


def test_landmark_augment_eval_is_the_eval_view():
  """train=False: the images are augment()'s eval view and the points are
  mapped like the view (resize 40 -> crop 32 of a 48 px source)."""
  spec = AugmentSpec(resize=40, crop=32, flip=False)
  rng = np.random.default_rng(0)
  imgs = rng.integers(0, 256, (2, 48, 48, 3), np.uint8)
  pts = rng.uniform(10, 38, (2, 5, 2)).astype(np.float32)
  out, lm = augment_with_landmarks(spec, jax.random.key(0), imgs, pts, False)
  ref = augment(spec, jax.random.key(0), imgs[:, None], False)[:, 0]
  np.testing.assert_allclose(out, ref, atol=1e-5)
  np.testing.assert_allclose(lm, (pts * 40 / 48 - 4) / 32, atol=1e-6)


def test_landmark_augment_maps_points_of_a_downscaled_source():
  """A 128 px source viewed at 32 px (box-prefiltered by 4 first): points
  scale by 32 / 128 of the source, not of the prefiltered frame, and a dot
  drawn at a point is found there in the output."""
  spec = AugmentSpec(resize=32, crop=32, flip=False)
  pts = np.array([[[40.0, 72.0]], [[88.0, 56.0]]], np.float32)
  out, lm = augment_with_landmarks(spec, jax.random.key(0),
                                   _dots(128, pts, sigma=4.0), pts, False)
  np.testing.assert_allclose(lm, pts / 128, atol=1e-6)
  for img, p in zip(np.asarray(out), np.asarray(lm)[:, 0] * 32):
    np.testing.assert_allclose(_centroid(img), p, atol=0.35)


def test_landmark_augment_points_follow_the_pixels():
  """A random similarity: each image holds one dot at its point; after the
  transform the dot's centroid is where the returned point says."""
  spec = AugmentSpec(resize=64, crop=64, flip=False)
  rng = np.random.default_rng(1)
  pts = rng.uniform(22, 42, (6, 1, 2)).astype(np.float32)
  out, lm = augment_with_landmarks(spec, jax.random.key(3), _dots(64, pts),
                                   pts, True, rotate_deg=20.0, scale=0.2,
                                   shift=0.1)
  moved = np.asarray(lm)[:, 0] * 64
  assert np.abs(moved - pts[:, 0]).max() > 2.0  # the transform did move them
  for img, p in zip(np.asarray(out), moved):
    np.testing.assert_allclose(_centroid(img), p, atol=0.35)
