"""The rewritten layers compute what the plain lowering computes: values
and gradients (ties included for the pool), against XLA's own ops."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from fer_jax.models import fast_layers


@pytest.mark.parametrize("shape,k,s,pad", [((2, 12, 10, 3), 3, 2, 1),
                                           ((1, 9, 9, 2), 3, 2, 1),
                                           ((2, 8, 8, 4), 2, 2, 0),
                                           ((1, 13, 11, 2), 3, 2, 0)])
def test_max_pool_matches_reduce_window_values_and_gradients(shape, k, s,
                                                             pad):
  rng = np.random.default_rng(0)
  # Rounded and ReLU'd: many ties, so the first-maximum rule is exercised.
  x = jnp.asarray(np.maximum(np.round(rng.normal(size=shape) * 2), 0),
                  jnp.float32)
  ref = lambda v: nn.max_pool(v, (k, k), (s, s), ((pad, pad), (pad, pad)))
  fast = lambda v: fast_layers.max_pool(v, k, s, pad)
  np.testing.assert_array_equal(fast(x), ref(x))
  g = jnp.asarray(rng.normal(size=ref(x).shape), jnp.float32)
  _, vjp_ref = jax.vjp(ref, x)
  _, vjp_fast = jax.vjp(fast, x)
  np.testing.assert_allclose(vjp_fast(g)[0], vjp_ref(g)[0], atol=1e-6)
  # Ties were there, and each output's gradient went to one input.
  assert float(jnp.sum(vjp_fast(jnp.ones_like(g))[0])) == pytest.approx(
      g.size)


def test_max_pool_jaxpr_has_no_scatter():
  x = jnp.ones((2, 16, 16, 4))
  grad = jax.grad(lambda v: fast_layers.max_pool(v, 3, 2, 1).sum())
  text = jax.jit(grad).lower(x).as_text()
  assert "scatter" not in text and "select_and_scatter" not in text


@pytest.mark.parametrize("hw", [(16, 16), (14, 10), (224, 224)])
def test_space_to_depth_stem_equals_the_strided_conv(hw):
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(2,) + hw + (3,)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(7, 7, 3, 8)), jnp.float32)
  ref = lax.conv_general_dilated(x, kernel, (2, 2), ((3, 3), (3, 3)),
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                 precision="highest")
  got = fast_layers.space_to_depth_conv_7x7_s2(x, kernel)
  assert got.shape == ref.shape
  np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
  # The kernel's gradient too (what training uses).
  g = jnp.asarray(rng.normal(size=ref.shape), jnp.float32)
  f_ref = lambda k: jnp.sum(g * lax.conv_general_dilated(
      x, k, (2, 2), ((3, 3), (3, 3)), dimension_numbers=("NHWC", "HWIO",
                                                         "NHWC")))
  f_got = lambda k: jnp.sum(g * fast_layers.space_to_depth_conv_7x7_s2(x, k))
  np.testing.assert_allclose(jax.grad(f_got)(kernel), jax.grad(f_ref)(kernel),
                             rtol=1e-3, atol=1e-3)


def test_stem_module_keeps_the_7x7_parameter_and_odd_sizes_fall_back():
  stem = fast_layers.StridedStemConv(8)
  x = jnp.ones((1, 15, 15, 3))
  params = stem.init(jax.random.key(0), x)
  assert params["params"]["kernel"].shape == (7, 7, 3, 8)
  assert stem.apply(params, x).shape == (1, 8, 8, 8)
