"""GroupGAN's BaseNets: torchvision parameter counts, the reduced FC heads,
output shapes, torch-exact adaptive pooling, numerical equality with
hand-built torch references of vgg11_bn / alexnet, and the paper's init."""

import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fer_jax.models import basenets
from fer_jax.models.basenets import ARCHS, BaseNet, adaptive_avg_pool

# 'rbg' keys compile faster on XLA:CPU (see test_ifgan_nets.py).
key = functools.partial(jax.random.key, impl="rbg")

# torchvision's published parameter counts (num_classes=1000, 4096-wide FCs).
TORCHVISION_PARAMS = {
    "alexnet": 61_100_840,
    "vgg11": 132_863_336,
    "vgg13": 133_047_848,
    "vgg16": 138_357_544,
    "vgg19": 143_667_240,
    "vgg11_bn": 132_868_840,
    "vgg13_bn": 133_053_736,
    "vgg16_bn": 138_365_992,
    "vgg19_bn": 143_678_248,
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
}


def _shape_init(model, hw):
  x = jax.ShapeDtypeStruct((1, hw, hw, 3), jnp.float32)
  return jax.eval_shape(model.init, key(0), x)


@functools.cache
def _param_count(arch, fc_width, num_classes=1000, base_width=64, hw=224):
  model = BaseNet(arch, num_classes, fc_width=fc_width, base_width=base_width)
  params = _shape_init(model, hw)["params"]
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))


@pytest.mark.parametrize("arch", ARCHS)
def test_param_count_matches_torchvision(arch):
  assert set(TORCHVISION_PARAMS) == set(ARCHS)
  assert _param_count(arch, 4096) == TORCHVISION_PARAMS[arch]


def _fc_params(flat_in, fc, k):
  """Linear(flat_in, fc) + Linear(fc, fc) + Linear(fc, k), with biases."""
  return (flat_in * fc + fc) + (fc * fc + fc) + (fc * k + k)


@pytest.mark.parametrize("fc_width", [512, 256])
@pytest.mark.parametrize("arch", [a for a in ARCHS if "resnet" not in a])
def test_reduced_fc_param_count(arch, fc_width):
  # The classifier's input: 256 x 6 x 6 for AlexNet, 512 x 7 x 7 for VGG.
  flat_in = 256 * 6 * 6 if arch == "alexnet" else 512 * 7 * 7
  expected = (TORCHVISION_PARAMS[arch] - _fc_params(flat_in, 4096, 1000)
              + _fc_params(flat_in, fc_width, 1000))
  assert _param_count(arch, fc_width) == expected


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_resnet_ignores_fc_width(arch):
  assert _param_count(arch, 256) == TORCHVISION_PARAMS[arch]


@pytest.mark.parametrize("hw", [128, 64])
@pytest.mark.parametrize("arch", ARCHS)
def test_output_shapes(arch, hw):
  model = BaseNet(arch, num_classes=7, fc_width=256)
  x = jax.ShapeDtypeStruct((2, hw, hw, 3), jnp.float32)
  (logits, feats), _ = jax.eval_shape(
      lambda x: model.init_with_output(key(0), x), x)
  f = basenets.feature_dim(arch, fc_width=256)
  assert f == {"resnet50": 2048}.get(
      arch, 512 if arch.startswith("resnet") else 256)
  assert logits.shape == (2, 7) and logits.dtype == jnp.float32
  assert feats.shape == (2, f) and feats.dtype == jnp.float32


def test_feature_dim_scales_with_base_width():
  assert basenets.feature_dim("resnet18", base_width=32) == 256
  assert basenets.feature_dim("resnet50", base_width=16) == 512
  assert basenets.feature_dim("vgg16_bn", fc_width=128, base_width=8) == 128
  with pytest.raises(ValueError, match="unknown BaseNet arch"):
    basenets.feature_dim("vgg12")


