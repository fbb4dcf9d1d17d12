"""SNA's two-branch multi-scale FER network (Fu et al., Table II).

Branch "ori" sees the grey face at full size (112 in the paper), branch
"half" the same face 2x2-average-pooled (56). Each branch is five stages:
Conv1-a/b 5x5, Conv2-a/b 3x3, Conv3-a/b 3x3, Conv4 3x3, Conv5 1x1, every
conv with BN and ReLU; Table II's output sizes halve after Conv1-a, Conv2-a,
Conv3-a and Conv4, so a 2x2 max pool follows those four (floor: the half
branch's Conv4 is 3x3 at 112). Conv5 ends with dropout 0.5, then a
fully connected layer (64 for ori, 32 for half). Three heads (K-way FCs):
one per branch and Fuse-FC on both branches' FC outputs concatenated; the
loss sums the three (sec. IV-B), the fused head is the prediction.

The ori branch's Conv3 (Conv3-b output), Conv4 and Conv5 activations are
the perceptual features of eq. 5 (``return_features=True``).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

Dtype = Any
# Table II at paper width: Conv1..Conv5 channels, and the two branch FCs.
PAPER_WIDTHS = (64, 128, 256, 512, 128)
PAPER_FC = (64, 32)


class Branch(nn.Module):
  """One scale of Table II: Conv1-a .. Conv5, dropout, FC."""
  widths: Sequence[int] = PAPER_WIDTHS
  fc: int = 64
  dropout: float = 0.5
  bn_momentum: float = 0.9
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    w1, w2, w3, w4, w5 = self.widths
    feats = {}

    def conv_bn_relu(x, width, kernel, name):
      x = nn.Conv(width, (kernel, kernel), padding="SAME", use_bias=False,
                  dtype=self.dtype, param_dtype=self.param_dtype,
                  name=name)(x)
      x = nn.BatchNorm(use_running_average=not train,
                       momentum=self.bn_momentum, dtype=self.dtype,
                       param_dtype=self.param_dtype, name=name + "_bn")(x)
      return nn.relu(x)

    def pool(x):
      return nn.max_pool(x, (2, 2), (2, 2))

    x = pool(conv_bn_relu(x, w1, 5, "conv1a"))
    x = conv_bn_relu(x, w1, 5, "conv1b")
    x = pool(conv_bn_relu(x, w2, 3, "conv2a"))
    x = conv_bn_relu(x, w2, 3, "conv2b")
    x = pool(conv_bn_relu(x, w3, 3, "conv3a"))
    x = conv_bn_relu(x, w3, 3, "conv3b")
    feats["conv3"] = x
    x = pool(conv_bn_relu(x, w4, 3, "conv4"))
    feats["conv4"] = x
    x = conv_bn_relu(x, w5, 1, "conv5")
    feats["conv5"] = x
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(self.fc, dtype=self.dtype,
                         param_dtype=self.param_dtype, name="fc")(x))
    return x, feats


class MultiScaleNet(nn.Module):
  """Table II. ``__call__(x)`` on (B, S, S, 1) faces in [-1, 1] returns the
  three heads' logits (ori, half, fused), each (B, num_classes), and with
  ``return_features`` also the ori branch's {conv3, conv4, conv5}."""
  num_classes: int
  widths: Sequence[int] = PAPER_WIDTHS
  fc: Sequence[int] = PAPER_FC
  dropout: float = 0.5
  bn_momentum: float = 0.9
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False, return_features: bool = False):
    if min(x.shape[1:3]) < 32:
      # Four 2x2 pools on the half-size input: below 32 px a map vanishes.
      raise ValueError(f"MultiScaleNet needs faces of at least 32 px, got "
                       f"{x.shape[1:3]}")
    common = dict(dropout=self.dropout, bn_momentum=self.bn_momentum,
                  dtype=self.dtype, param_dtype=self.param_dtype)
    x = x.astype(self.dtype)
    half = nn.avg_pool(x, (2, 2), (2, 2))
    f_ori, feats = Branch(tuple(self.widths), self.fc[0], name="ori",
                          **common)(x, train)
    f_half, _ = Branch(tuple(self.widths), self.fc[1], name="half",
                       **common)(half, train)
    dense = lambda name: nn.Dense(self.num_classes, dtype=self.dtype,
                                  param_dtype=self.param_dtype, name=name)
    logits = (dense("head_ori")(f_ori), dense("head_half")(f_half),
              dense("head_fuse")(jnp.concatenate([f_ori, f_half], -1)))
    logits = tuple(v.astype(jnp.float32) for v in logits)
    if return_features:
      return logits, feats
    return logits
