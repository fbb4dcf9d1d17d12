"""GroupGAN's generator and discriminators (Niu et al. 2022, sec. 3.2).

G is an encoder-decoder: four convolutions (kernels 7, 5, 3, 3, each stride
2 and followed by a residual block), the extractor's expression vector F_exp
concatenated to the bottleneck (broadcast over its positions), then four
transposed convolutions and two 3x3 convolutions back to an image in [-1, 1].
D and D' are "VGG-like" (pairs of 3x3 convolutions, the second of each pair
with stride 2, then fully connected layers); in the 2V2 scheme they also take
F_exp as a condition, concatenated to the flattened features (eq. 14-17).

``init_scheme='paper'`` draws every weight from N(0, 0.01) and sets every bias to 1
(sec. 4.2); 'default' keeps Flax's He/LeCun initialisers, which train from
scratch on small data where the paper's init (meant for ImageNet-pretrained
BaseNets) stalls.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from fer_jax.models.basenets import PAPER_INIT

Dtype = Any
INITS = ("default", "paper")


def initializers(init: str):
  """(kernel_init, bias_init) for ``init`` in INITS."""
  if init == "paper":
    return PAPER_INIT
  if init == "default":
    return (nn.initializers.variance_scaling(2.0, "fan_in", "normal"),
            nn.initializers.zeros)
  raise ValueError(f"init {init!r}: choose one of {INITS}")


class _Layers(nn.Module):
  """Shared constructors: convolutions and BatchNorm with one init policy."""
  init_scheme: str = "default"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def conv(self, features, kernel, strides=1, name=None, transpose=False):
    k_init, b_init = initializers(self.init_scheme)
    if transpose:
      # 4x4 stride 2 'SAME' doubles the size exactly (torch k4 s2 p1);
      # stride 1 keeps it.
      return nn.ConvTranspose(features, (4, 4), (strides, strides),
                              padding="SAME",
                              kernel_init=k_init, bias_init=b_init,
                              dtype=self.dtype, param_dtype=self.param_dtype,
                              name=name)
    pad = kernel // 2
    return nn.Conv(features, (kernel, kernel), (strides, strides),
                   padding=((pad, pad), (pad, pad)), kernel_init=k_init,
                   bias_init=b_init, dtype=self.dtype,
                   param_dtype=self.param_dtype, name=name)

  def dense(self, features, name=None):
    k_init, b_init = initializers(self.init_scheme)
    return nn.Dense(features, kernel_init=k_init, bias_init=b_init,
                    dtype=self.dtype, param_dtype=self.param_dtype, name=name)

  def bn(self, train, name=None):
    return nn.BatchNorm(use_running_average=not train, momentum=0.9,
                        epsilon=1e-5, dtype=self.dtype,
                        param_dtype=self.param_dtype, name=name)


class ResidualBlock(_Layers):
  """conv3-BN-ReLU-conv3-BN plus the input (He et al. 2016)."""
  features: int = 64

  @nn.compact
  def __call__(self, x, train: bool):
    h = nn.relu(self.bn(train, "bn1")(self.conv(self.features, 3,
                                                name="conv1")(x)))
    h = self.bn(train, "bn2")(self.conv(self.features, 3, name="conv2")(h))
    return nn.relu(x + h)


class MagnifyingGenerator(_Layers):
  """G: weak face (and F_exp) -> magnified (peak) face, same size.

  ``features`` are the four encoder widths and ``strides`` their strides
  (the paper gives only kernels; all 2 = a side/16 bottleneck); the decoder
  mirrors both. The input side must be a multiple of the total stride.

  ``upsample='resize'`` (not in the paper, whose decoder has transposed
  convolutions) upsamples by nearest-neighbour repetition and a 3x3
  convolution instead, which has no checkerboard.

  ``residual=True`` (not in the paper) makes G predict the change: the last
  convolution starts at zero and its output is added to the input before
  the tanh (in atanh space), so G starts as the identity and only has to
  learn the expression's change instead of redrawing the whole face from
  the bottleneck, which a short CPU run cannot.

  ``attention=True`` (not in the paper; GANimation's attention, Pumarola et
  al. 2018) adds a one-channel head: a mask A = sigmoid(.) in [0, 1] per
  pixel, and the output is the composite A * colour + (1 - A) * x of the
  colour image (as above, residual or plain) and the input, so G changes the
  face only where A > 0. A's head starts at zero (A = 0.5 everywhere); the
  method penalises A's mean and total variation (docs/methods.md, GroupGAN)
  so that G spends its change on a few connected regions.
  """
  features: Sequence[int] = (64, 128, 256, 512)
  kernels: Sequence[int] = (7, 5, 3, 3)
  strides: Sequence[int] = (2, 2, 2, 2)
  out_channels: int = 3
  residual: bool = False
  upsample: str = "transpose"  # "transpose" | "resize"
  attention: bool = False

  def encode(self, x, train: bool):
    total = 1
    for st in self.strides:
      total *= st
    if x.shape[1] % total or x.shape[2] % total:
      raise ValueError(f"GroupGAN's generator needs image sides divisible by "
                       f"{total} (strides {tuple(self.strides)}); got "
                       f"{x.shape[1:3]}: set config.data.crop to a multiple "
                       f"of {total}")
    h = x.astype(self.dtype)
    for i, (f, k, st) in enumerate(zip(self.features, self.kernels,
                                       self.strides)):
      h = self.conv(f, k, st, name=f"enc{i}_conv")(h)
      h = nn.relu(self.bn(train, f"enc{i}_bn")(h))
      h = ResidualBlock(features=f, init_scheme=self.init_scheme, dtype=self.dtype,
                        param_dtype=self.param_dtype, name=f"enc{i}_res")(
                            h, train)
    return h

  def decode(self, h, f_exp, train: bool, x=None):
    if f_exp is not None:
      cond = jnp.broadcast_to(f_exp[:, None, None, :].astype(h.dtype),
                              h.shape[:3] + (f_exp.shape[-1],))
      h = jnp.concatenate([h, cond], -1)
    widths = list(self.features[-2::-1]) + [self.features[0]]
    for i, (f, st) in enumerate(zip(widths, self.strides[::-1])):
      if self.upsample == "transpose":
        h = self.conv(f, 4, st, name=f"dec{i}_deconv", transpose=True)(h)
      elif self.upsample == "resize":
        # Nearest-neighbour x st, then a 3x3 convolution: every output pixel
        # is made by the same kernel. A k4 s2 transposed conv makes the four
        # pixel parities with four different 2x2 sub-kernels, which agree
        # only if training makes them: a checkerboard until then (Odena et
        # al. 2016). XLA:CPU also runs this without the transposed conv's
        # zero-dilated input.
        if st > 1:
          h = jnp.repeat(jnp.repeat(h, st, axis=1), st, axis=2)
        h = self.conv(f, 3, 1, name=f"dec{i}_conv")(h)
      else:
        raise ValueError(f"generator upsample {self.upsample!r}: choose "
                         "'transpose' or 'resize'")
      h = nn.relu(self.bn(train, f"dec{i}_bn")(h))
    h = nn.relu(self.bn(train, "out0_bn")(
        self.conv(self.features[0], 3, name="out0_conv")(h)))
    if not self.residual:
      colour = jnp.tanh(self.conv(self.out_channels, 3, name="out1_conv")(h)
                        .astype(jnp.float32))
    else:
      change = nn.Conv(self.out_channels, (3, 3), padding=((1, 1), (1, 1)),
                       kernel_init=nn.initializers.zeros, dtype=self.dtype,
                       param_dtype=self.param_dtype, name="out1_conv")(h)
      base = jnp.arctanh(jnp.clip(x.astype(jnp.float32), -0.999, 0.999))
      colour = jnp.tanh(base + change.astype(jnp.float32))
    if not self.attention:
      return colour, None
    mask = jax.nn.sigmoid(nn.Conv(
        1, (3, 3), padding=((1, 1), (1, 1)),
        kernel_init=nn.initializers.zeros, dtype=self.dtype,
        param_dtype=self.param_dtype, name="mask_conv")(h).astype(
            jnp.float32))
    return composite(mask, colour, x), mask[..., 0]

  @nn.compact
  def __call__(self, x, f_exp=None, train: bool = False,
               with_mask: bool = False):
    """x (B, H, W, C) in [-1, 1]; f_exp (B, F) or None (no extractor).
    Returns G's face, or with ``with_mask`` (face, A (B, H, W) or None
    without ``attention``)."""
    out, mask = self.decode(self.encode(x, train), f_exp, train, x)
    return (out, mask) if with_mask else out


def composite(mask, colour, x):
  """GANimation's composite: A * colour + (1 - A) * x, with A (B, H, W, 1)
  in [0, 1] broadcast over channels; float32."""
  return (mask * colour.astype(jnp.float32)
          + (1.0 - mask) * x.astype(jnp.float32))


def mask_total_variation(mask):
  """GANimation's smoothness term on A (B, H, W): the squared differences
  of vertically and horizontally adjacent values, summed per image and
  averaged over the batch (Pumarola et al. 2018, eq. 4's first term)."""
  m = mask.astype(jnp.float32)
  dy = jnp.square(m[:, 1:, :] - m[:, :-1, :])
  dx = jnp.square(m[:, :, 1:] - m[:, :, :-1])
  return jnp.mean(jnp.sum(dy, axis=(1, 2)) + jnp.sum(dx, axis=(1, 2)))


class VGGDiscriminator(_Layers):
  """D or D': image (and F_exp) -> one real/peak logit per image.

  Per width: conv3 stride 1, conv3 stride 2, LeakyReLU(0.2) after each; no
  normalisation, so real and fake batches never mix through batch
  statistics. Then flatten, concatenate F_exp if given, Dense(fc) and the
  logit. Returns float32 (B,).
  """
  features: Sequence[int] = (64, 128, 256, 256)
  fc_width: int = 256

  @nn.compact
  def __call__(self, x, f_exp=None):
    h = x.astype(self.dtype)
    for i, f in enumerate(self.features):
      h = nn.leaky_relu(self.conv(f, 3, 1, name=f"conv{i}a")(h), 0.2)
      h = nn.leaky_relu(self.conv(f, 3, 2, name=f"conv{i}b")(h), 0.2)
    h = h.reshape(h.shape[0], -1)
    if f_exp is not None:
      h = jnp.concatenate([h, f_exp.astype(h.dtype)], -1)
    h = nn.leaky_relu(self.dense(self.fc_width, "fc")(h), 0.2)
    return self.dense(1, "logit")(h)[:, 0].astype(jnp.float32)
