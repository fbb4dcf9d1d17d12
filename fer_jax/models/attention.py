"""SAGAN self-attention (Zhang et al. ICML 2019), as IF-GAN's fig. 4 draws it.

Every output position is a weighted sum of the values at all positions, so the
generator relates far-apart face regions (brows and mouth) in one layer
(IF-GAN section 3.1; the attention maps of its fig. 6 are rows of ``beta``).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any


class SelfAttention(nn.Module):
  """o = gamma * softmax(q k^T) v + x over the H*W positions of NHWC ``x``.

  q, k are 1x1 convolutions to C // ``reduction`` channels (fig. 4: C2 = C1/8;
  at least 1), v a 1x1 convolution to C channels (fig. 4's magenta boxes: no
  SAGAN-style C/2 value plus output projection). Row j of the attention map
  is query position j's softmax over all key positions i (SAGAN eq. 1,
  beta_{j,i}), computed in float32. gamma starts at 0 (SAGAN section 4), so a
  fresh block is the identity and the network first relies on local
  convolution cues. No 1/sqrt(d) scaling, as SAGAN.
  """
  reduction: int = 8
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def _conv(self, features, name):
    return nn.Conv(features, (1, 1), dtype=self.dtype,
                   param_dtype=self.param_dtype, name=name)

  @nn.compact
  def __call__(self, x, return_attention: bool = False):
    b, h, w, c = x.shape
    x = x.astype(self.dtype)
    inner = max(1, c // self.reduction)
    q = self._conv(inner, "query")(x).reshape(b, h * w, inner)
    k = self._conv(inner, "key")(x).reshape(b, h * w, inner)
    v = self._conv(c, "value")(x).reshape(b, h * w, c)
    energy = jnp.einsum("bjd,bid->bji", q, k,
                        preferred_element_type=jnp.float32)
    attention = jax.nn.softmax(energy.astype(jnp.float32), axis=-1)
    o = jnp.einsum("bji,bic->bjc", attention.astype(self.dtype), v)
    gamma = self.param("gamma", nn.initializers.zeros, (), self.param_dtype)
    y = gamma.astype(self.dtype) * o.reshape(b, h, w, c) + x
    if return_attention:
      return y, attention
    return y
