"""Same math, faster kernels: layers rewritten where XLA's GPU lowering is
slow (measured on an H200, benchmarks/RESULTS.md).

(A scatter-free max-pool gradient was tried too and removed: XLA fused it
into the next BatchNorm's backward reduction, which then cost as much as the
select-and-scatter it replaced; see RESULTS.md.)

* ``StridedStemConv``: ResNet's 7x7 stride-2 stem on 3 channels leaves
  cuDNN padding channels to 8 and running an Ampere-era kernel (2.4 ms of
  the same step). Rewritten as space-to-depth (2x2 pixel blocks -> 12
  channels) and a 4x4 stride-1 convolution of the zero-padded 8x8 kernel:
  exactly the same sums, with dense channels. The parameter keeps the
  (7, 7, C, F) shape, so checkpoints and ImageNet imports are unchanged.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

# Module switch, so benchmarks can time the plain lowering beside this.
USE_SPACE_TO_DEPTH_STEM = True


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
