"""Same math, faster kernels: layers rewritten where XLA's GPU lowering is
slow (measured on an H200, benchmarks/RESULTS.md).

(A scatter-free max-pool gradient was tried too and removed: XLA fused it
into the next BatchNorm's backward reduction, which then cost as much as the
select-and-scatter it replaced; see benchmarks/RESULTS.md.)

Why: a convolution whose input has 3 or 6 channels leaves cuDNN padding the
channels to 8 (``nhwcAddPaddingKernel``) and running an Ampere-era
("sm80 ... indexed") kernel. Folding each s x s pixel block into channels
(space-to-depth) makes the same sums a stride-1 convolution over s*s*C dense
channels.

* ``space_to_depth_conv``: any (kh, kw, C, F) stride-s convolution as
  space-to-depth plus a stride-1 convolution of the kernel zero-padded to a
  multiple of s and folded the same way. Identity (per spatial axis, padded
  input xp, output o, tap d = s*q + r):
  ``y[o] = sum_d xp[s*o + d] K[d] = sum_q sum_r xs[o + q, r] Ks[q, r]`` with
  ``xs[m, r] = xp[s*m + r]``, ``Ks[q, r] = K[s*q + r]`` (0 past the kernel).
* ``StridedStemConv``: ResNet's 7x7 stride-2 stem on 3 channels (2.4 ms of
  GNDL's step; the rewrite took the step from 15.09 to 13.67 ms).
* ``StridedConv``: ``nn.Conv`` with a k x k stride-2 kernel, same params
  (``kernel`` (k, k, C, F), ``bias`` (F,)), for the U-Net's and PatchGAN's
  full-resolution first convolutions on 3/6-channel images (IF-GAN's step).
* ``SubPixelConvTranspose``: ``nn.ConvTranspose`` 4x4, stride 2, padding
  ((2, 2), (2, 2)) (torch's ConvTranspose2d(k=4, s=2, p=1)), the U-Net's
  last layer to 3 channels, as ONE 3x3 stride-1 convolution to 4 * F
  channels (the four output phases) and depth-to-space, same params.

Each layer's ``fast`` field (from the models' ``fast_layers``, set by
``config.model.fast_layers``) turns its rewrite off, so ``benchmarks/suite.py
--ablate=...`` can time XLA's plain lowering beside them; as a module field
it is part of what jit traces, never a global read at trace time. All of them are
reshapes/pads of the operands around one convolution: values and gradients
are the same sums (tests/test_fast_layers.py).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

# The strided rewrites are used where the input has at most this many
# channels: the padded-channel kernels are the slow ones; wide inputs already
# have dense channels and stay on nn.Conv.
MAX_SPACE_TO_DEPTH_CHANNELS = 8

_DN = ("NHWC", "HWIO", "NHWC")

Padding = Sequence[tuple[int, int]]


def _pairs(padding) -> tuple[tuple[int, int], tuple[int, int]]:
  if isinstance(padding, int):
    return ((padding, padding), (padding, padding))
  (a, b), (c, d) = padding
  return ((int(a), int(b)), (int(c), int(d)))


def plain_conv(x, kernel, stride: int = 2, padding: Padding | int = 0,
               precision=None):
  """XLA's own strided convolution (NHWC, HWIO): the reference."""
  return lax.conv_general_dilated(x, kernel, (stride, stride),
                                  _pairs(padding), dimension_numbers=_DN,
                                  precision=precision)


