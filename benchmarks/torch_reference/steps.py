"""PyTorch twins of fer_jax's training steps, built from the same config.

``build(config, num_classes, device)`` returns the twin of the step the
benchmark suite times for that config's method and phase:

=============  ==========================================================
gndl           GNDL's step: one ResNet pass over (examined, neutral), NFG,
               CE + lambda L_neu, Adam.
ifgan          IF-GAN's step: D on real/fake tuples, then G and E jointly
               (adversarial + L1 + CE on both tuples + island), Adam each.
cgan_wsc/cgan  pix2pix: D (halved), then G (adversarial + 100 L1).
sna/fer_sna    SNA stage 4: neighbours Dec(Enc(x) + noise), F on them and
               on x, symmetric-KL batch mask, masked focal loss, SGD.
sna/ae_refine  SNA stage 3: decoder vs the WGAN critic (critic update,
               RMSprop, clipping), perceptual features of the frozen F0.
groupgan/2v2   GroupGAN's loop: D, D', C, then G and E through the updated
               discriminators (the same vector-Jacobian products).
=============  ==========================================================

Each step does what fer_jax's step does on the device: augmentation from
uint8 frames (an affine crop/flip/rotation sampled bilinearly, noise), every
forward and backward pass the jax step runs (the same gradients: frozen
networks get no weight gradients, detached inputs no input gradients), and
the optimizer updates. Not mirrored, all scalar work beside the step's:
learning-rate schedules (constant here), the non-finite guard, metrics.

``mode``: 'fp32' (eager float32), 'amp' (eager, bfloat16 autocast,
channels_last) or 'compile' (torch.compile of every network in the 'amp'
setting). 'compile' compiles each network (and the methods named in
``Twin.calls``) on its own: its forward and, through AOTAutograd, its
backward; the step's Python (losses, ``autograd.grad``, optimizers) stays
eager, the usual way to compile a multi-network GAN step. A compiled
backward is one graph for all of a network's inputs, so where a step asks
for part of a network's gradients (GroupGAN's second pass through G asks
for F_exp's alone) it may compute the rest too: a cost the eager modes do
not pay.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from torch_reference import nets

MODES = ("fp32", "amp", "compile")


# ------------------------------------------------------------ shared parts
def optimizer(optim_cfg, params, device):
  """torch's counterpart of fer_jax.optim.make_optimizer (schedules left
  constant; weight decay as torch's L2 term, decoupled for adamw)."""
  name, lr = optim_cfg.name, optim_cfg.lr
  wd = optim_cfg.get("weight_decay", 0.0)
  fast = {"fused": True} if device.type == "cuda" else {}
  if name in ("adam", "adamw"):
    cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    return cls(params, lr, betas=(optim_cfg.b1, optim_cfg.b2),
               weight_decay=wd, **fast)
  if name == "sgd":
    return torch.optim.SGD(params, lr, momentum=optim_cfg.get("momentum", 0.9),
                           weight_decay=wd, **fast)
  if name == "rmsprop":
    return torch.optim.RMSprop(params, lr, alpha=0.99, eps=1e-8,
                               weight_decay=wd)
  raise ValueError(f"optimizer {name!r}")


@contextlib.contextmanager
def frozen(*modules):
  """No weight gradients for ``modules`` (fer_jax closes over their params
  as constants there): their convolutions run no weight-gradient pass."""
  params = [p for m in modules for p in m.parameters()]
  for p in params:
    p.requires_grad_(False)
  try:
    yield
  finally:
    for p in params:
      p.requires_grad_(True)


def _node(leaf):
  """A leaf that autograd.grad differentiates by, as a graph node (a free
  view): FlopCounterMode's module hooks refuse a leaf as a module input
  inside autograd.grad."""
  return leaf.view_as(leaf)


def set_grads(params, grads):
  for p, g in zip(params, grads):
    p.grad = g


