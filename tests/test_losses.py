"""Losses: cross-entropy, GNDL's L_neu and accuracy against hand computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fer_jax import losses

LOGITS = np.array([[2.0, 0.5, -1.0, 0.0],
                   [0.1, 0.2, 0.3, 0.4],
                   [-3.0, 4.0, 1.0, 1.0],
                   [1.0, 1.0, 1.0, 1.0],
                   [0.0, -2.0, 5.0, 2.5]])
LABELS = np.array([0, 3, 2, 1, 2])


def nll_numpy(logits, labels):
  """Per-row -log softmax(logits)[label], in float64."""
  z = logits - logits.max(-1, keepdims=True)
  logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
  return -logp[np.arange(len(labels)), labels]


def test_cross_entropy_matches_numpy():
  """Unmasked: the mean of per-row negative log-likelihoods."""
  got = losses.cross_entropy(jnp.asarray(LOGITS, jnp.float32),
                             jnp.asarray(LABELS))
  np.testing.assert_allclose(got, nll_numpy(LOGITS, LABELS).mean(), rtol=1e-6)


def test_cross_entropy_uniform_logits_is_log_k():
  """Equal logits over 4 classes: CE = log 4 whatever the label."""
  got = losses.cross_entropy(jnp.ones((3, 4)), jnp.array([0, 1, 3]))
  np.testing.assert_allclose(got, np.log(4.0), rtol=1e-6)


def test_cross_entropy_masked():
  """Masked rows are excluded: sum over kept rows / number kept; an
  all-zero mask gives 0, not NaN."""
  mask = np.array([1, 0, 1, 1, 0], bool)
  got = losses.cross_entropy(jnp.asarray(LOGITS, jnp.float32),
                             jnp.asarray(LABELS), jnp.asarray(mask))
  want = nll_numpy(LOGITS, LABELS)[mask].mean()
  np.testing.assert_allclose(got, want, rtol=1e-6)
  # Changing a masked row's logits changes nothing.
  other = LOGITS.copy()
  other[1] = [9.0, -9.0, 0.0, 3.0]
  np.testing.assert_allclose(
      losses.cross_entropy(jnp.asarray(other, jnp.float32),
                           jnp.asarray(LABELS), jnp.asarray(mask)), want,
      rtol=1e-6)
  zero = losses.cross_entropy(jnp.asarray(LOGITS, jnp.float32),
                              jnp.asarray(LABELS), jnp.zeros(5, bool))
  assert float(zero) == 0.0


def test_cross_entropy_bf16_logits_in_float32():
  """bf16 logits: the loss is float32 and equals the float64 CE of the
  bf16-rounded logits (no bf16 reduction error)."""
  big = np.random.default_rng(0).normal(size=(64, 7)) * 3
  labels = np.arange(64) % 7
  bf = jnp.asarray(big, jnp.bfloat16)
  got = losses.cross_entropy(bf, jnp.asarray(labels))
  assert got.dtype == jnp.float32
  rounded = np.asarray(bf.astype(jnp.float32), np.float64)
  np.testing.assert_allclose(got, nll_numpy(rounded, labels).mean(),
                             rtol=1e-6)


def test_cross_entropy_gradient_is_softmax_minus_onehot():
  """d CE / d logits = (softmax - onehot) / B."""
  grad = jax.grad(losses.cross_entropy)(jnp.asarray(LOGITS, jnp.float32),
                                        jnp.asarray(LABELS))
  p = np.exp(LOGITS) / np.exp(LOGITS).sum(-1, keepdims=True)
  onehot = np.eye(4)[LABELS]
  np.testing.assert_allclose(grad, (p - onehot) / 5, atol=1e-6)


GEN = np.array([[1.0, 2.0, -1.0], [3.0, 4.0, 0.0], [0.0, 0.0, 0.0]])
REAL = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.5, -2.0, 1.0]])


def l_neu(gen, real, *reduction):
  return losses.neutral_feature_loss(jnp.asarray(gen, jnp.float32),
                                     jnp.asarray(real, jnp.float32),
                                     *reduction)


def test_neutral_feature_loss_sum_hand_computed():
  """reduction='sum' (docs/methods.md section 1: mean over the batch of
  ||F'_neu - F_neu||_1): rows |(1,2,-1)| = 4, |(2,3,-1)| = 6,
  |(-0.5,2,-1)| = 3.5 -> (4 + 6 + 3.5) / 3 = 4.5; symmetric in its arguments."""
  np.testing.assert_allclose(l_neu(GEN, REAL, "sum"), 4.5, rtol=1e-6)
  np.testing.assert_allclose(l_neu(REAL, GEN, "sum"), 4.5, rtol=1e-6)


def test_neutral_feature_loss_mean_hand_computed():
  """Default reduction='mean' (torch nn.L1Loss): the same 13.5 total over
  3 x 3 elements = 1.5, i.e. the 'sum' value / C."""
  np.testing.assert_allclose(l_neu(GEN, REAL), 1.5, rtol=1e-6)
  np.testing.assert_allclose(l_neu(GEN, REAL, "mean"), 1.5, rtol=1e-6)


def test_neutral_feature_loss_random_and_gradient():
  """Random (6, 32): 'sum' = mean_b sum_c |g - r| with gradient
  sign(g - r) / B; 'mean' = that / 32 with gradient sign(g - r) / (B C)."""
  rng = np.random.default_rng(1)
  g, r = rng.normal(size=(6, 32)), rng.normal(size=(6, 32))
  g32, r32 = jnp.asarray(g, jnp.float32), jnp.asarray(r, jnp.float32)
  per_sample = np.abs(g - r).sum(-1).mean()
  np.testing.assert_allclose(l_neu(g, r, "sum"), per_sample, rtol=1e-5)
  np.testing.assert_allclose(l_neu(g, r, "mean"), per_sample / 32, rtol=1e-5)
  grad_sum = jax.grad(losses.neutral_feature_loss)(g32, r32, "sum")
  np.testing.assert_allclose(grad_sum, np.sign(g - r) / 6, atol=1e-7)
  grad_mean = jax.grad(losses.neutral_feature_loss)(g32, r32, "mean")
  np.testing.assert_allclose(grad_mean, np.sign(g - r) / (6 * 32),
                             atol=1e-8)


def test_neutral_feature_loss_bf16_inputs_and_bad_reduction():
  """bf16 features are compared in float32; an unknown reduction raises
  ValueError naming config.gndl.l_neu_reduction."""
  g = jnp.full((2, 4), 1.0, jnp.bfloat16)
  r = jnp.zeros((2, 4), jnp.float32)
  out = losses.neutral_feature_loss(g, r, "sum")
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, 4.0)
  np.testing.assert_allclose(losses.neutral_feature_loss(g, r), 1.0)
  with pytest.raises(ValueError, match=r"config\.gndl\.l_neu_reduction"):
    losses.neutral_feature_loss(g, r, "max")


def test_accuracy_with_and_without_mask():
  """Argmax hits: rows 0, 1, 4 right; row 2 (argmax 1, label 2) and row 3
  (tie -> argmax 0, label 1) wrong: 3/5; with mask [1,0,0,1,1]: rows 0, 3, 4
  -> 2/3; all-zero mask -> 0."""
  logits = jnp.asarray(LOGITS, jnp.float32)
  labels = jnp.asarray(LABELS)
  np.testing.assert_allclose(losses.accuracy(logits, labels), 0.6)
  mask = jnp.array([1, 0, 0, 1, 1], bool)
  np.testing.assert_allclose(losses.accuracy(logits, labels, mask), 2 / 3,
                             rtol=1e-6)
  assert float(losses.accuracy(logits, labels, jnp.zeros(5, bool))) == 0.0


def test_neutral_feature_loss_relative_is_scale_free():
  """'relative' = 'mean' / mean|F_neu|: here 1.5 / (|REAL| total / 9);
  scaling both features by 10 leaves it unchanged (the backbone cannot
  lower it by shrinking them), where 'mean' scales by 10."""
  mean_abs_real = np.abs(np.asarray(REAL, np.float64)).mean()
  np.testing.assert_allclose(l_neu(GEN, REAL, "relative"),
                             1.5 / mean_abs_real, rtol=1e-5)
  big_gen = 10 * np.asarray(GEN, np.float64)
  big_real = 10 * np.asarray(REAL, np.float64)
  np.testing.assert_allclose(l_neu(big_gen, big_real, "relative"),
                             l_neu(GEN, REAL, "relative"), rtol=1e-5)
  np.testing.assert_allclose(l_neu(big_gen, big_real), 15.0, rtol=1e-5)
