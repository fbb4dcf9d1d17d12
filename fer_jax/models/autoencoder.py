"""SNA's asymmetric denoising autoencoder (Fu et al., Table I) and its WGAN
critic.

Encoder: dropout 0.1 on the input, four 3x3 stride-2 convs (16, 32, 64, 80
channels at 112 px: 56, 28, 14, 7), BN + LeakyReLU(0.01) + dropout 0.1 on
the first three, BN + tanh on the fourth, then a FC to the 64-d code.
Decoder: a FC back to 80 x 7 x 7, then 3x3 stride-2 transposed convs to 64,
32, 16 and 16 channels (14, 28, 56, 112), each followed by two stacked
ResBlocks (the last ends in ReLU), and the output transposed conv (stride 1:
Table I's output stays 112) to one channel with one ResBlock: nine
ResBlocks. The decoder returns its image and its recoveries of the
encoder's four hidden levels (the FC output and the first three stages), the
five scales of the multi-scale loss (eq. 4).

The critic (eq. 6-7) is not specified by the paper: a DCGAN-style stack of
4x4 stride-2 convs with LeakyReLU(0.2) and no normalisation (weight
clipping, as WGAN), then a linear score.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

Dtype = Any
PAPER_ENC = (16, 32, 64, 80)
PAPER_DEC = (64, 32, 16, 16)
PAPER_RES = (2, 2, 2, 2, 1)
PAPER_CODE = 64


class Encoder(nn.Module):
  """Returns (code (B, code_dim), [hidden level 1..4]) of (B, S, S, 1)."""
  widths: Sequence[int] = PAPER_ENC
  code_dim: int = PAPER_CODE
  dropout: float = 0.1
  bn_momentum: float = 0.9
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False, noisy: bool | None = None):
    """``noisy`` (default: ``train``) applies the denoising dropout; a
    training-mode clean pass (BN batch statistics, no dropout) gives the
    targets of eq. 4."""
    noisy = train if noisy is None else noisy
    if x.shape[1] % 16 or x.shape[2] % 16:
      raise ValueError(f"the autoencoder needs a face size divisible by 16 "
                       f"(four stride-2 convs), got {x.shape[1:3]}")
    drop = lambda h: nn.Dropout(self.dropout, deterministic=not noisy)(h)
    h = drop(x.astype(self.dtype))
    hidden = []
    for i, w in enumerate(self.widths):
      h = nn.Conv(w, (3, 3), (2, 2), padding="SAME", dtype=self.dtype,
                  param_dtype=self.param_dtype, name=f"conv{i}")(h)
      h = nn.BatchNorm(use_running_average=not train,
                       momentum=self.bn_momentum, dtype=self.dtype,
                       param_dtype=self.param_dtype, name=f"bn{i}")(h)
      if i < len(self.widths) - 1:
        h = drop(nn.leaky_relu(h, 0.01))
      else:
        h = jnp.tanh(h)
      hidden.append(h)
    code = nn.Dense(self.code_dim, dtype=self.dtype,
                    param_dtype=self.param_dtype, name="fc")(
                        h.reshape((h.shape[0], -1)))
    return code.astype(jnp.float32), hidden


class ResBlock(nn.Module):
  """He et al.'s basic block: x + BN(conv(ReLU(BN(conv(x))))), then ReLU
  unless ``final`` (the output block, whose image may be negative)."""
  final: bool = False
  bn_momentum: float = 0.9
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    w = x.shape[-1]
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    bn = lambda: nn.BatchNorm(use_running_average=not train,
                              momentum=self.bn_momentum, **kw)
    y = nn.Conv(w, (3, 3), padding="SAME", use_bias=False, **kw)(x)
    y = nn.relu(bn()(y))
    y = nn.Conv(w, (3, 3), padding="SAME", use_bias=False, **kw)(y)
    y = bn()(y)
    return x + y if self.final else nn.relu(x + y)


class Decoder(nn.Module):
  """code (B, code_dim) -> (image (B, S, S, out_channels), [recovered
  hidden level 1..4]) where S = 16 * ``bottleneck``."""
  bottleneck: int = 7
  enc_top: int = PAPER_ENC[-1]
  widths: Sequence[int] = PAPER_DEC
  res_blocks: Sequence[int] = PAPER_RES
  out_channels: int = 1
  bn_momentum: float = 0.9
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, code, train: bool = False):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    s = self.bottleneck
    h = nn.Dense(s * s * self.enc_top, name="fc", **kw)(code.astype(self.dtype))
    h = h.reshape((h.shape[0], s, s, self.enc_top))
    recovered = [h]
    for i, (w, n) in enumerate(zip(self.widths, self.res_blocks)):
      h = nn.ConvTranspose(w, (3, 3), (2, 2), padding="SAME",
                           name=f"tconv{i}", **kw)(h)
      for j in range(n):
        h = ResBlock(bn_momentum=self.bn_momentum, name=f"res{i}_{j}",
                     **kw)(h, train)
      recovered.append(h)
    h = nn.ConvTranspose(self.out_channels, (3, 3), (1, 1), padding="SAME",
                         name="tconv_out", **kw)(h)
    for j in range(self.res_blocks[len(self.widths)]):
      h = ResBlock(final=True, bn_momentum=self.bn_momentum,
                   name=f"res_out_{j}", **kw)(h, train)
    # The first three stride-2 stages recover encoder levels 3, 2, 1; the
    # fourth (to full size, "D-TConv-t") is the extra refinement stage.
    hidden = recovered[:len(self.widths)][::-1]
    return h.astype(jnp.float32), hidden


class Critic(nn.Module):
  """WGAN critic: (B, S, S, C) -> (B,) unbounded scores."""
  widths: Sequence[int] = (64, 128, 256, 256)
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    h = x.astype(self.dtype)
    for i, w in enumerate(self.widths):
      h = nn.Conv(w, (4, 4), (2, 2), padding="SAME", dtype=self.dtype,
                  param_dtype=self.param_dtype, name=f"conv{i}")(h)
      h = nn.leaky_relu(h, 0.2)
    h = h.reshape((h.shape[0], -1))
    return nn.Dense(1, dtype=self.dtype, param_dtype=self.param_dtype,
                    name="fc")(h)[:, 0].astype(jnp.float32)
