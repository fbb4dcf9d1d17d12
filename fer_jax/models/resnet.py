"""ResNet-18/34/50/101 in flax.linen, laid out like torchvision.

Submodule names follow torchvision's state-dict keys (``conv1``, ``bn1``,
``layer1_0.conv1``, ``layer2_0.downsample_conv``, ``fc``) so ImageNet weights
convert by renaming alone. Convolutions pad explicitly as torchvision does
(``padding=k//2``), so outputs match for any input size.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from fer_jax.models import fast_layers

Dtype = Any

# He-normal over fan_out, torchvision's init for ResNet convolutions.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _pad(k: int) -> tuple[tuple[int, int], tuple[int, int]]:
  return ((k // 2, k // 2), (k // 2, k // 2))


class _Block(nn.Module):
  """Shared fields of the two residual block kinds."""
  features: int
  strides: int = 1
  downsample: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def conv(self, features, k, strides, name):
    return nn.Conv(features, (k, k), (strides, strides), padding=_pad(k),
                   use_bias=False, kernel_init=conv_init, dtype=self.dtype,
                   param_dtype=self.param_dtype, name=name)

  def bn(self, train, name):
    # torch momentum 0.1 == flax momentum 0.9; eps as torchvision.
    return nn.BatchNorm(use_running_average=not train, momentum=0.9,
                        epsilon=1e-5, dtype=self.dtype,
                        param_dtype=self.param_dtype, name=name)

  def shortcut(self, x, out_features, train):
    if not self.downsample:
      return x
    x = self.conv(out_features, 1, self.strides, "downsample_conv")(x)
    return self.bn(train, "downsample_bn")(x)


class BasicBlock(_Block):
  expansion = 1

  @nn.compact
  def __call__(self, x, train: bool):
    y = self.conv(self.features, 3, self.strides, "conv1")(x)
    y = nn.relu(self.bn(train, "bn1")(y))
    y = self.conv(self.features, 3, 1, "conv2")(y)
    y = self.bn(train, "bn2")(y)
    return nn.relu(y + self.shortcut(x, self.features, train))


class Bottleneck(_Block):
  expansion = 4

  @nn.compact
  def __call__(self, x, train: bool):
    out = self.features * self.expansion
    y = self.conv(self.features, 1, 1, "conv1")(x)
    y = nn.relu(self.bn(train, "bn1")(y))
    y = self.conv(self.features, 3, self.strides, "conv2")(y)  # v1.5 stride
    y = nn.relu(self.bn(train, "bn2")(y))
    y = self.conv(out, 1, 1, "conv3")(y)
    y = self.bn(train, "bn3")(y)
    return nn.relu(y + self.shortcut(x, out, train))


class ResNet(nn.Module):
  """ResNet over NHWC images in [-1, 1] (or any normalisation the caller picks).

  Returns logits of shape (B, num_classes), or the pooled features (B, C) when
  ``num_classes`` is 0 (C = 8 * base_width * expansion: 512 for ResNet-18);
  with ``pool=False`` (and no classes) the last stage's map (B, H/32, W/32, C)
  for dense heads such as landmark heat maps.
  """
  stage_sizes: Sequence[int]
  block: type[_Block]
  num_classes: int = 0
  base_width: int = 64
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  pool: bool = True
  # The same math as fast_layers' rewrites (False: XLA's plain lowering).
  fast_layers: bool = True

  @property
  def feature_dim(self) -> int:
    return 8 * self.base_width * self.block.expansion

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = x.astype(self.dtype)
    x = fast_layers.StridedStemConv(
        self.base_width, kernel_init=conv_init, dtype=self.dtype,
        param_dtype=self.param_dtype, fast=self.fast_layers, name="conv1")(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                     epsilon=1e-5, dtype=self.dtype,
                     param_dtype=self.param_dtype, name="bn1")(x)
    x = nn.relu(x)
    x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    in_features = self.base_width
    for stage, num_blocks in enumerate(self.stage_sizes):
      features = self.base_width * 2**stage
      for i in range(num_blocks):
        strides = 2 if stage > 0 and i == 0 else 1
        out = features * self.block.expansion
        x = self.block(
            features, strides,
            downsample=(i == 0 and (strides != 1 or in_features != out)),
            dtype=self.dtype, param_dtype=self.param_dtype,
            name=f"layer{stage + 1}_{i}")(x, train)
        in_features = out
    if not self.pool:
      if self.num_classes:
        raise ValueError("ResNet(pool=False) returns the feature map: it "
                         "needs num_classes=0")
      return x
    x = jnp.mean(x, axis=(1, 2))
    if self.num_classes:
      x = nn.Dense(self.num_classes, dtype=self.dtype,
                   param_dtype=self.param_dtype, name="fc")(x)
    return x.astype(jnp.float32)


ARCHS: dict[str, tuple[tuple[int, ...], type[_Block]]] = {
    "resnet18": ((2, 2, 2, 2), BasicBlock),
    "resnet34": ((3, 4, 6, 3), BasicBlock),
    "resnet50": ((3, 4, 6, 3), Bottleneck),
    "resnet101": ((3, 4, 23, 3), Bottleneck),
}


def resnet(arch: str, **kwargs) -> ResNet:
  """``resnet('resnet18', num_classes=0, base_width=64, dtype=jnp.bfloat16)``."""
  if arch not in ARCHS:
    raise ValueError(f"unknown ResNet arch {arch!r}; choose one of "
                     f"{', '.join(ARCHS)}")
  stages, block = ARCHS[arch]
  return ResNet(stage_sizes=stages, block=block, **kwargs)


ResNet18 = functools.partial(resnet, "resnet18")
ResNet101 = functools.partial(resnet, "resnet101")