def d_loss(real_logits, fake_logits):
  """fer_jax.losses.gan_discriminator_loss."""
  return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def g_loss(fake_logits):
  """fer_jax.losses.gan_generator_loss (non-saturating)."""
  return F.softplus(-fake_logits).mean()


def ce(logits, labels):
  return F.cross_entropy(logits.float(), labels)


class Augment:
  """fer_jax.data.augment on the device: uint8 NHWC views (B, V, H, W, C)
  -> float (B, V, C, crop, crop) in [-1, 1]; one random crop, flip and
  rotation per example, shared by its views (affine_grid + grid_sample),
  grey by luma, Gaussian noise."""

  def __init__(self, data_cfg):
    self.resize, self.crop = data_cfg.resize, data_cfg.crop
    self.flip, self.rotate = data_cfg.flip, data_cfg.rotate_deg
    self.noise, self.grey = data_cfg.noise_std, data_cfg.grey

  def __call__(self, views, memory_format=torch.contiguous_format):
    b, v, h, w, c = views.shape
    x = views.reshape(b * v, h, w, c).permute(0, 3, 1, 2).float()
    factor = h // self.resize
    if factor >= 2:
      x = F.avg_pool2d(x, factor)
    dev = x.device
    r, k = float(self.resize), self.crop
    offset = torch.randint(0, int(r) - k + 1, (b, 2), device=dev).float()
    centre = (offset + k / 2 - r / 2) / (r / 2)  # crop centre, normalised
    angle = math.radians(self.rotate) * (2 * torch.rand(b, device=dev) - 1)
    flip = torch.where(torch.rand(b, device=dev) < 0.5 if self.flip
                       else torch.zeros(b, dtype=torch.bool, device=dev),
                       -1.0, 1.0)
    s = k / r
    cos, sin = torch.cos(angle) * s, torch.sin(angle) * s
    theta = torch.stack([torch.stack([cos * flip, -sin, centre[:, 1]], -1),
                         torch.stack([sin * flip, cos, centre[:, 0]], -1)], 1)
    theta = theta.repeat_interleave(v, 0)
    grid = F.affine_grid(theta, (b * v, x.shape[1], k, k), align_corners=False)
    out = F.grid_sample(x, grid, "bilinear", "border", align_corners=False)
    out = out / 127.5 - 1.0
    if self.grey and out.shape[1] == 3:
      luma = torch.tensor([0.299, 0.587, 0.114], device=dev)
      out = (out * luma[:, None, None]).sum(1, keepdim=True)
    if self.noise > 0:
      noise = self.noise * torch.randn(b, 1, *out.shape[1:], device=dev)
      out = (out.reshape(b, v, *out.shape[1:]) + noise).flatten(0, 1)
    return [t.contiguous(memory_format=memory_format)
            for t in out.reshape(b, v, *out.shape[1:]).unbind(1)]


