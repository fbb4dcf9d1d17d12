"""The rewritten layers compute what the plain lowering computes: values
and gradients, against XLA's own ops."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from fer_jax.models import fast_layers


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
