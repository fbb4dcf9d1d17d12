"""GNDL's networks: NFG maths, BN shared over the pair, torchvision ResNets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fer_jax.methods.gndl import GNDLNet, NeutralFeatureGenerator
from fer_jax.models.resnet import resnet

# torchvision's published parameter counts (num_classes=1000).
TORCHVISION_PARAMS = {"resnet18": 11_689_512, "resnet34": 21_797_672,
                      "resnet50": 25_557_032, "resnet101": 44_549_160}


def filled_variables(shapes, seed=0):
  """Concrete variables for an ``eval_shape``d init, built in numpy (a jitted
  ResNet init takes seconds on CPU): He-normal kernels, small random biases
  and BN shifts, BN scales near 1, running mean/var random (var > 0)."""
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    shape = leaf.shape
    if name == "kernel":
      std = np.sqrt(2.0 / np.prod(shape[:-1]))
      x = rng.normal(size=shape) * std
    elif name == "scale":
      x = rng.uniform(0.8, 1.2, shape)
    elif name == "var":
      x = rng.uniform(0.5, 2.0, shape)
    else:  # bias, mean
      x = rng.normal(size=shape) * 0.1
    return jnp.asarray(x, leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def leaky(x, slope):
  return np.where(x >= 0, x, slope * x)


def nfg_numpy(p, f, slope):
  """NFG by hand: Dense(C->C/2)+LeakyReLU, [a,b] -> [a,a,b,b],
  Dense(C->C)+LeakyReLU, Dense(C->C)."""
  h = leaky(f @ p["encode"]["kernel"] + p["encode"]["bias"], slope)
  h = np.repeat(h, 2, axis=-1)
  h = leaky(h @ p["decode"]["kernel"] + p["decode"]["bias"], slope)
  return h @ p["out"]["kernel"] + p["out"]["bias"]


def as_numpy(tree):
  return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


# ---------------------------------------------------------------- NFG


@pytest.mark.parametrize("slope", [0.01, 0.2])
def test_nfg_matches_numpy(slope):
  """Hand-set kernels/biases: the NFG output equals the numpy computation."""
  c = 8
  nfg = NeutralFeatureGenerator(c, negative_slope=slope)
  f = np.random.default_rng(0).normal(size=(5, c))
  shapes = jax.eval_shape(nfg.init, jax.random.key(0), jnp.zeros((1, c)))
  assert shapes["params"]["encode"]["kernel"].shape == (c, c // 2)
  assert shapes["params"]["decode"]["kernel"].shape == (c, c)
  assert shapes["params"]["out"]["kernel"].shape == (c, c)
  rng = np.random.default_rng(1)
  params = jax.tree.map(
      lambda s: rng.normal(size=s.shape).astype(np.float32), shapes["params"])
  out = nfg.apply({"params": params}, jnp.asarray(f, jnp.float32))
  want = nfg_numpy(as_numpy(params), f, slope)
  np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4)


def test_nfg_upsampling_repeats_each_element():
  """Identity encode (C=4 -> 2 picks f0, f1), decode reads the upsampled
  vector directly: the output is [a, a, b, b], not the tile [a, b, a, b]."""
  nfg = NeutralFeatureGenerator(4, negative_slope=0.5)
  eye = np.eye(4, dtype=np.float32)
  params = {"encode": {"kernel": eye[:, :2], "bias": np.zeros(2, np.float32)},
            "decode": {"kernel": eye, "bias": np.zeros(4, np.float32)},
            "out": {"kernel": eye, "bias": np.zeros(4, np.float32)}}
  f = jnp.array([[3.0, -2.0, 7.0, 9.0]])
  out = nfg.apply({"params": params}, f)
  # a = 3, b = leaky(-2) = -1 (encode), then leaky again in decode: -0.5.
  np.testing.assert_allclose(out, [[3.0, 3.0, -0.5, -0.5]], rtol=1e-6)


# ---------------------------------------------------------------- GNDLNet

NET = GNDLNet("resnet18", num_classes=7, base_width=4)
SIZE = 32


def net_variables(seed=0):
  x = jnp.zeros((1, SIZE, SIZE, 3))
  shapes = jax.eval_shape(
      lambda k: NET.init(k, x, x, method=GNDLNet.train_pair),
      jax.random.key(0))
  return filled_variables(shapes, seed)


@jax.jit
def train_pair(variables, exam, neutral):
  return NET.apply(variables, exam, neutral, method=GNDLNet.train_pair,
                   mutable=["batch_stats"], capture_intermediates=True)


@jax.jit
def backbone_train(variables, x):
  return NET.apply(variables, x, method=lambda m, x: m.backbone(x, True),
                   mutable=["batch_stats"])[0]


@jax.jit
def eval_path(variables, x):
  return NET.apply(variables, x)


def images(n, seed):
  return jnp.asarray(np.random.default_rng(seed).uniform(
      -1, 1, (n, SIZE, SIZE, 3)), jnp.float32)


def test_gndl_net_layout():
  """Backbone (8 * base_width = 32-d features), NFG on 32, head 32 -> 7."""
  p = net_variables()["params"]
  assert set(p) == {"backbone", "nfg", "head"}
  assert p["nfg"]["encode"]["kernel"].shape == (32, 16)
  assert p["head"]["kernel"].shape == (32, 7)
  assert "fc" not in p["backbone"]


def test_train_pair_computes_eq7_on_shared_batch():
  """train_pair = backbone over concat(exam, neutral) in one BN batch; then
  logits = head(F_exam - NFG(F_exam)) and F_neu = the neutral half (numpy)."""
  v = net_variables()
  exam, neutral = images(3, 1), images(3, 2)
  (logits, f_gen, f_neu), _ = train_pair(v, exam, neutral)
  f = np.asarray(backbone_train(v, jnp.concatenate([exam, neutral])),
                 np.float64)
  p = as_numpy(v["params"])
  f_exam = f[:3]
  want_gen = nfg_numpy(p["nfg"], f_exam, 0.01)
  want = (f_exam - want_gen) @ p["head"]["kernel"] + p["head"]["bias"]
  np.testing.assert_allclose(f_neu, f[3:], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(f_gen, want_gen, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-4)
  assert logits.dtype == f_gen.dtype == jnp.float32


def test_bn_statistics_shared_over_pair():
  """BN in train mode normalises exam and neutral together: changing ONLY
  the neutral images changes the examined logits, and the examined features
  differ from those of the examined images normalised alone."""
  v = net_variables()
  exam = images(3, 1)
  (l1, _, _), _ = train_pair(v, exam, images(3, 2))
  (l2, _, _), _ = train_pair(v, exam, images(3, 3) * 0.5 + 0.3)
  assert np.abs(np.asarray(l1) - np.asarray(l2)).max() > 1e-3
  alone = np.asarray(backbone_train(v, exam))
  together = np.asarray(backbone_train(
      v, jnp.concatenate([exam, images(3, 2)])))[:3]
  assert np.abs(alone - together).max() > 1e-3


def test_bn_running_mean_uses_the_pair_batch():
  """After one train_pair, backbone.bn1's running mean = 0.9 * old + 0.1 *
  mean of conv1's output over all 2B = 6 images (torch momentum 0.1)."""
  v = net_variables()
  exam, neutral = images(3, 4), images(3, 5)
  _, state = train_pair(v, exam, neutral)
  conv1 = np.asarray(state["intermediates"]["backbone"]["conv1"]
                     ["__call__"][0], np.float64)
  assert conv1.shape[0] == 6  # exam and neutral in one batch
  old = np.asarray(v["batch_stats"]["backbone"]["bn1"]["mean"], np.float64)
  new = state["batch_stats"]["backbone"]["bn1"]["mean"]
  np.testing.assert_allclose(new, 0.9 * old + 0.1 * conv1.mean((0, 1, 2)),
                             rtol=1e-4, atol=1e-5)