class Twin:
  """A step's networks, optimizers and the step itself.

  Subclasses build ``self.nets`` (name -> module, named as fer_jax's state
  keys), ``self.opts`` and ``slots`` (the batch's image slots), and write
  ``train_step(batch)``, which calls networks through ``self.run[name]``:
  the module (or one of its methods, ``calls``), or its torch.compile'd
  wrapper."""

  slots: tuple[str, ...] = ("image",)

  def __init__(self, config, num_classes, device):
    self.config, self.num_classes = config, num_classes
    self.device = torch.device(device)
    self.augment = Augment(config.data)
    self.batch_size = config.train.batch_size
    self.mode = "fp32"
    self.memory_format = torch.contiguous_format

  def finish(self, nets_, opts, calls=None):
    """``calls``: name -> (network, method name) entry points beside the
    networks' own forward (each compiled on its own in 'compile' mode)."""
    self.nets = {k: m.to(self.device) for k, m in nets_.items()}
    self.opts = opts(self)
    self.calls = dict(self.nets)
    for name, (net, method) in (calls or {}).items():
      self.calls[name] = getattr(self.nets[net], method)
    self.run = dict(self.calls)

  def set_mode(self, mode: str):
    """fp32 | amp (bf16 autocast, channels_last) | compile (amp, every
    network torch.compile'd). Call once, before the first step."""
    if mode not in MODES:
      raise ValueError(f"mode {mode!r}: choose one of {MODES}")
    self.mode = mode
    if mode != "fp32":
      self.memory_format = torch.channels_last
      for m in self.nets.values():
        m.to(memory_format=torch.channels_last)
    if mode == "compile":
      self.run = {k: torch.compile(f) for k, f in self.calls.items()}

  def image_shape(self):
    """Frames as stored (throughput.random_batch's shape)."""
    d = self.config.data
    s = d.synth.image_size if d.name == "fer_synth" else d.resize
    return (s, s, 1 if self.config.data.grey else 3)

  def make_batch(self, seed: int = 0):
    """Random uint8 frames and labels, already on the device."""
    g = torch.Generator().manual_seed(seed)
    b = self.batch_size
    batch = {s: torch.randint(0, 256, (b,) + self.image_shape(), generator=g,
                              dtype=torch.uint8) for s in self.slots}
    batch["label"] = torch.randint(0, self.num_classes, (b,), generator=g)
    return {k: v.to(self.device) for k, v in batch.items()}

  def views(self, batch, slots=None):
    views = torch.stack([batch[s] for s in (slots or self.slots)], 1)
    return self.augment(views, self.memory_format)

  def step(self, batch):
    if self.mode == "fp32":
      return self.train_step(batch)
    with torch.autocast(self.device.type, dtype=torch.bfloat16):
      return self.train_step(batch)

  def train_step(self, batch):
    raise NotImplementedError


# -------------------------------------------------------------------- GNDL
class GNDL(Twin):
  slots = ("image", "neutral")

  def __init__(self, config, num_classes, device):
    super().__init__(config, num_classes, device)
    m, g = config.model, config.gndl
    self.lam, self.reduction = g.lam, g.l_neu_reduction
    self.to_backbone = g.neutral_loss_to_backbone
    self.target_grad = g.get("neutral_target_gradient", True)
    if g.get("neutral_source", "generated") != "generated":
      raise NotImplementedError("twin: the oracle arm")
    ch = 1 if config.data.grey else 3
    self.finish({"net": nets.GNDLNet(m.arch, num_classes, m.base_width, ch,
                                     g.negative_slope)},
                lambda t: {"net": optimizer(config.optim,
                                            t.nets["net"].parameters(),
                                            t.device)})

  def train_step(self, batch):
    exam, neutral = self.views(batch)
    logits, f_gen, f_neu = self.run["net"](exam, neutral, self.to_backbone,
                                           self.target_grad)
    diff = (f_gen.float() - f_neu).abs()
    l_neu = {"mean": diff.mean(), "sum": diff.sum(-1).mean(),
             "relative": diff.mean() / (f_neu.abs().mean() + 1e-6)}[
                 self.reduction]
    loss = ce(logits, batch["label"]) + self.lam * l_neu
    opt = self.opts["net"]
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss


# ------------------------------------------------------------------ IF-GAN
class _IslandE(nn.Module):
  """IF-GAN's E state: the ResNet classifier and the island centres."""

  def __init__(self, arch, num_classes, base_width, in_channels):
    super().__init__()
    self.net = nets.ResNetClassifier(arch, num_classes, base_width,
                                     in_channels)
    self.centers = nn.Parameter(
        0.1 * torch.randn(num_classes, self.net.backbone.feature_dim))

  def forward(self, x):
    return self.net(x)


def island_loss(features, labels, centers, alpha):
  """fer_jax.losses.island_loss."""
  f, c = features.float(), centers.float()
  centre = 0.5 * ((f - c[labels])**2).sum(-1).mean()
  unit = c / c.norm(dim=-1, keepdim=True).clamp_min(1e-8)
  cos = unit @ unit.t()
  off = 1.0 - torch.eye(c.shape[0], device=c.device)
  return centre + alpha * ((cos + 1.0) * off).sum()


