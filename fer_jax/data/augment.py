"""On-device augmentation in jax.numpy, run inside the jitted train step.

Resize, random crop, horizontal flip and small rotation are one affine map
from output pixels to source pixels, sampled bilinearly in a single gather, so
the host never touches a pixel. Every image slot of an example (an examined
frame and its neutral, a weak frame and its peak) gets the SAME transform and
the same noise field, as the papers require for pairs.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

LUMA = jnp.array([0.299, 0.587, 0.114], jnp.float32)


@dataclasses.dataclass(frozen=True)
class AugmentSpec:
  """What the step does to uint8 frames before the networks see them.

  Frames are scaled to ``resize`` then cropped to ``crop`` (random in
  training, centred in evaluation), optionally flipped and rotated by up to
  ``rotate_deg`` degrees, converted to grey, and given Gaussian noise of std
  ``noise_std`` (in the [-1, 1] output scale).
  """
  resize: int
  crop: int
  flip: bool = True
  rotate_deg: float = 0.0
  noise_std: float = 0.0
  grey: bool = False

  def __post_init__(self):
    if self.crop > self.resize:
      raise ValueError(f"config.data.crop={self.crop} exceeds "
                       f"config.data.resize={self.resize}")

  @classmethod
  def from_config(cls, data_cfg) -> "AugmentSpec":
    return cls(resize=data_cfg.resize, crop=data_cfg.crop,
               flip=data_cfg.flip, rotate_deg=data_cfg.rotate_deg,
               noise_std=data_cfg.noise_std, grey=data_cfg.grey)

  @property
  def channels(self) -> int:
    return 1 if self.grey else 3


def _bilinear(image, y, x):
  """image (H, W, C) sampled at float pixel coords (h, w); edges clamped."""
  h, w = image.shape[:2]
  y0, x0 = jnp.floor(y), jnp.floor(x)
  wy, wx = (y - y0)[..., None], (x - x0)[..., None]
  y0 = y0.astype(jnp.int32)
  x0 = x0.astype(jnp.int32)

  def at(yy, xx):
    return image[jnp.clip(yy, 0, h - 1), jnp.clip(xx, 0, w - 1)]

  top = at(y0, x0) * (1 - wx) + at(y0, x0 + 1) * wx
  bottom = at(y0 + 1, x0) * (1 - wx) + at(y0 + 1, x0 + 1) * wx
  return top * (1 - wy) + bottom * wy


def _prefilter(images, resize: int):
  """Box-filter by the integer factor of a large downscale (anti-aliasing)."""
  size = images.shape[-2]
  factor = size // resize
  if factor < 2:
    return images
  *lead, h, w, c = images.shape
  h2, w2 = h // factor, w // factor
  x = images[..., :h2 * factor, :w2 * factor, :].reshape(
      *lead, h2, factor, w2, factor, c)
  return x.mean(axis=(-4, -2))


def _source(images, resize: int):
  """uint8 (..., H, W, C) -> float32 RGB, box-prefiltered for ``resize``."""
  x = images.astype(jnp.float32)
  if x.shape[-1] == 1:
    x = jnp.broadcast_to(x, x.shape[:-1] + (3,))
  return _prefilter(x, resize)


def _output(spec: AugmentSpec, sampled):
  """Sampled [0, 255] pixels -> [-1, 1], grey if the spec asks."""
  out = sampled / 127.5 - 1.0
  if spec.grey:
    out = jnp.sum(out * LUMA, axis=-1, keepdims=True)
  return out


def view_points(spec: AugmentSpec, points, src_size: int):
  """(x, y) points in source pixels of a ``src_size`` frame -> fractions of
  the evaluation view (resize to ``spec.resize``, centre crop)."""
  r, c = float(spec.resize), spec.crop
  offset = float(round((r - c) / 2))
  return (jnp.asarray(points, jnp.float32) * (r / src_size) - offset) / c


def _sample_grid(spec: AugmentSpec, src_size: int, key, train: bool):
  """Source (y, x) coordinates of every output pixel for one example."""
  r, c = float(spec.resize), spec.crop
  k_crop, k_flip, k_rot = jax.random.split(key, 3)
  if train:
    # Integer offsets, uniform over 0..r-c as torchvision's RandomCrop.
    offset = jax.random.randint(k_crop, (2,), 0, int(r) - c + 1).astype(
        jnp.float32)
    flip = spec.flip & (jax.random.uniform(k_flip) < 0.5)
    angle = jnp.deg2rad(spec.rotate_deg) * jax.random.uniform(
        k_rot, minval=-1.0, maxval=1.0)
  else:
    offset = jnp.full((2,), float(round((r - c) / 2)))  # pixel-exact
    flip = jnp.asarray(False)
    angle = jnp.asarray(0.0)
  u = jnp.arange(c, dtype=jnp.float32) + 0.5
  yy, xx = jnp.meshgrid(u, u, indexing="ij")
  xx = jnp.where(flip, c - xx, xx)
  yy, xx = yy + offset[0] - r / 2, xx + offset[1] - r / 2
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  ys = sin * xx + cos * yy + r / 2
  xs = cos * xx - sin * yy + r / 2
  scale = src_size / r
  return ys * scale - 0.5, xs * scale - 0.5


def augment(spec: AugmentSpec, key, views, train: bool):
  """uint8 (B, V, H, W, C) -> float32 (B, V, crop, crop, channels) in [-1, 1].

  One random transform per example, shared by its V views.
  """
  if views.ndim != 5:
    raise ValueError(f"augment expects (batch, views, H, W, C) frames, got "
                     f"shape {views.shape}")
  b = views.shape[0]
  x = _source(views, spec.resize)
  src = x.shape[-2]
  k_geo, k_noise = jax.random.split(key)
  ys, xs = jax.vmap(lambda k: _sample_grid(spec, src, k, train))(
      jax.random.split(k_geo, b))
  sample = jax.vmap(jax.vmap(_bilinear, in_axes=(0, None, None)))
  out = _output(spec, sample(x, ys, xs))
  if train and spec.noise_std > 0:
    noise = spec.noise_std * jax.random.normal(
        k_noise, (b, 1) + out.shape[2:], jnp.float32)
    out = out + noise
  return out


def augment_slots(spec: AugmentSpec, key, batch: dict, slots, train: bool):
  """The batch's image ``slots`` augmented together: returns a list per slot."""
  views = jnp.stack([batch[s] for s in slots], axis=1)
  out = augment(spec, key, views, train)
  return [out[:, i] for i in range(len(slots))]