def test_test_path_is_per_example():
  """__call__ (BN in inference mode, no mutable state needed): an image's
  logits do not depend on the rest of its batch, and equal the numpy
  classifier on its features."""
  v = net_variables()
  x = images(3, 6)
  l_a = np.asarray(eval_path(v, x))
  l_b = np.asarray(eval_path(v, jnp.concatenate([x[:1], images(2, 7)])))
  l_c = np.asarray(eval_path(v, x[:1]))
  np.testing.assert_allclose(l_a[0], l_b[0], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(l_a[0], l_c[0], rtol=1e-5, atol=1e-5)
  f = np.asarray(jax.jit(lambda v, x: NET.apply(
      v, x, method=lambda m, x: m.backbone(x, False)))(v, x), np.float64)
  p = as_numpy(v["params"])
  want = (f - nfg_numpy(p["nfg"], f, 0.01)) @ p["head"]["kernel"] \
      + p["head"]["bias"]
  np.testing.assert_allclose(l_a, want, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- ResNet


def init_shapes(arch, size=224, **kwargs):
  model = resnet(arch, **kwargs)
  return model, jax.eval_shape(
      model.init, jax.random.key(0), jnp.zeros((1, size, size, 3)))


def count(tree):
  return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))


@pytest.mark.parametrize("arch", list(TORCHVISION_PARAMS))
def test_resnet_param_count_matches_torchvision(arch):
  """num_classes=1000 params (BN scale/bias included, running stats not)
  equal torchvision's count; running stats mirror every BN's channels."""
  _, shapes = init_shapes(arch, num_classes=1000)
  assert count(shapes["params"]) == TORCHVISION_PARAMS[arch]
  bn_channels = sum(
      int(np.prod(leaf.shape)) for path, leaf in
      jax.tree_util.tree_flatten_with_path(shapes["params"])[0]
      if path[-1].key == "scale")
  assert count(shapes["batch_stats"]) == 2 * bn_channels
  assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(shapes))