class IFGAN(Twin):

  def __init__(self, config, num_classes, device):
    super().__init__(config, num_classes, device)
    c = self.c = config.ifgan
    if c.classifier_input != "pair":
      raise NotImplementedError("twin: classifier_input='pair' only")
    ch = 1 if config.data.grey else 3
    attention = ("skip", "encoder", "decoder") if c.attention else ()
    g = nets.UNet(c.unet_depth, c.unet_features, c.unet_max_features, ch, ch,
                  c.unet_dropout_layers, attention)
    d = nets.PatchGAN(2 * ch, c.d_features, c.d_layers)
    e = _IslandE(config.model.arch, num_classes, config.model.base_width,
                 2 * ch)
    self.class_avg = torch.rand(num_classes, *self.image_shape()) * 255
    self.finish({"g": g, "d": d, "e": e}, lambda t: {
        k: optimizer(config.optim, m.parameters(), t.device)
        for k, m in t.nets.items()})
    self.class_avg = self.class_avg.to(self.device)

  def train_step(self, batch):
    c, labels = self.c, batch["label"]
    target_u8 = self.class_avg[labels]
    views = torch.stack([batch["image"].float(), target_u8], 1)
    x, target = self.augment(views, self.memory_format)
    g, d, e = self.run["g"], self.run["d"], self.run["e"]
    fake = g(x)
    # D (eq. 2): the fake tuple first, then the real one (BN order).
    fake_logits = d(torch.cat([x, fake.detach().to(x.dtype)], 1))
    real_logits = d(torch.cat([x, target], 1))
    loss_d = c.w_gan * d_loss(real_logits, fake_logits)
    self.opts["d"].zero_grad(set_to_none=True)
    loss_d.backward()
    self.opts["d"].step()
    # G and E against the updated D.
    with frozen(self.nets["d"]):
      adv_logits = d(torch.cat([x, fake.to(x.dtype)], 1))
    e_net = self.nets["e"]
    real_logits, real_feats = e(torch.cat([x, target], 1))
    fake_logits, _ = e(torch.cat([x, fake.to(x.dtype)], 1))
    loss = (c.w_gan * g_loss(adv_logits)
            + c.w_l1 * (fake - target.float()).abs().mean()
            + c.w_softmax * (ce(real_logits, labels) + ce(fake_logits, labels))
            + c.w_island * island_loss(real_feats, labels, e_net.centers,
                                       c.island_alpha))
    for k in ("g", "e"):
      self.opts[k].zero_grad(set_to_none=True)
    loss.backward()
    self.opts["g"].step()
    self.opts["e"].step()
    return loss + loss_d


# ---------------------------------------------------------------- cGAN+WSC
class CGAN(Twin):
  slots = ("image", "neutral")

  def __init__(self, config, num_classes, device):
    super().__init__(config, num_classes, device)
    c = self.c = config.cgan_wsc
    ch = 1 if config.data.grey else 3
    g = nets.UNet(c.unet_depth, c.unet_features, c.unet_max_features, ch, ch,
                  c.unet_dropout_layers)
    d = nets.PatchGAN(2 * ch, c.d_features, c.d_layers)
    self.finish({"g": g, "d": d}, lambda t: {
        k: optimizer(config.optim, m.parameters(), t.device)
        for k, m in t.nets.items()})

  def train_step(self, batch):
    x, y = self.views(batch)
    g, d = self.run["g"], self.run["d"]
    fake = g(x)
    fake_logits = d(torch.cat([x, fake.detach().to(x.dtype)], 1))
    real_logits = d(torch.cat([x, y], 1))
    loss_d = 0.5 * d_loss(real_logits, fake_logits)
    self.opts["d"].zero_grad(set_to_none=True)
    loss_d.backward()
    self.opts["d"].step()
    with frozen(self.nets["d"]):
      adv = g_loss(d(torch.cat([x, fake.to(x.dtype)], 1)))
    loss = adv + self.c.l1_weight * (fake - y.float()).abs().mean()
    self.opts["g"].zero_grad(set_to_none=True)
    loss.backward()
    self.opts["g"].step()
    return loss + loss_d


