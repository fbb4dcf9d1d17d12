"""One network's slice of a method's state, and the one update every
method takes on it.

A method's state holds each of its networks as ``{"params", "batch_stats",
"opt_state"}``. ``update`` is flax's ``TrainState.apply_gradients`` over
such a dict: new params and optimizer state from the gradients, and the
BatchNorm statistics of the train-mode forward that made them. Methods then
hold only how their networks play together, not how a network is stepped.
"""

from __future__ import annotations

from typing import Any

import optax

Net = dict[str, Any]


def network_state(variables, tx: optax.GradientTransformation,
                  params=None) -> Net:
  """A fresh network: its params (``params``, or ``variables['params']``),
  BatchNorm statistics (empty if it has none) and ``tx``'s initial
  optimizer state for those params."""
  params = variables["params"] if params is None else params
  return {"params": params, "batch_stats": variables.get("batch_stats", {}),
          "opt_state": tx.init(params)}


def update(net: Net, tx: optax.GradientTransformation, grads, *,
           batch_stats=None, loss=None) -> Net:
  """``net`` after one step of ``tx`` on ``grads``. ``batch_stats``: the
  statistics the step's forward pass left (default: keep the old ones);
  ``loss`` feeds a plateau schedule (``config.optim.schedule='plateau'``).
  Keys other than params, opt_state and batch_stats are kept."""
  if loss is None:
    updates, opt_state = tx.update(grads, net["opt_state"], net["params"])
  else:
    updates, opt_state = tx.update(grads, net["opt_state"], net["params"],
                                   value=loss)
  new = {**net, "params": optax.apply_updates(net["params"], updates),
         "opt_state": opt_state}
  if batch_stats is not None:
    new["batch_stats"] = batch_stats
  return new
