"""The rewritten layers compute what the plain lowering computes: values
and gradients, against XLA's own ops."""

import flax.linen as nn
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


# ------------------------------------------- general strided space-to-depth

def _close(got, ref, rtol=1e-5):
  """fp32 equality up to summation order: rtol, with an absolute floor at
  rtol times the largest magnitude (entries near 0 have no relative
  accuracy)."""
  got, ref = np.asarray(got), np.asarray(ref)
  assert got.shape == ref.shape
  np.testing.assert_allclose(got, ref, rtol=rtol,
                             atol=rtol * max(np.abs(ref).max(), 1.0))


def _assert_same_vjp(f_got, f_ref, *args, seed=0):
  """Same values and the same gradient w.r.t. every argument, for one
  random output cotangent."""
  y_ref, vjp_ref = jax.vjp(f_ref, *args)
  y_got, vjp_got = jax.vjp(f_got, *args)
  _close(y_got, y_ref)
  g = jnp.asarray(np.random.default_rng(seed).normal(size=y_ref.shape),
                  y_ref.dtype)
  jax.tree.map(_close, vjp_got(g), vjp_ref(g))


def _conv_shapes(fn, *args):
  """(lhs shape, rhs shape, window strides, lhs dilation) of every
  convolution in ``fn``'s forward jaxpr: which lowering ran."""
  out = []
  for eqn in jax.make_jaxpr(fn)(*args).jaxpr.eqns:
    if eqn.primitive.name == "conv_general_dilated":
      out.append((eqn.invars[0].aval.shape, eqn.invars[1].aval.shape,
                  tuple(eqn.params["window_strides"]),
                  tuple(eqn.params["lhs_dilation"])))
  return out


@pytest.mark.parametrize("hw,k,c,stride,padding", [
    ((16, 12), 4, 3, 2, 1),  # the U-Net's / PatchGAN's first layer
    ((12, 20), 4, 5, 2, 1),
    ((14, 10), 7, 3, 2, 3),  # ResNet's stem
    ((10, 14), 3, 7, 2, 1),
    ((12, 18), 4, 3, 2, ((0, 2), (1, 0))),  # asymmetric
    ((15, 9), 4, 3, 2, 1),  # odd sizes: exact too
    ((13, 11), 5, 3, 3, 2),  # stride 3
])
def test_space_to_depth_conv_equals_the_strided_conv(hw, k, c, stride,
                                                     padding):
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(size=(2,) + hw + (c,)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(k, k, c, 7)), jnp.float32)
  _assert_same_vjp(
      lambda x, w: fast_layers.space_to_depth_conv(x, w, stride, padding),
      lambda x, w: fast_layers.plain_conv(x, w, stride, padding), x, kernel)
  # One stride-1 conv over stride**2 * C channels, nothing strided.
  (lhs, rhs, strides, _), = _conv_shapes(
      lambda x, w: fast_layers.space_to_depth_conv(x, w, stride, padding),
      x, kernel)
  assert strides == (1, 1) and lhs[-1] == rhs[2] == stride**2 * c


def _variables(params):
  return {"params": params}


def _random_like(tree, seed):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape),
                                            a.dtype), tree)


def _shapes(tree):
  return jax.tree.map(lambda a: (a.shape, a.dtype), tree)


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("hw,c", [((16, 12), 3), ((12, 20), 5)])
def test_strided_conv_is_nn_conv(use_bias, hw, c):
  """Same param tree (names, shapes, init values), output and gradients
  (input and params) as nn.Conv(F, (4, 4), (2, 2), padding 1)."""
  x = jnp.asarray(np.random.default_rng(3).normal(size=(2,) + hw + (c,)),
                  jnp.float32)
  ours = fast_layers.StridedConv(7, 4, 2, padding=1, use_bias=use_bias)
  ref = nn.Conv(7, (4, 4), (2, 2), padding=((1, 1), (1, 1)),
                use_bias=use_bias)
  p_ours = ours.init(jax.random.key(0), x)["params"]
  p_ref = ref.init(jax.random.key(0), x)["params"]
  assert _shapes(p_ours) == _shapes(p_ref)
  assert set(p_ref) == ({"kernel", "bias"} if use_bias else {"kernel"})
  jax.tree.map(np.testing.assert_array_equal, p_ours, p_ref)
  params = _random_like(p_ref, 4)  # a non-zero bias too
  _assert_same_vjp(lambda x, p: ours.apply(_variables(p), x),
                   lambda x, p: ref.apply(_variables(p), x), x, params)
  (lhs, _, strides, _), = _conv_shapes(
      lambda x: ours.apply(_variables(params), x), x)
  assert strides == (1, 1) and lhs[-1] == 4 * c  # the rewrite ran


