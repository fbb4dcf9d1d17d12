"""ImageNet weight import: torchvision state dicts convert to fer_jax models
with the same logits, the CLI writes a file that loads, and methods start
their backbones from it (widened first conv, reduced FCs left at init,
clear errors for another arch or width).

torchvision is not installed beside torch here, so the reference networks
are torchvision's modules rebuilt by hand; their parameter counts are
checked against torchvision's published ones, and their state-dict keys are
what torchvision's models name.
"""

import functools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fer_jax.models import io as params_io
from fer_jax.models import resnet as resnet_lib
from fer_jax.models.basenets import BaseNet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# torchvision's published parameter counts (1000 classes).
TORCHVISION_PARAMS = {
    "resnet18": 11_689_512, "resnet34": 21_797_672,
    "resnet50": 25_557_032, "resnet101": 44_549_160,
    "alexnet": 61_100_840,
    "vgg11": 132_863_336, "vgg13": 133_047_848, "vgg16": 138_357_544,
    "vgg19": 143_667_240, "vgg11_bn": 132_868_840, "vgg13_bn": 133_053_736,
    "vgg16_bn": 138_365_992, "vgg19_bn": 143_678_248,
}
VGG_CFGS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512,
              512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512,
              "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512,
              512, 512, "M", 512, 512, 512, 512, "M"],
}
RESNET_BLOCKS = {"resnet18": ("basic", [2, 2, 2, 2]),
                 "resnet34": ("basic", [3, 4, 6, 3]),
                 "resnet50": ("bottleneck", [3, 4, 6, 3]),
                 "resnet101": ("bottleneck", [3, 4, 23, 3])}


# ------------------------------------------- torchvision's modules, by hand


