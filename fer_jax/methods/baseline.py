"""The plain classifier every paper compares against: a ResNet with CE.

GNDL's baseline is ResNet-18 with cross-entropy on the examined image alone;
it shares GNDL's data, augmentation and optimizer so the two differ only in
the neutral-feature machinery.
"""

from __future__ import annotations

import jax

from fer_jax import losses
from fer_jax.data import augment as augment_lib
from fer_jax.methods import base
from fer_jax.models.resnet import resnet
from fer_jax.optim import make_optimizer


class Baseline(base.Method):
  name = "baseline"

  def __init__(self, config, **kwargs):
    super().__init__(config, **kwargs)
    m = config.model
    self.net = resnet(m.arch, num_classes=self.num_classes,
                      base_width=m.base_width, dtype=self.dtype)
    self.spec = base.augment_spec(config)
    self.batch_size = config.train.batch_size
    self.role = config.data.role
    self.num_steps = self.phase_steps(config.train, self.batch_size, "single",
                                      self.role)
    self.tx = make_optimizer(
        config.optim, self.steps_per_epoch(self.batch_size, "single",
                                           self.role), self.num_steps)

  def init_state(self, rng, batch):
    size = (1, self.spec.crop, self.spec.crop, self.spec.channels)
    variables = self.net.init(rng, jax.numpy.zeros(size), train=False)
    return {"params": variables["params"],
            "batch_stats": variables["batch_stats"],
            "opt_state": self.tx.init(variables["params"])}

  def phases(self):
    return [base.Phase("classifier", self.num_steps, self.batch_size,
                       self.train_step, example_kind="single", role=self.role)]

  def train_step(self, state, batch, rng):
    (image,) = augment_lib.augment_slots(self.spec, rng, batch, ("image",),
                                         train=True)
    labels = batch["label"]

    def loss_fn(params):
      logits, updates = self.net.apply(
          {"params": params, "batch_stats": state["batch_stats"]}, image,
          train=True, mutable=["batch_stats"])
      loss = losses.cross_entropy(logits, labels)
      return loss, (loss, logits, updates["batch_stats"])

    grads, (loss, logits, batch_stats) = jax.grad(loss_fn, has_aux=True)(
        state["params"])
    params, opt_state = base.apply_updates(
        self.tx, state["params"], state["opt_state"], grads)
    metrics = {"loss": loss,
               "accuracy": losses.accuracy(logits, labels)}
    return ({"params": params, "batch_stats": batch_stats,
             "opt_state": opt_state}, metrics)

  def predict(self, state, batch):
    (image,) = augment_lib.augment_slots(self.spec, jax.random.key(0), batch,
                                         ("image",), train=False)
    return self.net.apply({"params": state["params"],
                           "batch_stats": state["batch_stats"]}, image)
