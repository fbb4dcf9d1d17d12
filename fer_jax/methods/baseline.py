"""The plain classifier every paper compares against: a ResNet with CE.

GNDL's baseline is ResNet-18 with cross-entropy on the examined image alone;
IF-GAN's is ResNet-101 with cross-entropy plus the island loss
(``config.baseline.island_weight`` 1). It shares the method's data,
augmentation and optimizer, so the two differ only in the method itself.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fer_jax import losses, nets
from fer_jax.data import augment as augment_lib
from fer_jax.methods import base
from fer_jax.models.classifier import ResNetClassifier


class Baseline(base.Method):
  name = "baseline"

  def __init__(self, config, **kwargs):
    super().__init__(config, **kwargs)
    m = config.model
    self.net = ResNetClassifier(m.arch, self.num_classes,
                                base_width=m.base_width, dtype=self.dtype,
                                fast_layers=self.fast_layers)
    b = config.get("baseline", {})
    self.island_weight = b.get("island_weight", 0.0)
    self.island_alpha = b.get("island_alpha", 0.03)
    self.plan_single_phase("single")

  def init_state(self, rng, batch):
    k_net, k_centers = jax.random.split(rng)
    size = (1, self.spec.crop, self.spec.crop, self.spec.channels)
    variables = self.net.init(k_net, jnp.zeros(size), train=False)
    params = {"net": variables["params"]}
    if self.island_weight:
      feat_dim = params["net"]["fc"]["kernel"].shape[0]
      params["centers"] = 0.1 * jax.random.normal(
          k_centers, (self.num_classes, feat_dim))
    return nets.network_state(variables, self.tx, params=params)

  def load_pretrained(self, state):
    """The ResNet backbone from ``config.init_from``."""
    loaded = self.pretrained_weights()
    if loaded is None:
      return state
    return self.fit_pretrained(state, loaded, ("params", "net", "backbone"),
                               ("batch_stats", "backbone"),
                               "the baseline's ResNet backbone")

  def phases(self):
    return [base.Phase("classifier", self.num_steps, self.batch_size,
                       self.train_step, example_kind="single", role=self.role)]

  def train_step(self, state, batch, rng):
    (image,) = augment_lib.augment_slots(self.spec, rng, batch, ("image",),
                                         train=True)
    labels = batch["label"]

    def loss_fn(params):
      (logits, feats), updates = self.net.apply(
          {"params": params["net"], "batch_stats": state["batch_stats"]},
          image, train=True, mutable=["batch_stats"])
      ce = losses.cross_entropy(logits, labels)
      island = (losses.island_loss(feats, labels, params["centers"],
                                   self.island_alpha)
                if self.island_weight else jnp.zeros(()))
      loss = ce + self.island_weight * island
      return loss, (ce, island, logits, updates["batch_stats"])

    grads, (ce, island, logits, batch_stats) = jax.grad(
        loss_fn, has_aux=True)(state["params"])
    metrics = {"loss": ce + self.island_weight * island, "ce": ce,
               "accuracy": losses.accuracy(logits, labels)}
    if self.island_weight:
      metrics["island"] = island
    return nets.update(state, self.tx, grads, batch_stats=batch_stats), metrics

  def predict(self, state, batch):
    logits, _ = self.net.apply({"params": state["params"]["net"],
                                "batch_stats": state["batch_stats"]},
                               self.eval_view(batch))
    return logits