def test_resnet18_names_follow_torchvision():
  """conv1, bn1, layer{1..4}_{0,1}, fc; downsample only where the shape
  changes (layer2_0, layer3_0, layer4_0); HWIO kernels of torch's sizes."""
  _, shapes = init_shapes("resnet18", num_classes=1000)
  p = shapes["params"]
  blocks = [f"layer{s}_{i}" for s in range(1, 5) for i in range(2)]
  assert set(p) == {"conv1", "bn1", "fc", *blocks}
  for b in blocks:
    want = {"conv1", "bn1", "conv2", "bn2"}
    if b in ("layer2_0", "layer3_0", "layer4_0"):
      want |= {"downsample_conv", "downsample_bn"}
    assert set(p[b]) == want, b
  assert p["conv1"]["kernel"].shape == (7, 7, 3, 64)
  assert set(p["conv1"]) == {"kernel"}  # no bias, as torchvision
  assert p["layer2_0"]["conv1"]["kernel"].shape == (3, 3, 64, 128)
  assert p["layer2_0"]["downsample_conv"]["kernel"].shape == (1, 1, 64, 128)
  assert p["fc"]["kernel"].shape == (512, 1000)
  assert set(shapes["batch_stats"]["bn1"]) == {"mean", "var"}


def test_resnet50_names_follow_torchvision():
  """Bottlenecks 3-4-6-3 with conv1..3/bn1..3; every stage's first block
  downsamples (layer1_0 too: 64 -> 256 channels); stride on conv2 (v1.5)."""
  _, shapes = init_shapes("resnet50", num_classes=1000)
  p = shapes["params"]
  blocks = [f"layer{s}_{i}" for s, n in zip(range(1, 5), (3, 4, 6, 3))
            for i in range(n)]
  assert set(p) == {"conv1", "bn1", "fc", *blocks}
  for b in blocks:
    want = {"conv1", "bn1", "conv2", "bn2", "conv3", "bn3"}
    if b.endswith("_0"):
      want |= {"downsample_conv", "downsample_bn"}
    assert set(p[b]) == want, b
  assert p["layer1_0"]["conv3"]["kernel"].shape == (1, 1, 64, 256)
  assert p["layer3_0"]["conv2"]["kernel"].shape == (3, 3, 256, 256)
  assert p["fc"]["kernel"].shape == (2048, 1000)


