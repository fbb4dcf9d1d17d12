"""Device-resident training data: the split's frames decoded once into
device memory; each step gathers its batch there from example indices.

The streaming path copies every batch's pixels from host to device; here
only the int32 indices travel (Grain still walks the order, so resuming and
the batches themselves are the same as streaming). The frames are replicated
on every device rather than sharded over the ``data`` axis: a random batch
drawn from a sharded table needs an all-to-all exchange every step, while a
replicated table lets each device gather its own rows with no communication.
So the budget (``config.data.device_memory_gb``) is per device.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fer_jax.data.protocols import Examples

MODES = ("auto", "on", "off")
# Share of a device's memory the frames may take when the budget is 'auto'
# (config.data.device_memory_gb = 0): the rest is the model's.
AUTO_SHARE = 0.25


def resident_bytes(examples: Examples, with_landmarks: bool) -> int:
  """Bytes one device holds for ``examples`` (only frames they use)."""
  used = _used_rows(examples)
  per_frame = int(np.prod(examples.table.image_shape))
  if with_landmarks and examples.table.landmarks is not None:
    per_frame += 68 * 2 * 4
  return len(used) * per_frame + len(examples) * 4 * (len(examples.slots) + 1)


def budget_bytes(data_cfg, device) -> int:
  """The per-device budget: the config's, else AUTO_SHARE of the device's
  memory, else (a CPU reports no limit) ``data.in_memory_max_gb``."""
  if data_cfg.get("device_memory_gb", 0.0) > 0:
    return int(data_cfg.device_memory_gb * 2**30)
  stats = device.memory_stats() or {}
  if stats.get("bytes_limit"):
    return int(AUTO_SHARE * stats["bytes_limit"])
  return int(data_cfg.get("in_memory_max_gb", 8.0) * 2**30)


def choose(data_cfg, examples: Examples, with_landmarks: bool,
           device) -> tuple[bool, str]:
  """(resident?, why) for ``config.data.device_resident`` auto | on | off."""
  mode = data_cfg.get("device_resident", "off")
  if mode not in MODES:
    raise ValueError(f"config.data.device_resident={mode!r} is not one of "
                     f"{', '.join(MODES)}")
  if mode == "off":
    return False, "config.data.device_resident='off'"
  if not isinstance(examples.table.images, np.ndarray):
    why = ("the frames are read from disk (config.data.in_memory=False or "
           "over config.data.in_memory_max_gb)")
    if mode == "on":
      raise ValueError(f"config.data.device_resident='on', but {why}")
    return False, why
  need, budget = resident_bytes(examples, with_landmarks), budget_bytes(
      data_cfg, device)
  size = f"{need / 2**30:.2f} GiB of frames, budget {budget / 2**30:.2f} GiB"
  if need > budget and mode == "auto":
    return False, f"{size} per device (config.data.device_memory_gb)"
  return True, size


def _used_rows(examples: Examples) -> np.ndarray:
  return np.unique(np.concatenate([r for r in examples.slots.values()]))


def put(examples: Examples, with_landmarks: bool, mesh) -> dict[str, Any]:
  """The examples' frames, per-slot frame rows and labels on every device of
  ``mesh`` (replicated). Only frames some example uses are copied; the rows
  are renumbered to match."""
  used = _used_rows(examples)
  table = examples.table
  host = {"images": np.asarray(table.images[used]),
          "rows": {slot: np.searchsorted(used, r).astype(np.int32)
                   for slot, r in examples.slots.items()},
          "label": examples.label.astype(np.int32)}
  if examples.clean_label is not None:
    host["label_flipped"] = examples.label != examples.clean_label
  if with_landmarks and table.landmarks is not None:
    host["landmarks"] = np.asarray(table.landmarks[used], np.float32)
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  # Every process holds the same host arrays: each fills its own devices.
  # (jax.device_put would also compare them across processes: a collective
  # over the whole split.)
  return jax.tree.map(
      lambda a: jax.make_array_from_callback(a.shape, replicated,
                                             lambda index: a[index]), host)


def gather(data: dict[str, Any], index: jax.Array) -> dict[str, jax.Array]:
  """The batch ``pipeline.gather`` would have built on the host, built on the
  device from resident ``data`` and example ``index`` (B,)."""
  batch = {}
  for slot, rows in data["rows"].items():
    r = rows[index]
    batch[slot] = jnp.take(data["images"], r, axis=0)
    if "landmarks" in data:
      batch[f"{slot}_landmarks"] = jnp.take(data["landmarks"], r, axis=0)
  batch["label"] = data["label"][index]
  if "label_flipped" in data:
    batch["label_flipped"] = data["label_flipped"][index]
  return batch
