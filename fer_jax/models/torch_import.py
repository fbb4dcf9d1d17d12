"""torchvision ImageNet state dicts -> fer_jax variables (params + batch_stats).

The papers start their backbones from ImageNet; torchvision publishes those
weights as PyTorch state dicts. fer_jax's modules are named after
torchvision's state-dict keys, so conversion is renaming plus layout:

- conv ``weight`` (O, I, kH, kW) -> ``kernel`` (kH, kW, I, O) (NHWC convs);
- linear ``weight`` (out, in) -> ``kernel`` (in, out); AlexNet/VGG's first
  classifier Linear also has its input rows permuted from torch's C,H,W
  flatten order to NHWC's H,W,C;
- BatchNorm ``weight``/``bias`` -> ``scale``/``bias`` params and
  ``running_mean``/``running_var`` -> ``mean``/``var`` batch statistics
  (``num_batches_tracked`` is dropped: flax keeps no counter).

ResNets (18/34/50/101) convert to ``fer_jax.models.resnet.ResNet`` with a
1000-way ``fc``; AlexNet and VGG11-19 (+BN) to ``basenets.BaseNet`` with
torchvision's 4096-wide FCs. The result is checked leaf by leaf against the
Flax module's own shapes, so a state dict of another arch fails naming the
first missing or mismatched key. Fitting the weights into a method's smaller
model (6-channel pair inputs, GroupGAN's reduced FCs, K classes) happens at
load time, in ``fer_jax.models.io.load_into``.

torch is optional (``pip install 'fer_jax[torch]'``) and only this module and
``fer_jax.tools.import_weights`` import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

from fer_jax.models import basenets
from fer_jax.models import io as params_io
from fer_jax.models import resnet as resnet_lib

RESNETS = tuple(resnet_lib.ARCHS)
BASENETS = tuple(a for a in basenets.ARCHS if not a.startswith("resnet"))
ARCHS = RESNETS + BASENETS

# AlexNet/VGG: (first classifier Linear, side of the adaptive pool before it).
_FIRST_FC = {"alexnet": ("classifier_1", 6)}
_FIRST_FC.update({a: ("classifier_0", 7) for a in BASENETS if a != "alexnet"})


def _numpy(t) -> np.ndarray:
  """A torch tensor (or array) as float32 numpy, on the host."""
  if hasattr(t, "detach"):
    t = t.detach().cpu()
    if t.is_floating_point():
      t = t.float()
    t = t.numpy()
  return np.asarray(t)


def unwrap_state_dict(obj: Any) -> dict[str, Any]:
  """The state dict inside what ``torch.load`` returned: training scripts
  wrap it as {'state_dict': ...} or {'model': ...}, and DataParallel prefixes
  every key with 'module.'."""
  for key in ("state_dict", "model"):
    if isinstance(obj, Mapping) and key in obj and isinstance(obj[key],
                                                              Mapping):
      obj = obj[key]
  if not isinstance(obj, Mapping):
    raise TypeError(f"expected a state dict (a mapping of names to "
                     f"tensors), got {type(obj).__name__}")
  keys = list(obj)
  if keys and all(k.startswith("module.") for k in keys):
    obj = {k[len("module."):]: v for k, v in obj.items()}
  return dict(obj)


def _module_name(arch: str, torch_module: str) -> str:
  """torchvision module path -> fer_jax module name."""
  parts = torch_module.split(".")
  if arch in RESNETS and len(parts) >= 3 and parts[2] == "downsample":
    # layer2.0.downsample.0 -> layer2_0 / downsample_conv (1 -> _bn)
    kind = ({"0": "downsample_conv", "1": "downsample_bn"}.get(parts[3])
            if len(parts) == 4 else None)
    if kind is None:
      raise ValueError(f"state dict module {torch_module!r} is not a layer "
                       f"of torchvision's {arch} (its shortcut is "
                       "downsample.0 conv, downsample.1 BatchNorm)")
    return f"{parts[0]}_{parts[1]}/{kind}"
  if arch in RESNETS and len(parts) == 3:  # layer1.0.conv1
    return f"{parts[0]}_{parts[1]}/{parts[2]}"
  return "_".join(parts)  # conv1, bn1, fc; features_3, classifier_0


def convert_state_dict(state_dict: Mapping[str, Any], arch: str
                       ) -> dict[str, Any]:
  """torchvision ``arch`` state dict -> {'params': ..., 'batch_stats': ...}
  in the layout of ``reference_model(arch)``, checked against its shapes."""
  if arch not in ARCHS:
    raise ValueError(f"unknown arch {arch!r}; choose one of "
                     f"{', '.join(ARCHS)}")
  state_dict = unwrap_state_dict(state_dict)
  first_fc = _FIRST_FC.get(arch)
  flat: dict[tuple[str, ...], np.ndarray] = {}
  for name, tensor in state_dict.items():
    if "." not in name:
      raise ValueError(f"state dict key {name!r} is not a module parameter")
    module, leaf = name.rsplit(".", 1)
    path = tuple(_module_name(arch, module).split("/"))
    a = _numpy(tensor)
    if leaf == "num_batches_tracked":
      continue
    if leaf == "weight" and a.ndim == 4:
      flat[("params",) + path + ("kernel",)] = a.transpose(2, 3, 1, 0)
    elif leaf == "weight" and a.ndim == 2:
      if first_fc and path == (first_fc[0],):
        side = first_fc[1]
        out, n_in = a.shape
        channels = n_in // (side * side)
        a = a.reshape(out, channels, side, side).transpose(0, 2, 3, 1)
        a = a.reshape(out, n_in)
      flat[("params",) + path + ("kernel",)] = a.T
    elif leaf == "weight" and a.ndim == 1:  # BatchNorm gamma
      flat[("params",) + path + ("scale",)] = a
    elif leaf == "bias":
      flat[("params",) + path + ("bias",)] = a
    elif leaf == "running_mean":
      flat[("batch_stats",) + path + ("mean",)] = a
    elif leaf == "running_var":
      flat[("batch_stats",) + path + ("var",)] = a
    else:
      raise ValueError(f"state dict key {name!r}: unexpected parameter "
                       f"{leaf!r} of shape {a.shape} for {arch}")
  variables = flax.traverse_util.unflatten_dict(flat)
  variables.setdefault("batch_stats", {})
  check_against_model(variables, arch)
  return {k: variables[k] for k in ("params", "batch_stats")}


def reference_model(arch: str, num_classes: int = 1000,
                    fc_width: int = 4096, base_width: int = 64):
  """The fer_jax module a torchvision ``arch`` converts to."""
  if arch in RESNETS:
    return resnet_lib.resnet(arch, num_classes=num_classes,
                             base_width=base_width)
  return basenets.BaseNet(arch, num_classes, fc_width=fc_width,
                          base_width=base_width)


def check_against_model(variables: dict[str, Any], arch: str) -> None:
  """Raises ValueError naming the first key the converted tree lacks, has
  extra, or holds at another shape than the Flax module of ``arch``."""
  params = variables["params"]
  try:
    conv1 = params["conv1" if arch in RESNETS else "features_0"]["kernel"]
    head = params["fc" if arch in RESNETS else "classifier_6"]["kernel"]
    fc_width = (params[_FIRST_FC[arch][0]]["kernel"].shape[1]
                if arch in BASENETS else 4096)
  except KeyError as e:
    raise ValueError(f"state dict has no {e.args[0]!r} layer: is it a "
                     f"torchvision {arch}?") from None
  model = reference_model(arch, num_classes=head.shape[1], fc_width=fc_width,
                          base_width=conv1.shape[3])
  x = jax.ShapeDtypeStruct((1, 64, 64, conv1.shape[2]), jnp.float32)
  want = jax.eval_shape(model.init, jax.random.key(0), x)
  want = {k: flax.core.unfreeze(want.get(k, {}))
          for k in ("params", "batch_stats")}
  params_io.check_same_tree(variables, want,
                            f"the converted torchvision {arch} state dict")


def convert_and_save(state_dict: Mapping[str, Any], arch: str, out: str
                     ) -> dict[str, Any]:
  """Converts and writes ``out`` (see ``fer_jax.models.io``); returns the
  variables."""
  variables = convert_state_dict(state_dict, arch)
  params_io.save_pretrained(out, arch, variables)
  return variables


def load_torch_file(path: str) -> dict[str, Any]:
  """``torch.load`` of a state-dict file, tensors only (no pickled code)."""
  import pickle  # pylint: disable=import-outside-toplevel

  import torch  # pylint: disable=import-outside-toplevel
  try:
    obj = torch.load(path, map_location="cpu", weights_only=True)
  except pickle.UnpicklingError:
    # (torch's own message is a screenful, with terminal escapes)
    raise ValueError(
        f"{path} is not a plain state dict of tensors (torch.load with "
        "weights_only=True refused it); a whole pickled model is not read: "
        "save torch.save(model.state_dict(), PATH) instead") from None
  return unwrap_state_dict(obj)