@pytest.mark.parametrize("case", ["odd_size", "wide", "switch_off"])
def test_strided_conv_falls_back_to_the_plain_conv(case):
  """Odd H or W, more than MAX_SPACE_TO_DEPTH_CHANNELS channels, or the
  switch off: XLA's own stride-2 conv, still equal to nn.Conv."""
  shape = {"odd_size": (2, 15, 12, 3), "wide": (2, 8, 6, 16),
           "switch_off": (2, 16, 12, 3)}[case]
  x = jnp.asarray(np.random.default_rng(5).normal(size=shape), jnp.float32)
  ours = fast_layers.StridedConv(5, 4, 2, padding=1,
                                 fast=case != "switch_off")
  ref = nn.Conv(5, (4, 4), (2, 2), padding=((1, 1), (1, 1)))
  params = _random_like(ref.init(jax.random.key(0), x)["params"], 6)
  (lhs, _, strides, _), = _conv_shapes(
      lambda x: ours.apply(_variables(params), x), x)
  assert strides == (2, 2) and lhs == shape
  _assert_same_vjp(lambda x, p: ours.apply(_variables(p), x),
                   lambda x, p: ref.apply(_variables(p), x), x, params)


def test_strided_conv_bfloat16_matches_nn_conv():
  """dtype=bfloat16 (params float32): the same promotion as nn.Conv."""
  x = jnp.asarray(np.random.default_rng(7).normal(size=(2, 16, 16, 3)),
                  jnp.float32)
  ours = fast_layers.StridedConv(8, 4, 2, padding=1, dtype=jnp.bfloat16)
  ref = nn.Conv(8, (4, 4), (2, 2), padding=((1, 1), (1, 1)),
                dtype=jnp.bfloat16)
  params = _random_like(ref.init(jax.random.key(0), x)["params"], 8)
  y_ours = ours.apply(_variables(params), x)
  y_ref = ref.apply(_variables(params), x)
  assert y_ours.dtype == y_ref.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(y_ours, np.float32),
                             np.asarray(y_ref, np.float32), rtol=3e-2,
                             atol=3e-2 * float(jnp.abs(y_ref).max()))


# ------------------------------------------ sub-pixel transposed convolution

def _conv_transpose_ref(features, use_bias=True):
  return nn.ConvTranspose(features, (4, 4), (2, 2), padding=((2, 2), (2, 2)),
                          use_bias=use_bias)


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("hw,c,f", [((6, 10), 5, 3), ((8, 4), 3, 7),
                                    ((5, 7), 9, 1)])
def test_subpixel_conv_transpose_is_nn_conv_transpose(use_bias, hw, c, f):
  """Same param tree, output and gradients as flax's ConvTranspose (4x4,
  stride 2, padding 2: output exactly 2H x 2W), any H, W."""
  x = jnp.asarray(np.random.default_rng(9).normal(size=(2,) + hw + (c,)),
                  jnp.float32)
  ours = fast_layers.SubPixelConvTranspose(f, use_bias=use_bias)
  ref = _conv_transpose_ref(f, use_bias)
  p_ours = ours.init(jax.random.key(0), x)["params"]
  p_ref = ref.init(jax.random.key(0), x)["params"]
  assert _shapes(p_ours) == _shapes(p_ref)
  assert p_ref["kernel"].shape == (4, 4, c, f)
  jax.tree.map(np.testing.assert_array_equal, p_ours, p_ref)
  params = _random_like(p_ref, 10)
  _assert_same_vjp(lambda x, p: ours.apply(_variables(p), x),
                   lambda x, p: ref.apply(_variables(p), x), x, params)
  y = ours.apply(_variables(params), x)
  assert y.shape == (2, 2 * hw[0], 2 * hw[1], f)
  # One stride-1 3x3 conv to 4 F channels, no dilated input.
  (lhs, rhs, strides, dil), = _conv_shapes(
      lambda x: ours.apply(_variables(params), x), x)
  assert (strides, dil, rhs) == ((1, 1), (1, 1), (3, 3, c, 4 * f))


def test_subpixel_conv_transpose_falls_back_when_off_or_wide():
  x = jnp.asarray(np.random.default_rng(11).normal(size=(1, 4, 6, 5)),
                  jnp.float32)
  for features, off in ((16, False), (3, True)):
    ours = fast_layers.SubPixelConvTranspose(features, fast=not off)
    ref = _conv_transpose_ref(features)
    params = _random_like(ref.init(jax.random.key(0), x)["params"], 12)
    (_, _, _, dil), = _conv_shapes(
        lambda x: ours.apply(_variables(params), x), x)
    assert dil == (2, 2)  # lax.conv_transpose's dilated input
    _close(ours.apply(_variables(params), x), ref.apply(_variables(params), x))


