"""pix2pix U-Net generator (Isola et al. CVPR 2017) with IF-GAN's SAGAN blocks.

Encoder level l (l = 0 .. depth-1) is a 4x4 stride-2 convolution to
min(base_features * 2**l, max_features) channels, so its output is input /
2**(l+1) wide; decoder level l is a 4x4 stride-2 transposed convolution back to
that width and channel count, concatenated with encoder level l's output (the
skip connection), and a last transposed convolution maps level 0 to the image.
IF-GAN (fig. 3) adds three self-attention blocks: one on a skip connection, one
on the encoding path, one on the decoding path. cGAN+WSC (docs/methods.md
section 5) uses the plain net with depth 6.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fer_jax.models import fast_layers
from fer_jax.models.attention import SelfAttention

Dtype = Any

ATTENTION_KINDS = ("encoder", "skip", "decoder")

# IF-GAN's three blocks. Levels count from the image: level l works at
# input / 2**(l+1) (224 input: 0 -> 112, 1 -> 56, 2 -> 28). Fig. 6 shows the
# last decoder block, the one closest to the generated image, at 56x56 for a
# 224 input, i.e. level 1; the skip block sits on the 56x56 copy that joins it
# (fig. 3's lilac box), and the encoder block one level deeper, at 28x28, where
# a 784 x 784 map is cheap and each position already sees a whole face part.
DEFAULT_ATTENTION_LEVELS = {"encoder": 2, "skip": 1, "decoder": 1}
IFGAN_ATTENTION = ("skip", "encoder", "decoder")

# pix2pix's init: N(0, 0.02) convolutions, BatchNorm scale N(1, 0.02).
conv_init = nn.initializers.normal(0.02)


def bn_scale_init(key, shape, dtype=jnp.float32):
  return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


class UNet(nn.Module):
  """Image-to-image U-Net over NHWC images in [-1, 1]; returns tanh output.

  Encoder: C(base) without norm, then conv-BatchNorm-LeakyReLU(0.2) levels
  (activation applied before the next convolution, as the reference code).
  The innermost level has no BatchNorm unless ``bottleneck_norm`` (the
  pix2pix code drops it: at a 1x1 bottleneck with batch 1 BatchNorm zeroes
  the code). Decoder: ReLU-transposed conv-BatchNorm levels, dropout
  ``dropout_rate`` on the first ``num_dropout`` counted from the bottleneck
  (the paper's CD512-CD1024-CD1024; the reference code shifts them one level
  out). Dropout runs only when ``train`` and a 'dropout' rng is given.
  Padding 1 on the 4x4 stride-2 convolutions (torch's p=1) halves and doubles
  each level exactly, so the input must be divisible by 2**depth: 224 works
  up to depth 5 (7x7 bottleneck), 256 up to 8.

  ``attention[i]`` names the kind of the i-th SAGAN block ('encoder': after
  encoder level l, seen by the deeper levels and by its skip copy; 'skip': on
  the copy of encoder level l's output only; 'decoder': on decoder level l's
  output, before the concatenation) and ``attention_levels[i]`` its level l;
  an empty ``attention_levels`` takes ``DEFAULT_ATTENTION_LEVELS`` per kind,
  so ``attention=IFGAN_ATTENTION`` is IF-GAN's generator.
  """
  depth: int = 8
  base_features: int = 64
  max_features: int = 512
  out_channels: int = 3
  num_dropout: int = 3
  dropout_rate: float = 0.5
  attention: tuple[str, ...] = ()
  attention_levels: tuple[int, ...] = ()
  attention_reduction: int = 8
  bottleneck_norm: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  # The same math as fast_layers' rewrites (False: XLA's plain lowering).
  fast_layers: bool = True

  def level_features(self, level: int) -> int:
    return min(self.base_features * 2**level, self.max_features)

  def attention_sites(self) -> tuple[tuple[str, int], ...]:
    """(kind, level) of each attention block, validated against ``depth``."""
    if self.depth < 1:
      raise ValueError(f"UNet.depth={self.depth} must be >= 1")
    levels = self.attention_levels
    if not levels:
      levels = tuple(DEFAULT_ATTENTION_LEVELS.get(k, -1)
                     for k in self.attention)
    if len(levels) != len(self.attention):
      raise ValueError(
          f"UNet.attention_levels={self.attention_levels} must give one level "
          f"per entry of UNet.attention={self.attention}")
    sites = tuple(zip(self.attention, levels))
    for kind, level in sites:
      if kind not in ATTENTION_KINDS:
        raise ValueError(f"UNet.attention entry {kind!r}: choose from "
                         f"{', '.join(ATTENTION_KINDS)}")
      top = self.depth - 1 if kind == "encoder" else self.depth - 2
      if not 0 <= level <= top:
        raise ValueError(
            f"UNet.attention_levels: {kind} attention at level {level} does "
            f"not exist with UNet.depth={self.depth} (levels 0..{top})")
    if len(set(sites)) != len(sites):
      raise ValueError(f"UNet.attention: repeated (kind, level) in {sites}")
    return sites

  def _check_size(self, x):
    h, w = x.shape[1:3]
    n = 2**self.depth
    if h % n or w % n:
      raise ValueError(
          f"UNet.depth={self.depth} needs an input size divisible by "
          f"2**depth = {n}; got {h}x{w}. Lower UNet.depth (the bottleneck is "
          f"input / 2**depth pixels wide) or change the image size.")

  def _bn(self, train, name):
    return nn.BatchNorm(use_running_average=not train, momentum=0.9,
                        epsilon=1e-5, scale_init=bn_scale_init,
                        dtype=self.dtype, param_dtype=self.param_dtype,
                        name=name)

  def _attend(self, h, kind, level, maps, return_attention):
    name = f"{kind}_{level}"
    block = SelfAttention(self.attention_reduction, dtype=self.dtype,
                          param_dtype=self.param_dtype,
                          name=f"attention_{name}")
    if return_attention:
      h, maps[name] = block(h, return_attention=True)
      return h
    return block(h)

  @nn.compact
  def __call__(self, x, train: bool, return_attention: bool = False):
    sites = set(self.attention_sites())
    self._check_size(x)
    maps = {}
    deterministic = not (train and self.has_rng("dropout"))
    h = x.astype(self.dtype)

    skips = []
    for level in range(self.depth):
      if level > 0:
        h = nn.leaky_relu(h, 0.2)
      norm = level > 0 and (level < self.depth - 1 or self.bottleneck_norm)
      # nn.Conv(4x4, stride 2, padding 1) with the same params; the thin
      # full-resolution image layer runs as space-to-depth (fast_layers:
      # cuDNN pads 3 channels to 8), the others as nn.Conv would.
      h = fast_layers.StridedConv(
          self.level_features(level), 4, 2, padding=1, use_bias=not norm,
          kernel_init=conv_init, dtype=self.dtype,
          param_dtype=self.param_dtype, fast=self.fast_layers,
          name=f"enc{level}_conv")(h)
      if norm:
        h = self._bn(train, f"enc{level}_bn")(h)
      if ("encoder", level) in sites:
        h = self._attend(h, "encoder", level, maps, return_attention)
      skips.append(h)

    # Transposed-conv padding (2, 2) on the stride-dilated input is torch's
    # ConvTranspose2d(k=4, s=2, p=1): the output is exactly twice as wide.
    up_pad = ((2, 2), (2, 2))
    for i, level in enumerate(reversed(range(self.depth - 1))):
      h = nn.relu(h)
      h = nn.ConvTranspose(self.level_features(level), (4, 4), (2, 2),
                           padding=up_pad, use_bias=False,
                           kernel_init=conv_init, dtype=self.dtype,
                           param_dtype=self.param_dtype,
                           name=f"dec{level}_conv")(h)
      h = self._bn(train, f"dec{level}_bn")(h)
      if i < self.num_dropout:
        h = nn.Dropout(self.dropout_rate, deterministic=deterministic)(h)
      if ("decoder", level) in sites:
        h = self._attend(h, "decoder", level, maps, return_attention)
      skip = skips[level]
      if ("skip", level) in sites:
        skip = self._attend(skip, "skip", level, maps, return_attention)
      h = jnp.concatenate([skip, h], axis=-1)  # torch's cat([x, model(x)])

    h = nn.relu(h)
    # nn.ConvTranspose(out_channels, (4, 4), (2, 2), padding=up_pad) with the
    # same params, as a sub-pixel conv for few output channels (fast_layers).
    h = fast_layers.SubPixelConvTranspose(
        self.out_channels, kernel_init=conv_init, dtype=self.dtype,
        param_dtype=self.param_dtype, fast=self.fast_layers,
        name="out_conv")(h)
    y = jnp.tanh(h.astype(jnp.float32))
    if return_attention:
      return y, maps
    return y
