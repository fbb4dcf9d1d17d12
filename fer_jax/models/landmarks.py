"""A 68-point facial landmark regressor (cGAN+WSC, METHODS.md section 5).

The paper locates iBUG landmarks with an AAM; here a ResNet regresses them
from the face, trained on the data set's own landmarks (CK+ ships them, so
does the synthetic set), so the same network can mark both a real face and
the cGAN's generated neutral face. Outputs are (x, y) as fractions of the
input side, so the net is independent of the image size.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from fer_jax.models.resnet import resnet

NUM_POINTS = 68
# Outer eye corners (iBUG 37 and 46, 0-based 36 and 45): the normaliser of
# the normalised mean error (NME).
OUTER_EYE_CORNERS = (36, 45)


class LandmarkNet(nn.Module):
  arch: str = "resnet18"
  base_width: int = 64
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    """x (B, H, W, C) in [-1, 1] -> (B, 68, 2) float32 (x, y) in [0, 1]."""
    feats = resnet(self.arch, num_classes=0, base_width=self.base_width,
                   dtype=self.dtype, param_dtype=self.param_dtype,
                   name="backbone")(x, train)
    out = nn.Dense(2 * NUM_POINTS, kernel_init=nn.initializers.zeros,
                   dtype=self.dtype, param_dtype=self.param_dtype,
                   name="head")(feats)
    # Zero-initialised head: every point starts at the image centre.
    return 0.5 + out.astype(jnp.float32).reshape(-1, NUM_POINTS, 2)


def normalised_mean_error(pred, true):
  """Mean point-to-point distance over the outer-eye-corner distance, per
  face (B,): the 300-W / iBUG NME."""
  pred = jnp.asarray(pred, jnp.float32)
  true = jnp.asarray(true, jnp.float32)
  a, b = OUTER_EYE_CORNERS
  iod = jnp.linalg.norm(true[:, a] - true[:, b], axis=-1)
  err = jnp.mean(jnp.linalg.norm(pred - true, axis=-1), axis=-1)
  return err / jnp.maximum(iod, 1e-6)