def torchvision_model(torch, arch, width=64):
  """torchvision.models.<arch>(num_classes=1000), same modules and names
  (``width`` scales the convs, 64 = torchvision's, for small fakes)."""
  nn = torch.nn

  class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
      super().__init__()
      self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
      self.bn1 = nn.BatchNorm2d(planes)
      self.relu = nn.ReLU(inplace=True)
      self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
      self.bn2 = nn.BatchNorm2d(planes)
      self.downsample = downsample

    def forward(self, x):
      out = self.relu(self.bn1(self.conv1(x)))
      out = self.bn2(self.conv2(out))
      idt = x if self.downsample is None else self.downsample(x)
      return self.relu(out + idt)

  class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
      super().__init__()
      self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
      self.bn1 = nn.BatchNorm2d(planes)
      self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
      self.bn2 = nn.BatchNorm2d(planes)
      self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
      self.bn3 = nn.BatchNorm2d(planes * 4)
      self.relu = nn.ReLU(inplace=True)
      self.downsample = downsample

    def forward(self, x):
      out = self.relu(self.bn1(self.conv1(x)))
      out = self.relu(self.bn2(self.conv2(out)))
      out = self.bn3(self.conv3(out))
      idt = x if self.downsample is None else self.downsample(x)
      return self.relu(out + idt)

  class ResNet(nn.Module):
    def __init__(self, block, layers):
      super().__init__()
      self.inplanes = width
      self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
      self.bn1 = nn.BatchNorm2d(width)
      self.relu = nn.ReLU(inplace=True)
      self.maxpool = nn.MaxPool2d(3, 2, 1)
      self.layer1 = self._make_layer(block, width, layers[0])
      self.layer2 = self._make_layer(block, 2 * width, layers[1], 2)
      self.layer3 = self._make_layer(block, 4 * width, layers[2], 2)
      self.layer4 = self._make_layer(block, 8 * width, layers[3], 2)
      self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
      self.fc = nn.Linear(8 * width * block.expansion, 1000)

    def _make_layer(self, block, planes, blocks, stride=1):
      downsample = None
      if stride != 1 or self.inplanes != planes * block.expansion:
        downsample = nn.Sequential(
            nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride,
                      bias=False),
            nn.BatchNorm2d(planes * block.expansion))
      layers = [block(self.inplanes, planes, stride, downsample)]
      self.inplanes = planes * block.expansion
      layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
      return nn.Sequential(*layers)

    def forward(self, x):
      x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
      x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
      return self.fc(torch.flatten(self.avgpool(x), 1))

  class VGG(nn.Module):
    def __init__(self, cfg, batch_norm):
      super().__init__()
      layers, c = [], 3
      for v in cfg:
        if v == "M":
          layers.append(nn.MaxPool2d(2, 2))
          continue
        v = v * width // 64
        layers.append(nn.Conv2d(c, v, 3, padding=1))
        if batch_norm:
          layers.append(nn.BatchNorm2d(v))
        layers.append(nn.ReLU(inplace=True))
        c = v
      self.features = nn.Sequential(*layers)
      self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
      self.classifier = nn.Sequential(
          nn.Linear(c * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(),
          nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(),
          nn.Linear(4096, 1000))

    def forward(self, x):
      x = self.avgpool(self.features(x))
      return self.classifier(torch.flatten(x, 1))

  class AlexNet(nn.Module):
    def __init__(self):
      super().__init__()
      w = [width * m // 64 for m in (64, 192, 384, 256, 256)]
      self.features = nn.Sequential(
          nn.Conv2d(3, w[0], 11, 4, 2), nn.ReLU(True), nn.MaxPool2d(3, 2),
          nn.Conv2d(w[0], w[1], 5, padding=2), nn.ReLU(True),
          nn.MaxPool2d(3, 2),
          nn.Conv2d(w[1], w[2], 3, padding=1), nn.ReLU(True),
          nn.Conv2d(w[2], w[3], 3, padding=1), nn.ReLU(True),
          nn.Conv2d(w[3], w[4], 3, padding=1), nn.ReLU(True),
          nn.MaxPool2d(3, 2))
      self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
      self.classifier = nn.Sequential(
          nn.Dropout(), nn.Linear(w[4] * 36, 4096), nn.ReLU(True),
          nn.Dropout(), nn.Linear(4096, 4096), nn.ReLU(True),
          nn.Linear(4096, 1000))

    def forward(self, x):
      x = self.avgpool(self.features(x))
      return self.classifier(torch.flatten(x, 1))

  if arch in RESNET_BLOCKS:
    kind, layers = RESNET_BLOCKS[arch]
    return ResNet(BasicBlock if kind == "basic" else Bottleneck, layers)
  if arch == "alexnet":
    return AlexNet()
  name, _, bn = arch.partition("_")
  return VGG(VGG_CFGS[name], bool(bn))


def randomise(torch, net, seed=0):
  """Random weights and BatchNorm statistics far from (0, 1), so the
  conversion of every BN leaf shows in the logits."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in net.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        n = m.num_features
        m.weight.copy_(torch.rand(n, generator=g) + 0.5)
        m.bias.copy_(torch.randn(n, generator=g) * 0.2)
        m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
        m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
        m.num_batches_tracked.fill_(7)
  return net.eval()


def _logits_flax(arch, variables, x):
  from fer_jax.models import torch_import  # pylint: disable=import-outside-toplevel
  model = torch_import.reference_model(arch)
  out = jax.jit(model.apply)(variables, jnp.asarray(x))
  return np.asarray(out[0] if isinstance(out, tuple) else out)


# ------------------------------------------------------------ numerics

# Small inputs keep each case to seconds. VGG at 32 px pools a 1x1 map up to
# 7x7; at 64 px a 2x2 map, and AlexNet at 128 px a 3x3 one: spatially varying
# inputs of the first FC, which check its C,H,W -> H,W,C row permutation.
NUMERICS = [("resnet18", 64), ("resnet34", 32), ("resnet50", 32),
            ("resnet101", 32), ("alexnet", 128), ("vgg11", 64),
            ("vgg11_bn", 32), ("vgg13", 32), ("vgg13_bn", 32),
            ("vgg16", 32), ("vgg16_bn", 64), ("vgg19", 32),
            ("vgg19_bn", 32)]


@pytest.mark.parametrize("arch,hw", NUMERICS)
def test_logits_match_torchvision(arch, hw):
  torch = pytest.importorskip("torch")
  from fer_jax.models import torch_import  # pylint: disable=import-outside-toplevel
  torch.manual_seed(0)
  net = randomise(torch, torchvision_model(torch, arch))
  assert sum(p.numel() for p in net.parameters()) == TORCHVISION_PARAMS[arch]
  variables = torch_import.convert_state_dict(net.state_dict(), arch)
  x = np.random.default_rng(0).normal(size=(2, hw, hw, 3)).astype(np.float32)
  with torch.no_grad():
    want = net(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
  got = _logits_flax(arch, variables, x)
  assert got.shape == want.shape == (2, 1000)
  assert np.abs(want).std() > 1e-3  # not a vacuous comparison
  diff = float(np.abs(got - want).max())
  print(f"{arch} {hw}px: max |logit diff| {diff:.2e}, "
        f"max |logit| {np.abs(want).max():.2f}")
  assert diff < 1e-4


def test_state_dict_of_another_arch_is_refused():
  torch = pytest.importorskip("torch")
  from fer_jax.models import torch_import  # pylint: disable=import-outside-toplevel
  sd = torchvision_model(torch, "resnet18", width=8).state_dict()
  with pytest.raises(ValueError, match="layer1_2"):
    torch_import.convert_state_dict(sd, "resnet34")
  with pytest.raises(ValueError, match="layer1_0/bn3"):
    torch_import.convert_state_dict(sd, "resnet50")
  vgg = torchvision_model(torch, "vgg11_bn", width=8).state_dict()
  with pytest.raises(ValueError, match="features_1"):
    torch_import.convert_state_dict(vgg, "vgg11")
  # AlexNet and VGG share features_0 and classifier_6 but not their first
  # FC: a ValueError naming it (the CLI reports ValueErrors in one line).
  alex = torchvision_model(torch, "alexnet", width=8).state_dict()
  with pytest.raises(ValueError, match="classifier_0"):
    torch_import.convert_state_dict(alex, "vgg11")
  with pytest.raises(ValueError, match="classifier_1"):
    torch_import.convert_state_dict(
        torchvision_model(torch, "vgg11", width=8).state_dict(), "alexnet")
  # A shortcut laid out otherwise than torchvision's (conv, bn) Sequential:
  # a ValueError naming the key, not a KeyError/IndexError traceback.
  odd = dict(sd)
  odd["layer2.0.downsample.2.weight"] = odd["layer2.0.downsample.1.weight"]
  with pytest.raises(ValueError, match=r"layer2\.0\.downsample\.2"):
    torch_import.convert_state_dict(odd, "resnet18")
  odd = dict(sd)
  odd["layer2.0.downsample.weight"] = odd.pop("layer2.0.downsample.0.weight")
  with pytest.raises(ValueError, match=r"layer2\.0\.downsample"):
    torch_import.convert_state_dict(odd, "resnet18")
  # DataParallel's 'module.' prefix and a {'state_dict': ...} wrapper are
  # unwrapped.
  wrapped = {"state_dict": {"module." + k: v for k, v in sd.items()}}
  a = torch_import.convert_state_dict(wrapped, "resnet18")
  b = torch_import.convert_state_dict(sd, "resnet18")
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_pickled_model_is_a_value_error(tmp_path):
  """torch.save(model) instead of its state_dict: a ValueError saying so
  (import_weights prints ValueErrors in one line, not a traceback)."""
  torch = pytest.importorskip("torch")
  from fer_jax.models import torch_import  # pylint: disable=import-outside-toplevel
  torch.save(torch.nn.Linear(2, 2), tmp_path / "model.pth")
  with pytest.raises(ValueError, match=r"model.pth is not a plain state "
                                       r"dict.*model.state_dict\(\)"):
    torch_import.load_torch_file(str(tmp_path / "model.pth"))


def test_cli_writes_a_file_that_loads(tmp_path):
  torch = pytest.importorskip("torch")
  from fer_jax.models import torch_import  # pylint: disable=import-outside-toplevel
  net = randomise(torch, torchvision_model(torch, "resnet18", width=8))
  pth, out = tmp_path / "r18.pth", tmp_path / "r18.msgpack"
  torch.save(net.state_dict(), pth)
  proc = subprocess.run(
      [sys.executable, "-m", "fer_jax.tools.import_weights",
       "--arch=resnet18", f"--torch_state_dict={pth}", f"--out={out}"],
      check=False, cwd=ROOT, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "resnet18" in proc.stdout and str(out) in proc.stdout
  loaded = params_io.load_pretrained(str(out))
  assert loaded["arch"] == "resnet18"
  want = torch_import.convert_state_dict(net.state_dict(), "resnet18")
  for k in ("params", "batch_stats"):
    jax.tree.map(np.testing.assert_array_equal, loaded[k], want[k])
  # A wrong arch: exit status 2, one line naming the missing layer.
  proc = subprocess.run(
      [sys.executable, "-m", "fer_jax.tools.import_weights",
       "--arch=resnet34", f"--torch_state_dict={pth}",
       f"--out={tmp_path / 'x.msgpack'}"],
      check=False, cwd=ROOT, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert proc.returncode == 2
  assert "layer1_2" in proc.stderr and "Traceback" not in proc.stderr


# -------------------------------------------------------- fitting a model


key = functools.partial(jax.random.key, impl="rbg")


def _fake_file(path, arch, base_width=8, seed=1):
  """A converted-weights file for ``arch`` at a small width (random values,
  BN statistics away from init), as import_weights writes."""
  from fer_jax.models import torch_import  # pylint: disable=import-outside-toplevel
  model = torch_import.reference_model(arch, base_width=base_width,
                                       fc_width=64)
  variables = jax.jit(model.init)(key(seed), jnp.zeros((1, 64, 64, 3)))
  def away_from_init(path, v):
    leaf = path[-1].key
    v = np.asarray(v)
    return (v + np.float32(0.1) if leaf in ("mean", "bias") else
            v * np.float32(1.5) if leaf in ("var", "scale") else v)
  variables = jax.tree_util.tree_map_with_path(away_from_init,
                                               dict(variables))
  variables.setdefault("batch_stats", {})
  params_io.save_pretrained(str(path), arch, variables)
  return variables


def test_widened_first_conv_gives_the_pretrained_response(tmp_path):
  """A 6-channel ResNet loaded from 3-channel weights maps the pair (x, x)
  to the 3-channel net's features of x."""
  saved = _fake_file(tmp_path / "w.msgpack", "resnet18")
  loaded = params_io.load_pretrained(str(tmp_path / "w.msgpack"))
  net = resnet_lib.resnet("resnet18", base_width=8)
  target = jax.jit(net.init)(key(0), jnp.zeros((1, 32, 32, 6)))
  fitted, report = params_io.load_into(dict(target), loaded, "w.msgpack")
  assert report.widened == ["params/conv1/kernel 3->6"]
  assert report.unused == ["params/fc/bias", "params/fc/kernel"]
  x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
  narrow = {k: {m: v for m, v in saved[k].items() if m != "fc"}
            for k in ("params", "batch_stats")}
  want = net.apply(narrow, x)
  got = net.apply(fitted, np.concatenate([x, x], -1))
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5,
                             atol=1e-4)


def test_reduced_fcs_stay_at_init_and_are_reported(tmp_path):
  saved = _fake_file(tmp_path / "v.msgpack", "vgg11_bn")
  loaded = params_io.load_pretrained(str(tmp_path / "v.msgpack"))
  model = BaseNet("vgg11_bn", 7, fc_width=32, base_width=8)
  target = jax.jit(model.init)(key(0), jnp.zeros((1, 64, 64, 3)))
  fitted, report = params_io.load_into(dict(target), loaded, "v.msgpack",
                                       keep_mismatched_dense=True)
  assert [r.split()[0] for r in report.kept_init] == [
      "classifier_0", "classifier_3", "classifier_6"]
  assert report.kept_init[0] == "classifier_0 (3136, 64)->(3136, 32)"
  for name in ("classifier_0", "classifier_3", "classifier_6"):
    np.testing.assert_array_equal(fitted["params"][name]["kernel"],
                                  target["params"][name]["kernel"])
  np.testing.assert_array_equal(fitted["params"]["features_0"]["kernel"],
                                saved["params"]["features_0"]["kernel"])
  np.testing.assert_array_equal(fitted["batch_stats"]["features_1"]["var"],
                                saved["batch_stats"]["features_1"]["var"])
  # Without permission, the mismatched FC is an error naming it.
  with pytest.raises(ValueError, match=r"classifier_0/bias has shape \(64,\) "
                                       r"in the file, the model expects"):
    params_io.load_into(dict(target), loaded, "v.msgpack")


def test_other_width_or_arch_fails_naming_key_and_shapes(tmp_path):
  _fake_file(tmp_path / "w.msgpack", "resnet18", base_width=8)
  loaded = params_io.load_pretrained(str(tmp_path / "w.msgpack"))
  wide = resnet_lib.resnet("resnet18", base_width=16)
  target = jax.eval_shape(wide.init, key(0), jnp.zeros((1, 32, 32, 3)))
  with pytest.raises(ValueError,
                     match=r"params/bn1/bias has shape \(8,\) in the file, "
                           r"the model expects \(16,\)"):
    params_io.load_into(dict(target), loaded, "w.msgpack")
  deeper = resnet_lib.resnet("resnet34", base_width=8)
  target = jax.eval_shape(deeper.init, key(0), jnp.zeros((1, 32, 32, 3)))
  with pytest.raises(ValueError, match=r"lacks .*layer1_2"):
    params_io.load_into(dict(target), loaded, "w.msgpack")


# -------------------------------------------- config.init_from in methods


def _tiny(method, make_table, image_size):
  """A method's tiny test config and its fold of an in-memory table (the
  configs the method's own tests train)."""
  import test_groupgan  # pylint: disable=import-outside-toplevel
  import test_ifgan  # pylint: disable=import-outside-toplevel
  import test_train  # pylint: disable=import-outside-toplevel

  from fer_jax.data import run_data  # pylint: disable=import-outside-toplevel
  table = make_table(num_subjects=4, num_frames=8, image_size=image_size)
  cfg = {"gndl": test_train.tiny_config,
         "baseline": lambda: test_train.tiny_config("baseline"),
         "ifgan": test_ifgan.tiny_config,
         "groupgan": test_groupgan.tiny_config}[method]()
  return cfg, run_data.from_table(cfg, table)


def _init(config, data, workdir):
  from fer_jax import config_lib, train  # pylint: disable=import-outside-toplevel
  config_lib.validate(config)
  return train.Trainer(config, str(workdir), data).init_state()["model"]


def test_gndl_backbone_starts_from_the_file(tmp_path, make_table,
                                            monkeypatch, capsys):
  cfg, data = _tiny("gndl", make_table, 16)
  saved = _fake_file(tmp_path / "r18.msgpack", "resnet18")
  cfg.init_from = str(tmp_path / "r18.msgpack")
  state = _init(cfg, data, tmp_path / "wd")
  for k in ("params", "batch_stats"):
    narrow = {m: v for m, v in saved[k].items() if m != "fc"}
    jax.tree.map(np.testing.assert_array_equal,
                 jax.device_get(state[k]["backbone"]), narrow)
  # The NFG and head keep their init; the optimizer state is fresh.
  assert "nfg" in state["params"] and "head" in state["params"]
  assert "GNDL's ResNet backbone" in capsys.readouterr().out


def test_ifgan_e_gets_the_widened_first_conv(tmp_path, make_table,
                                              monkeypatch):
  cfg, data = _tiny("ifgan", make_table, 16)
  saved = _fake_file(tmp_path / "r18.msgpack", "resnet18")
  cfg.init_from = str(tmp_path / "r18.msgpack")
  e = _init(cfg, data, tmp_path / "wd")["e"]
  kernel = np.asarray(e["params"]["net"]["backbone"]["conv1"]["kernel"])
  rgb = saved["params"]["conv1"]["kernel"]
  assert kernel.shape == rgb.shape[:2] + (6,) + rgb.shape[3:]
  np.testing.assert_allclose(kernel[:, :, :3], rgb / 2, rtol=1e-6)
  np.testing.assert_allclose(kernel[:, :, 3:], rgb / 2, rtol=1e-6)
  np.testing.assert_array_equal(
      e["batch_stats"]["backbone"]["layer4_1"]["bn2"]["mean"],
      saved["batch_stats"]["layer4_1"]["bn2"]["mean"])


def test_groupgan_basenets_load_convs_and_keep_reduced_fcs(
    tmp_path, make_table, monkeypatch, capsys):
  cfg, data = _tiny("groupgan", make_table, 32)  # vgg11_bn, width 8
  saved = _fake_file(tmp_path / "w.msgpack", "vgg11_bn")
  cfg.init_from = str(tmp_path / "w.msgpack")
  state = _init(cfg, data, tmp_path / "wd")
  out = capsys.readouterr().out
  for net in ("c", "e"):
    params = jax.device_get(state[net]["params"])
    np.testing.assert_array_equal(params["features_4"]["kernel"],
                                  saved["params"]["features_4"]["kernel"])
    np.testing.assert_array_equal(
        state[net]["batch_stats"]["features_5"]["mean"],
        saved["batch_stats"]["features_5"]["mean"])
    # fc_width 16 (the file's 64) and the 6-way head: left at init.
    assert params["classifier_3"]["kernel"].shape == (16, 16)
    np.testing.assert_array_equal(params["classifier_3"]["bias"], 0.0)
    assert f"GroupGAN's {net.upper()}" in out
  assert "left at init (shape differs from the file): classifier_0" in out


def test_resnet_basenet_layout(tmp_path):
  """A ResNet file fits GroupGAN's ResNet BaseNet: backbone loaded, the
  K-way fc left at init."""
  saved = _fake_file(tmp_path / "w.msgpack", "resnet18")
  loaded = params_io.basenet_layout(
      params_io.load_pretrained(str(tmp_path / "w.msgpack")), "resnet18")
  model = BaseNet("resnet18", 6, base_width=8)
  target = jax.jit(model.init)(key(0), jnp.zeros((1, 32, 32, 3)))
  fitted, report = params_io.load_into(dict(target), loaded, "w",
                                       keep_mismatched_dense=True)
  assert report.kept_init == ["fc (64, 1000)->(64, 6)"]
  assert not report.unused
  for k in ("params", "batch_stats"):
    narrow = {m: v for m, v in saved[k].items() if m != "fc"}
    jax.tree.map(np.testing.assert_array_equal, fitted[k]["backbone"],
                 narrow)
  np.testing.assert_array_equal(fitted["params"]["fc"]["kernel"],
                                target["params"]["fc"]["kernel"])


def test_weights_files_take_home_relative_and_remote_paths(tmp_path,
                                                          monkeypatch):
  """'~' expands; a gs:// path is kept as given (read through epath when
  training starts, as a Colab TPU run keeps its files in a bucket) and
  passes config validation, which cannot reach the bucket."""
  from fer_jax import config_lib  # pylint: disable=import-outside-toplevel
  monkeypatch.setenv("HOME", str(tmp_path))
  saved = _fake_file(tmp_path / "weights" / "w.msgpack", "resnet18")
  loaded = params_io.load_pretrained("~/weights/w.msgpack")
  assert loaded["arch"] == "resnet18"
  np.testing.assert_array_equal(loaded["params"]["conv1"]["kernel"],
                                saved["params"]["conv1"]["kernel"])
  assert str(params_io._path("gs://bucket/w.msgpack")) == (
      "gs://bucket/w.msgpack")
  cfg = config_lib.load_config_module(
      os.path.join(os.path.dirname(__file__), "..", "configs", "gndl.py")
  ).get_config()
  cfg.init_from = "gs://bucket/w.msgpack"
  config_lib.validate(cfg)


def test_init_from_errors_name_the_field(tmp_path, make_table, monkeypatch):
  from fer_jax import config_lib, train  # pylint: disable=import-outside-toplevel
  cfg, data = _tiny("baseline", make_table, 16)
  cfg.init_from = str(tmp_path / "missing.msgpack")
  with pytest.raises(ValueError, match="config.init_from"):
    config_lib.validate(cfg)
  cfg.init_from = ""
  trainer = train.Trainer(cfg, str(tmp_path / "wd"), data)
  state = jax.device_get(trainer.init_state()["model"])
  _fake_file(tmp_path / "r34.msgpack", "resnet34")
  cfg.init_from = str(tmp_path / "r34.msgpack")  # the method reads cfg
  with pytest.raises(ValueError, match="holds resnet34 weights, but "
                                       "config.model.arch is 'resnet18'"):
    trainer.method.load_pretrained(state)
  _fake_file(tmp_path / "wide.msgpack", "resnet18", base_width=16)
  cfg.init_from = str(tmp_path / "wide.msgpack")
  with pytest.raises(ValueError, match=r"config.init_from=.*bn1/bias has "
                                       r"shape \(16,\) in the file, the model "
                                       r"expects \(8,\).*base_width=8"):
    trainer.method.load_pretrained(state)


def test_fer_jax_works_without_torch(tmp_path):
  """torch is an optional extra: with it unimportable, the methods, weight
  loading and the evaluation API import, and the CLI says what to install."""
  block = "import sys; sys.modules['torch'] = None; "
  code = block + (
      "import fer_jax.methods.gndl, fer_jax.methods.ifgan, "
      "fer_jax.methods.groupgan, fer_jax.evaluate, fer_jax.models.io, "
      "fer_jax.main, fer_jax.train; print('ok')")
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300,
                       check=False)
  assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
  cli = block + ("import runpy; runpy.run_module("
                 "'fer_jax.tools.import_weights', run_name='__main__')")
  out = subprocess.run(
      [sys.executable, "-c", cli, "--arch=resnet18",
       f"--torch_state_dict={tmp_path / 'x.pth'}",
       f"--out={tmp_path / 'x.msgpack'}"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
      check=False)
  assert out.returncode == 2
  assert "fer_jax[torch]" in out.stderr and "Traceback" not in out.stderr
