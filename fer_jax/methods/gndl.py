"""GNDL: generative neutral features-disentangled learning (Wu et al. 2023).

Training sees pairs (examined frame, neutral frame of the same face). Both go
through the ResNet in ONE batch so BatchNorm normalises them with shared
statistics (paper eq. 4-6). The Neutral Feature Generator maps F_exam to a
generated neutral F'_neu; the classifier sees the deviation
F_exp-d = F_exam - F'_neu (eq. 7). Loss L = CE + lambda * L_neu (eq. 11), with
L_neu the L1 distance of F'_neu to the real F_neu (eq. 8, typo fixed). At test
time the examined image goes alone, BN in inference mode.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from fer_jax import losses, nets
from fer_jax.data import augment as augment_lib
from fer_jax.methods import base
from fer_jax.models.resnet import resnet


class NeutralFeatureGenerator(nn.Module):
  """NFG (paper fig. 5): Dense(C->C/2)+LeakyReLU, nearest-neighbour upsampling
  of the vector back to C (each element twice), Dense(C->C)+LeakyReLU,
  Dense(C->C)."""
  features: int
  negative_slope: float = 0.01
  dtype: base.Any = jnp.float32
  param_dtype: base.Any = jnp.float32

  @nn.compact
  def __call__(self, f):
    dense = lambda n, name: nn.Dense(n, dtype=self.dtype,
                                     param_dtype=self.param_dtype, name=name)
    h = nn.leaky_relu(dense(self.features // 2, "encode")(f),
                      self.negative_slope)
    h = jnp.repeat(h, 2, axis=-1)
    h = nn.leaky_relu(dense(self.features, "decode")(h), self.negative_slope)
    return dense(self.features, "out")(h)


class GNDLNet(nn.Module):
  """Backbone + NFG + linear classifier on the deviation feature."""
  arch: str
  num_classes: int
  base_width: int = 64
  negative_slope: float = 0.01
  dtype: base.Any = jnp.float32
  fast_layers: bool = True

  def setup(self):
    self.backbone = resnet(self.arch, num_classes=0,
                           base_width=self.base_width, dtype=self.dtype,
                           fast_layers=self.fast_layers)
    self.nfg = NeutralFeatureGenerator(self.backbone.feature_dim,
                                       self.negative_slope, dtype=self.dtype)
    self.head = nn.Dense(self.num_classes, dtype=self.dtype)

  def classify(self, f_exam):
    """Logits from F_exam through the generated neutral (eq. 7)."""
    f_gen = self.nfg(f_exam)
    return self.head(f_exam - f_gen).astype(jnp.float32), f_gen

  def __call__(self, images, train: bool = False):
    """Test path: examined images alone."""
    return self.classify(self.backbone(images, train))[0]

  def train_pair(self, exam, neutral, neutral_loss_to_backbone: bool = True,
                 neutral_target_gradient: bool = True,
                 real_neutral: bool = False):
    """Training path: (logits, F'_neu, F_neu) with one BN over the pair.

    With ``neutral_loss_to_backbone=False`` the neutral loss reaches only the
    NFG: its inputs F_exam and target F_neu are constants to it. With
    ``neutral_target_gradient=False`` it reaches the backbone through
    NFG(F_exam) only: F_neu is a fixed target, so the loss cannot be lowered
    by moving the neutral faces' features (the collapse route). With
    ``real_neutral`` the classifier sees F_exam - F_neu (the oracle arm).
    """
    f = self.backbone(jnp.concatenate([exam, neutral], 0), train=True)
    f_exam, f_neu = jnp.split(f, 2)
    if real_neutral:
      logits = self.deviation_logits(f_exam, f_neu)
      f_gen = self.nfg(f_exam)
    else:
      logits, f_gen = self.classify(f_exam)
    if not neutral_loss_to_backbone:
      f_gen = self.nfg(jax.lax.stop_gradient(f_exam))
      f_neu = jax.lax.stop_gradient(f_neu)
    elif not neutral_target_gradient:
      f_neu = jax.lax.stop_gradient(f_neu)
    return logits, f_gen.astype(jnp.float32), f_neu

  def deviation_logits(self, f_exam, f_neu):
    """Logits of F_exam - F_neu with the real neutral's features."""
    return self.head(f_exam - f_neu).astype(jnp.float32)

  def oracle(self, exam, neutral, train: bool = False):
    """Test path of the oracle arm: the real neutral frame, not the NFG."""
    f_exam = self.backbone(exam, train)
    f_neu = self.backbone(neutral, train)
    return self.deviation_logits(f_exam, f_neu)


class GNDL(base.Method):
  name = "gndl"

  def __init__(self, config, **kwargs):
    super().__init__(config, **kwargs)
    m = config.model
    self.net = GNDLNet(m.arch, self.num_classes, base_width=m.base_width,
                       negative_slope=config.gndl.negative_slope,
                       dtype=self.dtype, fast_layers=self.fast_layers)
    self.real_neutral = config.gndl.get("neutral_source",
                                        "generated") == "real"
    if self.real_neutral:
      # Oracle arm: test examples carry their sequence's neutral frame.
      self.eval_kind = "neutral_pair"
    self.plan_single_phase("neutral_pair")

  def init_state(self, rng, batch):
    size = (1, self.spec.crop, self.spec.crop, self.spec.channels)
    dummy = jnp.zeros(size, jnp.float32)
    variables = self.net.init(rng, dummy, dummy, method=GNDLNet.train_pair)
    return nets.network_state(variables, self.tx)

  def load_pretrained(self, state):
    """The ResNet backbone (params and BN statistics) from
    ``config.init_from``, as the paper starts from ImageNet."""
    loaded = self.pretrained_weights()
    if loaded is None:
      return state
    return self.fit_pretrained(state, loaded, ("params", "backbone"),
                               ("batch_stats", "backbone"),
                               "GNDL's ResNet backbone")

  def phases(self):
    """CE alone over the first ``gndl.warmup_fraction`` of the steps, then
    CE + lambda * L_neu.

    The paper starts from an ImageNet ResNet-18 whose features already
    describe faces. From scratch, L_neu acting at step 0 can collapse the
    features (F_exam = F_neu, CE at log K for hundreds of steps;
    docs/results): the warm start gives L_neu meaningful features to shape,
    as the pretrained initialisation does in the paper. The two phases share
    one optimizer and schedule, over ``num_steps`` in all.
    """
    fraction = float(self.config.gndl.get("warmup_fraction", 0.0))
    if not 0.0 <= fraction < 1.0:
      raise ValueError(f"config.gndl.warmup_fraction={fraction}: expected a "
                       "share of the steps in [0, 1)")
    warmup = int(fraction * self.num_steps)
    main = base.Phase("gndl", self.num_steps - warmup, self.batch_size,
                      self.train_step, example_kind="neutral_pair",
                      role=self.role)
    if not warmup:
      return [main]
    return [base.Phase("warmup_ce", warmup, self.batch_size, self.warmup_step,
                       example_kind="neutral_pair", role=self.role), main]

  def warmup_step(self, state, batch, rng):
    """The training step with lambda = 0: CE through the whole network."""
    return self.train_step(state, batch, rng, lam=0.0)

  def train_step(self, state, batch, rng, lam=None):
    exam, neutral = augment_lib.augment_slots(
        self.spec, rng, batch, ("image", "neutral"), train=True)
    labels = batch["label"]
    g = self.config.gndl
    lam = g.lam if lam is None else lam
    reduction = g.l_neu_reduction
    to_backbone = g.neutral_loss_to_backbone
    target_grad = g.get("neutral_target_gradient", True)

    def loss_fn(params):
      (logits, f_gen, f_neu), updates = self.net.apply(
          {"params": params, "batch_stats": state["batch_stats"]}, exam,
          neutral, to_backbone, target_grad, self.real_neutral,
          method=GNDLNet.train_pair, mutable=["batch_stats"])
      ce = losses.cross_entropy(logits, labels)
      l_neu = losses.neutral_feature_loss(f_gen, f_neu, reduction)
      return ce + lam * l_neu, (ce, l_neu, logits, updates["batch_stats"])

    grads, (ce, l_neu, logits, batch_stats) = jax.grad(
        loss_fn, has_aux=True)(state["params"])
    metrics = {"loss": ce + lam * l_neu, "ce": ce, "l_neu": l_neu,
               "accuracy": losses.accuracy(logits, labels)}
    return nets.update(state, self.tx, grads, batch_stats=batch_stats), metrics

  def predict(self, state, batch):
    variables = {"params": state["params"],
                 "batch_stats": state["batch_stats"]}
    if self.real_neutral:
      return self.net.apply(variables, self.eval_view(batch),
                            self.eval_view(batch, "neutral"),
                            method=GNDLNet.oracle)
    return self.net.apply(variables, self.eval_view(batch))
