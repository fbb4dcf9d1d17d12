"""Losses shared by the methods, each a pure function of arrays.

Every reduction is explicit (mean over the batch unless stated) and computed
in float32 whatever the compute dtype, so bf16 runs lose no loss precision.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def cross_entropy(logits, labels, mask=None):
  """Mean softmax cross-entropy with integer labels (masked rows excluded)."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32))
  nll = -jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0]
  if mask is None:
    return jnp.mean(nll)
  mask = mask.astype(jnp.float32)
  return jnp.sum(nll * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def neutral_feature_loss(generated, real, reduction: str = "mean"):
  """GNDL eq. 8 as intended: the L1 distance of F'_neu to F_neu.

  The paper prints ||F_exam - F_neu||_1, a typo: the loss trains the NFG to
  reproduce the real neutral features (METHODS.md section 1).
  ``reduction='sum'`` is the per-sample L1 norm averaged over the batch;
  'mean' also averages over the C feature dimensions (PyTorch's
  ``nn.L1Loss``). The paper's lambda study (0.1..10, best at 5, fig. 7) only
  makes sense for 'mean': with 'sum' over 512 dimensions lambda=0.1 already
  outweighs the CE term, and on the synthetic set the backbone collapses its
  features to zero (CE stays at log K).
  """
  diff = jnp.abs(generated.astype(jnp.float32) - real.astype(jnp.float32))
  if reduction == "mean":
    return jnp.mean(diff)
  if reduction == "sum":
    return jnp.mean(jnp.sum(diff, axis=-1))
  raise ValueError(f"config.gndl.l_neu_reduction={reduction!r}; choose "
                   "'mean' or 'sum'")


def accuracy(logits, labels, mask=None):
  hit = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
  if mask is None:
    return jnp.mean(hit)
  mask = mask.astype(jnp.float32)
  return jnp.sum(hit * mask) / jnp.maximum(jnp.sum(mask), 1.0)
