"""GroupGAN's "BaseNets": AlexNet, VGG-11/13/16/19 (+BN) and ResNets.

GroupGAN (Niu et al. 2022) trains its extractor E and classifier on top of a
standard ImageNet architecture whose hidden fully-connected layers are cut
from 4096 to 512 (or 256) units, because FER datasets are far too small for
the 120M-parameter torchvision heads. E is the BaseNet without its last FC
layer, so ``BaseNet`` returns that layer's input beside the logits.

AlexNet and VGG are laid out exactly like torchvision's ``alexnet`` /
``vgg*``: submodules are named after torchvision's state-dict indices
(``features_0``, ``features_3``, ``classifier_0``, ...) so ImageNet weights
convert by renaming alone (plus the usual OIHW->HWIO / (out, in)->(in, out)
transposes; the first classifier Linear also needs its input rows permuted
from torch's C,H,W flatten order to NHWC's H,W,C). Convolutions pad
explicitly as torch does, max-pools use torch's floor mode without padding,
and ``adaptive_avg_pool`` reproduces ``AdaptiveAvgPool2d`` bin for bin, so
outputs match torch for any input size, including FER's 64-128 px faces
(where VGG's 7x7 pool upsamples a 2x2 or 4x4 map, as torch does).

ResNets reuse ``fer_jax.models.resnet`` under ``backbone`` with a Dense
``fc`` head, like ``ResNetClassifier``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fer_jax.models import resnet as resnet_lib

Dtype = Any

ARCHS = ("alexnet", "vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn",
         "vgg13_bn", "vgg16_bn", "vgg19_bn", "resnet18", "resnet34",
         "resnet50")

# torchvision's VGG configurations, widths as multiples of base_width (64
# in torchvision: 64, 128, 256, 512, 512); "M" is a 2x2/2 max-pool.
_VGG_CFGS: dict[str, Sequence[int | str]] = {
    "A": (1, "M", 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M"),
    "B": (1, 1, "M", 2, 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M"),
    "D": (1, 1, "M", 2, 2, "M", 4, 4, 4, "M", 8, 8, 8, "M", 8, 8, 8, "M"),
    "E": (1, 1, "M", 2, 2, "M", 4, 4, 4, 4, "M", 8, 8, 8, 8, "M", 8, 8, 8, 8,
          "M"),
}
_VGG = {"vgg11": "A", "vgg13": "B", "vgg16": "D", "vgg19": "E"}

# AlexNet's conv widths 64, 192, 384, 256, 256 as multiples of base_width.
_ALEXNET_WIDTHS = (1, 3, 6, 4, 4)

# torchvision's VGG init: He-normal over fan_out for convs, N(0, 0.01) for
# linears, zero biases. (torchvision leaves AlexNet at torch's default
# uniform init; we use the VGG scheme for both so "default" means one thing.)
_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
_dense_init = nn.initializers.normal(0.01)
# GroupGAN sec. 4.2: every weight N(0, 0.01), every bias 1 (also used by
# its generator and discriminators, models/groupgan_nets.py).
PAPER_INIT = (nn.initializers.normal(0.01), nn.initializers.constant(1.0))


def _parse_arch(arch: str) -> tuple[str, bool]:
  """'vgg16_bn' -> ('vgg16', True); raises on unknown names."""
  if arch not in ARCHS:
    raise ValueError(f"unknown BaseNet arch {arch!r}; choose one of "
                     f"{', '.join(ARCHS)}")
  if arch.endswith("_bn"):
    return arch[:-3], True
  return arch, False


def feature_dim(arch: str, fc_width: int = 512, base_width: int = 64) -> int:
  """Width of ``BaseNet``'s features (the last FC layer's input)."""
  name, _ = _parse_arch(arch)
  if name.startswith("resnet"):
    _, block = resnet_lib.ARCHS[name]
    return 8 * base_width * block.expansion
  return fc_width


def _pool_matrix(n_in: int, n_out: int) -> np.ndarray:
  """(n_out, n_in) averaging matrix of torch's adaptive pooling along one axis.

  Row i averages [floor(i*In/Out), ceil((i+1)*In/Out)); when In < Out the bins
  overlap (each covers one or two inputs), which is not plain repetition.
  """
  m = np.zeros((n_out, n_in), np.float32)
  for i in range(n_out):
    start = (i * n_in) // n_out
    end = -((-(i + 1) * n_in) // n_out)  # ceil
    m[i, start:end] = 1.0 / (end - start)
  return m


def _adaptive_pool_axis(x: jax.Array, axis: int, n_out: int) -> jax.Array:
  n_in = x.shape[axis]
  if n_in == n_out:
    return x
  if n_in % n_out == 0:
    # Equal, disjoint bins (e.g. 224 px: 14 -> 7): a reshape-mean, exact.
    shape = x.shape[:axis] + (n_out, n_in // n_out) + x.shape[axis + 1:]
    return x.reshape(shape).mean(axis=axis + 1)
  # Uneven or overlapping bins: a tiny static matmul. HIGHEST precision so GPU
  # TF32 / TPU bf16 passes don't round the average; float32 so that 1/3 is
  # not a bfloat16 weight.
  m = jnp.asarray(_pool_matrix(n_in, n_out))
  y = jnp.moveaxis(x.astype(jnp.float32), axis, -1)
  y = jnp.matmul(y, m.T, precision=jax.lax.Precision.HIGHEST)
  return jnp.moveaxis(y, -1, axis).astype(x.dtype)


def adaptive_avg_pool(x: jax.Array, out_hw: tuple[int, int]) -> jax.Array:
  """torch's ``AdaptiveAvgPool2d(out_hw)`` on NHWC ``x`` (static shapes).

  Bins are separable rectangles, so pooling H then W equals torch's 2-D bin
  means.
  """
  x = _adaptive_pool_axis(x, x.ndim - 3, out_hw[0])
  return _adaptive_pool_axis(x, x.ndim - 2, out_hw[1])


def _max_pool(x: jax.Array, k: int, s: int) -> jax.Array:
  """torch's ``MaxPool2d(k, s)``: floor mode, no padding."""
  return nn.max_pool(x, (k, k), (s, s), padding="VALID")


