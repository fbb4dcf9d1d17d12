"""A ResNet classifier that also returns its pooled features.

IF-GAN's island loss and GNDL-style analyses need the penultimate features
beside the logits; the backbone keeps torchvision's names under ``backbone``
so ImageNet weights load into it unchanged.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from fer_jax.models.resnet import resnet


class ResNetClassifier(nn.Module):
  arch: str
  num_classes: int
  base_width: int = 64
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  fast_layers: bool = True  # the ResNet's (fer_jax.models.fast_layers)

  @nn.compact
  def __call__(self, x, train: bool = False):
    """Returns (logits (B, K) float32, features (B, C) float32)."""
    feats = resnet(self.arch, num_classes=0, base_width=self.base_width,
                   dtype=self.dtype, param_dtype=self.param_dtype,
                   fast_layers=self.fast_layers, name="backbone")(x, train)
    logits = nn.Dense(self.num_classes, dtype=self.dtype,
                      param_dtype=self.param_dtype, name="fc")(feats)
    return logits.astype(jnp.float32), feats
