"""GroupGAN: four-player weak-expression magnification (Niu et al. 2022).

A weak expression (frames 6-8 of a sequence) is magnified to its peak (the
last frame) by a generator G, then classified by C. Variants (Table 1):

- ``cnn``: C (a BaseNet) trained and tested on the weak images (eq. 11).
- ``dcgan``: G against D (real peak vs fake) with content + adversarial loss
  (eq. 1-3); C classifies G(weak).
- ``1v2``: adds D' (peak vs weak/fake, eq. 5) and C's cross-entropy on the
  generated peak in G's loss (eq. 6).
- ``2v2``: adds the extractor E, whose expression vector F_exp conditions G's
  bottleneck and both discriminators (eq. 14-17); E learns from C's loss on
  G(weak) and fools D and D' (eq. 13).

Algorithm 1 as phases: "pretrain_extractor" (E and its last FC as a
classifier on peak images), "pretrain_autoencoder" (G reconstructs faces),
then "groupgan": one jitted step updates D, then D', then G and E against the
updated discriminators, and C. C starts as a copy of the pre-trained E
classifier (the phase's ``enter``). Test: weak -> E and G -> G(weak, F_exp)
-> C.

Signs: eq. 6 and 13 write phi_D = -log(1 - D(fake)) as a term G and E
*minimise*, which would help D; Algorithm 1 has G and E descend on
log(1 - D(fake)), i.e. fool D. We follow Algorithm 1 in the non-saturating
form -log D(fake) (Goodfellow et al. 2014), and Phi_C as the cross-entropy
(Algorithm 1 drops its minus sign).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from fer_jax import losses, nets, viz
from fer_jax.data import augment as augment_lib
from fer_jax.methods import base
from fer_jax.models import io as params_io
from fer_jax.models.basenets import BaseNet
from fer_jax.models.groupgan_nets import (MagnifyingGenerator,
                                         VGGDiscriminator,
                                         mask_total_variation)
from fer_jax.optim import make_optimizer

VARIANTS = ("cnn", "dcgan", "1v2", "2v2")


def mse_loss(a, b, reduction: str = "mean"):
  """Eq. 1 / 12, ||X_peak - G(X_weak)||_2^2. 'mean': over every element
  (torch's MSELoss, eq. 1's "MSE loss"), so the 2e-3 adversarial weights and
  C's gamma_G = 1 are relative to a per-pixel error; 'sum': eq. 12 as
  printed, the squared norm of each image's difference (H x W x C times the
  mean), averaged over the batch."""
  sq = jnp.square(a.astype(jnp.float32) - b.astype(jnp.float32))
  if reduction == "sum":
    return jnp.mean(jnp.sum(sq, axis=tuple(range(1, sq.ndim))))
  return jnp.mean(sq)


def heat_map(a, b):
  """Eq. 22: H_ij = sum_k (a - b)_ijk^2, per image (B, H, W)."""
  return jnp.sum(jnp.square(a.astype(jnp.float32) - b.astype(jnp.float32)),
                 axis=-1)


def change_map_correlation(weak, fake, peak):
  """Per image (B,): Pearson's r over pixels between G's change map
  sum_k (G(weak) - weak)^2 and the real peak's sum_k (peak - weak)^2 (the
  eq. 22 form of each change). 1: G changes the face where the expression
  does (mouth, brows, eyes); 0: elsewhere, or uniformly. NaN where either
  map is constant (G left the face unchanged)."""
  def centred(h):
    h = h.reshape(h.shape[0], -1)
    return h - jnp.mean(h, axis=1, keepdims=True)
  a, b = centred(heat_map(fake, weak)), centred(heat_map(peak, weak))
  denom = jnp.sqrt(jnp.sum(a * a, axis=1) * jnp.sum(b * b, axis=1))
  return jnp.where(denom > 0, jnp.sum(a * b, axis=1)
                   / jnp.where(denom > 0, denom, 1.0), jnp.nan)


class GroupGAN(base.Method):
  name = "groupgan"
  eval_kind = "weak_peak_pair"  # test on the weak frame; grids show its peak

  def __init__(self, config, **kwargs):
    super().__init__(config, **kwargs)
    c = self.cfg = config.groupgan
    if c.variant not in VARIANTS:
      raise ValueError(f"config.groupgan.variant={c.variant!r}; choose one "
                       f"of {', '.join(VARIANTS)}")
    self.variant = c.variant
    self.has_g = c.variant != "cnn"
    self.has_dp = c.variant in ("1v2", "2v2")
    self.has_e = c.variant == "2v2"
    if c.get("g_attention", False):
      for field in ("g_attention_l1", "g_attention_tv"):
        if not c[field] >= 0:
          raise ValueError(f"config.groupgan.{field}={c[field]!r}: the mask "
                           "penalty's weight must be >= 0")
    net = dict(fc_width=c.fc_width, base_width=config.model.base_width,
               dropout=c.dropout, init_scheme=c.init, dtype=self.dtype,
               fast_layers=self.fast_layers)
    self.c_net = BaseNet(config.model.arch, self.num_classes, **net)
    self.g = MagnifyingGenerator(features=tuple(c.g_features),
                                 strides=tuple(c.g_strides),
                                 residual=c.g_residual,
                                 upsample=c.g_upsample,
                                 attention=c.get("g_attention", False),
                                 init_scheme=c.init,
                                 out_channels=self.spec.channels,
                                 dtype=self.dtype)
    self.d = VGGDiscriminator(features=tuple(c.d_features),
                              fc_width=c.d_fc_width, init_scheme=c.init,
                              dtype=self.dtype)
    t = config.train
    self.batch_size = t.batch_size
    main_kind = "single" if self.variant == "cnn" else "weak_peak_pair"
    self.main_steps = self.phase_steps(t, self.batch_size, main_kind, "weak")
    self.extractor_steps = self._pretrain_steps(
        c.extractor_steps, c.extractor_epochs, "peak")
    self.autoencoder_steps = self._pretrain_steps(
        c.autoencoder_steps, c.autoencoder_epochs, c.autoencoder_role)
    # Algorithm 1 gives each part its own learning rate (rho_G, rho_E,
    # rho_D, rho_D'): ``groupgan.basenet_lr`` (0 = optim.lr) is E's and C's,
    # optim.lr the others'. Every network keeps its own optimizer state (and,
    # with the plateau schedule, its own loss history), and a decaying
    # schedule spans the updates that network gets: E's pre-training (and
    # the loop, in 2V2), C's loop (or, in the CNN variant, its whole run),
    # G's autoencoder pre-training and the loop, D's and D''s loop.
    spe = self.steps_per_epoch(self.batch_size, main_kind, "weak")
    main, pre_e = self.main_steps, self.extractor_steps
    cnn_steps = self._pretrain_steps(c.extractor_steps, c.extractor_epochs,
                                     "peak", force=True) + main
    updates = {"c": main if self.has_g else cnn_steps,
               "e": pre_e + (main if self.has_e else 0),
               "g": self.autoencoder_steps + main, "d": main, "dp": main}
    self.txs = {}
    for key, n in updates.items():
      optim = config.optim.copy_and_resolve_references()
      if key in ("c", "e") and c.basenet_lr:
        optim.lr = c.basenet_lr
      self.txs[key] = make_optimizer(optim, spe, n)
    self._pictures = jax.jit(self._picture_arrays)
    self._logits_and_r = jax.jit(self._logits_and_change_r)

  def _pretrain_steps(self, steps, epochs, role, force=False):
    if not (self.has_g or force):
      return 0
    if steps:
      return int(steps)
    # 0 epochs skips the phase (e.g. E and G from an earlier run's params).
    return int(round(epochs * self.steps_per_epoch(self.batch_size, "single",
                                                   role)))

  # -- state
  def init_state(self, rng, batch):
    keys = jax.random.split(rng, 5)
    s, ch = self.spec.crop, self.spec.channels
    img = jnp.zeros((1, s, s, ch), jnp.float32)
    c_vars = self.c_net.init(keys[0], img, train=False)
    state = {"c": nets.network_state(c_vars, self.txs["c"])}
    if not self.has_g:
      return state
    # E has C's architecture (the BaseNet; its last FC is only used while
    # pre-training it as a classifier).
    e_vars = self.c_net.init(keys[1], img, train=False)
    state["e"] = nets.network_state(e_vars, self.txs["e"])
    f_exp = self._extract(state, img)[0] if self.has_e else None
    g_vars = self.g.init(keys[2], img, f_exp, train=False)
    state["g"] = nets.network_state(g_vars, self.txs["g"])
    d_vars = self.d.init(keys[3], img, f_exp)
    state["d"] = nets.network_state(d_vars, self.txs["d"])
    if self.has_dp:
      dp_vars = self.d.init(keys[4], img, f_exp)
      state["dp"] = nets.network_state(dp_vars, self.txs["dp"])
    return state

  def load_pretrained(self, state):
    """C's and E's BaseNets from ``config.init_from`` (ImageNet weights):
    convolutions (and BN) load; FC layers narrower than torchvision's
    (``groupgan.fc_width``) and the K-way head stay at their init."""
    loaded = self.pretrained_weights()
    if loaded is None:
      return state
    loaded = params_io.basenet_layout(loaded, self.config.model.arch)
    new = dict(state)
    for key in ("c", "e"):
      if key in state:
        new[key] = self.fit_pretrained(
            state[key], loaded, ("params",), ("batch_stats",),
            f"GroupGAN's {key.upper()} ({self.config.model.arch} BaseNet)",
            keep_mismatched_dense=True, tx=self.txs[key])
    return new

  def phases(self):
    if not self.has_g:
      # As many classifier updates as the GAN variants' C gets (E's
      # pre-training, whose result C starts from, plus the loop).
      steps = self._pretrain_steps(self.cfg.extractor_steps,
                                   self.cfg.extractor_epochs, "peak",
                                   force=True) + self.main_steps
      return [base.Phase("cnn", steps, self.batch_size, self.cnn_step,
                         example_kind="single", role="weak")]
    return [
        base.Phase("pretrain_extractor", self.extractor_steps,
                   self.batch_size, self.pretrain_extractor_step,
                   example_kind="single", role="peak"),
        base.Phase("pretrain_autoencoder", self.autoencoder_steps,
                   self.batch_size, self.pretrain_autoencoder_step,
                   example_kind="single", role=self.cfg.autoencoder_role),
        base.Phase("groupgan", self.main_steps, self.batch_size,
                   self.train_step, example_kind="weak_peak_pair",
                   role="weak", enter=self.start_classifier),
    ]

  def start_classifier(self, state):
    """C <- the pre-trained E classifier (fresh optimizer state)."""
    return {**state, "c": nets.network_state(state["e"], self.txs["c"])}

  # -- network applications
  def _classify(self, net, x, train, rng=None):
    """(logits, features, new batch_stats) of a BaseNet state ``net``."""
    variables = {"params": net["params"], "batch_stats": net["batch_stats"]}
    if not train:
      logits, feats = self.c_net.apply(variables, x, train=False)
      return logits, feats, net["batch_stats"]
    (logits, feats), upd = self.c_net.apply(
        variables, x, train=True, rngs={"dropout": rng},
        mutable=["batch_stats"])
    return logits, feats, upd.get("batch_stats", {})

  def _extract(self, state, x):
    """F_exp = E(x), inference mode: (features, logits)."""
    logits, feats, _ = self._classify(state["e"], x, train=False)
    return feats, logits

  def _generate(self, state, x, f_exp):
    g = state["g"]
    return self.g.apply({"params": g["params"],
                         "batch_stats": g["batch_stats"]}, x, f_exp,
                        train=False)

  def _disc(self, params, x, cond):
    return self.d.apply({"params": params}, x, cond)

  # -- phase steps
  def _update(self, key, net, grads, loss, batch_stats=None):
    """``nets.update`` of the network ``key`` with its own optimizer (the
    loss feeds only a plateau schedule)."""
    plateau = self.config.optim.schedule == "plateau"
    return nets.update(net, self.txs[key], grads, batch_stats=batch_stats,
                       loss=loss if plateau else None)

  def _classifier_step(self, state, key, x, labels, rng):
    """Cross-entropy update of the BaseNet ``state[key]`` on images x."""
    net = state[key]

    def loss_fn(params):
      logits, _, stats = self._classify({**net, "params": params}, x, True,
                                        rng)
      return losses.cross_entropy(logits, labels), (logits, stats)
    (loss, (logits, stats)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(net["params"])
    new = {**state, key: self._update(key, net, grads, loss, stats)}
    return new, {"loss": loss, "accuracy": losses.accuracy(logits, labels)}

  def cnn_step(self, state, batch, rng):
    """The CNN variant: C on weak images alone."""
    k_aug, k_drop = jax.random.split(rng)
    (x,) = augment_lib.augment_slots(self.spec, k_aug, batch, ("image",),
                                     train=True)
    return self._classifier_step(state, "c", x, batch["label"], k_drop)

  def pretrain_extractor_step(self, state, batch, rng):
    """Algorithm 1, line 2: E (with its last FC) classifies peak images."""
    k_aug, k_drop = jax.random.split(rng)
    (x,) = augment_lib.augment_slots(self.spec, k_aug, batch, ("image",),
                                     train=True)
    return self._classifier_step(state, "e", x, batch["label"], k_drop)

  def pretrain_autoencoder_step(self, state, batch, rng):
    """Algorithm 1, line 3: G's encoder/decoder reconstruct faces (MSE); in
    2V2 the bottleneck gets the pre-trained E's F_exp of the same face."""
    (x,) = augment_lib.augment_slots(self.spec, rng, batch, ("image",),
                                     train=True)
    f_exp = self._extract(state, x)[0] if self.has_e else None
    g = state["g"]

    def loss_fn(params):
      out, upd = self.g.apply({"params": params,
                               "batch_stats": g["batch_stats"]}, x, f_exp,
                              train=True, mutable=["batch_stats"])
      return mse_loss(out, x), upd["batch_stats"]
    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        g["params"])
    return {**state, "g": self._update("g", g, grads, loss, stats)}, {
        "loss": loss}

  def train_step(self, state, batch, rng):
    """One iteration of Algorithm 1's loop: D, D', then G and E, and C."""
    c = self.cfg
    k_aug, k_e, k_c = jax.random.split(rng, 3)
    weak, peak = augment_lib.augment_slots(self.spec, k_aug, batch,
                                           ("weak", "peak"), train=True)
    labels = batch["label"]
    metrics = {}
    new = dict(state)

    # E and G forward once; their VJPs carry the losses' gradients back.
    if self.has_e:
      def e_forward(params):
        _, feats, stats = self._classify({**state["e"], "params": params},
                                         weak, True, k_e)
        return feats, stats
      f_exp, e_vjp, e_stats = jax.vjp(e_forward, state["e"]["params"],
                                      has_aux=True)
    else:
      f_exp = None
    g = state["g"]

    def g_forward(params, f):
      out, upd = self.g.apply({"params": params,
                               "batch_stats": g["batch_stats"]}, weak, f,
                              train=True, with_mask=True,
                              mutable=["batch_stats"])
      return out, upd["batch_stats"]
    # mask: the attention generator's A (B, H, W), None without it.
    (fake, mask), g_vjp, g_stats = jax.vjp(g_forward, g["params"], f_exp,
                                           has_aux=True)
    fake_sg = jax.lax.stop_gradient(fake)
    cond = None if f_exp is None else jax.lax.stop_gradient(f_exp)

    # D: real peak vs fake (eq. 4, 7-8; 14-15 conditioned in 2V2).
    def d_loss_fn(params):
      return losses.gan_discriminator_loss(self._disc(params, peak, cond),
                                           self._disc(params, fake_sg, cond))
    d_loss, d_grads = jax.value_and_grad(d_loss_fn)(state["d"]["params"])
    new["d"] = self._update("d", state["d"], d_grads, d_loss)
    metrics["d_loss"] = d_loss

    # D': peak (positive) vs generated (and, by config, real weak) (eq. 5,
    # 9-10; 16-17 conditioned in 2V2).
    if self.has_dp:
      def dp_loss_fn(params):
        pos = self._disc(params, peak, cond)
        neg = self._disc(params, fake_sg, cond)
        if c.dprime_weak_negatives:
          neg = jnp.concatenate([neg, self._disc(params, weak, cond)])
        return losses.gan_discriminator_loss(pos, neg)
      dp_loss, dp_grads = jax.value_and_grad(dp_loss_fn)(
          state["dp"]["params"])
      new["dp"] = self._update("dp", state["dp"], dp_grads, dp_loss)
      metrics["dp_loss"] = dp_loss

    # C on real peaks and on G(weak), separate BatchNorm batches (eq. 11);
    # the fake image's gradient of CE_fake is G's and E's Phi_C term.
    def c_loss_fn(params, fake_img):
      net = {**state["c"], "params": params}
      k1, k2 = jax.random.split(k_c)
      real_logits, _, stats = self._classify(net, peak, True, k1)
      fake_logits, _, stats = self._classify({**net, "batch_stats": stats},
                                             fake_img, True, k2)
      ce_real = losses.cross_entropy(real_logits, labels)
      ce_fake = losses.cross_entropy(fake_logits, labels)
      return ce_real + ce_fake, (ce_real, ce_fake, fake_logits, stats)
    (c_loss, (ce_real, ce_fake, fake_logits, c_stats)), (c_grads, ce_dfake) = (
        jax.value_and_grad(c_loss_fn, argnums=(0, 1), has_aux=True)(
            state["c"]["params"], fake))
    new["c"] = self._update("c", state["c"], c_grads, c_loss, c_stats)

    # Adversarial terms against the updated D and D'.
    d_new = new["d"]["params"]
    dp_new = new["dp"]["params"] if self.has_dp else None

    def adv_fn(fake_img, f, w_d, w_dp):
      adv_d = losses.gan_generator_loss(self._disc(d_new, fake_img, f))
      adv_dp = (losses.gan_generator_loss(self._disc(dp_new, fake_img, f))
                if self.has_dp else jnp.zeros(()))
      return w_d * adv_d + w_dp * adv_dp, (adv_d, adv_dp)
    # In 1V2/DCGAN F_exp is None: the condition gets no gradient.
    (_, (adv_d, adv_dp)), (g_adv_dfake, _) = jax.value_and_grad(
        adv_fn, argnums=(0, 1), has_aux=True)(fake, f_exp, c.alpha_g,
                                                c.beta_g)
    # Eq. 12's content term, plus (g_change_l1 > 0, not the paper) an L1
    # penalty on G's change to its input, which asks for a sparse, local
    # change rather than a texture over the whole face.
    def pixel_fn(fake_img):
      content = mse_loss(fake_img, peak, c.content_reduction)
      change = jnp.mean(jnp.abs(fake_img.astype(jnp.float32)
                                - weak.astype(jnp.float32)))
      return content + c.g_change_l1 * change, (content, change)
    (pixel, (content, change)), dpixel = jax.value_and_grad(
        pixel_fn, has_aux=True)(fake)
    # g_attention (not the paper): GANimation's penalties on G's mask A,
    # its mean (an L1, A >= 0: change as little of the face as the other
    # terms allow) and its total variation (in connected regions, not
    # speckle); docs/methods.md, GroupGAN.
    if mask is not None:
      def mask_fn(m):
        area, tv = jnp.mean(m), mask_total_variation(m)
        return c.g_attention_l1 * area + c.g_attention_tv * tv, (area, tv)
      (mask_loss, (mask_area, mask_tv)), dmask = jax.value_and_grad(
          mask_fn, has_aux=True)(mask)
      metrics.update(g_mask_mean=mask_area, g_mask_tv=mask_tv)
    else:
      mask_loss, dmask = jnp.zeros(()), None
    gamma = c.gamma_g if self.has_dp else 0.0  # eq. 3 has no Phi_C term
    g_loss = (pixel + c.alpha_g * adv_d + c.beta_g * adv_dp + gamma * ce_fake
              + mask_loss)
    g_grads, _ = g_vjp((dpixel + g_adv_dfake + gamma * ce_dfake, dmask))
    new["g"] = self._update("g", g, g_grads, g_loss, g_stats)
    metrics.update(g_loss=g_loss, g_content=content, g_change=change,
                   g_adv_d=adv_d, ce_real=ce_real, ce_fake=ce_fake)
    if self.has_dp:
      metrics["g_adv_dp"] = adv_dp

    # E (eq. 13): Phi_C(G(weak)) + alpha_E phi_D + beta_E phi_D', through G's
    # bottleneck and through both discriminators' condition.
    if self.has_e:
      _, (e_adv_dfake, e_adv_dcond) = jax.value_and_grad(
          adv_fn, argnums=(0, 1), has_aux=True)(fake, f_exp, c.alpha_e,
                                                  c.beta_e)
      _, f_ct = g_vjp((e_adv_dfake + ce_dfake,
                       None if mask is None else jnp.zeros_like(mask)))
      (e_grads,) = e_vjp(f_ct + e_adv_dcond)
      e_loss = ce_fake + c.alpha_e * adv_d + c.beta_e * adv_dp
      new["e"] = self._update("e", state["e"], e_grads, e_loss, e_stats)
      metrics["e_loss"] = e_loss

    metrics["loss"] = g_loss + d_loss + c_loss
    metrics["accuracy"] = losses.accuracy(fake_logits, labels)
    return new, metrics

  # -- inference
  def magnify(self, state, x):
    """G(x, E(x)) (or G(x)) in inference mode, x an eval view."""
    f_exp = self._extract(state, x)[0] if self.has_e else None
    return self._generate(state, x, f_exp)

  def predict(self, state, batch):
    x = self.eval_view(batch, "weak")
    if self.has_g:
      x = self.magnify(state, x)
    logits, _, _ = self._classify(state["c"], x, train=False)
    return logits

  def _logits_and_change_r(self, state, batch):
    weak = self.eval_view(batch, "weak")
    fake, mask = self._magnify_with_mask(state, weak)
    logits, _, _ = self._classify(state["c"], fake, train=False)
    peak = self.eval_view(batch, "peak")
    # Mean of G's mask A per image (g_attention; NaN without a mask).
    area = (jnp.full(weak.shape[:1], jnp.nan) if mask is None
            else jnp.mean(mask, axis=(1, 2)))
    return logits, change_map_correlation(weak, fake, peak), area

  def evaluate_split(self, state, examples, out_dir):
    """The usual predictions (C on G(weak)), plus where G changes the face:
    the change-map correlation with the real peak's change over the split
    (``change_map_correlation``: mean, median and quartiles of the per-image
    r), and with ``g_attention`` the mean of G's mask A. The CNN variant
    has no G: the usual path."""
    if not self.has_g:
      return None
    logits, r, area = self.eval_outputs(self._logits_and_r, state, examples)
    finite = r[np.isfinite(r)]
    q = (np.percentile(finite, [25, 50, 75]).tolist() if len(finite)
         else [None] * 3)
    extra = {"change_map_correlation": {
        "mean": float(finite.mean()) if len(finite) else None,
        "median": q[1], "quartiles": [q[0], q[2]],
        "num_images": int(len(r)), "num_unchanged": int(len(r) - len(finite)),
        "what": "per test image, Pearson's r over pixels between "
                "sum_k (G(weak) - weak)^2 and sum_k (peak - weak)^2"}}
    if self.g.attention:
      extra["attention_mask_mean"] = float(np.mean(area))
    return examples.label.astype(np.int64), np.argmax(logits, -1), extra

  def _magnify_with_mask(self, state, x):
    """(G(x), A) in inference mode; A None without ``g_attention``."""
    f_exp = self._extract(state, x)[0] if self.has_e else None
    g = state["g"]
    return self.g.apply({"params": g["params"],
                         "batch_stats": g["batch_stats"]}, x, f_exp,
                        train=False, with_mask=True)

  def _picture_arrays(self, state, batch):
    weak = self.eval_view(batch, "weak")
    peak = self.eval_view(batch, "peak")
    fake, mask = self._magnify_with_mask(state, weak)
    return (weak, fake, peak, heat_map(fake, weak), heat_map(peak, weak),
            heat_map(peak, fake), change_map_correlation(weak, fake, peak),
            mask)

  def write_images(self, state, batch, out_dir, captions=(), num=8):
    """magnified.png, one row per face: weak input | G(weak) | its change
    from the input | real peak | its change from the input | eq. 22's
    H = sum_k (peak - G(weak))^2 (paper fig. 5) | with ``g_attention``,
    G's mask A (white = G's colour, black = the weak face)."""
    if not self.has_g:
      return
    small = {k: v[:num] for k, v in batch.items()}
    weak, fake, peak, h_fake, h_peak, h_err, r, mask = jax.device_get(
        self._pictures(state, small))
    size = weak.shape[1]
    rows = []
    for i in range(len(weak)):
      row = [viz.to_uint8(weak[i]), viz.to_uint8(fake[i]),
             viz.heatmap(h_fake[i], size), viz.to_uint8(peak[i]),
             viz.heatmap(h_peak[i], size), viz.heatmap(h_err[i], size)]
      if mask is not None:
        grey = np.clip(np.rint(mask[i] * 255), 0, 255).astype(np.uint8)
        row.append(np.repeat(grey[..., None], 3, axis=-1))
      rows.append(np.stack(row))
    col_labels = ["weak input", "G(weak)", "G's change", "real peak",
                  "peak's change", "H, eq. 22:\n(peak - G)^2"]
    if mask is not None:
      col_labels.append("G's mask A")
    viz.save_grid(
        os.path.join(out_dir, "magnified.png"), rows,
        row_labels=[f"{cap}\nr = {ri:.2f}" if cap else f"r = {ri:.2f}"
                    for cap, ri in zip(
                        list(captions) + [""] * len(rows), r[:len(rows)])],
        col_labels=col_labels,
        title="GroupGAN: G magnifies a weak expression towards its peak "
        "(r: correlation of G's change with the peak's)",
        legend=viz.HEAT_LEGEND)