def test_unknown_arch_or_init_raises():
  x = jnp.zeros((1, 32, 32, 3))
  with pytest.raises(ValueError, match="unknown BaseNet arch"):
    BaseNet("densenet121", 7).init(key(0), x)
  with pytest.raises(ValueError, match="unknown init"):
    BaseNet("vgg11", 7, fc_width=8, base_width=4, init_scheme="xavier").init(
        key(0), x)


# ------------------------------------------------------------ pooling vs torch


@pytest.mark.parametrize("in_hw,out_hw", [
    ((14, 14), (7, 7)),   # divisible: 224 px VGG
    ((4, 4), (7, 7)),     # In < Out: 128 px VGG
    ((2, 3), (7, 7)),     # In < Out, both axes differ
    ((1, 1), (6, 6)),     # 64 px AlexNet
    ((3, 3), (6, 6)),     # 128 px AlexNet: exact repetition
    ((10, 13), (7, 6)),   # uneven, overlapping bins
    ((5, 9), (3, 4)),
    ((7, 7), (7, 7)),     # identity
])
def test_adaptive_avg_pool_matches_torch(in_hw, out_hw):
  torch = pytest.importorskip("torch")
  x = np.random.default_rng(0).normal(size=(2, *in_hw, 3)).astype(np.float32)
  want = torch.nn.functional.adaptive_avg_pool2d(
      torch.from_numpy(x).permute(0, 3, 1, 2), out_hw).permute(0, 2, 3, 1)
  got = jax.jit(adaptive_avg_pool, static_argnums=1)(jnp.asarray(x), out_hw)
  assert got.shape == (2, *out_hw, 3)
  np.testing.assert_allclose(np.asarray(got), want.numpy(), atol=1e-6)


def test_adaptive_avg_pool_bfloat16_keeps_dtype():
  x = jnp.ones((1, 3, 3, 2), jnp.bfloat16)
  y = adaptive_avg_pool(x, (7, 7))
  assert y.dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(y, np.float32), 1.0)


# ------------------------------------------------- torch reference networks


def _torch_vgg(torch, cfg_multiples, base, fc, k, batch_norm):
  """torchvision's vgg (make_layers + classifier), at reduced widths."""
  nn = torch.nn
  layers, c = [], 3
  for v in cfg_multiples:
    if v == "M":
      layers.append(nn.MaxPool2d(2, 2))
      continue
    layers.append(nn.Conv2d(c, base * v, 3, padding=1))
    if batch_norm:
      layers.append(nn.BatchNorm2d(base * v))
    layers.append(nn.ReLU(inplace=True))
    c = base * v
  net = nn.Module()
  net.features = nn.Sequential(*layers)
  net.avgpool = nn.AdaptiveAvgPool2d((7, 7))
  net.classifier = nn.Sequential(
      nn.Linear(c * 7 * 7, fc), nn.ReLU(True), nn.Dropout(),
      nn.Linear(fc, fc), nn.ReLU(True), nn.Dropout(), nn.Linear(fc, k))
  return net, c, 7


def _torch_alexnet(torch, base, fc, k):
  """torchvision's alexnet at reduced widths."""
  nn = torch.nn
  w = [base * m for m in (1, 3, 6, 4, 4)]
  net = nn.Module()
  net.features = nn.Sequential(
      nn.Conv2d(3, w[0], 11, stride=4, padding=2), nn.ReLU(True),
      nn.MaxPool2d(3, 2),
      nn.Conv2d(w[0], w[1], 5, padding=2), nn.ReLU(True), nn.MaxPool2d(3, 2),
      nn.Conv2d(w[1], w[2], 3, padding=1), nn.ReLU(True),
      nn.Conv2d(w[2], w[3], 3, padding=1), nn.ReLU(True),
      nn.Conv2d(w[3], w[4], 3, padding=1), nn.ReLU(True), nn.MaxPool2d(3, 2))
  net.avgpool = nn.AdaptiveAvgPool2d((6, 6))
  net.classifier = nn.Sequential(
      nn.Dropout(), nn.Linear(w[4] * 6 * 6, fc), nn.ReLU(True),
      nn.Dropout(), nn.Linear(fc, fc), nn.ReLU(True), nn.Linear(fc, k))
  return net, w[4], 6


