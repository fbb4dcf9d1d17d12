"""SNA: semantic neighbourhood-aware FER (Fu et al., docs/methods.md section 4).

Four phases over one state pytree (later phases read earlier phases' params):

1. "fer_baseline": the multi-scale network F0 (Table II) on class-balanced
   batches (selective learning), loss = focal (or CE) summed over the three
   heads. F0 is the paper's baseline ("w/o Ours") and, frozen, the
   perceptual network C of eq. 5.
2. "ae_pretrain": the asymmetric denoising autoencoder (Table I) with the
   multi-scale loss eq. 4 (alpha 4 on the input, 1 on the hidden levels;
   the targets are the clean encoder's activations, stop-gradient).
3. "ae_refine": the decoder against a WGAN critic (eq. 6-8):
   lambda_AE L_AE + lambda_Adv L_Adv^G + lambda_Rec L_Rec, L_Rec = pixel +
   perceptual on F0's Conv3..Conv5 (eq. 5). The encoder stays as
   pre-trained (the paper gives learning rates for the decoder and the
   critic only). The critic is trained every step of the first epoch, then
   once per ``critic_every`` decoder steps, chosen inside the jitted step
   from a step counter in the state (lax.cond). lambda_AE decays x0.1 every
   20 epochs, from the same counter.
4. "fer_sna": a fresh multi-scale network F trained with the mask
   (Algorithm 1): I_tr = Dec(Enc(I) + N(0, sigma)) (eq. 9), Div = symmetric
   KL of F's fused softmax on I and I_tr (eq. 12-13), m = Div < T with T
   fixed ('fixed', eq. 11) or the batch mean ('batch', eq. 14), loss =
   sum_i m_i L_i / N. F0 is not touched. F starts from its own random
   init ('scratch') or from F0's weights (``fer_init='baseline'``).

Evaluation: F's fused head (the report's accuracy), plus F0's accuracy
(``baseline_accuracy``), the fraction of samples masked over stage 4, and
the sequence-consistency counts of Table VII for both networks.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from fer_jax import losses, nets, viz
from fer_jax.data import augment as augment_lib
from fer_jax.data.protocols import Examples
from fer_jax.methods import base
from fer_jax.models.autoencoder import Critic, Decoder, Encoder
from fer_jax.models.multiscale import MultiScaleNet
from fer_jax.optim import make_optimizer

# batch: BT (eq. 14); fixed: T (eq. 11); none: every sample; oracle (a
# diagnostic, not the paper): exactly the samples whose label the injected
# noise flipped are masked, the most any mask can gain.
MASKS = ("batch", "fixed", "none", "oracle")
LOSSES = ("focal", "ce")
FER_INITS = ("scratch", "baseline")


def mask_counts(div_mask, flipped):
  """One batch's counts for the mask's precision: samples the Div mask
  drops (``div_mask`` 0), those of them with a flipped label, and flipped
  samples (``flipped`` 1 where the injected noise changed the label)."""
  dropped = 1.0 - div_mask
  return {"div_masked": jnp.sum(dropped),
          "div_masked_flipped": jnp.sum(dropped * flipped),
          "flipped": jnp.sum(flipped)}


def mask_precision(counts, seen: float, applied: bool = True):
  """Over stage 4: precision (the fraction of masked samples whose label
  was flipped), recall (of flipped samples, the fraction masked), and the
  base rates a mask blind to the noise would get: precision = the flipped
  fraction, recall = the masked fraction. ``applied`` False: the counts
  are of the batch-mean rule in a run that did not apply it."""
  masked, hit, flipped = (counts["div_masked"], counts["div_masked_flipped"],
                          counts["flipped"])
  return {
      "applied": bool(applied),
      "precision": hit / masked if masked else None,
      "recall": hit / flipped if flipped else None,
      "flipped_fraction": flipped / seen if seen else None,
      "masked_fraction": masked / seen if seen else None,
  }


class SNA(base.Method):
  name = "sna"

  def __init__(self, config, **kwargs):
    super().__init__(config, **kwargs)
    c = self.cfg = config.sna
    if not config.data.grey:
      raise ValueError("config.data.grey: SNA's networks take grey faces "
                       "(Tables I and II); set it True")
    if c.mask not in MASKS:
      raise ValueError(f"config.sna.mask={c.mask!r}; choose one of {MASKS}")
    if c.mask == "oracle" and not config.data.get("label_noise", 0.0):
      raise ValueError("config.sna.mask='oracle' masks the samples whose "
                       "label was flipped: set config.data.label_noise > 0")
    if c.fer_init not in FER_INITS:
      raise ValueError(f"config.sna.fer_init={c.fer_init!r}; choose one of "
                       f"{FER_INITS}")
    if c.loss not in LOSSES:
      raise ValueError(f"config.sna.loss={c.loss!r}; choose one of {LOSSES}")
    size = self.spec.crop
    if size % 16:
      raise ValueError(f"config.data.crop={size}: SNA's autoencoder needs a "
                       "multiple of 16")
    net = dict(num_classes=self.num_classes, widths=tuple(c.widths),
               fc=tuple(c.fc), dropout=c.dropout, bn_momentum=c.bn_momentum,
               dtype=self.dtype)
    self.fer_net = MultiScaleNet(**net)
    enc = tuple(c.ae_widths)
    self.enc = Encoder(widths=enc, code_dim=c.code_dim,
                       dropout=c.ae_dropout, bn_momentum=c.bn_momentum,
                       dtype=self.dtype)
    # Decoder stages mirror encoder levels 3, 2, 1, then the extra stage.
    self.dec = Decoder(bottleneck=size // 16, enc_top=enc[-1],
                       widths=(enc[2], enc[1], enc[0], c.ae_top_width),
                       res_blocks=tuple(c.ae_res_blocks), out_channels=1,
                       bn_momentum=c.bn_momentum, dtype=self.dtype)
    self.critic = Critic(widths=tuple(c.critic_widths), dtype=self.dtype)

    role = config.data.role
    self.fer_spe = self.steps_per_epoch(c.fer.batch_size, "single", role)
    self.fer_steps = self.phase_steps(c.fer, c.fer.batch_size, "single", role)
    self.ae_steps = self.phase_steps(c.ae, c.ae.batch_size, "single",
                                     c.ae_role)
    self.refine_spe = self.steps_per_epoch(c.refine.batch_size, "single",
                                           c.ae_role)
    self.refine_steps = self.phase_steps(c.refine, c.refine.batch_size,
                                         "single", c.ae_role)
    self.fer_tx = make_optimizer(c.fer.optim, self.fer_spe, self.fer_steps)
    self.ae_tx = make_optimizer(
        c.ae.optim, self.steps_per_epoch(c.ae.batch_size, "single",
                                         c.ae_role), self.ae_steps)
    self.dec_tx = make_optimizer(c.refine.dec_optim, self.refine_spe,
                                 self.refine_steps)
    self.critic_tx = make_optimizer(c.refine.critic_optim, self.refine_spe,
                                    self.refine_steps)
    self.tx = self.fer_tx
    self._eval_logits = jax.jit(self._both_logits)
    self._pictures = jax.jit(self._picture_arrays,
                             static_argnames=("num_draws",))

  # -- state and phases
  def init_state(self, rng, batch):
    k0, k1, ke, kd, kc = jax.random.split(rng, 5)
    s = self.spec.crop
    img = jnp.zeros((1, s, s, 1), jnp.float32)
    fer0 = self.fer_net.init(k0, img, train=False)
    fer = self.fer_net.init(k1, img, train=False)
    enc = self.enc.init(ke, img, train=False)
    code = jnp.zeros((1, self.cfg.code_dim), jnp.float32)
    dec = self.dec.init(kd, code, train=False)
    critic = self.critic.init(kc, img)
    ae_params = {"enc": enc["params"], "dec": dec["params"]}
    return {
        "fer0": nets.network_state(fer0, self.fer_tx),
        "fer": nets.network_state(fer, self.fer_tx),
        "ae": nets.network_state(
            {"params": ae_params,
             "batch_stats": {"enc": enc["batch_stats"],
                             "dec": dec["batch_stats"]}}, self.ae_tx),
        "refine_opt_state": self.dec_tx.init(dec["params"]),
        # The decoder as pre-training left it (fig. 3's "AE" row), copied
        # when ae_refine starts.
        "dec_pretrained": {"params": dec["params"],
                           "batch_stats": dec["batch_stats"]},
        "critic": nets.network_state(critic, self.critic_tx),
        "counters": {"refine_step": jnp.zeros((), jnp.int32),
                     "masked": jnp.zeros((), jnp.float32),
                     "seen": jnp.zeros((), jnp.float32),
                     # The Div mask's choices against the injected label
                     # noise (zero without it): samples the mask (or, for
                     # mask='none', the batch-mean rule) drops, those of
                     # them whose label was flipped, and flipped samples.
                     "div_masked": jnp.zeros((), jnp.float32),
                     "div_masked_flipped": jnp.zeros((), jnp.float32),
                     "flipped": jnp.zeros((), jnp.float32)},
    }

  def phases(self):
    c = self.cfg
    role = self.config.data.role
    return [
        base.Phase("fer_baseline", self.fer_steps, c.fer.batch_size,
                   self.fer_baseline_step, role=role, sampler=c.sampler),
        base.Phase("ae_pretrain", self.ae_steps, c.ae.batch_size,
                   self.ae_pretrain_step, role=c.ae_role),
        base.Phase("ae_refine", self.refine_steps, c.refine.batch_size,
                   self.ae_refine_step, role=c.ae_role,
                   enter=self.snapshot_decoder),
        base.Phase("fer_sna", self.fer_steps, c.fer.batch_size,
                   self.fer_sna_step, role=role, sampler=c.sampler,
                   enter=(self.start_from_baseline
                          if c.fer_init == "baseline" else None)),
    ]

  def start_from_baseline(self, state):
    """fer_init='baseline': F starts as a copy of F0 (weights and BN
    statistics, fresh optimizer state) instead of its own random init;
    Algorithm 1 does not say where W^0 comes from."""
    return {**state, "fer": nets.network_state(state["fer0"], self.fer_tx)}

  def snapshot_decoder(self, state):
    ae = state["ae"]
    return {**state, "dec_pretrained": {
        "params": ae["params"]["dec"],
        "batch_stats": ae["batch_stats"]["dec"]}}

  # -- network applications
  def _fer_apply(self, net, params, x, train, rng=None, features=False):
    """(logits triple[, features], new batch_stats) of a multi-scale net."""
    variables = {"params": params, "batch_stats": net["batch_stats"]}
    if not train:
      return (self.fer_net.apply(variables, x, train=False,
                                 return_features=features),
              net["batch_stats"])
    out, upd = self.fer_net.apply(variables, x, train=True,
                                  return_features=features,
                                  rngs={"dropout": rng},
                                  mutable=["batch_stats"])
    return out, upd["batch_stats"]

  def _encode(self, state, x):
    ae = state["ae"]
    return self.enc.apply({"params": ae["params"]["enc"],
                           "batch_stats": ae["batch_stats"]["enc"]}, x,
                          train=False)

  def _decode(self, dec_vars, code):
    return self.dec.apply(dec_vars, code, train=False)[0]

  def neighbours(self, state, x, key, num_draws: int = 1):
    """Eq. 9, I_tr = Dec(Enc(I) + N(0, sigma)), inference mode, clipped to
    the input range; (num_draws, B, S, S, 1)."""
    code, _ = self._encode(state, x)
    ae = state["ae"]
    dec_vars = {"params": ae["params"]["dec"],
                "batch_stats": ae["batch_stats"]["dec"]}
    noise = self.latent_sigma(code) * jax.random.normal(
        key, (num_draws,) + code.shape, jnp.float32)
    out = jax.vmap(lambda n: self._decode(dec_vars, code + n))(noise)
    return jnp.clip(out, -1.0, 1.0)

  def latent_sigma(self, code):
    """sigma of eq. 9's N(0, sigma), which the paper does not give.
    ``noise_relative``: ``noise_std`` times each code dimension's standard
    deviation over the batch (a fixed sigma is a different perturbation for
    every code scale: at sigma 0.5 on a code of spread ~0.5 the neighbours
    were other faces); else ``noise_std`` itself."""
    if not self.cfg.get("noise_relative", False):
      return jnp.float32(self.cfg.noise_std)
    spread = jnp.std(jax.lax.stop_gradient(code), axis=0, keepdims=True)
    return self.cfg.noise_std * spread

  def per_sample_loss(self, logits3, labels):
    """The three heads' losses summed, per sample (sec. IV-B)."""
    gamma = self.cfg.focal_gamma if self.cfg.loss == "focal" else 0.0
    return sum(losses.focal_loss_per_sample(lg, labels, gamma)
               for lg in logits3)

  def _view(self, batch, rng):
    (x,) = augment_lib.augment_slots(self.spec, rng, batch, ("image",),
                                     train=True)
    return x

  # -- stage 1
  def fer_baseline_step(self, state, batch, rng):
    k_aug, k_drop = jax.random.split(rng)
    x, labels = self._view(batch, k_aug), batch["label"]
    net = state["fer0"]

    def loss_fn(params):
      logits3, stats = self._fer_apply(net, params, x, True, k_drop)
      return jnp.mean(self.per_sample_loss(logits3, labels)), (logits3, stats)
    (loss, (logits3, stats)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(net["params"])
    new = {**state, "fer0": nets.update(net, self.fer_tx, grads, batch_stats=stats)}
    return new, {"loss": loss, "accuracy": losses.accuracy(logits3[2],
                                                           labels)}

  # -- stage 2
  def _ae_alphas(self):
    c = self.cfg
    return (c.alpha_input,) + (c.alpha_hidden,) * len(c.ae_widths)

  def ae_pretrain_step(self, state, batch, rng):
    k_aug, k_drop = jax.random.split(rng)
    x = self._view(batch, k_aug)
    ae = state["ae"]
    # Targets: the clean encoder's levels (BN batch statistics, no dropout).
    (_, clean), _ = self.enc.apply(
        {"params": ae["params"]["enc"], "batch_stats": ae["batch_stats"]["enc"]},
        x, train=True, noisy=False, mutable=["batch_stats"])
    clean = [jax.lax.stop_gradient(h) for h in clean]

    def loss_fn(params):
      (code, _), enc_upd = self.enc.apply(
          {"params": params["enc"], "batch_stats": ae["batch_stats"]["enc"]},
          x, train=True, mutable=["batch_stats"], rngs={"dropout": k_drop})
      (img, rec), dec_upd = self.dec.apply(
          {"params": params["dec"], "batch_stats": ae["batch_stats"]["dec"]},
          code, train=True, mutable=["batch_stats"])
      total, levels = losses.multiscale_ae_loss([x] + clean, [img] + rec,
                                                self._ae_alphas())
      stats = {"enc": enc_upd["batch_stats"], "dec": dec_upd["batch_stats"]}
      return total, (levels, stats)
    (loss, (levels, stats)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(ae["params"])
    new = {**state, "ae": nets.update(ae, self.ae_tx, grads, batch_stats=stats)}
    metrics = {"loss": loss, "ae_pixel": levels[0]}
    for i, v in enumerate(levels[1:], 1):
      metrics[f"ae_level{i}"] = v
    return new, metrics

  # -- stage 3
  def critic_trains(self, refine_step):
    """Every step of the first epoch, then once per ``critic_every``."""
    return (refine_step < self.refine_spe) | (
        refine_step % self.cfg.critic_every == 0)

  def lambda_ae(self, refine_step):
    """lambda_AE x ``lambda_ae_decay`` every ``lambda_ae_decay_epochs``."""
    c = self.cfg
    every = max(1, int(round(c.lambda_ae_decay_epochs * self.refine_spe)))
    return c.lambda_ae * jnp.power(jnp.float32(c.lambda_ae_decay),
                                   (refine_step // every).astype(jnp.float32))

  def perceptual_features(self, state, x):
    """F0's (the frozen stage-1 network's) Conv3, Conv4, Conv5 features,
    inference mode."""
    net = state["fer0"]
    (_, feats), _ = self._fer_apply(net, net["params"], x, False,
                                    features=True)
    return [feats["conv3"], feats["conv4"], feats["conv5"]]

  def ae_refine_step(self, state, batch, rng):
    c = self.cfg
    x = self._view(batch, rng)
    ae = state["ae"]
    r = state["counters"]["refine_step"]
    code, clean = self._encode(state, x)  # the encoder stays as pre-trained

    def gen(dec_params):
      (img, rec), upd = self.dec.apply(
          {"params": dec_params, "batch_stats": ae["batch_stats"]["dec"]},
          code, train=True, mutable=["batch_stats"])
      return (img, rec), upd["batch_stats"]
    (fake, rec), gen_vjp, dec_stats = jax.vjp(gen, ae["params"]["dec"],
                                              has_aux=True)

    # Critic (eq. 6) on real faces vs the detached reconstructions, weights
    # clipped; skipped (state unchanged) on the steps it does not train.
    critic = state["critic"]
    fake_sg = jax.lax.stop_gradient(fake)

    def critic_update(net):
      def loss_fn(params):
        return losses.wgan_critic_loss(self.critic.apply({"params": params}, x),
                                       self.critic.apply({"params": params},
                                                         fake_sg))
      loss, grads = jax.value_and_grad(loss_fn)(net["params"])
      net = nets.update(net, self.critic_tx, grads)
      return {**net, "params": losses.clip_weights(net["params"],
                                                   c.critic_clip)}, loss
    trains = self.critic_trains(r)
    critic, d_loss = jax.lax.cond(
        trains, critic_update,
        lambda net: (net, jnp.full((), jnp.nan, jnp.float32)), critic)

    # Decoder (eq. 8) against the (updated) critic.
    targets = self.perceptual_features(state, x)
    lam_ae = self.lambda_ae(r)

    def g_loss_fn(img, rec_levels):
      l_ae, _ = losses.multiscale_ae_loss([x] + clean, [img] + rec_levels,
                                          self._ae_alphas())
      adv = losses.wgan_generator_loss(
          self.critic.apply({"params": critic["params"]}, img))
      l_rec, pixel, perc = losses.reconstruction_loss(
          img, x, self.perceptual_features(state, img), targets,
          c.pixel_weight, tuple(c.perceptual_weights))
      total = lam_ae * l_ae + c.lambda_adv * adv + c.lambda_rec * l_rec
      return total, (l_ae, adv, l_rec, pixel, perc)
    (g_loss, (l_ae, adv, l_rec, pixel, perc)), d_out = jax.value_and_grad(
        g_loss_fn, argnums=(0, 1), has_aux=True)(fake, rec)
    (grads,) = gen_vjp(d_out)
    # The decoder's refinement optimizer is its own (refine_opt_state).
    dec = nets.update({"params": ae["params"]["dec"],
                       "opt_state": state["refine_opt_state"]}, self.dec_tx,
                      grads, batch_stats=dec_stats)
    new_ae = {**ae, "params": {**ae["params"], "dec": dec["params"]},
              "batch_stats": {**ae["batch_stats"], "dec": dec["batch_stats"]}}
    new = {**state, "ae": new_ae, "refine_opt_state": dec["opt_state"],
           "critic": critic,
           "counters": {**state["counters"], "refine_step": r + 1}}
    metrics = {"loss": g_loss, "g_ae": l_ae, "g_adv": adv, "g_rec": l_rec,
               "g_pixel": pixel, "critic_trained": trains.astype(jnp.float32),
               # NaN on steps without a critic update: the logged mean is
               # over the steps that had one.
               "critic_loss": d_loss}
    for name, v in zip(("conv3", "conv4", "conv5"), perc):
      metrics[f"g_perc_{name}"] = v
    return new, metrics

  # -- stage 4
  def threshold(self):
    """T of eq. 11 for config.sna.mask='fixed', None for 'batch' (eq. 14)."""
    return self.cfg.threshold if self.cfg.mask == "fixed" else None

  def fer_sna_step(self, state, batch, rng):
    k_aug, k_noise, k_drop = jax.random.split(rng, 3)
    x, labels = self._view(batch, k_aug), batch["label"]
    net = state["fer"]
    x_tr = jax.lax.stop_gradient(self.neighbours(state, x, k_noise)[0])
    flipped = batch.get("label_flipped")
    flipped = (jnp.zeros(labels.shape, jnp.float32) if flipped is None
               else flipped.astype(jnp.float32))
    # P_tr with the current weights W^t, same mode and dropout draw as P_o
    # (so Div measures the perturbation, not the dropout); its BN batch
    # statistics are not kept.
    logits_tr3, _ = self._fer_apply(net, net["params"], x_tr, True, k_drop)
    logits_tr = jax.lax.stop_gradient(logits_tr3[2])

    def loss_fn(params):
      logits3, stats = self._fer_apply(net, params, x, True, k_drop)
      div = losses.symmetric_kl(jax.lax.stop_gradient(logits3[2]), logits_tr)
      # The mask Div gives (for mask='none' the batch-mean rule, which is
      # reported but not applied).
      div_mask = losses.neighbourhood_mask(div, self.threshold())
      if self.cfg.mask == "none":
        mask = jnp.ones_like(div)
      elif self.cfg.mask == "oracle":
        mask = 1.0 - flipped
      else:
        mask = div_mask
      per = self.per_sample_loss(logits3, labels)
      return losses.masked_mean(per, mask), (logits3, stats, div, mask,
                                             div_mask)
    (loss, (logits3, stats, div, mask, div_mask)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(net["params"])
    n = jnp.float32(div.shape[0])
    kept = jnp.sum(mask)
    counts = mask_counts(div_mask, flipped)
    counters = state["counters"]
    new = {**state, "fer": nets.update(net, self.fer_tx, grads, batch_stats=stats),
           "counters": {**counters, "masked": counters["masked"] + n - kept,
                        "seen": counters["seen"] + n,
                        **{k: counters[k] + v for k, v in counts.items()}}}
    return new, {"loss": loss,
                 "accuracy": losses.accuracy(logits3[2], labels),
                 "div_mean": jnp.mean(div), "div_max": jnp.max(div),
                 "masked_fraction": 1.0 - kept / n}

  # -- inference
  def _fused(self, net, x):
    (logits3, _) = self._fer_apply(net, net["params"], x, False)
    return logits3[2]

  def predict(self, state, batch):
    """F's fused head (the stage-4 network)."""
    return self._fused(state["fer"], self.eval_view(batch))

  def _both_logits(self, state, batch):
    x = self.eval_view(batch)
    return self._fused(state["fer"], x), self._fused(state["fer0"], x)

  def _predict_both(self, state, examples):
    a, b = self.eval_outputs(self._eval_logits, state, examples)
    return np.argmax(a, -1), np.argmax(b, -1)

  def consistency_examples(self, examples):
    """Table VII's test frames: for each sequence of ``examples``, the
    ``consistency_frames`` frames before its last (peak) frame, labelled
    with the sequence's class; (Examples, sequence id per example), or None
    for stills or sequences too short."""
    table, k = examples.table, self.cfg.consistency_frames
    if not table.is_sequential or k <= 0:
      return None
    rows = examples.slots["image"]
    seq_label = dict(zip(table.sequence_id[rows].tolist(),
                         examples.label.tolist()))
    n, f = table.num_frames, table.frame_index
    pick = (np.isin(table.sequence_id, list(seq_label)) & (n > k)
            & (f >= n - 1 - k) & (f <= n - 2))
    picked = np.flatnonzero(pick)
    if not len(picked):
      return None
    seq = table.sequence_id[picked]
    labels = np.array([seq_label[int(s)] for s in seq], np.int64)
    return Examples(table=table, slots={"image": picked}, label=labels), seq

  @staticmethod
  def consistency_counts(seq, labels, preds):
    """Failure cases (a sequence with any frame wrong) and consistent
    failure cases (every frame wrong, all as the same class)."""
    fc = cfc = 0
    for s in np.unique(seq):
      sel = seq == s
      wrong = preds[sel] != labels[sel]
      fc += int(wrong.any())
      cfc += int(wrong.all() and len(np.unique(preds[sel])) == 1)
    return {"failure_cases": fc, "consistent_failure_cases": cfc,
            "num_sequences": int(len(np.unique(seq)))}

  def evaluate_split(self, state, examples, out_dir):
    labels = examples.label.astype(np.int64)
    preds, preds0 = self._predict_both(state, examples)
    counters = jax.device_get(state["counters"])
    seen = float(counters["seen"])
    extra = {
        "baseline_accuracy": float(np.mean(preds0 == labels)),
        "mask": self.cfg.mask,
        "threshold": (float(self.cfg.threshold) if self.cfg.mask == "fixed"
                      else "batch mean"),
        "masked_fraction": float(counters["masked"]) / seen if seen else None,
        "masked_samples": float(counters["masked"]),
        "stage4_samples": seen,
    }
    if self.config.data.get("label_noise", 0.0):
      extra["mask_vs_label_noise"] = mask_precision(
          {k: float(counters[k]) for k in
           ("div_masked", "div_masked_flipped", "flipped")}, seen,
          applied=self.cfg.mask in ("batch", "fixed"))
    cons = self.consistency_examples(examples)
    if cons is not None:
      ex, seq = cons
      p, p0 = self._predict_both(state, ex)
      extra["consistency"] = {
          "frames_before_peak": int(self.cfg.consistency_frames),
          "sna": self.consistency_counts(seq, ex.label, p),
          "baseline": self.consistency_counts(seq, ex.label, p0)}
    return labels, preds, extra

  # -- pictures
  def _picture_arrays(self, state, batch, num_draws):
    x = self.eval_view(batch)
    code, _ = self._encode(state, x)
    ae = state["ae"]
    refined = self._decode({"params": ae["params"]["dec"],
                            "batch_stats": ae["batch_stats"]["dec"]}, code)
    pretrained = self._decode(state["dec_pretrained"], code)
    ns = self.neighbours(state, x, jax.random.key(self.config.seed),
                         num_draws)
    return x, pretrained, refined, ns

  def write_images(self, state, batch, out_dir, captions=(), num=8):
    """neighbours.png, one row per face (paper fig. 3-5): original | AE
    after pre-training | refined asymmetric AE | ``num_draws`` neighbour
    samples Dec(Enc(I) + N(0, sigma)) | |neighbour 1 - refined| as a heat
    map (the perturbation, which is hard to see)."""
    small = {k: v[:num] for k, v in batch.items()}
    draws = self.cfg.num_image_draws
    x, pre, ref, ns = jax.device_get(self._pictures(state, small,
                                                    num_draws=draws))
    size = x.shape[1]
    rows = []
    for i in range(len(x)):
      row = [viz.to_uint8(x[i]), viz.to_uint8(np.clip(pre[i], -1, 1)),
             viz.to_uint8(np.clip(ref[i], -1, 1))]
      row += [viz.to_uint8(ns[d, i]) for d in range(draws)]
      row.append(viz.heatmap(np.abs(ns[0, i, ..., 0] - ref[i, ..., 0]), size))
      rows.append(np.stack(row))
    viz.save_grid(
        os.path.join(out_dir, "neighbours.png"), rows,
        row_labels=list(captions[:len(rows)]),
        col_labels=["input", "AE\npre-trained", "AE\nrefined"]
        + [f"neighbour {d + 1}" for d in range(draws)]
        + ["|neighbour 1\n- refined|"],
        title="SNA: the refined autoencoder's neighbours "
        "Dec(Enc(I) + noise) of each face", legend=viz.HEAT_LEGEND)

