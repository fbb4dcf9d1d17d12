"""IF-GAN's networks: SAGAN self-attention, the U-Net generator, the PatchGAN
discriminator, and the cGAN / L1 / island losses against hand computations."""

import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fer_jax import losses
from fer_jax.models.attention import SelfAttention
from fer_jax.models.patchgan import PatchGAN
from fer_jax.models.unet import IFGAN_ATTENTION, UNet

# XLA:CPU compiles threefry's unrolled rounds slowly (a U-Net init takes ~13 s
# with threefry keys, ~2 s with RngBitGenerator ones), so tests use 'rbg'.
key = functools.partial(jax.random.key, impl="rbg")


def softmax_np(z):
  z = z - z.max(-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(-1, keepdims=True)


def attention_np(x, params):
  """SAGAN in float64 numpy: (output, attention) for NHWC x."""
  b, h, w, c = x.shape
  flat = x.reshape(b, h * w, c).astype(np.float64)

  def conv(name):
    p = params[name]
    return flat @ np.asarray(p["kernel"][0, 0], np.float64) + np.asarray(
        p["bias"], np.float64)

  q, k, v = conv("query"), conv("key"), conv("value")
  att = softmax_np(q @ k.transpose(0, 2, 1))
  out = float(params["gamma"]) * (att @ v) + flat
  return out.reshape(b, h, w, c), att


# ---------------------------------------------------------------- attention


@functools.lru_cache(maxsize=None)
def _attention_setup(c=16, hw=6, b=2):
  block = SelfAttention()
  x = jnp.asarray(np.random.default_rng(0).normal(size=(b, hw, hw, c)),
                  jnp.float32)
  params = jax.jit(block.init)(key(1), x)["params"]
  apply = jax.jit(functools.partial(block.apply, return_attention=True))
  return block, x, params, apply


def test_attention_is_identity_at_init():
  """gamma starts at 0, so the block passes x through exactly."""
  _, x, params, apply = _attention_setup()
  assert float(params["gamma"]) == 0.0
  assert params["query"]["kernel"].shape == (1, 1, 16, 2)  # C/8 (fig. 4)
  assert params["key"]["kernel"].shape == (1, 1, 16, 2)
  assert params["value"]["kernel"].shape == (1, 1, 16, 16)  # C
  y, att = apply({"params": params}, x)
  np.testing.assert_array_equal(np.asarray(y), np.asarray(x))
  assert att.shape == (2, 36, 36) and att.dtype == jnp.float32


def test_attention_matches_numpy_with_hand_set_weights():
  """Hand-set 1x1 weights and gamma: o = gamma softmax(q k^T) v + x."""
  _, x, params, apply = _attention_setup()
  rng = np.random.default_rng(0)
  hand = {
      "query": {"kernel": rng.normal(size=(1, 1, 16, 2)).astype(np.float32),
                "bias": rng.normal(size=2).astype(np.float32)},
      "key": {"kernel": rng.normal(size=(1, 1, 16, 2)).astype(np.float32),
              "bias": rng.normal(size=2).astype(np.float32)},
      "value": {"kernel": rng.normal(size=(1, 1, 16, 16)).astype(np.float32),
                "bias": rng.normal(size=16).astype(np.float32)},
      "gamma": np.float32(0.7),
  }
  assert jax.tree.structure(hand) == jax.tree.structure(
      jax.tree.map(np.asarray, params))
  y, att = apply({"params": hand}, x)
  want_y, want_att = attention_np(np.asarray(x), hand)
  np.testing.assert_allclose(att, want_att, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(y, want_y, rtol=1e-4, atol=1e-4)


def test_attention_rows_sum_to_one():
  """Softmax over key positions: every query row is a distribution."""
  _, x, params, apply = _attention_setup()
  params = flax.core.copy(params, {"gamma": jnp.float32(1.0)})
  _, att = apply({"params": params}, x * 5.0)
  att = np.asarray(att)
  assert (att >= 0).all()
  np.testing.assert_allclose(att.sum(-1), 1.0, rtol=1e-5)


def test_attention_reaches_far_positions():
  """With gamma != 0 the output at (0, 0) depends on the opposite corner,
  which no 1x1 (or small) convolution could see; with gamma = 0 it does not."""
  block, x, params, _ = _attention_setup()

  @jax.jit
  def corner_grad(params):
    def f(x):
      return jnp.sum(block.apply({"params": params}, x)[0, 0, 0])
    return jax.grad(f)(x)[0, -1, -1]

  far = corner_grad(flax.core.copy(params, {"gamma": jnp.float32(0.5)}))
  assert float(jnp.abs(far).max()) > 1e-4
  np.testing.assert_array_equal(corner_grad(params), 0.0)


def test_attention_bf16_compute_keeps_float32_softmax():
  block = SelfAttention(dtype=jnp.bfloat16)
  x = jax.ShapeDtypeStruct((1, 4, 4, 8), jnp.float32)
  out = jax.eval_shape(
      lambda x: block.init_with_output(key(0), x,
                                       return_attention=True)[0], x)
  y, att = out
  assert y.dtype == jnp.bfloat16 and att.dtype == jnp.float32


def test_attention_matches_torch_sagan():
  """Weights copied into a SAGAN PyTorch block (Zhang et al.'s layout: NCHW,
  softmax(bmm(q^T, k)), out = bmm(v, att^T)) give the same output."""
  torch = pytest.importorskip("torch")

  class TorchSelfAttention(torch.nn.Module):

    def __init__(self, c):
      super().__init__()
      self.query_conv = torch.nn.Conv2d(c, c // 8, 1)
      self.key_conv = torch.nn.Conv2d(c, c // 8, 1)
      self.value_conv = torch.nn.Conv2d(c, c, 1)
      self.gamma = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
      b, c, h, w = x.shape
      q = self.query_conv(x).view(b, -1, h * w).permute(0, 2, 1)
      k = self.key_conv(x).view(b, -1, h * w)
      att = torch.softmax(torch.bmm(q, k), dim=-1)
      v = self.value_conv(x).view(b, -1, h * w)
      out = torch.bmm(v, att.permute(0, 2, 1)).view(b, c, h, w)
      return self.gamma * out + x, att

  _, x, params, apply = _attention_setup()
  params = flax.core.copy(params, {"gamma": jnp.float32(0.8)})
  net = TorchSelfAttention(16).double()
  with torch.no_grad():
    for ours, theirs in (("query", net.query_conv), ("key", net.key_conv),
                         ("value", net.value_conv)):
      kernel = np.asarray(params[ours]["kernel"], np.float64)[0, 0]
      theirs.weight.copy_(torch.from_numpy(kernel.T[:, :, None, None].copy()))
      theirs.bias.copy_(torch.from_numpy(
          np.asarray(params[ours]["bias"], np.float64)))
    net.gamma.fill_(0.8)
    x_nchw = torch.from_numpy(
        np.asarray(x, np.float64).transpose(0, 3, 1, 2).copy())
    want, want_att = net(x_nchw)
  y, att = apply({"params": params}, x)
  np.testing.assert_allclose(att, want_att.numpy(), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(y, want.numpy().transpose(0, 2, 3, 1),
                             rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------- U-Net

TINY = dict(base_features=8, max_features=32)


@functools.lru_cache(maxsize=None)
def _unet(**kwargs):
  """(module, variables, jitted apply) for a tiny U-Net on a 64 input."""
  net = UNet(**{"depth": 5, **TINY, **kwargs})
  x = jnp.zeros((2, 64, 64, 3))
  variables = jax.jit(functools.partial(net.init, train=False))(
      key(0), x)
  apply = jax.jit(net.apply, static_argnames=("train", "return_attention",
                                              "mutable"))
  return net, variables, apply


def _image(size, b=2, seed=0):
  return jnp.asarray(np.random.default_rng(seed).uniform(
      -1.0, 1.0, (b, size, size, 3)), jnp.float32)


def test_unet_224_shapes_with_ifgan_attention():
  """224 = 7 * 2**5: depth 5 works without padding hacks; the attention maps
  sit at 28x28 (encoder) and 56x56 (skip, decoder: fig. 6's last block)."""
  net = UNet(depth=5, attention=IFGAN_ATTENTION)  # full pix2pix widths
  x = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
  variables = jax.eval_shape(
      functools.partial(net.init, train=False), key(0), x)
  y, maps = jax.eval_shape(
      functools.partial(net.apply, train=False, return_attention=True),
      variables, x)
  assert y.shape == (2, 224, 224, 3) and y.dtype == jnp.float32
  assert {k: v.shape for k, v in maps.items()} == {
      "encoder_2": (2, 28 * 28, 28 * 28),
      "skip_1": (2, 56 * 56, 56 * 56),
      "decoder_1": (2, 56 * 56, 56 * 56),
  }
  p = variables["params"]
  assert p["attention_encoder_2"]["value"]["kernel"].shape[-1] == 256
  assert p["attention_skip_1"]["value"]["kernel"].shape[-1] == 128
  assert p["attention_decoder_1"]["query"]["kernel"].shape[-1] == 128 // 8


@pytest.mark.parametrize("size,depth", [(128, 5), (64, 6)])
def test_unet_output_shape_and_range(size, depth):
  """128 and 64 inputs; depth 6 on 64 is cGAN+WSC's 6 down / 6 up to 1x1."""
  net = UNet(depth=depth, **TINY)
  x = _image(size)

  @jax.jit
  def run(x):
    variables = net.init(key(0), x, train=False)
    y_eval = net.apply(variables, x, train=False)
    y_train, _ = net.apply(variables, x, train=True,
                           rngs={"dropout": key(1)},
                           mutable=["batch_stats"])
    return y_eval, y_train

  for y in run(x):
    assert y.shape == (2, size, size, 3) and y.dtype == jnp.float32
    y = np.asarray(y)
    assert np.isfinite(y).all() and np.abs(y).max() <= 1.0
    assert y.std() > 0


def test_unet_skip_connections_concatenate_encoder_features():
  """Each decoder convolution reads [encoder level l+1, decoder level l+1]:
  its input channels are the sum of both, and the output layer reads
  2 * base_features."""
  net, variables, _ = _unet()
  p = variables["params"]
  f = [net.level_features(l) for l in range(5)]
  assert f == [8, 16, 32, 32, 32]
  assert p["dec3_conv"]["kernel"].shape == (4, 4, f[4], f[3])  # bottleneck in
  for level in range(3):
    assert p[f"dec{level}_conv"]["kernel"].shape == (
        4, 4, 2 * f[level + 1], f[level])
  assert p["out_conv"]["kernel"].shape == (4, 4, 2 * f[0], 3)
  assert "enc0_bn" not in variables["batch_stats"]  # no BN on C64
  assert "enc4_bn" not in variables["batch_stats"]  # nor at the bottleneck
  assert set(variables["batch_stats"]) == {
      "enc1_bn", "enc2_bn", "enc3_bn", "dec0_bn", "dec1_bn", "dec2_bn",
      "dec3_bn"}


def test_unet_dropout_only_in_train_with_rng():
  _, variables, apply = _unet()
  _, _, apply_nodrop = _unet(num_dropout=0)
  x = _image(64)

  def train(fn, rngs):
    return np.asarray(fn(variables, x, train=True, rngs=rngs,
                         mutable=("batch_stats",))[0])

  k1, k2 = {"dropout": key(1)}, {"dropout": key(2)}
  # eval: an rng changes nothing.
  np.testing.assert_array_equal(apply(variables, x, train=False, rngs=k1),
                                apply(variables, x, train=False))
  # train without an rng == the net with no dropout layers at all.
  np.testing.assert_array_equal(train(apply, None), train(apply_nodrop, None))
  # train with an rng: dropout is on, and depends on the key.
  a, b = train(apply, k1), train(apply, k2)
  assert np.abs(a - train(apply_nodrop, None)).max() > 1e-3
  assert np.abs(a - b).max() > 1e-3


def test_unet_attention_placement_and_maps():
  """IF-GAN's blocks on a 64 input: encoder level 2 (8x8), skip and decoder
  level 1 (16x16); at init (gamma 0) they leave the image unchanged."""
  net, variables, apply = _unet(attention=IFGAN_ATTENTION)
  _, plain_vars, plain_apply = _unet()
  p = variables["params"]
  for name, channels in (("encoder_2", 32), ("skip_1", 16),
                         ("decoder_1", 16)):
    assert p[f"attention_{name}"]["value"]["kernel"].shape == (
        1, 1, channels, channels)
  x = _image(64)
  y, maps = apply(variables, x, train=False, return_attention=True)
  assert {k: v.shape for k, v in maps.items()} == {
      "encoder_2": (2, 64, 64), "skip_1": (2, 256, 256),
      "decoder_1": (2, 256, 256)}
  shared = {k: v for k, v in p.items() if not k.startswith("attention_")}
  assert jax.tree.structure(shared) == jax.tree.structure(
      plain_vars["params"])
  y_plain = plain_apply({"params": shared,
                         "batch_stats": variables["batch_stats"]},
                        x, train=False)
  np.testing.assert_allclose(y, y_plain, atol=1e-6)

  # Explicit levels override the defaults.
  custom = UNet(depth=5, **TINY, attention=("decoder", "decoder"),
                attention_levels=(0, 3))
  _, maps = jax.eval_shape(
      lambda x: custom.init_with_output(key(0), x, train=False,
                                        return_attention=True)[0],
      jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))
  assert {k: v.shape for k, v in maps.items()} == {
      "decoder_0": (1, 32 * 32, 32 * 32), "decoder_3": (1, 16, 16)}


def test_unet_attention_gammas_get_gradient_at_init():
  """gamma = 0 makes each block the identity, but d out / d gamma = o != 0:
  the L1 + adversarial gradient reaches every gamma from the first step."""
  net, variables, _ = _unet(attention=IFGAN_ATTENTION)
  x, target = _image(64, seed=1), _image(64, seed=2)

  @jax.jit
  def grads(params):
    def loss(params):
      y, _ = net.apply({"params": params,
                        "batch_stats": variables["batch_stats"]}, x,
                       train=True, rngs={"dropout": key(3)},
                       mutable=["batch_stats"])
      return losses.l1_loss(y, target)
    return jax.grad(loss)(params)

  g = grads(variables["params"])
  assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(g))
  for name in ("encoder_2", "skip_1", "decoder_1"):
    assert abs(float(g[f"attention_{name}"]["gamma"])) > 0


def _init_shape(net, size):
  return jax.eval_shape(
      lambda x: net.init(key(0), x, train=False),
      jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32))


def test_unet_rejects_bad_sizes_and_levels():
  with pytest.raises(ValueError, match=r"depth=8.*224"):
    _init_shape(UNet(depth=8, **TINY), 224)  # 224 is not a multiple of 256
  with pytest.raises(ValueError, match="depth"):
    _init_shape(UNet(depth=6, **TINY), 96)
  with pytest.raises(ValueError, match="attention_levels"):
    _init_shape(UNet(depth=3, **TINY, attention=("skip",),
                     attention_levels=(2,)), 64)  # skips exist at 0..1 only
  with pytest.raises(ValueError, match="attention"):
    _init_shape(UNet(depth=3, **TINY, attention=("middle",)), 64)
  with pytest.raises(ValueError, match="attention_levels"):
    _init_shape(UNet(depth=3, **TINY, attention=("skip", "decoder"),
                     attention_levels=(1,)), 64)


# ---------------------------------------------------------------- PatchGAN


def test_patchgan_256_gives_30x30_patches():
  """pix2pix's 70x70 PatchGAN on a 256 (6-channel tuple) input: 30x30."""
  net = PatchGAN()
  x = jax.ShapeDtypeStruct((2, 256, 256, 6), jnp.float32)
  out, variables = jax.eval_shape(
      functools.partial(net.init_with_output, train=False),
      key(0), x)
  assert out.shape == (2, 30, 30, 1) and out.dtype == jnp.float32
  assert [variables["params"][f"conv{i}"]["kernel"].shape[-1]
          for i in range(5)] == [64, 128, 256, 512, 1]
  assert set(variables["batch_stats"]) == {"norm1", "norm2", "norm3"}
  for norm in ("instance", "none"):
    out = jax.eval_shape(
        functools.partial(PatchGAN(norm=norm).init_with_output, train=False),
        key(0), x)[0]
    assert out.shape == (2, 30, 30, 1)
  with pytest.raises(ValueError, match="norm"):
    jax.eval_shape(functools.partial(PatchGAN(norm="layer").init,
                                     train=False), key(0), x)


def test_patchgan_receptive_field_is_70():
  """Analytically (1 + sum (k-1) * jump) and empirically: the gradient of the
  centre logit wrt the input is non-zero on exactly a 70x70 square."""
  net = PatchGAN(base_features=4)
  assert net.receptive_field() == 70
  assert PatchGAN(num_layers=1).receptive_field() == 16  # pix2pix's 16x16
  assert PatchGAN(num_layers=5).receptive_field() == 286  # and 286x286

  x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 128, 128, 6)),
                  jnp.float32)

  @jax.jit
  def centre_grad(x):
    variables = net.init(key(1), x, train=False)
    logits = net.apply(variables, x, train=False)
    def centre(x):
      return net.apply(variables, x, train=False)[0, 7, 7, 0]
    return logits.shape, jax.grad(centre)(x)

  shape, g = centre_grad(x)
  assert shape == (1, 14, 14, 1)
  support = np.abs(np.asarray(g)[0]).sum(-1) > 0
  rows, cols = np.nonzero(support.any(1))[0], np.nonzero(support.any(0))[0]
  assert rows.max() - rows.min() + 1 == 70
  assert cols.max() - cols.min() + 1 == 70
  assert support.sum() == 70 * 70