def _torch_forward(torch, net, x):
  x = net.avgpool(net.features(x))
  return net.classifier(torch.flatten(x, 1))


def _randomize_bn(torch, net, seed):
  g = torch.Generator().manual_seed(seed)
  for m in net.modules():
    if isinstance(m, torch.nn.BatchNorm2d):
      n = m.num_features
      m.weight.data = torch.rand(n, generator=g) + 0.5
      m.bias.data = torch.randn(n, generator=g) * 0.2
      m.running_mean.data = torch.randn(n, generator=g) * 0.2
      m.running_var.data = torch.rand(n, generator=g) + 0.5


def _convert(state_dict, first_fc, channels, pool):
  """torch state dict -> flax variables, by renaming alone.

  'features.3.weight' -> 'features_3'; OIHW -> HWIO; Linear (out, in) ->
  (in, out), and the first classifier Linear's inputs go from torch's C,H,W
  flatten order to NHWC's H,W,C.
  """
  params, stats = {}, {}
  for name, t in state_dict.items():
    if name.endswith("num_batches_tracked"):
      continue
    module, leaf = name.rsplit(".", 1)
    module = module.replace(".", "_")
    a = t.detach().numpy()
    if leaf == "weight" and a.ndim == 4:
      params.setdefault(module, {})["kernel"] = a.transpose(2, 3, 1, 0)
    elif leaf == "weight" and a.ndim == 2 and module == first_fc:
      a = a.reshape(-1, channels, pool, pool).transpose(2, 3, 1, 0)
      params.setdefault(module, {})["kernel"] = a.reshape(-1, a.shape[-1])
    elif leaf == "weight" and a.ndim == 2:
      params.setdefault(module, {})["kernel"] = a.T
    elif leaf == "weight":  # BatchNorm
      params.setdefault(module, {})["scale"] = a
    elif leaf == "bias":
      params.setdefault(module, {})["bias"] = a
    elif leaf == "running_mean":
      stats.setdefault(module, {})["mean"] = a
    elif leaf == "running_var":
      stats.setdefault(module, {})["var"] = a
    else:
      raise AssertionError(name)
  variables = {"params": params}
  if stats:
    variables["batch_stats"] = stats
  return variables


