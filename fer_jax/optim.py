"""Optimizers and learning-rate schedules from ``config.optim``.

Weight decay follows the papers' PyTorch semantics: for 'adam', 'sgd' and
'rmsprop' it is an L2 term added to the gradient (torch's ``weight_decay``);
'adamw' decouples it.
"""

from __future__ import annotations

import optax

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULES = ("constant", "step", "cosine", "plateau")


def schedule(optim_cfg, steps_per_epoch: int, total_steps: int):
  """lr(step): constant; step = x``decay_factor`` every ``decay_epochs``."""
  lr = optim_cfg.lr
  kind = optim_cfg.get("schedule", "constant")
  if kind in ("constant", "plateau"):  # plateau: scaled by plateau_scaling
    return optax.constant_schedule(lr)
  if kind == "step":
    every = max(1, int(round(optim_cfg.decay_epochs * steps_per_epoch)))
    return optax.exponential_decay(lr, every, optim_cfg.decay_factor,
                                   staircase=True)
  if kind == "cosine":
    return optax.cosine_decay_schedule(lr, max(1, total_steps))
  raise ValueError(f"config.optim.schedule={kind!r}; choose one of "
                   f"{', '.join(SCHEDULES)}")


def make_optimizer(optim_cfg, steps_per_epoch: int, total_steps: int
                   ) -> optax.GradientTransformation:
  name = optim_cfg.name
  lr = schedule(optim_cfg, steps_per_epoch, total_steps)
  wd = optim_cfg.get("weight_decay", 0.0)
  if name == "adamw":
    return optax.adamw(lr, b1=optim_cfg.b1, b2=optim_cfg.b2, weight_decay=wd)
  if name == "adam":
    core = optax.adam(lr, b1=optim_cfg.b1, b2=optim_cfg.b2)
  elif name == "sgd":
    core = optax.sgd(lr, momentum=optim_cfg.get("momentum", 0.9))
  elif name == "rmsprop":
    # torch.optim.RMSprop defaults: alpha 0.99, eps added after the sqrt.
    core = optax.rmsprop(lr, decay=0.99, eps=1e-8, eps_in_sqrt=False)
  else:
    raise ValueError(f"config.optim.name={name!r}; choose one of "
                     f"{', '.join(OPTIMIZERS)}")
  parts = [optax.add_decayed_weights(wd)] if wd else []
  parts.append(core)
  if optim_cfg.get("schedule") == "plateau":
    parts.append(plateau_scaling(optim_cfg))
  return optax.chain(*parts)


def plateau_scaling(optim_cfg):
  """lr x ``decay_factor`` when the loss (mean over ``plateau_window`` steps)
  has not improved for ``plateau_patience`` windows, down to
  ``plateau_min_scale`` (GroupGAN: 1e-4 -> 1e-5 "when the training loss does
  not decrease"). Its update needs ``value=loss``: ``nets.update(..., loss=)``."""
  return optax.contrib.reduce_on_plateau(
      factor=optim_cfg.decay_factor,
      patience=optim_cfg.get("plateau_patience", 10),
      accumulation_size=optim_cfg.get("plateau_window", 50),
      min_scale=optim_cfg.get("plateau_min_scale", 0.1))