def test_feature_dims_and_errors():
  """feature_dim = 8 * base_width * expansion; unknown archs are refused."""
  assert resnet("resnet18").feature_dim == 512
  assert resnet("resnet34").feature_dim == 512
  assert resnet("resnet50").feature_dim == 2048
  assert resnet("resnet18", base_width=16).feature_dim == 128
  out = jax.eval_shape(
      lambda x: resnet("resnet50").init_with_output(
          jax.random.key(0), x)[0], jnp.zeros((2, 56, 56, 3)))
  assert out.shape == (2, 2048) and out.dtype == jnp.float32
  with pytest.raises(ValueError, match="resnet152"):
    resnet("resnet152")


@pytest.mark.parametrize("size,final", [(56, 2), (224, 7)])
def test_resnet18_runs_at_56_and_224(size, final):
  """Features are the spatial mean of layer4's (size/32)^2 ReLU map: finite,
  non-negative, (B, 8 * base_width)."""
  model, shapes = init_shapes("resnet18", size=size, base_width=8)
  v = filled_variables(shapes)
  x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (1, size, size, 3)),
                  jnp.float32)
  feats, state = jax.jit(lambda v, x: model.apply(
      v, x, capture_intermediates=True, mutable=["intermediates"]))(v, x)
  last = np.asarray(state["intermediates"]["layer4_1"]["__call__"][0])
  assert last.shape == (1, final, final, 64)
  assert feats.shape == (1, 64) and feats.dtype == jnp.float32
  assert np.all(np.isfinite(feats)) and np.all(np.asarray(feats) >= 0)
  np.testing.assert_allclose(feats, last.mean((1, 2)), rtol=1e-5, atol=1e-6)
  assert np.asarray(feats).max() > 0


def test_resnet_stem_pads_like_torchvision():
  """conv1 on an even 56x56 input = numpy 7x7 stride-2 conv with symmetric
  padding 3 (torch's padding=3; 'SAME' would pad (2, 3))."""
  model, shapes = init_shapes("resnet18", size=56, base_width=8)
  v = filled_variables(shapes)
  x = np.random.default_rng(1).uniform(-1, 1, (1, 56, 56, 3))
  _, state = jax.jit(lambda v, x: model.apply(
      v, x, capture_intermediates=True, mutable=["intermediates"]))(
          v, jnp.asarray(x, jnp.float32))
  conv1 = np.asarray(state["intermediates"]["conv1"]["__call__"][0])
  k = np.asarray(v["params"]["conv1"]["kernel"], np.float64)
  xp = np.pad(x[0], ((3, 3), (3, 3), (0, 0)))
  patches = np.stack([np.stack([xp[i:i + 55:2, j:j + 55:2] for j in range(7)],
                               2) for i in range(7)], 2)  # (28,28,7,7,3)
  want = np.einsum("yxijc,ijco->yxo", patches, k)
  assert conv1.shape == (1, 28, 28, 8)
  np.testing.assert_allclose(conv1[0], want, rtol=1e-4, atol=1e-4)


def test_resnet_bf16_compute_float32_params_and_output():
  """dtype=bfloat16: params and stats stay float32, output is float32 and
  close to the float32 model's with the same variables."""
  f32, shapes = init_shapes("resnet18", size=56, base_width=8, num_classes=5)
  bf16, shapes_bf = init_shapes("resnet18", size=56, base_width=8,
                                num_classes=5, dtype=jnp.bfloat16)
  assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(shapes_bf))
  assert jax.tree.structure(shapes) == jax.tree.structure(shapes_bf)
  v = filled_variables(shapes, seed=3)
  x = jnp.asarray(np.random.default_rng(2).uniform(-1, 1, (2, 56, 56, 3)),
                  jnp.float32)
  out32 = np.asarray(jax.jit(f32.apply)(v, x))
  out16 = jax.jit(bf16.apply)(v, x)
  assert out16.dtype == jnp.float32
  scale = np.abs(out32).max()
  assert scale > 0
  np.testing.assert_allclose(out16, out32, atol=0.05 * scale)
  assert not np.array_equal(np.asarray(out16), out32)  # really ran in bf16