# --------------------------------------------------------------------- SNA
def focal(logits, labels, gamma):
  logp = F.log_softmax(logits.float(), -1)
  logp_t = logp.gather(1, labels[:, None])[:, 0]
  return -((1.0 - logp_t.exp())**gamma) * logp_t


def symmetric_kl(logits_p, logits_q):
  logp = F.log_softmax(logits_p.float(), -1)
  logq = F.log_softmax(logits_q.float(), -1)
  return 0.5 * ((logp.exp() - logq.exp()) * (logp - logq)).sum(-1)


class _SNA(Twin):
  """SNA's networks (F, F0, encoder, decoder, critic), for either step."""

  def __init__(self, config, num_classes, device):
    super().__init__(config, num_classes, device)
    c = self.c = config.sna
    s = config.data.crop
    fer = lambda: nets.MultiScaleNet(num_classes, tuple(c.widths),
                                     tuple(c.fc), s, c.dropout,
                                     c.bn_momentum)
    enc_w = tuple(c.ae_widths)
    modules = {
        "fer": fer(), "fer0": fer(),
        "enc": nets.Encoder(enc_w, c.code_dim, s, c.ae_dropout,
                            c.bn_momentum),
        "dec": nets.Decoder(s // 16, enc_w[-1],
                            (enc_w[2], enc_w[1], enc_w[0], c.ae_top_width),
                            tuple(c.ae_res_blocks), c.code_dim,
                            c.bn_momentum),
        "critic": nets.Critic(tuple(c.critic_widths), s)}
    self.finish(modules, lambda t: {
        "fer": optimizer(c.fer.optim, t.nets["fer"].parameters(), t.device),
        "dec": optimizer(c.refine.dec_optim, t.nets["dec"].parameters(),
                         t.device),
        "critic": optimizer(c.refine.critic_optim,
                            t.nets["critic"].parameters(), t.device)},
                calls={"fer_fused": ("fer", "fused"),
                       "fer0_features": ("fer0", "perceptual_features")})
    for k in ("enc", "fer0"):
      self.nets[k].eval()


class SNAStage4(_SNA):
  """fer_sna: masked training of F on the autoencoder's neighbours."""

  def __init__(self, config, num_classes, device):
    super().__init__(config, num_classes, device)
    self.nets["dec"].eval()
    if self.c.mask != "batch":
      raise NotImplementedError("twin: mask='batch' (eq. 14) only")

  def train_step(self, batch):
    c, labels = self.c, batch["label"]
    (x,) = self.views(batch)
    fer = self.run["fer"]
    with torch.no_grad():
      code, _ = self.run["enc"](x)
      sigma = (c.noise_std * code.std(0, keepdim=True)
               if c.get("noise_relative", False) else c.noise_std)
      x_tr, _ = self.run["dec"](code + sigma * torch.randn_like(code))
      x_tr = x_tr.clamp(-1, 1).to(x.dtype).contiguous(
          memory_format=self.memory_format)
      logits_tr = self.run["fer_fused"](x_tr)
    logits3 = fer(x)
    div = symmetric_kl(logits3[2].detach(), logits_tr)
    mask = (div < div.mean()).float()
    gamma = c.focal_gamma if c.loss == "focal" else 0.0
    per = sum(focal(lg, labels, gamma) for lg in logits3)
    loss = (per * mask).sum() / per.shape[0]
    opt = self.opts["fer"]
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss


