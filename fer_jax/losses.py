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


# --- Conditional GAN, L1 and island losses (IF-GAN eq. 2, 3, 5; pix2pix) ---


def gan_discriminator_loss(real_logits, fake_logits):
  """D's side of the cGAN loss (IF-GAN eq. 2), minimised.

  -E[log D(x, y)] - E[log(1 - D(x, G(x)))] as sigmoid cross-entropy with
  logits (real -> 1, fake -> 0), each term a mean over batch and patch
  positions. pix2pix halves this sum to slow D down; multiply by 0.5 at the
  call site for that.
  """
  real = real_logits.astype(jnp.float32)
  fake = fake_logits.astype(jnp.float32)
  return jnp.mean(-jax.nn.log_sigmoid(real)) + jnp.mean(
      -jax.nn.log_sigmoid(-fake))


def gan_generator_loss(fake_logits):
  """G's side of eq. 2 in the non-saturating form, -E[log D(x, G(x))].

  Goodfellow et al. 2014 / pix2pix: G maximises log D(x, G(x)) rather than
  minimising log(1 - D(x, G(x))), whose gradient vanishes while D wins.
  Mean over batch and patch positions.
  """
  return jnp.mean(-jax.nn.log_sigmoid(fake_logits.astype(jnp.float32)))


def l1_loss(a, b):
  """E[||a - b||_1] of eq. 3, as the mean absolute error over every element
  (pix2pix's nn.L1Loss), so lambda_2 = 20 weighs a per-pixel error."""
  return jnp.mean(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32)))


def island_loss(features, labels, centers, alpha: float = 0.03,
                eps: float = 1e-8):
  """Island loss (Cai et al. FG 2018; IF-GAN eq. 5) on (B, D) features.

  L = 1/2 * mean_i ||f_i - c_{y_i}||^2
      + alpha * sum_{j} sum_{k != j} (cos(c_k, c_j) + 1).
  The centre term is the island/centre loss paper's L_C = 1/2 sum_i ||.||^2
  divided by the batch size (as Wen et al.'s code); IF-GAN's eq. 5 prints the
  plain sum over the M images without the 1/2. The pair term runs over
  ordered pairs (both k, j and j, k), as both papers write it: 2x the
  unordered sum, N(N-1) terms for N centres. ``centers`` (N, D) are
  parameters the optimizer learns; start them away from 0 (cos is taken with
  norms clamped at ``eps``, so zero centres give a finite but useless
  gradient). Returns a float32 scalar.
  """
  f = features.astype(jnp.float32)
  c = centers.astype(jnp.float32)
  center_term = 0.5 * jnp.mean(jnp.sum((f - c[labels]) ** 2, axis=-1))
  norm = jnp.sqrt(jnp.maximum(jnp.sum(c * c, axis=-1), eps * eps))
  unit = c / norm[:, None]
  cos = unit @ unit.T
  off_diagonal = 1.0 - jnp.eye(c.shape[0], dtype=jnp.float32)
  pair_term = jnp.sum((cos + 1.0) * off_diagonal)
  return center_term + alpha * pair_term
