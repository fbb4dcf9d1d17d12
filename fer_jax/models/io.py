"""Saved pretrained weights (converted ImageNet models) and loading them.

A weights file is Flax msgpack (``flax.serialization``) of
``{'arch': str, 'params': ..., 'batch_stats': ...}`` as written by
``python -m fer_jax.tools.import_weights``; a bare params dict (the older
format) also loads, with no batch statistics and no arch check.

``load_into`` fits a file to a method's model: every leaf of the model must
be in the file (a missing one is named); a conv kernel whose input channels
are a multiple of the file's is widened (6-channel pair inputs); Dense
layers of another shape (GroupGAN's reduced FCs, a K-way head) are left at
their init when allowed and reported; any other shape difference fails
naming the key and both shapes.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import flax.serialization
import flax.traverse_util
import jax
import numpy as np
from etils import epath

_STATS = "batch_stats"


def _path(path: str) -> epath.Path:
  """A local path (``~`` expanded) or a remote one (``gs://...``, as a
  Colab TPU run keeps its files in a bucket), through etils' epath."""
  return epath.Path(path if "://" in path else os.path.expanduser(path))


def save_pretrained(path: str, arch: str, variables: dict[str, Any]) -> None:
  """Writes {'arch', 'params', 'batch_stats'} as msgpack (local or gs://)."""
  tree = {"arch": arch, "params": jax.device_get(variables["params"]),
          _STATS: jax.device_get(variables.get(_STATS, {}))}
  out = _path(path)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_bytes(flax.serialization.msgpack_serialize(tree))


def load_pretrained(path: str) -> dict[str, Any]:
  """{'arch': str | None, 'params': ..., 'batch_stats': ...} from a file
  (local or gs://)."""
  src = _path(path)
  if not src.exists():
    raise FileNotFoundError(f"weights file {path} does not exist")
  try:
    tree = flax.serialization.msgpack_restore(src.read_bytes())
  except Exception as e:  # noqa: BLE001 (msgpack raises unrelated types)
    raise ValueError(f"{path} is not a Flax msgpack weights file: {e}"
                     ) from None
  if not isinstance(tree, dict):
    raise ValueError(  # noqa: TRY004 (a bad file, reported as one)
        f"{path} holds a {type(tree).__name__}, not a weights tree")
  if "params" in tree:
    arch = tree.get("arch")
    return {"arch": arch if isinstance(arch, str) else None,
            "params": tree["params"], _STATS: tree.get(_STATS) or {}}
  return {"arch": None, "params": tree, _STATS: {}}


def _flat(tree: Any) -> dict[str, Any]:
  return {"/".join(k): v for k, v in
          flax.traverse_util.flatten_dict(tree or {}).items()}


def check_same_tree(got: dict[str, Any], want: dict[str, Any],
                    source: str) -> None:
  """Same keys and leaf shapes in both trees, or ValueError naming one."""
  g, w = _flat(got), _flat(want)
  missing = sorted(set(w) - set(g))
  if missing:
    raise ValueError(f"{source} lacks {len(missing)} arrays of the model, "
                     f"e.g. {missing[0]} {tuple(np.shape(w[missing[0]]))}")
  extra = sorted(set(g) - set(w))
  if extra:
    raise ValueError(f"{source} has {len(extra)} arrays the model does not, "
                     f"e.g. {extra[0]} {tuple(np.shape(g[extra[0]]))}")
  for k in sorted(w):
    if tuple(np.shape(g[k])) != tuple(np.shape(w[k])):
      raise ValueError(f"{source}: {k} has shape {tuple(np.shape(g[k]))}, "
                       f"the model expects {tuple(np.shape(w[k]))}")


def widen_input(kernel: np.ndarray, in_channels: int) -> np.ndarray | None:
  """A first-conv kernel (k, k, c, F) for an input of ``in_channels``.

  A multiple m of c (IF-GAN's and GNDL-style 6-channel pairs of RGB images):
  the kernel is tiled m times and divided by m, so m copies of one image give
  exactly the pretrained response and a pair starts as the average of its
  two images' responses. A grey input (1 channel, or 2 for a grey pair) from
  an RGB kernel: the kernel summed over RGB (a grey image is R = G = B),
  tiled and divided the same way. None if neither applies.
  """
  c = kernel.shape[2]
  if in_channels % c == 0:
    reps = in_channels // c
    return np.tile(kernel, (1, 1, reps, 1)) / reps
  if c == 3 and in_channels in (1, 2):
    grey = kernel.sum(axis=2, keepdims=True)
    return np.tile(grey, (1, 1, in_channels, 1)) / in_channels
  return None