class SNARefine(_SNA):
  """ae_refine: the decoder against the WGAN critic (eq. 6-8)."""

  def train_step(self, batch):
    c = self.c
    (x,) = self.views(batch)
    enc, dec, critic = self.run["enc"], self.run["dec"], self.run["critic"]
    fer0 = self.run["fer0_features"]
    with torch.no_grad():
      code, clean = enc(x)
    fake, rec = dec(code)
    # Critic (eq. 6) on real faces vs the detached reconstructions, clipped.
    loss_c = critic(fake.detach().to(x.dtype)).mean() - critic(x).mean()
    self.opts["critic"].zero_grad(set_to_none=True)
    loss_c.backward()
    self.opts["critic"].step()
    with torch.no_grad():
      for p in self.nets["critic"].parameters():
        p.clamp_(-c.critic_clip, c.critic_clip)
      targets = fer0(x)
    alphas = (c.alpha_input,) + (c.alpha_hidden,) * len(c.ae_widths)
    with frozen(self.nets["critic"], self.nets["fer0"]):
      adv = -critic(fake.to(x.dtype)).mean()
      feats = fer0(fake.to(x.dtype))
    l_ae = sum(a * (z.float() - zh.float()).square().mean() for a, z, zh in
               zip(alphas, [x] + clean, [fake] + rec))
    pixel = (fake - x.float()).square().mean()
    perc = sum(w * (a.float() - b.float()).square().mean() for w, a, b in
               zip(c.perceptual_weights, feats, targets))
    loss = (c.lambda_ae * l_ae + c.lambda_adv * adv
            + c.lambda_rec * (c.pixel_weight * pixel + perc))
    self.opts["dec"].zero_grad(set_to_none=True)
    loss.backward()
    self.opts["dec"].step()
    return loss + loss_c


