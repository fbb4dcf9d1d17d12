"""Same math, faster kernels: layers rewritten where XLA's GPU lowering is
slow (measured on an H200, benchmarks/RESULTS.md).

* ``max_pool``: the gradient of ``lax.reduce_window`` max is a
  select-and-scatter, which XLA runs as a serial scatter kernel (1.3 ms of a
  15 ms GNDL step at 224 px). Here the forward is a max over the k*k strided
  window slices and the backward routes each output's gradient to the first
  maximum of its window (the same choice select-and-scatter makes) by
  comparisons and strided pads, which fuse into elementwise loops.
* ``StridedStemConv``: ResNet's 7x7 stride-2 stem on 3 channels leaves
  cuDNN padding channels to 8 and running an Ampere-era kernel (2.4 ms of
  the same step). Rewritten as space-to-depth (2x2 pixel blocks -> 12
  channels) and a 4x4 stride-1 convolution of the zero-padded 8x8 kernel:
  exactly the same sums, with dense channels. The parameter keeps the
  (7, 7, C, F) shape, so checkpoints and ImageNet imports are unchanged.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

# Module switches, so benchmarks can time the plain lowering beside these.
USE_SLICE_MAX_POOL = True
USE_SPACE_TO_DEPTH_STEM = True


def _window_slices(xp, k, s, out_hw):
  """The k*k strided views of padded ``xp`` (B, H, W, C), window order."""
  ho, wo = out_hw
  for dy in range(k):
    for dx in range(k):
      yield dy, dx, lax.slice(
          xp, (0, dy, dx, 0),
          (xp.shape[0], dy + s * (ho - 1) + 1, dx + s * (wo - 1) + 1,
           xp.shape[3]), (1, s, s, 1))


def _pool_geometry(x, k, s, pad):
  h, w = x.shape[1:3]
  ho = (h + 2 * pad - k) // s + 1
  wo = (w + 2 * pad - k) // s + 1
  return ho, wo


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _max_pool(x, k, s, pad):
  return _max_pool_fwd(x, k, s, pad)[0]


def _max_pool_fwd(x, k, s, pad):
  ho, wo = _pool_geometry(x, k, s, pad)
  xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)),
               constant_values=-jnp.inf)
  y = None
  for _, _, v in _window_slices(xp, k, s, (ho, wo)):
    y = v if y is None else jnp.maximum(y, v)
  return y, (xp, y)


def _max_pool_bwd(k, s, pad, res, g):
  xp, y = res
  ho, wo = y.shape[1:3]
  taken = jnp.zeros(y.shape, bool)
  dxp = jnp.zeros(xp.shape, g.dtype)
  for dy, dx, v in _window_slices(xp, k, s, (ho, wo)):
    first = (v == y) & ~taken
    taken = taken | first
    part = jnp.where(first, g, jnp.zeros_like(g))
    # Place output (i, j) at padded input (dy + s*i, dx + s*j): a strided
    # pad, not a scatter.
    hi_h = xp.shape[1] - dy - s * (ho - 1) - 1
    hi_w = xp.shape[2] - dx - s * (wo - 1) - 1
    dxp = dxp + lax.pad(part, jnp.zeros((), g.dtype),
                        ((0, 0, 0), (dy, hi_h, s - 1), (dx, hi_w, s - 1),
                         (0, 0, 0)))
  h, w = xp.shape[1] - 2 * pad, xp.shape[2] - 2 * pad
  return (dxp[:, pad:pad + h, pad:pad + w, :],)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def max_pool(x: jax.Array, k: int, s: int, pad: int = 0) -> jax.Array:
  """``nn.max_pool(x, (k, k), (s, s), ((pad, pad), (pad, pad)))`` on NHWC,
  with a scatter-free gradient (see the module docstring)."""
  if not USE_SLICE_MAX_POOL:
    return nn.max_pool(x, (k, k), (s, s), ((pad, pad), (pad, pad)))
  return _max_pool(x, k, s, pad)


def space_to_depth_conv_7x7_s2(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """``conv(x, kernel, stride 2, padding 3)`` for a (7, 7, C, F) kernel and
  even H, W, computed as a 4x4 stride-1 convolution over 2x2 pixel blocks."""
  b, h, w, c = x.shape
  f = kernel.shape[-1]
  # Pad 3 before (the conv's own padding) and 5 after: 3 for the conv, 2 so
  # the 8th kernel row/column (zero) has input, and H + 8 is even.
  xp = jnp.pad(x, ((0, 0), (3, 5), (3, 5), (0, 0)))
  hb, wb = (h + 8) // 2, (w + 8) // 2
  xs = xp.reshape(b, hb, 2, wb, 2, c).transpose(0, 1, 3, 2, 4, 5)
  xs = xs.reshape(b, hb, wb, 4 * c)
  k8 = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))
  ks = k8.reshape(4, 2, 4, 2, c, f).transpose(0, 2, 1, 3, 4, 5)
  ks = ks.reshape(4, 4, 4 * c, f)
  y = lax.conv_general_dilated(xs, ks, (1, 1), "VALID",
                               dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return y[:, :h // 2, :w // 2, :]


class StridedStemConv(nn.Module):
  """ResNet's stem: a bias-free 7x7 stride-2 convolution with padding 3
  (param ``kernel`` (7, 7, C, F), like ``nn.Conv``), run as
  space-to-depth where H and W are even."""
  features: int
  kernel_init: Any = nn.initializers.lecun_normal()
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", self.kernel_init,
                        (7, 7, x.shape[-1], self.features), self.param_dtype)
    x = x.astype(self.dtype)
    kernel = kernel.astype(self.dtype)
    if USE_SPACE_TO_DEPTH_STEM and x.shape[1] % 2 == 0 and \
        x.shape[2] % 2 == 0:
      return space_to_depth_conv_7x7_s2(x, kernel)
    return lax.conv_general_dilated(
        x, kernel, (2, 2), ((3, 3), (3, 3)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