def augment_with_landmarks(spec: AugmentSpec, key, images, landmarks,
                           train: bool, rotate_deg: float = 10.0,
                           scale: float = 0.1, shift: float = 0.08):
  """Faces and their points moved together, for landmark regression.

  uint8 images (B, H, W, C) and landmarks (B, P, 2) as (x, y) source pixels
  -> the evaluation view (resize, centre crop) in [-1, 1] and the points as
  fractions of it. In training, a random similarity about the view centre
  (rotation up to ``rotate_deg``, scale 1 +- ``scale``, shift up to
  ``shift`` of the side) moves both, so the regressor must find the points
  instead of recalling the training subjects' face shapes. (No flips: they
  would renumber the points.)
  """
  b = images.shape[0]
  x = _source(images, spec.resize)
  src = x.shape[-2]
  r, c = float(spec.resize), float(spec.crop)
  off = float(round((r - c) / 2))
  if train:
    k_rot, k_scale, k_shift = jax.random.split(key, 3)
    angle = jnp.deg2rad(rotate_deg) * jax.random.uniform(k_rot, (b,), minval=-1.0,
                                                         maxval=1.0)
    zoom = 1.0 + scale * jax.random.uniform(k_scale, (b,), minval=-1.0,
                                            maxval=1.0)
    move = shift * c * jax.random.uniform(k_shift, (b, 2), minval=-1.0,
                                          maxval=1.0)
  else:
    angle, zoom, move = jnp.zeros((b,)), jnp.ones((b,)), jnp.zeros((b, 2))
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  u = jnp.arange(spec.crop, dtype=jnp.float32) + 0.5
  yy, xx = jnp.meshgrid(u, u, indexing="ij")
  dx, dy = xx - c / 2, yy - c / 2

  def grid(cs, sn, z, t):  # output pixel -> eval-view point -> source index
    ex = z * (cs * dx - sn * dy) + c / 2 + t[0]
    ey = z * (sn * dx + cs * dy) + c / 2 + t[1]
    return (ey + off) * src / r - 0.5, (ex + off) * src / r - 0.5

  ys, xs = jax.vmap(grid)(cos, sin, zoom, move)
  out = _output(spec, jax.vmap(_bilinear)(x, ys, xs))
  # The inverse map on the points: source pixel -> eval view -> output.
  e = view_points(spec, landmarks, images.shape[-2]) * c
  px = e[..., 0] - c / 2 - move[:, None, 0]
  py = e[..., 1] - c / 2 - move[:, None, 1]
  ox = (cos[:, None] * px + sin[:, None] * py) / zoom[:, None] + c / 2
  oy = (-sin[:, None] * px + cos[:, None] * py) / zoom[:, None] + c / 2
  return out, jnp.stack([ox, oy], axis=-1) / c