# ---------------------------------------------------------------- GroupGAN
class GroupGAN(Twin):
  """The 2V2 loop (Algorithm 1): D, D', C, then G and E."""
  slots = ("weak", "peak")

  def __init__(self, config, num_classes, device):
    super().__init__(config, num_classes, device)
    c = self.c = config.groupgan
    if c.variant != "2v2":
      raise NotImplementedError("twin: variant='2v2' only")
    ch = 1 if config.data.grey else 3
    arch, bw = config.model.arch, config.model.base_width
    basenet = lambda: nets.BaseNet(arch, num_classes, c.fc_width, bw,
                                   c.dropout, ch)
    e = basenet()
    f_dim = (c.fc_width if not e.resnet else e.backbone.feature_dim)
    s = config.data.crop
    disc = lambda: nets.VGGDiscriminator(tuple(c.d_features), c.d_fc_width,
                                         s, ch, f_dim)
    g = nets.MagnifyingGenerator(tuple(c.g_features), tuple(c.g_strides), ch,
                                 f_dim, upsample=c.g_upsample,
                                 residual=c.g_residual)

    def opts(t):
      out = {}
      for k, m in t.nets.items():
        optim = config.optim.copy_and_resolve_references()
        if k in ("c", "e") and c.basenet_lr:
          optim.lr = c.basenet_lr
        out[k] = optimizer(optim, m.parameters(), t.device)
      return out
    self.finish({"c": basenet(), "e": e, "g": g, "d": disc(), "dp": disc()},
                opts)

  def _adv(self, fake, f, w_d, w_dp):
    """Gradients of w_d phi_D + w_dp phi_D' w.r.t. (fake, F_exp), the
    discriminators frozen (fer_jax's adv_fn)."""
    fake = fake.detach().requires_grad_(True)
    f = f.detach().requires_grad_(True)
    with frozen(self.nets["d"], self.nets["dp"]):
      x, cond = _node(fake), _node(f)
      loss = (w_d * g_loss(self.run["d"](x, cond))
              + w_dp * g_loss(self.run["dp"](x, cond)))
      return torch.autograd.grad(loss, [fake, f])

  def train_step(self, batch):
    c, labels = self.c, batch["label"]
    weak, peak = self.views(batch)
    run, n = self.run, self.nets
    _, f_exp = run["e"](weak, True)
    fake = run["g"](weak, f_exp)
    fake_sg, cond = fake.detach().to(weak.dtype), f_exp.detach()
    # D (eq. 14-15), then D' (eq. 16-17, the weak faces as negatives too).
    loss_d = d_loss(run["d"](peak, cond), run["d"](fake_sg, cond))
    self.opts["d"].zero_grad(set_to_none=True)
    loss_d.backward()
    self.opts["d"].step()
    neg = [run["dp"](fake_sg, cond)]
    if c.dprime_weak_negatives:
      neg.append(run["dp"](weak, cond))
    loss_dp = d_loss(run["dp"](peak, cond), torch.cat(neg))
    self.opts["dp"].zero_grad(set_to_none=True)
    loss_dp.backward()
    self.opts["dp"].step()
    # C on real peaks and on G(weak); CE_fake's image gradient is Phi_C.
    fake_in = fake.detach().to(weak.dtype).requires_grad_(True)
    real_logits, _ = run["c"](peak)
    fake_logits, _ = run["c"](_node(fake_in))
    loss_c = ce(real_logits, labels) + ce(fake_logits, labels)
    c_params = list(n["c"].parameters())
    grads = torch.autograd.grad(loss_c, c_params + [fake_in])
    set_grads(c_params, grads[:-1])
    ce_dfake = grads[-1].float()
    self.opts["c"].step()
    # G: content + adversarial (updated D, D') + gamma CE_fake.
    g_adv_dfake, _ = self._adv(fake, f_exp, c.alpha_g, c.beta_g)
    px = fake.detach().requires_grad_(True)
    sq = (px - peak.float()).square()
    content = (sq.flatten(1).sum(1).mean() if c.content_reduction == "sum"
               else sq.mean())  # fer_jax.methods.groupgan.mse_loss
    pixel = content + c.g_change_l1 * (px - weak.float()).abs().mean()
    (dpixel,) = torch.autograd.grad(pixel, [px])
    g_params = list(n["g"].parameters())
    set_grads(g_params, torch.autograd.grad(
        fake, g_params, dpixel + g_adv_dfake + c.gamma_g * ce_dfake,
        retain_graph=True))
    # E (eq. 13): through G's bottleneck and the discriminators' condition.
    e_adv_dfake, e_adv_dcond = self._adv(fake, f_exp, c.alpha_e, c.beta_e)
    (f_ct,) = torch.autograd.grad(fake, f_exp, e_adv_dfake + ce_dfake,
                                  retain_graph=True)
    e_params = list(n["e"].parameters())
    # E's last FC (its pre-training head) is unused here: a zero gradient,
    # as jax's for it, so the optimizer still steps it.
    set_grads(e_params, torch.autograd.grad(
        f_exp, e_params, f_ct + e_adv_dcond, allow_unused=True,
        materialize_grads=True))
    self.opts["g"].step()
    self.opts["e"].step()
    return loss_d + loss_dp + loss_c + pixel


# ------------------------------------------------------------------ builder
TWINS = {("gndl", None): GNDL, ("ifgan", None): IFGAN,
         ("cgan_wsc", "cgan"): CGAN, ("sna", "fer_sna"): SNAStage4,
         ("sna", "ae_refine"): SNARefine, ("groupgan", None): GroupGAN}


def build(config, num_classes: int, device="cpu", phase: str | None = None,
          batch_size: int | None = None) -> Twin:
  """The twin of ``config.method``'s ``phase`` step (default: the suite's
  phase, the method's last)."""
  config = config.copy_and_resolve_references()
  if not batch_size and config.method == "sna":
    batch_size = (config.sna.refine.batch_size if phase == "ae_refine"
                  else config.sna.fer.batch_size)
  if batch_size:
    config.train.batch_size = batch_size
  key = (config.method, phase)
  if key not in TWINS:
    key = (config.method, None)
  if key not in TWINS:
    raise NotImplementedError(f"no torch twin of {config.method}:{phase}")
  return TWINS[key](config, num_classes, device)