@dataclasses.dataclass
class LoadReport:
  """What ``load_into`` did, for the one line a run prints."""
  loaded: int = 0
  widened: list[str] = dataclasses.field(default_factory=list)
  kept_init: list[str] = dataclasses.field(default_factory=list)
  unused: list[str] = dataclasses.field(default_factory=list)

  def summary(self) -> str:
    parts = [f"loaded {self.loaded} arrays"]
    if self.widened:
      parts.append("input conv widened: " + ", ".join(self.widened))
    if self.kept_init:
      parts.append("left at init (shape differs from the file): "
                   + ", ".join(self.kept_init))
    if self.unused:
      parts.append(f"{len(self.unused)} file arrays unused (e.g. "
                   f"{self.unused[0]})")
    return "; ".join(parts)


def _module(key: str) -> str:
  """'params/backbone/fc/kernel' -> 'backbone/fc'."""
  return key.rsplit("/", 1)[0].split("/", 1)[-1]


def load_into(target: dict[str, Any], loaded: dict[str, Any], source: str,
              keep_mismatched_dense: bool = False
              ) -> tuple[dict[str, Any], LoadReport]:
  """``loaded`` {'params', 'batch_stats'} placed into ``target``'s structure
  (same two keys), cast to its dtypes; see the module docstring."""
  t = _flat({k: target.get(k) or {} for k in ("params", _STATS)})
  f = _flat({k: loaded.get(k) or {} for k in ("params", _STATS)})
  report = LoadReport(unused=sorted(set(f) - set(t)))
  missing = sorted(set(t) - set(f))
  if missing:
    raise ValueError(f"{source} lacks {len(missing)} arrays of the model, "
                     f"e.g. {missing[0]} (shape "
                     f"{tuple(np.shape(t[missing[0]]))}): were the weights "
                     f"converted for another arch?")
  # Dense layers (2-D kernels) of another shape stay whole at their init.
  keep = set()
  if keep_mismatched_dense:
    for key, want in t.items():
      if (key.endswith("/kernel") and np.ndim(want) == 2
          and np.shape(f[key]) != np.shape(want)):
        keep.add(_module(key))
        report.kept_init.append(f"{_module(key)} {tuple(np.shape(f[key]))}"
                                f"->{tuple(np.shape(want))}")
  out = {}
  for key, want in t.items():
    if _module(key) in keep:
      out[key] = np.asarray(want)
      continue
    v = np.asarray(f[key])
    shape = tuple(np.shape(want))
    if v.shape != shape and v.ndim == 4 and len(shape) == 4 and (
        v.shape[:2] == shape[:2] and v.shape[3] == shape[3]):
      wide = widen_input(v, shape[2])
      if wide is not None:
        report.widened.append(f"{key} {v.shape[2]}->{shape[2]}")
        v = wide
    if v.shape != shape:
      raise ValueError(f"{source}: {key} has shape {v.shape} in the file, "
                       f"the model expects {shape}")
    out[key] = v.astype(np.asarray(want).dtype)
    report.loaded += 1
  tree = flax.traverse_util.unflatten_dict(
      {tuple(k.split("/")): v for k, v in out.items()})
  return {k: tree.get(k, {}) for k in ("params", _STATS)}, report


def basenet_layout(loaded: dict[str, Any], arch: str) -> dict[str, Any]:
  """A converted file in ``basenets.BaseNet``'s layout: ResNets move under
  ``backbone`` with ``fc`` beside it; AlexNet/VGG are already laid out so."""
  if not arch.startswith("resnet"):
    return loaded
  out = {}
  for k in ("params", _STATS):
    tree = dict(loaded.get(k) or {})
    head = tree.pop("fc", None)
    out[k] = {"backbone": tree, **({"fc": head} if head is not None else {})}
  return out