class BaseNet(nn.Module):
  """A GroupGAN BaseNet over NHWC images.

  ``fc_width`` replaces torchvision's 4096-unit hidden FC layers (the paper
  uses 512 or 256; ignored for ResNets); ``base_width`` scales the conv widths
  (64 = torchvision's). ``init_scheme='paper'`` draws every conv/dense kernel from
  N(0, 0.01) with biases 1 (GroupGAN sec. 4.2; the ResNet backbone keeps its
  own init, only its head follows); ``'default'`` is torchvision's VGG init.
  """
  arch: str
  num_classes: int
  fc_width: int = 512
  base_width: int = 64
  dropout: float = 0.5
  init_scheme: str = "default"  # "default" | "paper"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  fast_layers: bool = True  # the ResNets' stem (fer_jax.models.fast_layers)

  def _inits(self, conv: bool):
    if self.init_scheme == "paper":
      return PAPER_INIT
    if self.init_scheme == "default":
      return (_conv_init if conv else _dense_init), nn.initializers.zeros
    raise ValueError(f"unknown init {self.init_scheme!r}; use 'default' or 'paper'")

  def _conv(self, features, k, s, p, name):
    kernel_init, bias_init = self._inits(conv=True)
    return nn.Conv(features, (k, k), (s, s), padding=((p, p), (p, p)),
                   kernel_init=kernel_init, bias_init=bias_init,
                   dtype=self.dtype, param_dtype=self.param_dtype, name=name)

  def _dense(self, features, name):
    kernel_init, bias_init = self._inits(conv=False)
    return nn.Dense(features, kernel_init=kernel_init, bias_init=bias_init,
                    dtype=self.dtype, param_dtype=self.param_dtype, name=name)

  def _dropout(self, x, train):
    # Only draws from the 'dropout' rng when training.
    return nn.Dropout(self.dropout, deterministic=not train)(x)

  def _flatten(self, x):
    # H, W, C order; torch flattens C, H, W (see the module docstring).
    return x.reshape(x.shape[0], -1)

  def _alexnet(self, x, train):
    w = [self.base_width * m for m in _ALEXNET_WIDTHS]
    x = nn.relu(self._conv(w[0], 11, 4, 2, "features_0")(x))
    x = _max_pool(x, 3, 2)
    x = nn.relu(self._conv(w[1], 5, 1, 2, "features_3")(x))
    x = _max_pool(x, 3, 2)
    x = nn.relu(self._conv(w[2], 3, 1, 1, "features_6")(x))
    x = nn.relu(self._conv(w[3], 3, 1, 1, "features_8")(x))
    x = nn.relu(self._conv(w[4], 3, 1, 1, "features_10")(x))
    x = _max_pool(x, 3, 2)
    x = self._flatten(adaptive_avg_pool(x, (6, 6)))
    x = self._dropout(x, train)
    x = nn.relu(self._dense(self.fc_width, "classifier_1")(x))
    x = self._dropout(x, train)
    feats = nn.relu(self._dense(self.fc_width, "classifier_4")(x))
    return self._dense(self.num_classes, "classifier_6")(feats), feats

  def _vgg(self, x, train, cfg, batch_norm):
    idx = 0  # torchvision's index into the `features` nn.Sequential
    for v in _VGG_CFGS[cfg]:
      if v == "M":
        x = _max_pool(x, 2, 2)
        idx += 1
        continue
      x = self._conv(self.base_width * v, 3, 1, 1, f"features_{idx}")(x)
      idx += 1
      if batch_norm:
        # torch momentum 0.1 == flax momentum 0.9; eps as torchvision.
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                         epsilon=1e-5, dtype=self.dtype,
                         param_dtype=self.param_dtype,
                         name=f"features_{idx}")(x)
        idx += 1
      x = nn.relu(x)
      idx += 1
    x = self._flatten(adaptive_avg_pool(x, (7, 7)))
    x = nn.relu(self._dense(self.fc_width, "classifier_0")(x))
    x = self._dropout(x, train)
    x = nn.relu(self._dense(self.fc_width, "classifier_3")(x))
    # The last FC's input is post-dropout (torchvision's classifier_5), so E's
    # features are dropped out in training, as the truncated net's would be.
    feats = self._dropout(x, train)
    return self._dense(self.num_classes, "classifier_6")(feats), feats

  def _resnet(self, x, train, name):
    feats = resnet_lib.resnet(name, num_classes=0, base_width=self.base_width,
                              dtype=self.dtype, param_dtype=self.param_dtype,
                              fast_layers=self.fast_layers,
                              name="backbone")(x, train)
    if self.init_scheme == "paper":
      head = self._dense(self.num_classes, "fc")
    else:  # as ResNetClassifier: flax's default Dense init.
      self._inits(conv=False)  # validates `init_scheme`
      head = nn.Dense(self.num_classes, dtype=self.dtype,
                      param_dtype=self.param_dtype, name="fc")
    return head(feats), feats

  @nn.compact
  def __call__(self, x, train: bool = False):
    """x NHWC. Returns (logits (B, num_classes), features (B, F)), float32.

    features = the input of the last FC layer (what GroupGAN's extractor E
    outputs: the BaseNet 'without its last FC'), F = fc_width for
    AlexNet/VGG, the pooled feature dim for ResNets (``feature_dim``).
    """
    name, batch_norm = _parse_arch(self.arch)
    x = x.astype(self.dtype)
    if name == "alexnet":
      logits, feats = self._alexnet(x, train)
    elif name in _VGG:
      logits, feats = self._vgg(x, train, _VGG[name], batch_norm)
    else:
      logits, feats = self._resnet(x, train, name)
    return logits.astype(jnp.float32), feats.astype(jnp.float32)
