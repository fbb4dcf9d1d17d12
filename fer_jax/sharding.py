"""One device mesh with a ``data`` axis over every device of every host.

Batches are sharded on ``data``; parameters and optimizer state are
replicated. Under ``jax.jit`` with these shardings BatchNorm statistics are
global (XLA inserts the all-reduce), so one device and N devices compute the
same step.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices).reshape(len(devices)), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_batch_size(global_batch: int, mesh: Mesh, field: str) -> None:
  """Raises ValueError naming ``field`` and the nearest larger multiple
  when ``global_batch`` does not split evenly over the devices and
  processes (before any step runs, not at the first batch)."""
  n = mesh.devices.size
  if global_batch % n:
    raise ValueError(f"{field}={global_batch} must be a multiple of the "
                     f"{n} devices of the mesh: use "
                     f"{global_batch + -global_batch % n}")
  p = jax.process_count()
  if global_batch % p:
    raise ValueError(f"{field}={global_batch} must be a multiple of the "
                     f"{p} processes: use {global_batch + -global_batch % p}")


def local_slice(global_batch: int) -> slice:
  """This process's rows of a global batch (contiguous, as the mesh lays out)."""
  per = global_batch // jax.process_count()
  start = jax.process_index() * per
  return slice(start, start + per)


def stacked_batch_sharding(mesh: Mesh) -> NamedSharding:
  """A group of batches stacked on axis 0 (one scan dispatch): axis 1 on data."""
  return NamedSharding(mesh, P(None, DATA_AXIS))


def to_global(local_batch: dict[str, np.ndarray], mesh: Mesh,
              stacked: bool = False) -> dict[str, Any]:
  """Host arrays of this process's rows -> global jax.Arrays sharded on data
  (on axis 1 with ``stacked``: a leading axis of consecutive batches)."""
  sharding = stacked_batch_sharding(mesh) if stacked else batch_sharding(mesh)
  axis = 1 if stacked else 0
  out = {}
  for k, v in local_batch.items():
    shape = list(v.shape)
    shape[axis] *= jax.process_count()
    out[k] = jax.make_array_from_process_local_data(sharding, v, tuple(shape))
  return out