@pytest.mark.parametrize("arch,hw", [
    ("vgg11_bn", 64),    # 2x2 map pooled up to 7x7
    ("vgg11_bn", 112),   # 3x3 -> 7x7, overlapping bins
    ("vgg13", 64),
    ("alexnet", 64),     # 1x1 -> 6x6
    ("alexnet", 128),    # 3x3 -> 6x6
])
def test_matches_torch_reference(arch, hw):
  torch = pytest.importorskip("torch")
  torch.manual_seed(0)
  base, fc, k = 16, 32, 7
  if arch == "alexnet":
    net, channels, pool = _torch_alexnet(torch, base, fc, k)
    first_fc = "classifier_1"
  else:
    name, _, bn = arch.partition("_")
    cfg = basenets._VGG_CFGS[basenets._VGG[name]]
    net, channels, pool = _torch_vgg(torch, cfg, base, fc, k, bool(bn))
    first_fc = "classifier_0"
    _randomize_bn(torch, net, seed=1)
  net.eval()

  model = BaseNet(arch, k, fc_width=fc, base_width=base)
  x = np.random.default_rng(0).normal(size=(2, hw, hw, 3)).astype(np.float32)
  init_vars = jax.eval_shape(model.init, key(0), jnp.asarray(x))
  variables = _convert(net.state_dict(), first_fc, channels, pool)
  # Same modules, same leaf shapes: the conversion was renaming alone.
  assert (jax.tree.map(np.shape, flax.core.unfreeze(init_vars))
          == jax.tree.map(np.shape, variables))

  logits, feats = jax.jit(model.apply)(variables, jnp.asarray(x))
  with torch.no_grad():
    want = _torch_forward(
        torch, net, torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
  assert np.abs(want).max() > 1e-3  # not a vacuous comparison
  np.testing.assert_allclose(np.asarray(logits), want, atol=1e-4, rtol=0)
  # The features are the last Linear's input: logits = feats @ W + b.
  last = variables["params"]["classifier_6"]
  np.testing.assert_allclose(
      np.asarray(feats) @ last["kernel"] + last["bias"], want, atol=1e-4)


# ---------------------------------------------------------------- init


def _modules(params):
  """(path, leaves) of every module holding params."""
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
  out = {}
  for path, leaf in flat.items():
    out.setdefault(path[:-1], {})[path[-1]] = np.asarray(leaf)
  return out


def _is_bn(leaves):
  return "scale" in leaves


@pytest.mark.parametrize("arch", ["vgg11_bn", "alexnet"])
def test_paper_init(arch):
  model = BaseNet(arch, 7, fc_width=64, base_width=16, init_scheme="paper")
  hw = 64
  params = jax.jit(model.init)(key(0), jnp.zeros((1, hw, hw, 3)))["params"]
  n = 0
  for path, leaves in _modules(params).items():
    if _is_bn(leaves):  # BatchNorm keeps scale 1, bias 0
      np.testing.assert_array_equal(leaves["scale"], 1.0)
      np.testing.assert_array_equal(leaves["bias"], 0.0)
      continue
    n += 1
    kernel = leaves["kernel"]
    assert abs(kernel.std() - 0.01) < 0.15 * 0.01, (path, kernel.std())
    assert abs(kernel.mean()) < 0.002, path
    np.testing.assert_array_equal(leaves["bias"], 1.0)
  assert n == (8 + 3 if arch == "vgg11_bn" else 5 + 3)


def test_paper_init_resnet_head_only():
  model = BaseNet("resnet18", 7, base_width=8, init_scheme="paper")
  shapes = _shape_init(model, 32)["params"]
  assert set(shapes) == {"backbone", "fc"}
  params = jax.jit(model.init)(key(0), jnp.zeros((1, 32, 32, 3)))["params"]
  np.testing.assert_array_equal(params["fc"]["bias"], 1.0)
  assert abs(float(params["fc"]["kernel"].std()) - 0.01) < 0.003


def test_default_init():
  model = BaseNet("vgg11", 7, fc_width=64, base_width=16)
  params = jax.jit(model.init)(key(0), jnp.zeros((1, 32, 32, 3)))["params"]
  for path, leaves in _modules(params).items():
    kernel = leaves["kernel"]
    np.testing.assert_array_equal(leaves["bias"], 0.0)
    if kernel.ndim == 4:  # He-normal over fan_out = kh * kw * out
      std = np.sqrt(2.0 / (9 * kernel.shape[-1]))
    else:
      std = 0.01
    assert abs(kernel.std() - std) < 0.2 * std, (path, kernel.std(), std)


# ---------------------------------------------------------- train / dropout


def test_dropout_and_batchnorm_only_in_train():
  model = BaseNet("vgg11_bn", 7, fc_width=32, base_width=8)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 32, 32, 3)),
                  jnp.float32)
  variables = jax.jit(model.init)(key(0), x)
  # Eval needs no rng and is deterministic.
  eval_fn = jax.jit(model.apply)
  a, _ = eval_fn(variables, x)
  b, _ = eval_fn(variables, x)
  np.testing.assert_array_equal(a, b)

  train_fn = jax.jit(functools.partial(model.apply, train=True,
                                       mutable=["batch_stats"]))
  (_, f1), upd = train_fn(variables, x, rngs={"dropout": key(1)})
  (_, f2), _ = train_fn(variables, x, rngs={"dropout": key(2)})
  f1, f2 = np.asarray(f1), np.asarray(f2)
  # Features are post-dropout in training: about half zeroed, masks differ.
  assert not np.array_equal(f1, f2)
  assert 0.2 < (f1 == 0).mean() < 0.95
  old = variables["batch_stats"]["features_1"]["mean"]
  assert not np.allclose(upd["batch_stats"]["features_1"]["mean"], old)