def test_subpixel_conv_transpose_matches_torch():
  """The U-Net's claim: flax's ConvTranspose padding 2 is torch's
  ConvTranspose2d(k=4, s=2, p=1) with the kernel's taps reversed."""
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(13)
  x = rng.normal(size=(2, 5, 6, 4)).astype(np.float32)
  w = rng.normal(size=(4, 3, 4, 4)).astype(np.float32)  # (in, out, kh, kw)
  bias = rng.normal(size=(3,)).astype(np.float32)
  theirs = torch.nn.ConvTranspose2d(4, 3, 4, stride=2, padding=1)
  with torch.no_grad():
    theirs.weight.copy_(torch.from_numpy(w))
    theirs.bias.copy_(torch.from_numpy(bias))
    y_torch = theirs(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
  kernel = jnp.asarray(w[:, :, ::-1, ::-1].transpose(2, 3, 0, 1))
  y = fast_layers.SubPixelConvTranspose(3).apply(
      _variables({"kernel": kernel, "bias": jnp.asarray(bias)}),
      jnp.asarray(x))
  _close(y, y_torch.transpose(0, 2, 3, 1))


# -------------------------------------------- whole networks, switch on/off

def _same_with_switch_off(net, x, **kw):
  """Init once; forward and parameter gradients with the rewrites on and
  off (the model's ``fast_layers`` field) agree, and the param trees
  (names, shapes, init) are the same."""
  plain = net.clone(fast_layers=False)
  variables = net.init(jax.random.key(0), x, **kw)
  variables_off = plain.init(jax.random.key(0), x, **kw)
  assert _shapes(variables) == _shapes(variables_off)
  jax.tree.map(np.testing.assert_array_equal, variables, variables_off)

  def grad(model):
    def loss(params, x):
      y = model.apply({**variables, "params": params}, x, **kw)
      return jnp.sum(jnp.sin(3.0 * y)), y
    return jax.jit(lambda p, x: jax.grad(loss, (0, 1), has_aux=True)(p, x))

  (gp_off, gx_off), y_off = grad(plain)(variables["params"], x)
  convs_off = _conv_shapes(lambda x: plain.apply(variables, x, **kw), x)
  (gp_on, gx_on), y_on = grad(net)(variables["params"], x)
  convs_on = _conv_shapes(lambda x: net.apply(variables, x, **kw), x)
  _close(y_on, y_off)
  _close(gx_on, gx_off)
  jax.tree.map(_close, gp_on, gp_off)
  return convs_on, convs_off


def test_unet_same_with_and_without_the_rewrites():
  from fer_jax.models.unet import UNet  # pylint: disable=import-outside-toplevel
  # Widths above MAX_SPACE_TO_DEPTH_CHANNELS, as the real nets (64).
  net = UNet(depth=3, base_features=12, max_features=16)
  x = jnp.asarray(np.random.default_rng(14).uniform(-1, 1, (2, 16, 24, 3)),
                  jnp.float32)
  convs_on, convs_off = _same_with_switch_off(net, x, train=False)
  # Only enc0 (3 channels in) and out_conv (3 out) changed lowering.
  changed = [(a, b) for a, b in zip(convs_on, convs_off) if a != b]
  assert len(convs_on) == len(convs_off) and len(changed) == 2
  (enc0_on, enc0_off), (out_on, out_off) = changed
  assert enc0_on[0][-1] == 12 and enc0_on[2] == (1, 1)
  assert enc0_off[0] == x.shape and enc0_off[2] == (2, 2)
  assert out_on[1] == (3, 3, 24, 12) and out_off[3] == (2, 2)


def test_patchgan_same_with_and_without_the_rewrites():
  from fer_jax.models.patchgan import PatchGAN  # pylint: disable=import-outside-toplevel
  net = PatchGAN(base_features=12, num_layers=2)
  x = jnp.asarray(np.random.default_rng(15).normal(size=(2, 32, 24, 6)),
                  jnp.float32)
  convs_on, convs_off = _same_with_switch_off(net, x, train=False)
  changed = [(a, b) for a, b in zip(convs_on, convs_off) if a != b]
  assert len(convs_on) == len(convs_off) == 4 and len(changed) == 1
  (conv0_on, conv0_off), = changed
  assert conv0_on[0][-1] == 24 and conv0_off[0] == x.shape
