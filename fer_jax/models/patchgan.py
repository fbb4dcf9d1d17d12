"""pix2pix PatchGAN discriminator (Isola et al. CVPR 2017, appendix 6.1.2).

D classifies each N x N patch as real or fake instead of the whole image, so
it only penalises structure at the patch scale and leaves low frequencies to
the L1 term (pix2pix section 3.2; IF-GAN eq. 2-3). With ``num_layers=3`` the
patch (receptive field) is 70x70 and a 256 input gives 30x30 patch logits.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fer_jax.models import fast_layers

Dtype = Any

conv_init = nn.initializers.normal(0.02)  # pix2pix's init


def bn_scale_init(key, shape, dtype=jnp.float32):
  return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


class PatchGAN(nn.Module):
  """C64 - C128 - C256 - C512 - conv to 1: per-patch real/fake logits.

  Input: the caller's channel concatenation of the conditioning image and the
  real or generated image, NHWC. Layers 0 .. num_layers-1 are 4x4 stride-2
  convolutions, then one 4x4 stride-1 convolution to
  base * min(2**num_layers, 8) channels and a 4x4 stride-1 convolution to one
  channel, all padded by 1 as the reference code; LeakyReLU(0.2) after each
  but the last, ``norm`` ('batch' | 'instance' | 'none') after each but the
  first and the last. Returns float32 logits (B, H', W', 1), no sigmoid.
  """
  base_features: int = 64
  num_layers: int = 3
  norm: str = "batch"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  # The same math as fast_layers' rewrites (False: XLA's plain lowering).
  fast_layers: bool = True

  def layer_specs(self) -> tuple[tuple[int, int, int], ...]:
    """(features, kernel, stride) of each convolution, in order."""
    specs = [(self.base_features, 4, 2)]
    for n in range(1, self.num_layers):
      specs.append((self.base_features * min(2**n, 8), 4, 2))
    specs.append((self.base_features * min(2**self.num_layers, 8), 4, 1))
    specs.append((1, 4, 1))
    return tuple(specs)

  def receptive_field(self) -> int:
    """Input pixels one logit sees: 1 + sum_i (k_i - 1) prod_{j<i} s_j."""
    rf, jump = 1, 1
    for _, k, s in self.layer_specs():
      rf += (k - 1) * jump
      jump *= s
    return rf

  def _norm(self, train, name):
    if self.norm == "batch":
      return nn.BatchNorm(use_running_average=not train, momentum=0.9,
                          epsilon=1e-5, scale_init=bn_scale_init,
                          dtype=self.dtype, param_dtype=self.param_dtype,
                          name=name)
    return nn.InstanceNorm(epsilon=1e-5, dtype=self.dtype,
                           param_dtype=self.param_dtype, name=name)

  @nn.compact
  def __call__(self, x, train: bool):
    if self.norm not in ("batch", "instance", "none"):
      raise ValueError(f"PatchGAN.norm={self.norm!r}; choose 'batch', "
                       "'instance' or 'none'")
    specs = self.layer_specs()
    size = min(x.shape[1:3])
    for _, k, st in specs:
      size = (size + 2 - k) // st + 1
    if size < 1:
      raise ValueError(f"PatchGAN.num_layers={self.num_layers} leaves no "
                       f"patch for a {x.shape[1]}x{x.shape[2]} input; use "
                       "fewer layers or larger images")
    h = x.astype(self.dtype)
    for i, (features, k, s) in enumerate(specs):
      last = i == len(specs) - 1
      norm = 0 < i and not last and self.norm != "none"
      # nn.Conv(k x k, stride s, padding 1) with the same params; the thin
      # full-resolution (image, image) layer runs as space-to-depth
      # (fast_layers: cuDNN pads 6 channels to 8), the others as nn.Conv.
      h = fast_layers.StridedConv(
          features, k, s, padding=1, use_bias=not norm, kernel_init=conv_init,
          dtype=self.dtype, param_dtype=self.param_dtype,
          fast=self.fast_layers, name=f"conv{i}")(h)
      if last:
        break
      if norm:
        h = self._norm(train, f"norm{i}")(h)
      h = nn.leaky_relu(h, 0.2)
    return h.astype(jnp.float32)
