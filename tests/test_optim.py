"""Optimizers and schedules: torch-semantics weight decay, step decay."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from fer_jax import optim


def cfg(**overrides):
  """config.optim with base_config's defaults."""
  c = ml_collections.ConfigDict(dict(
      name="adam", lr=1e-3, b1=0.9, b2=0.999, momentum=0.9, weight_decay=0.0,
      schedule="constant", decay_epochs=10.0, decay_factor=0.1))
  c.update(overrides)
  return c


def lrs(c, steps_per_epoch, steps, total=100):
  fn = optim.schedule(c, steps_per_epoch, total)
  return np.array([float(fn(s)) for s in steps])


def test_step_schedule_hand_values():
  """lr 0.1, x0.5 every 2 epochs of 5 steps: 0.1 on steps 0-9, 0.05 on
  10-19, 0.025 from 20."""
  c = cfg(lr=0.1, schedule="step", decay_epochs=2, decay_factor=0.5)
  got = lrs(c, 5, [0, 9, 10, 19, 20, 29, 30])
  np.testing.assert_allclose(got, [0.1, 0.1, 0.05, 0.05, 0.025, 0.025,
                                   0.0125], rtol=1e-6)


def test_step_schedule_fractional_epochs():
  """decay_epochs 1.5 x 4 steps/epoch = every 6 steps; x0.1 each time."""
  c = cfg(lr=1.0, schedule="step", decay_epochs=1.5, decay_factor=0.1)
  got = lrs(c, 4, np.arange(19))
  want = 0.1 ** (np.arange(19) // 6)
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_constant_and_cosine_schedules():
  """constant stays at lr; cosine goes lr -> lr/2 at half -> 0 at the end."""
  np.testing.assert_allclose(lrs(cfg(lr=0.3), 7, [0, 50, 999]), 0.3,
                             rtol=1e-6)
  got = lrs(cfg(lr=0.2, schedule="cosine"), 10, [0, 50, 100], total=100)
  np.testing.assert_allclose(got, [0.2, 0.1, 0.0], atol=1e-7)


def test_optimizer_follows_step_schedule():
  """SGD without momentum under the step schedule: update = -lr(t) * g."""
  c = cfg(name="sgd", lr=0.1, momentum=0.0, schedule="step", decay_epochs=1,
          decay_factor=0.5)
  tx = optim.make_optimizer(c, steps_per_epoch=2, total_steps=10)
  params = {"w": jnp.ones(3)}
  state = tx.init(params)
  g = {"w": jnp.array([1.0, -2.0, 4.0])}
  for step, lr in enumerate([0.1, 0.1, 0.05, 0.05, 0.025]):
    updates, state = tx.update(g, state, params)
    np.testing.assert_allclose(updates["w"], -lr * np.array([1, -2, 4.0]),
                               rtol=1e-6, err_msg=f"step {step}")


def grad_fn(p):
  """Gradient of a quadratic: 0.5 * a * p^2 + b * p (depends on p)."""
  return np.array([0.5, -1.5, 2.0, 0.2]) * p + np.array([0.3, 0.1, -0.4, 1e-3])


def torch_adam(p, steps, lr, b1, b2, wd, eps=1e-8, decoupled=False):
  """torch.optim.Adam (L2: g += wd * p) / AdamW (p -= lr * wd * p), float64."""
  p = p.astype(np.float64)
  m = np.zeros_like(p)
  v = np.zeros_like(p)
  for t in range(1, steps + 1):
    g = grad_fn(p)
    if decoupled:
      p = p - lr * wd * p
    else:
      g = g + wd * p
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    mhat, vhat = m / (1 - b1**t), v / (1 - b2**t)
    p = p - lr * mhat / (np.sqrt(vhat) + eps)
  return p


def run_optax(tx, p, steps):
  params = jnp.asarray(p, jnp.float32)
  state = tx.init(params)
  for _ in range(steps):
    g = jnp.asarray(grad_fn(np.asarray(params, np.float64)), jnp.float32)
    updates, state = tx.update(g, state, params)
    params = optax.apply_updates(params, updates)
  return np.asarray(params, np.float64)


P0 = np.array([1.0, -2.0, 0.5, 3.0])


def test_adam_weight_decay_is_l2_in_gradient_first_step():
  """One step by hand: g' = g + wd p, m_hat = g', v_hat = g'^2, so the
  update is -lr * g' / (|g'| + eps)."""
  lr, wd = 0.01, 0.5
  tx = optim.make_optimizer(cfg(lr=lr, weight_decay=wd), 10, 100)
  got = run_optax(tx, P0, 1)
  g = grad_fn(P0) + wd * P0
  np.testing.assert_allclose(got, P0 - lr * g / (np.abs(g) + 1e-8),
                             rtol=1e-6)


def test_adam_weight_decay_sign_flip():
  """At p = [4, 1, 1, 1] the gradient's entry 1 is -1.5 + 0.1 = -1.4, so
  plain Adam steps +lr; with wd = 2, g' = -1.4 + 2 * 1 = 0.6 and the step is
  -lr: the decay enters the gradient before Adam's normalisation (torch),
  it is not a separate -lr * wd * p term (AdamW would step +lr - 0.2)."""
  p = np.array([4.0, 1.0, 1.0, 1.0])
  lr = 0.1
  plain = run_optax(optim.make_optimizer(cfg(lr=lr), 1, 1), p, 1)
  decayed = run_optax(optim.make_optimizer(cfg(lr=lr, weight_decay=2.0), 1,
                                           1), p, 1)
  assert grad_fn(p)[1] == pytest.approx(-1.4)
  np.testing.assert_allclose(plain[1] - p[1], +lr, atol=1e-5)
  np.testing.assert_allclose(decayed[1] - p[1], -lr, atol=1e-5)


@pytest.mark.parametrize("wd", [0.0, 0.05, 0.5])
def test_adam_matches_torch_adam_over_steps(wd):
  """Five steps of 'adam' (b2 0.99 as IF-GAN) equal torch.optim.Adam with
  weight_decay=wd computed by hand in float64."""
  lr, b1, b2 = 0.05, 0.9, 0.99
  tx = optim.make_optimizer(cfg(lr=lr, b1=b1, b2=b2, weight_decay=wd), 10,
                            100)
  np.testing.assert_allclose(run_optax(tx, P0, 5),
                             torch_adam(P0, 5, lr, b1, b2, wd), rtol=1e-5)


def test_adamw_is_decoupled():
  """'adamw' equals torch.optim.AdamW (decay outside Adam's normalisation)
  and differs from 'adam' with the same weight_decay."""
  lr, wd = 0.05, 0.5
  adamw = run_optax(optim.make_optimizer(
      cfg(name="adamw", lr=lr, weight_decay=wd), 10, 100), P0, 5)
  np.testing.assert_allclose(
      adamw, torch_adam(P0, 5, lr, 0.9, 0.999, wd, decoupled=True),
      rtol=1e-5)
  adam = run_optax(optim.make_optimizer(cfg(lr=lr, weight_decay=wd), 10,
                                        100), P0, 5)
  assert np.abs(adam - adamw).max() > 1e-3


def test_sgd_momentum_weight_decay_matches_torch():
  """torch SGD(momentum=0.9, weight_decay=wd): g' = g + wd p, buf = 0.9 buf
  + g' (buf = g' on step 1), p -= lr buf; three steps by hand."""
  lr, wd, mom = 0.1, 0.01, 0.9
  tx = optim.make_optimizer(cfg(name="sgd", lr=lr, momentum=mom,
                                weight_decay=wd), 10, 100)
  p = P0.copy()
  buf = None
  for _ in range(3):
    g = grad_fn(p) + wd * p
    buf = g if buf is None else mom * buf + g
    p = p - lr * buf
  np.testing.assert_allclose(run_optax(tx, P0, 3), p, rtol=1e-5)


def test_unknown_names_raise_naming_the_field():
  """A bad optimizer or schedule name raises ValueError naming the field."""
  with pytest.raises(ValueError, match=r"config\.optim\.name"):
    optim.make_optimizer(cfg(name="lamb"), 10, 100)
  with pytest.raises(ValueError, match=r"config\.optim\.schedule"):
    optim.make_optimizer(cfg(schedule="linear"), 10, 100)
  with pytest.raises(ValueError, match=r"config\.optim\.schedule"):
    optim.schedule(cfg(schedule="warmup"), 10, 100)


def test_optimizer_jits_on_a_pytree():
  """The transformation works inside jit on nested params (as in training)."""
  tx = optim.make_optimizer(cfg(lr=0.01, weight_decay=1e-4), 10, 100)
  params = {"a": jnp.ones((2, 3)), "b": {"c": jnp.zeros(4)}}
  state = tx.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = jax.jit(tx.update)(grads, state, params)
  # First Adam step: -lr * sign(g + wd p) = -0.01 everywhere (g' > 0).
  for leaf in jax.tree.leaves(updates):
    np.testing.assert_allclose(leaf, -0.01, rtol=1e-5)


def test_rmsprop_matches_torch_defaults():
  """Three steps of 'rmsprop' equal torch RMSprop(lr) by hand:
  v = 0.99 v + 0.01 g^2, p -= lr g / (sqrt(v) + 1e-8)."""
  lr = 1e-3
  tx = optim.make_optimizer(cfg(name="rmsprop", lr=lr), 10, 100)
  p, v = P0.copy(), np.zeros_like(P0)
  for _ in range(3):
    g = grad_fn(p)
    v = 0.99 * v + 0.01 * g * g
    p = p - lr * g / (np.sqrt(v) + 1e-8)
  np.testing.assert_allclose(run_optax(tx, P0, 3), p, rtol=1e-5)


def test_plateau_schedule_divides_lr_once_the_loss_stalls():
  """Window 2, patience 1, factor 0.1, floor 0.1: a loss that stops
  improving cuts the update 10x, and never below lr x 0.1."""
  c = cfg(name="sgd", lr=1.0, momentum=0.0, schedule="plateau",
          decay_factor=0.1, plateau_window=2, plateau_patience=1,
          plateau_min_scale=0.1)
  tx = optim.make_optimizer(c, 10, 100)
  params = {"w": jnp.zeros(())}
  state = tx.init(params)
  grads = {"w": jnp.ones(())}
  sizes = []
  for loss in [5.0, 5.0, 4.0, 4.0] + [4.0] * 8:
    updates, state = tx.update(grads, state, params, value=jnp.asarray(loss))
    sizes.append(abs(float(updates["w"])))
  assert sizes[:4] == [1.0] * 4
  assert sizes[-1] == pytest.approx(0.1)
  assert min(sizes) == pytest.approx(0.1)