# ------------------------------------------------------------------ losses


def sigmoid_np(z):
  return 1.0 / (1.0 + np.exp(-np.asarray(z, np.float64)))


def test_gan_losses_match_numpy():
  """Eq. 2 as BCE on patch logits: D gets -mean log D(real) - mean
  log(1 - D(fake)); G the non-saturating -mean log D(fake)."""
  rng = np.random.default_rng(0)
  real = (2 * rng.normal(size=(2, 3, 3, 1))).astype(np.float32)
  fake = (2 * rng.normal(size=(2, 3, 3, 1))).astype(np.float32)
  d = losses.gan_discriminator_loss(jnp.asarray(real), jnp.asarray(fake))
  assert d.dtype == jnp.float32 and d.shape == ()
  np.testing.assert_allclose(
      d, -np.log(sigmoid_np(real)).mean() - np.log(1 - sigmoid_np(fake)).mean(),
      rtol=1e-6)
  g = losses.gan_generator_loss(jnp.asarray(fake, jnp.bfloat16))
  assert g.dtype == jnp.float32
  bf16_fake = np.asarray(jnp.asarray(fake, jnp.bfloat16), np.float64)
  np.testing.assert_allclose(g, -np.log(sigmoid_np(bf16_fake)).mean(),
                             rtol=1e-6)
  # Chance-level D: log 2 per term; huge logits stay finite.
  np.testing.assert_allclose(
      losses.gan_discriminator_loss(jnp.zeros(4), jnp.zeros(4)),
      2 * np.log(2), rtol=1e-6)
  np.testing.assert_allclose(
      losses.gan_generator_loss(jnp.full((2,), -200.0)), 200.0, rtol=1e-6)