def space_to_depth_conv(x: jax.Array, kernel: jax.Array, stride: int = 2,
                        padding: Padding | int = 0,
                        precision=None) -> jax.Array:
  """``conv(x, kernel, stride, padding)`` (NHWC x HWIO, explicit padding) as
  a stride-1 convolution over stride x stride pixel blocks.

  Exact for any kernel size and any H, W: the input is padded (or cropped)
  to exactly the blocks the output reads, and the kernel is zero-padded to a
  multiple of ``stride`` taps, so the extra taps multiply zeros."""
  if stride == 1:
    return plain_conv(x, kernel, 1, padding, precision)
  s = stride
  b, h, w, c = x.shape
  kh, kw, _, f = kernel.shape
  (pt, pb), (pl, pr) = _pairs(padding)
  ho = (h + pt + pb - kh) // s + 1
  wo = (w + pl + pr - kw) // s + 1
  if ho < 1 or wo < 1:
    return plain_conv(x, kernel, s, padding, precision)
  qh, qw = -(-kh // s), -(-kw // s)  # kernel taps in blocks
  hb, wb = ho + qh - 1, wo + qw - 1  # input blocks the output reads
  # Pad before by the conv's own padding; after, to exactly s * blocks
  # (negative: rows the strided conv never reads are cropped).
  xp = lax.pad(x, jnp.zeros((), x.dtype),
               ((0, 0, 0), (pt, s * hb - h - pt, 0), (pl, s * wb - w - pl, 0),
                (0, 0, 0)))
  xs = xp.reshape(b, hb, s, wb, s, c).transpose(0, 1, 3, 2, 4, 5)
  xs = xs.reshape(b, hb, wb, s * s * c)
  kp = jnp.pad(kernel, ((0, s * qh - kh), (0, s * qw - kw), (0, 0), (0, 0)))
  ks = kp.reshape(qh, s, qw, s, c, f).transpose(0, 2, 1, 3, 4, 5)
  ks = ks.reshape(qh, qw, s * s * c, f)
  return lax.conv_general_dilated(xs, ks, (1, 1), "VALID",
                                  dimension_numbers=_DN, precision=precision)


def space_to_depth_conv_7x7_s2(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """``conv(x, kernel, stride 2, padding 3)`` for a (7, 7, C, F) kernel,
  computed as a 4x4 stride-1 convolution over 2x2 pixel blocks."""
  return space_to_depth_conv(x, kernel, 2, 3)


def _use_space_to_depth(x, kernel_size, stride) -> bool:
  """The rewrite's domain: stride > 1, a thin input with even H and W (odd
  sizes are exact too, but the plain lowering is kept there so nothing
  changes for shapes the rewrite was not measured on)."""
  return (stride > 1
          and x.shape[-1] <= MAX_SPACE_TO_DEPTH_CHANNELS
          and x.shape[1] % stride == 0 and x.shape[2] % stride == 0
          and kernel_size > 1)


class StridedStemConv(nn.Module):
  """ResNet's stem: a bias-free 7x7 stride-2 convolution with padding 3
  (param ``kernel`` (7, 7, C, F), like ``nn.Conv``), run as
  space-to-depth where H and W are even."""
  features: int
  kernel_init: Any = nn.initializers.lecun_normal()
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  fast: bool = True  # False: always the plain convolution

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", self.kernel_init,
                        (7, 7, x.shape[-1], self.features), self.param_dtype)
    x = x.astype(self.dtype)
    kernel = kernel.astype(self.dtype)
    if self.fast and _use_space_to_depth(x, 7, 2):
      return space_to_depth_conv_7x7_s2(x, kernel)
    return plain_conv(x, kernel, 2, 3)


def _conv_params(module: nn.Module, x, k: int):
  """``nn.Conv``'s params for a (k, k) kernel (``kernel`` (k, k, C, F),
  ``bias`` (F,) when ``use_bias``), promoted with ``x`` to the compute
  dtype as nn.Conv does: the rewrites stay drop-in replacements."""
  kernel = module.param("kernel", module.kernel_init,
                        (k, k, x.shape[-1], module.features),
                        module.param_dtype)
  bias = (module.param("bias", module.bias_init, (module.features,),
                       module.param_dtype) if module.use_bias else None)
  return nn.dtypes.promote_dtype(x, kernel, bias, dtype=module.dtype)


class StridedConv(nn.Module):
  """``nn.Conv(features, (k, k), (s, s), padding=((p, p), (p, p)))`` with
  the same params (``kernel`` (k, k, C, F), ``bias`` (F,)) and dtype
  handling, run as ``space_to_depth_conv`` when ``_use_space_to_depth``
  (the 3/6-channel first layers of the U-Net and PatchGAN) and as nn.Conv's
  own convolution otherwise, so a model uses it for every such layer."""
  features: int
  kernel_size: int = 4
  stride: int = 2
  padding: int = 1
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32
  precision: Any = None
  kernel_init: Any = nn.initializers.lecun_normal()
  bias_init: Any = nn.initializers.zeros_init()
  fast: bool = True  # False: always nn.Conv's convolution

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    x, kernel, bias = _conv_params(self, x, k)
    p = ((self.padding, self.padding), (self.padding, self.padding))
    if self.fast and _use_space_to_depth(x, k, self.stride):
      y = space_to_depth_conv(x, kernel, self.stride, p, self.precision)
    else:
      y = plain_conv(x, kernel, self.stride, p, self.precision)
    if bias is not None:
      y += bias.reshape((1, 1, 1, -1))
    return y


def conv_transpose_4x4_s2(x, kernel, precision=None):
  """flax ``nn.ConvTranspose((4, 4), (2, 2), padding=((2, 2), (2, 2)))``
  without bias (transpose_kernel=False: the kernel is not flipped): the
  reference for ``subpixel_conv_transpose_4x4_s2``."""
  return lax.conv_transpose(x, kernel, (2, 2), ((2, 2), (2, 2)),
                            dimension_numbers=_DN, precision=precision)


def subpixel_kernel_4x4_s2(kernel: jax.Array) -> jax.Array:
  """The (3, 3, C, 4 F) stride-1 kernel equal to a (4, 4, C, F) stride-2
  transposed kernel (flax convention, padding 2).

  Per axis the transposed conv correlates the zero-dilated input (x[i] at
  2i) padded by 2 with K: y[2o + a] = sum_d xd[2o + a + d - 2] K[d], non-zero
  where d = 2t - a for input i = o + t - 1, t in {0, 1, 2}. So output phase
  a reads a 3-tap window (padding 1) of x with taps W[t, a] = K[2t - a]
  (zero where 2t - a is outside 0..3): a=0 -> (K0, K2, 0), a=1 -> (0, K1,
  K3). Output channels are ordered (a, b, f) for depth-to-space."""
  c, f = kernel.shape[2:]
  # Kp[j] = K[j - 1] (zero at j = 0 and 5): W[t, a] = Kp[2t - a + 1].
  # Static slices (not a gather), so the kernel's gradient has no scatter.
  kp = jnp.pad(kernel, ((1, 1), (1, 1), (0, 0), (0, 0)))
  taps = [(t, a, 2 * t - a + 1) for t in range(3) for a in range(2)]
  rows = jnp.stack([kp[j] for _, _, j in taps])  # (ty a, 6, C, F)
  w = jnp.stack([rows[:, j] for _, _, j in taps], 1)  # (ty a, tx b, C, F)
  w = w.reshape(3, 2, 3, 2, c, f).transpose(0, 2, 4, 1, 3, 5)
  return w.reshape(3, 3, c, 4 * f)  # (ty, tx, C, a b F)


def subpixel_conv_transpose_4x4_s2(x: jax.Array, kernel: jax.Array,
                                   precision=None) -> jax.Array:
  """``conv_transpose_4x4_s2(x, kernel)`` as one 3x3 stride-1 convolution to
  4 F channels (``subpixel_kernel_4x4_s2``) followed by depth-to-space."""
  b, h, w, _ = x.shape
  f = kernel.shape[-1]
  z = lax.conv_general_dilated(x, subpixel_kernel_4x4_s2(kernel), (1, 1),
                               ((1, 1), (1, 1)), dimension_numbers=_DN,
                               precision=precision)
  z = z.reshape(b, h, w, 2, 2, f).transpose(0, 1, 3, 2, 4, 5)
  return z.reshape(b, 2 * h, 2 * w, f)


class SubPixelConvTranspose(nn.Module):
  """``nn.ConvTranspose(features, (4, 4), (2, 2), padding=((2, 2), (2, 2)))``
  (torch's ConvTranspose2d(k=4, s=2, p=1): output exactly twice as wide) with
  the same params (``kernel`` (4, 4, C, F), ``bias`` (F,)), run as a sub-pixel
  convolution when ``fast`` and the output has at most
  ``MAX_SPACE_TO_DEPTH_CHANNELS`` channels (the U-Net's image layer, where
  the dilated-input lowering writes 3-channel, padded-to-8 tensors)."""
  features: int
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32
  precision: Any = None
  kernel_init: Any = nn.initializers.lecun_normal()
  bias_init: Any = nn.initializers.zeros_init()
  fast: bool = True  # False: always the transposed convolution

  @nn.compact
  def __call__(self, x):
    x, kernel, bias = _conv_params(self, x, 4)
    if self.fast and self.features <= MAX_SPACE_TO_DEPTH_CHANNELS:
      y = subpixel_conv_transpose_4x4_s2(x, kernel, self.precision)
    else:
      y = conv_transpose_4x4_s2(x, kernel, self.precision)
    if bias is not None:
      y += bias.reshape((1, 1, 1, -1))
    return y
