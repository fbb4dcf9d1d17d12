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
  reproduce the real neutral features (docs/methods.md section 1).
  ``reduction='sum'`` is the per-sample L1 norm averaged over the batch;
  'mean' also averages over the C feature dimensions (PyTorch's
  ``nn.L1Loss``). The paper's lambda study (0.1..10, best at 5, fig. 7) only
  makes sense for 'mean': with 'sum' over 512 dimensions lambda=0.1 already
  outweighs the CE term, and on the synthetic set the backbone collapses its
  features to zero (CE stays at log K).
  ``reduction='relative'`` divides the 'mean' loss by the batch's mean
  |F_neu|: a variant (not the paper's) that the backbone cannot lower by
  shrinking every feature towards zero, the collapse measured from scratch.
  """
  real = real.astype(jnp.float32)
  diff = jnp.abs(generated.astype(jnp.float32) - real)
  if reduction == "mean":
    return jnp.mean(diff)
  if reduction == "sum":
    return jnp.mean(jnp.sum(diff, axis=-1))
  if reduction == "relative":
    return jnp.mean(diff) / (jnp.mean(jnp.abs(real)) + 1e-6)
  raise ValueError(f"config.gndl.l_neu_reduction={reduction!r}; choose "
                   "'mean', 'sum' or 'relative'")


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


# --- SNA (Fu et al.): focal, multi-scale AE, perceptual, WGAN, symmetric KL,
# --- neighbourhood mask (eq. 4-7, 11-14) ---


def focal_loss_per_sample(logits, labels, gamma: float = 2.0):
  """-(1 - p_t)^gamma log p_t per sample (Lin et al. 2017, SNA sec. IV-B);
  gamma 0 is the cross-entropy."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32))
  logp_t = jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0]
  return -((1.0 - jnp.exp(logp_t)) ** gamma) * logp_t


def symmetric_kl(logits_p, logits_q):
  """Div of eq. 12-13 per sample: (KL(P||Q) + KL(Q||P)) / 2 of the softmax
  outputs, = 1/2 sum_i (P_i - Q_i)(log P_i - log Q_i)."""
  logp = jax.nn.log_softmax(logits_p.astype(jnp.float32))
  logq = jax.nn.log_softmax(logits_q.astype(jnp.float32))
  return 0.5 * jnp.sum((jnp.exp(logp) - jnp.exp(logq)) * (logp - logq), -1)


def neighbourhood_mask(div, threshold=None):
  """m_i = delta(T - Div_i) (eq. 11): 1 where Div_i < T. ``threshold``
  None is the batch-level T of eq. 14, the batch's mean Div ('BT')."""
  div = div.astype(jnp.float32)
  t = jnp.mean(div) if threshold is None else threshold
  return (div < t).astype(jnp.float32)


def masked_mean(per_sample, mask):
  """sum_i m_i L_i / N (Algorithm 1, line 14): a masked sample contributes
  nothing, and the others keep their weight 1/N (the normaliser is the
  batch size, not the count kept, so masking does not raise the step)."""
  return jnp.sum(per_sample.astype(jnp.float32) * mask) / per_sample.shape[0]


def multiscale_ae_loss(targets, recoveries, alphas):
  """Eq. 4: sum_l alpha_l / |z^l| ||z^l - z_hat^l||^2, each level's squared
  error averaged over its |z^l| elements and over the batch. Returns (total,
  per-level list)."""
  levels = []
  for z, z_hat in zip(targets, recoveries):
    d = z.astype(jnp.float32) - z_hat.astype(jnp.float32)
    levels.append(jnp.mean(jnp.square(d)))
  total = sum(a * v for a, v in zip(alphas, levels))
  return total, levels


def reconstruction_loss(recon, image, recon_feats, image_feats,
                        pixel_weight: float, perceptual_weights):
  """Eq. 5: lambda_pixel ||H(I) - I||^2 + sum_k lambda_k ||C_k(H(I)) -
  C_k(I)||^2, each squared error a mean over elements (torch's MSELoss);
  C_k the stage-1 network's Conv3..Conv5 features (weights 100, 0.1, 0.001
  in the paper). Returns (total, pixel term, [perceptual terms])."""
  pixel = jnp.mean(jnp.square(recon.astype(jnp.float32)
                              - image.astype(jnp.float32)))
  perc = [jnp.mean(jnp.square(a.astype(jnp.float32) - b.astype(jnp.float32)))
          for a, b in zip(recon_feats, image_feats)]
  total = pixel_weight * pixel + sum(w * p for w, p in
                                     zip(perceptual_weights, perc))
  return total, pixel, perc


def wgan_critic_loss(real_scores, fake_scores):
  """Eq. 6, minimised by the critic: E[D(fake)] - E[D(real)]."""
  return (jnp.mean(fake_scores.astype(jnp.float32))
          - jnp.mean(real_scores.astype(jnp.float32)))


def wgan_generator_loss(fake_scores):
  """Eq. 7, minimised by the decoder: -E[D(fake)]."""
  return -jnp.mean(fake_scores.astype(jnp.float32))


def clip_weights(params, clip: float):
  """WGAN's Lipschitz constraint (Arjovsky et al. 2017): every critic
  parameter clipped to [-clip, clip] after each update."""
  return jax.tree.map(lambda p: jnp.clip(p, -clip, clip), params)