def test_l1_loss_matches_numpy():
  rng = np.random.default_rng(1)
  a, b = rng.normal(size=(2, 4, 4, 3)), rng.normal(size=(2, 4, 4, 3))
  got = losses.l1_loss(jnp.asarray(a, jnp.float32), jnp.asarray(b))
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, np.abs(a - b).mean(), rtol=1e-6)


CENTERS = np.array([[1.0, 0.0, 0.0, 1.0],
                    [0.0, 2.0, 0.0, 0.0],
                    [-1.0, 1.0, 0.5, 0.0]])
FEATURES = np.array([[0.5, 0.0, 0.0, 1.0],
                     [0.0, 1.0, 1.0, 0.0],
                     [-1.0, 0.0, 0.0, 0.0],
                     [2.0, 2.0, 2.0, 2.0],
                     [0.0, 0.0, 0.0, 0.0]])
ISLAND_LABELS = np.array([0, 1, 2, 0, 2])


def test_island_loss_matches_hand_computation():
  # Centre term: 1/2 * mean_i ||f_i - c_{y_i}||^2, by hand:
  # 0.25, 2, 1.25, 10, 2.25 -> sum 15.75 -> /5 /2 = 1.575.
  sq = [0.25, 2.0, 1.25, 10.0, 2.25]
  np.testing.assert_allclose(
      ((FEATURES - CENTERS[ISLAND_LABELS]) ** 2).sum(-1), sq)
  # Pair term over ordered pairs k != j: cos(c0, c1) = 0,
  # cos(c0, c2) = -1 / (sqrt 2 * 1.5), cos(c1, c2) = 2 / (2 * 1.5).
  cos01, cos02, cos12 = 0.0, -1 / (np.sqrt(2) * 1.5), 2 / 3
  pairs = 2 * ((cos01 + 1) + (cos02 + 1) + (cos12 + 1))
  want = 0.5 * np.mean(sq) + 0.03 * pairs
  got = losses.island_loss(jnp.asarray(FEATURES, jnp.bfloat16),
                           jnp.asarray(ISLAND_LABELS),
                           jnp.asarray(CENTERS, jnp.float32))
  assert got.dtype == jnp.float32 and got.shape == ()
  np.testing.assert_allclose(got, want, rtol=1e-6)
  np.testing.assert_allclose(
      losses.island_loss(jnp.asarray(FEATURES), jnp.asarray(ISLAND_LABELS),
                         jnp.asarray(CENTERS), alpha=1.0),
      0.5 * np.mean(sq) + pairs, rtol=1e-6)


def test_island_loss_gradient_wrt_centres():
  """Non-zero for every centre, finite even at zero centres, and with every
  feature on its centre (centre term flat) the cosine term alone pushes the
  centres apart: a small descent step lowers their pairwise cosines."""
  grad = jax.jit(jax.grad(losses.island_loss, argnums=2))
  f, y = jnp.asarray(FEATURES), jnp.asarray(ISLAND_LABELS)
  g = np.asarray(grad(f, y, jnp.asarray(CENTERS)))
  assert np.isfinite(g).all() and np.all(np.abs(g).sum(-1) > 0)
  assert np.isfinite(np.asarray(grad(f, y, jnp.zeros((3, 4))))).all()

  c = jnp.asarray(CENTERS, jnp.float32)
  g = grad(c, jnp.arange(3), c)
  assert np.all(np.abs(np.asarray(g)).sum(-1) > 0)

  def cos_sum(c):
    u = c / np.linalg.norm(c, axis=-1, keepdims=True)
    return (u @ u.T).sum() - 3

  assert cos_sum(np.asarray(c - 0.1 * g)) < cos_sum(CENTERS) - 1e-3
