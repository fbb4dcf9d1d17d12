"""The networks fer_jax's training steps train, as torch modules (NCHW).

Each class mirrors one flax module of ``fer_jax/models/`` layer for layer:
the same widths, kernels, strides, biases and normalisations, so parameter
counts are equal (tests/test_torch_reference.py) and the convolutions and
matmuls are the same work. Padding follows torch's idiom where flax pads
asymmetrically (a 3x3 stride-2 'SAME' conv pads (0, 1) in flax, (1, 1)
here; a 3x3 stride-2 'SAME' transposed conv is torch's padding 1,
output_padding 1): the output sizes and the number of taps that read real
pixels are the same, the pixels they read shift by one. Values are not
meant to match fer_jax's (no weight transfer): these are the work, not the
numbers.

BatchNorm: flax momentum m is torch momentum 1 - m; epsilon 1e-5 in both.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F


def _bn(c: int, flax_momentum: float = 0.9) -> nn.BatchNorm2d:
  return nn.BatchNorm2d(c, eps=1e-5, momentum=1.0 - flax_momentum)


def count_params(module: nn.Module) -> int:
  return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------------------ ResNet
class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, cin, features, stride, downsample):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, features, 3, stride, 1, bias=False)
    self.bn1 = _bn(features)
    self.conv2 = nn.Conv2d(features, features, 3, 1, 1, bias=False)
    self.bn2 = _bn(features)
    self.downsample = (nn.Sequential(
        nn.Conv2d(cin, features, 1, stride, bias=False), _bn(features))
                       if downsample else None)

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
  expansion = 4

  def __init__(self, cin, features, stride, downsample):
    super().__init__()
    out = features * 4
    self.conv1 = nn.Conv2d(cin, features, 1, bias=False)
    self.bn1 = _bn(features)
    self.conv2 = nn.Conv2d(features, features, 3, stride, 1, bias=False)
    self.bn2 = _bn(features)
    self.conv3 = nn.Conv2d(features, out, 1, bias=False)
    self.bn3 = _bn(out)
    self.downsample = (nn.Sequential(
        nn.Conv2d(cin, out, 1, stride, bias=False), _bn(out))
                       if downsample else None)

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = F.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    return F.relu(y + (x if self.downsample is None else self.downsample(x)))


RESNETS = {"resnet18": ((2, 2, 2, 2), BasicBlock),
           "resnet34": ((3, 4, 6, 3), BasicBlock),
           "resnet50": ((3, 4, 6, 3), Bottleneck),
           "resnet101": ((3, 4, 23, 3), Bottleneck)}


class ResNet(nn.Module):
  """fer_jax.models.resnet.ResNet: pooled features (B, 8 w e), or logits
  when ``num_classes``."""

  def __init__(self, arch, in_channels=3, base_width=64, num_classes=0):
    super().__init__()
    stages, block = RESNETS[arch]
    self.conv1 = nn.Conv2d(in_channels, base_width, 7, 2, 3, bias=False)
    self.bn1 = _bn(base_width)
    layers, cin = [], base_width
    for stage, n in enumerate(stages):
      features = base_width * 2**stage
      for i in range(n):
        stride = 2 if stage > 0 and i == 0 else 1
        out = features * block.expansion
        layers.append(block(cin, features, stride,
                            i == 0 and (stride != 1 or cin != out)))
        cin = out
    self.layers = nn.Sequential(*layers)
    self.feature_dim = cin
    self.fc = nn.Linear(cin, num_classes) if num_classes else None

  def forward(self, x):
    x = F.relu(self.bn1(self.conv1(x)))
    x = F.max_pool2d(x, 3, 2, 1)
    x = self.layers(x).mean((2, 3))
    return x if self.fc is None else self.fc(x)


# -------------------------------------------------------------------- GNDL
class GNDLNet(nn.Module):
  """Backbone + neutral feature generator + linear head (GNDLNet)."""

  def __init__(self, arch, num_classes, base_width, in_channels=3,
               negative_slope=0.01):
    super().__init__()
    self.backbone = ResNet(arch, in_channels, base_width)
    c = self.backbone.feature_dim
    self.nfg_encode = nn.Linear(c, c // 2)
    self.nfg_decode = nn.Linear(c, c)
    self.nfg_out = nn.Linear(c, c)
    self.head = nn.Linear(c, num_classes)
    self.slope = negative_slope

  def nfg(self, f):
    h = F.leaky_relu(self.nfg_encode(f), self.slope)
    h = torch.repeat_interleave(h, 2, dim=-1)
    h = F.leaky_relu(self.nfg_decode(h), self.slope)
    return self.nfg_out(h)

  def forward(self, exam, neutral, to_backbone=True, target_grad=True):
    """GNDLNet.train_pair: (logits, F'_neu, F_neu), one BN over the pair."""
    f = self.backbone(torch.cat([exam, neutral])).float()
    f_exam, f_neu = f.chunk(2)
    f_gen = self.nfg(f_exam)
    logits = self.head(f_exam - f_gen).float()
    if not to_backbone:
      f_gen, f_neu = self.nfg(f_exam.detach()), f_neu.detach()
    elif not target_grad:
      f_neu = f_neu.detach()
    return logits, f_gen.float(), f_neu


# ------------------------------------------------ IF-GAN / cGAN: U-Net, D
class SelfAttention(nn.Module):
  """SAGAN block (fer_jax.models.attention): o = gamma softmax(q k^T) v + x."""

  def __init__(self, c, reduction=8):
    super().__init__()
    inner = max(1, c // reduction)
    self.query = nn.Conv2d(c, inner, 1)
    self.key = nn.Conv2d(c, inner, 1)
    self.value = nn.Conv2d(c, c, 1)
    self.gamma = nn.Parameter(torch.zeros(()))

  def forward(self, x):
    b, c, h, w = x.shape
    q = self.query(x).flatten(2).transpose(1, 2)  # (B, HW, d)
    k = self.key(x).flatten(2)  # (B, d, HW)
    v = self.value(x).flatten(2).transpose(1, 2)  # (B, HW, C)
    attention = torch.softmax(torch.bmm(q, k).float(), -1)
    o = torch.bmm(attention.to(v.dtype), v)  # (B, HW, C)
    return self.gamma * o.transpose(1, 2).reshape(b, c, h, w) + x


DEFAULT_ATTENTION_LEVELS = {"encoder": 2, "skip": 1, "decoder": 1}


class UNet(nn.Module):
  """fer_jax.models.unet.UNet (pix2pix, IF-GAN's attention blocks)."""

  def __init__(self, depth, base_features, max_features, in_channels=3,
               out_channels=3, num_dropout=3, attention=()):
    super().__init__()
    self.depth, self.num_dropout = depth, num_dropout
    width = lambda level: min(base_features * 2**level, max_features)
    self.sites = {(k, DEFAULT_ATTENTION_LEVELS[k]) for k in attention}
    self.enc = nn.ModuleList()
    self.enc_bn = nn.ModuleDict()
    cin = in_channels
    for level in range(depth):
      norm = 0 < level < depth - 1
      self.enc.append(nn.Conv2d(cin, width(level), 4, 2, 1, bias=not norm))
      if norm:
        self.enc_bn[str(level)] = _bn(width(level))
      cin = width(level)
    self.dec, self.dec_bn = nn.ModuleList(), nn.ModuleList()
    for i, level in enumerate(reversed(range(depth - 1))):
      self.dec.append(nn.ConvTranspose2d(cin, width(level), 4, 2, 1,
                                         bias=False))
      self.dec_bn.append(_bn(width(level)))
      cin = 2 * width(level)
    self.out_conv = nn.ConvTranspose2d(cin, out_channels, 4, 2, 1)
    self.attention = nn.ModuleDict({
        f"{kind}_{level}": SelfAttention(width(level))
        for kind, level in sorted(self.sites)})

  def forward(self, x):
    h, skips = x, []
    for level, conv in enumerate(self.enc):
      if level > 0:
        h = F.leaky_relu(h, 0.2)
      h = conv(h)
      if str(level) in self.enc_bn:
        h = self.enc_bn[str(level)](h)
      if ("encoder", level) in self.sites:
        h = self.attention[f"encoder_{level}"](h)
      skips.append(h)
    for i, level in enumerate(reversed(range(self.depth - 1))):
      h = self.dec_bn[i](self.dec[i](F.relu(h)))
      if i < self.num_dropout:
        h = F.dropout(h, 0.5, self.training)
      if ("decoder", level) in self.sites:
        h = self.attention[f"decoder_{level}"](h)
      skip = skips[level]
      if ("skip", level) in self.sites:
        skip = self.attention[f"skip_{level}"](skip)
      h = torch.cat([skip, h], 1)
    return torch.tanh(self.out_conv(F.relu(h)).float())


class PatchGAN(nn.Module):
  """fer_jax.models.patchgan.PatchGAN with batch norm."""

  def __init__(self, in_channels, base_features=64, num_layers=3):
    super().__init__()
    specs = [(base_features, 2)]
    specs += [(base_features * min(2**n, 8), 2) for n in range(1, num_layers)]
    specs += [(base_features * min(2**num_layers, 8), 1), (1, 1)]
    self.convs, self.norms = nn.ModuleList(), nn.ModuleList()
    cin = in_channels
    for i, (f, s) in enumerate(specs):
      norm = 0 < i < len(specs) - 1
      self.convs.append(nn.Conv2d(cin, f, 4, s, 1, bias=not norm))
      self.norms.append(_bn(f) if norm else nn.Identity())
      cin = f

  def forward(self, x):
    last = len(self.convs) - 1
    for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
      x = conv(x)
      if i == last:
        break
      x = F.leaky_relu(norm(x), 0.2)
    return x.float()


class ResNetClassifier(nn.Module):
  """IF-GAN's E (fer_jax.models.classifier): (logits, features)."""

  def __init__(self, arch, num_classes, base_width, in_channels):
    super().__init__()
    self.backbone = ResNet(arch, in_channels, base_width)
    self.fc = nn.Linear(self.backbone.feature_dim, num_classes)

  def forward(self, x):
    feats = self.backbone(x)
    return self.fc(feats).float(), feats


# ---------------------------------------------------------------- GroupGAN
_VGG_CFGS = {
    "vgg11": (1, "M", 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M"),
    "vgg13": (1, 1, "M", 2, 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M"),
    "vgg16": (1, 1, "M", 2, 2, "M", 4, 4, 4, "M", 8, 8, 8, "M", 8, 8, 8, "M"),
    "vgg19": (1, 1, "M", 2, 2, "M", 4, 4, 4, 4, "M", 8, 8, 8, 8, "M", 8, 8,
              8, 8, "M"),
}


def pool_matrix(n_in: int, n_out: int) -> np.ndarray:
  """torch's adaptive average pooling along one axis as a matrix (as
  fer_jax.models.basenets, which runs it as a matmul where bins overlap)."""
  m = np.zeros((n_out, n_in), np.float32)
  for i in range(n_out):
    start, end = (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)
    m[i, start:end] = 1.0 / (end - start)
  return m


def adaptive_avg_pool(x, out: int):
  """fer_jax's adaptive_avg_pool on NCHW: a reshape-mean for equal bins, a
  float32 matmul per axis otherwise (the same matmuls fer_jax counts)."""
  for axis in (2, 3):
    n = x.shape[axis]
    if n == out:
      continue
    if n % out == 0:
      shape = list(x.shape)
      shape[axis:axis + 1] = [out, n // out]
      x = x.reshape(shape).mean(axis + 1)
      continue
    m = torch.from_numpy(pool_matrix(n, out)).to(x.device)
    with torch.autocast(x.device.type, enabled=False):
      y = torch.matmul(x.float().movedim(axis, -1), m.t())
    x = y.movedim(-1, axis).to(x.dtype)
  return x


class BaseNet(nn.Module):
  """GroupGAN's BaseNet (fer_jax.models.basenets): VGG (+BN) with reduced
  FC layers, or a ResNet with a Dense head; returns (logits, features)."""

  def __init__(self, arch, num_classes, fc_width, base_width, dropout,
               in_channels=3):
    super().__init__()
    self.dropout = dropout
    name = arch[:-3] if arch.endswith("_bn") else arch
    self.resnet = name.startswith("resnet")
    if self.resnet:
      self.backbone = ResNet(name, in_channels, base_width)
      self.fc = nn.Linear(self.backbone.feature_dim, num_classes)
      return
    if name not in _VGG_CFGS:
      raise NotImplementedError(f"no torch twin of BaseNet {arch!r}")
    layers, cin = [], in_channels
    for v in _VGG_CFGS[name]:
      if v == "M":
        layers.append(nn.MaxPool2d(2, 2))
        continue
      layers.append(nn.Conv2d(cin, base_width * v, 3, 1, 1))
      if arch.endswith("_bn"):
        layers.append(_bn(base_width * v))
      layers.append(nn.ReLU())
      cin = base_width * v
    self.features = nn.Sequential(*layers)
    self.classifier_0 = nn.Linear(cin * 49, fc_width)
    self.classifier_3 = nn.Linear(fc_width, fc_width)
    self.classifier_6 = nn.Linear(fc_width, num_classes)

  def forward(self, x, features_only=False):
    """``features_only``: E's use, logits not computed (fer_jax's jit drops
    the unused last FC)."""
    if self.resnet:
      feats = self.backbone(x)
      head = self.fc
    else:
      x = adaptive_avg_pool(self.features(x), 7).flatten(1)
      x = F.relu(self.classifier_0(x))
      x = F.dropout(x, self.dropout, self.training)
      x = F.relu(self.classifier_3(x))
      feats = F.dropout(x, self.dropout, self.training)
      head = self.classifier_6
    if features_only:
      return None, feats.float()
    return head(feats).float(), feats.float()


class ResidualBlock(nn.Module):
  def __init__(self, f):
    super().__init__()
    self.conv1, self.bn1 = nn.Conv2d(f, f, 3, 1, 1), _bn(f)
    self.conv2, self.bn2 = nn.Conv2d(f, f, 3, 1, 1), _bn(f)

  def forward(self, x):
    h = F.relu(self.bn1(self.conv1(x)))
    return F.relu(x + self.bn2(self.conv2(h)))


class MagnifyingGenerator(nn.Module):
  """GroupGAN's G (fer_jax.models.groupgan_nets), conditioned on F_exp."""

  def __init__(self, features, strides, in_channels=3, cond_dim=0,
               kernels=(7, 5, 3, 3), upsample="transpose", residual=False):
    super().__init__()
    if any(s not in (1, 2) for s in strides) or (
        upsample == "transpose" and any(s != 2 for s in strides)):
      raise NotImplementedError("twin: transposed upsampling needs stride 2")
    self.strides, self.upsample, self.residual = strides, upsample, residual
    self.enc = nn.ModuleList()
    cin = in_channels
    for f, k, s in zip(features, kernels, strides):
      self.enc.append(nn.ModuleList([nn.Conv2d(cin, f, k, s, k // 2), _bn(f),
                                     ResidualBlock(f)]))
      cin = f
    cin += cond_dim
    widths = list(features[-2::-1]) + [features[0]]
    self.dec = nn.ModuleList()
    for f, s in zip(widths, strides[::-1]):
      conv = (nn.ConvTranspose2d(cin, f, 4, 2, 1) if upsample == "transpose"
              else nn.Conv2d(cin, f, 3, 1, 1))
      self.dec.append(nn.ModuleList([conv, _bn(f)]))
      cin = f
    self.out0_conv, self.out0_bn = nn.Conv2d(cin, features[0], 3, 1, 1), _bn(
        features[0])
    self.out1_conv = nn.Conv2d(features[0], in_channels, 3, 1, 1)

  def forward(self, x, f_exp=None):
    h = x
    for conv, bn, res in self.enc:
      h = res(F.relu(bn(conv(h))))
    if f_exp is not None:
      cond = f_exp[:, :, None, None].to(h.dtype).expand(
          -1, -1, h.shape[2], h.shape[3])
      h = torch.cat([h, cond], 1)
    for (conv, bn), s in zip(self.dec, self.strides[::-1]):
      if self.upsample == "resize" and s > 1:
        h = F.interpolate(h, scale_factor=s, mode="nearest")
      h = F.relu(bn(conv(h)))
    h = F.relu(self.out0_bn(self.out0_conv(h)))
    h = self.out1_conv(h).float()
    if not self.residual:
      return torch.tanh(h)
    return torch.tanh(torch.atanh(x.float().clamp(-0.999, 0.999)) + h)


class VGGDiscriminator(nn.Module):
  """GroupGAN's D / D': conv3 s1 + conv3 s2 per width, LeakyReLU(0.2),
  flatten, F_exp, Dense(fc), logit."""

  def __init__(self, features, fc_width, image_size, in_channels=3,
               cond_dim=0):
    super().__init__()
    layers, cin, side = [], in_channels, image_size
    for f in features:
      layers += [nn.Conv2d(cin, f, 3, 1, 1), nn.LeakyReLU(0.2),
                 nn.Conv2d(f, f, 3, 2, 1), nn.LeakyReLU(0.2)]
      cin, side = f, (side + 1) // 2
    self.convs = nn.Sequential(*layers)
    self.fc = nn.Linear(cin * side * side + cond_dim, fc_width)
    self.logit = nn.Linear(fc_width, 1)

  def forward(self, x, f_exp=None):
    h = self.convs(x).flatten(1)
    if f_exp is not None:
      h = torch.cat([h, f_exp.to(h.dtype)], -1)
    return self.logit(F.leaky_relu(self.fc(h), 0.2))[:, 0].float()


# --------------------------------------------------------------------- SNA
class Branch(nn.Module):
  """One scale of SNA's multi-scale network (Table II)."""

  def __init__(self, widths, fc, side, dropout, bn_momentum):
    super().__init__()
    w1, w2, w3, w4, w5 = widths
    spec = [("conv1a", 1, w1, 5), ("conv1b", w1, w1, 5), ("conv2a", w1, w2, 3),
            ("conv2b", w2, w2, 3), ("conv3a", w2, w3, 3),
            ("conv3b", w3, w3, 3), ("conv4", w3, w4, 3), ("conv5", w4, w5, 1)]
    self.convs = nn.ModuleDict()
    for name, cin, cout, k in spec:
      self.convs[name] = nn.Sequential(
          nn.Conv2d(cin, cout, k, 1, k // 2, bias=False),
          _bn(cout, bn_momentum), nn.ReLU())
    self.dropout = dropout
    self.fc = nn.Linear(w5 * (side // 16)**2, fc)

  def forward(self, x, features_only=False):
    c = self.convs
    x = F.max_pool2d(c["conv1a"](x), 2)
    x = F.max_pool2d(c["conv2a"](c["conv1b"](x)), 2)
    x = c["conv3b"](F.max_pool2d(c["conv3a"](c["conv2b"](x)), 2))
    feats = {"conv3": x}
    x = feats["conv4"] = F.max_pool2d(c["conv4"](x), 2)
    x = feats["conv5"] = c["conv5"](x)
    if features_only:
      return None, feats
    x = F.dropout(x, self.dropout, self.training).flatten(1)
    return F.relu(self.fc(x)), feats


class MultiScaleNet(nn.Module):
  """SNA's two-branch network: (ori, half, fused) logits."""

  def __init__(self, num_classes, widths, fc, side, dropout=0.5,
               bn_momentum=0.9):
    super().__init__()
    self.ori = Branch(widths, fc[0], side, dropout, bn_momentum)
    self.half_branch = Branch(widths, fc[1], side // 2, dropout, bn_momentum)
    self.head_ori = nn.Linear(fc[0], num_classes)
    self.head_half = nn.Linear(fc[1], num_classes)
    self.head_fuse = nn.Linear(fc[0] + fc[1], num_classes)

  def forward(self, x):
    f_ori, _ = self.ori(x)
    f_half, _ = self.half_branch(F.avg_pool2d(x, 2))
    return (self.head_ori(f_ori).float(), self.head_half(f_half).float(),
            self.head_fuse(torch.cat([f_ori, f_half], -1)).float())

  def fused(self, x):
    """The fused head alone (fer_jax's jit drops the two unused heads)."""
    f_ori, _ = self.ori(x)
    f_half, _ = self.half_branch(F.avg_pool2d(x, 2))
    return self.head_fuse(torch.cat([f_ori, f_half], -1)).float()

  def perceptual_features(self, x):
    """The ori branch's Conv3..Conv5 (what eq. 5 reads: fer_jax's jit
    drops the rest of the network there as dead code)."""
    feats = self.ori(x, features_only=True)[1]
    return [feats["conv3"], feats["conv4"], feats["conv5"]]


class Encoder(nn.Module):
  """SNA's encoder (Table I): (code, hidden levels)."""

  def __init__(self, widths, code_dim, side, dropout=0.1, bn_momentum=0.9):
    super().__init__()
    self.convs, self.bns = nn.ModuleList(), nn.ModuleList()
    cin = 1
    for w in widths:
      self.convs.append(nn.Conv2d(cin, w, 3, 2, 1))
      self.bns.append(_bn(w, bn_momentum))
      cin = w
    self.fc = nn.Linear(cin * (side // 16)**2, code_dim)
    self.dropout = dropout

  def forward(self, x, noisy=None):
    noisy = self.training if noisy is None else noisy
    h = F.dropout(x, self.dropout, noisy)
    hidden = []
    for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
      h = bn(conv(h))
      if i < len(self.convs) - 1:
        h = F.dropout(F.leaky_relu(h, 0.01), self.dropout, noisy)
      else:
        h = torch.tanh(h)
      hidden.append(h)
    return self.fc(h.flatten(1)).float(), hidden


class ResBlock(nn.Module):
  def __init__(self, w, final=False, bn_momentum=0.9):
    super().__init__()
    self.conv1 = nn.Conv2d(w, w, 3, 1, 1, bias=False)
    self.bn1 = _bn(w, bn_momentum)
    self.conv2 = nn.Conv2d(w, w, 3, 1, 1, bias=False)
    self.bn2 = _bn(w, bn_momentum)
    self.final = final

  def forward(self, x):
    y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
    return x + y if self.final else F.relu(x + y)


class Decoder(nn.Module):
  """SNA's decoder: (image, recovered hidden levels 1..4)."""

  def __init__(self, bottleneck, enc_top, widths, res_blocks, code_dim,
               bn_momentum=0.9):
    super().__init__()
    self.s, self.enc_top = bottleneck, enc_top
    self.fc = nn.Linear(code_dim, bottleneck * bottleneck * enc_top)
    self.stages = nn.ModuleList()
    cin = enc_top
    for w, n in zip(widths, res_blocks):
      self.stages.append(nn.Sequential(
          nn.ConvTranspose2d(cin, w, 3, 2, 1, output_padding=1),
          *[ResBlock(w, bn_momentum=bn_momentum) for _ in range(n)]))
      cin = w
    self.out = nn.Sequential(
        nn.ConvTranspose2d(cin, 1, 3, 1, 1),
        *[ResBlock(1, True, bn_momentum)
          for _ in range(res_blocks[len(widths)])])
    self.num_levels = len(widths)

  def forward(self, code):
    h = self.fc(code).reshape(-1, self.s, self.s, self.enc_top)
    h = h.permute(0, 3, 1, 2)
    recovered = [h]
    for stage in self.stages:
      h = stage(h)
      recovered.append(h)
    return self.out(h).float(), recovered[:self.num_levels][::-1]


class Critic(nn.Module):
  """SNA's WGAN critic: 4x4 stride-2 convs, LeakyReLU(0.2), a linear score."""

  def __init__(self, widths, side):
    super().__init__()
    layers, cin = [], 1
    for w in widths:
      layers += [nn.Conv2d(cin, w, 4, 2, 1), nn.LeakyReLU(0.2)]
      cin, side = w, side // 2
    self.convs = nn.Sequential(*layers)
    self.fc = nn.Linear(cin * side * side, 1)

  def forward(self, x):
    return self.fc(self.convs(x).flatten(1))[:, 0].float()
