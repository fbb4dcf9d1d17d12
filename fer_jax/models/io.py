"""Loading saved parameter trees (e.g. converted ImageNet weights).

Files are Flax msgpack (``flax.serialization.msgpack_serialize`` of a params
dict). Loading checks every path and shape against the model's own params and
names the first mismatch, so a wrong architecture fails in one line.
"""

from __future__ import annotations

import os
from typing import Any

import flax.serialization
import jax
import numpy as np


def load_params_file(path: str) -> dict[str, Any]:
  path = os.path.expanduser(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"params file {path} does not exist")
  with open(path, "rb") as f:
    try:
      return flax.serialization.msgpack_restore(f.read())
    except Exception as e:  # msgpack raises several unrelated types
      raise ValueError(f"{path} is not a Flax msgpack params file: {e}"
                       ) from None


def save_params_file(path: str, params: Any) -> None:
  with open(path, "wb") as f:
    f.write(flax.serialization.msgpack_serialize(jax.device_get(params)))


def _widen_input(kernel: np.ndarray, in_channels: int) -> np.ndarray:
  """An RGB first-conv kernel (k, k, 3, F) for an input of 3*m channels: the
  kernel tiled m times and divided by m, so m copies of one image give the
  pretrained response (how 6-channel pair inputs start from ImageNet)."""
  reps = in_channels // kernel.shape[2]
  return np.tile(kernel, (1, 1, reps, 1)) / reps


def merge_pretrained(target: Any, loaded: Any, source: str) -> Any:
  """``loaded`` values placed into ``target``'s structure, shapes checked."""
  flat_t = {jax.tree_util.keystr(p): v for p, v in
            jax.tree_util.tree_leaves_with_path(target)}
  flat_l = {jax.tree_util.keystr(p): v for p, v in
            jax.tree_util.tree_leaves_with_path(loaded)}
  missing = sorted(set(flat_t) - set(flat_l))
  if missing:
    raise ValueError(f"{source} lacks {len(missing)} parameters of the model, "
                     f"e.g. {missing[0]}; was it converted for another arch?")
  out = {}
  for key, t in flat_t.items():
    v = np.asarray(flat_l[key])
    if (v.ndim == 4 and t.ndim == 4 and v.shape[:2] == t.shape[:2]
        and v.shape[3] == t.shape[3] and t.shape[2] % v.shape[2] == 0):
      v = _widen_input(v, t.shape[2])
    if v.shape != t.shape:
      raise ValueError(f"{source}: parameter {key} has shape {v.shape}, the "
                       f"model expects {t.shape}")
    out[key] = v.astype(t.dtype)
  leaves = [out[jax.tree_util.keystr(p)] for p, _ in
            jax.tree_util.tree_leaves_with_path(target)]
  return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(target),
                                      leaves)
