"""Grain pipelines: examples -> shuffled uint8 batches -> global jax.Arrays.

The host only reads (gathers decoded frames) and batches; augmentation runs on
the device inside the jitted step (``fer_jax.data.augment``). Every process
walks the same shuffled order of global batches and reads its own rows of each,
so a run's batches do not depend on the number of hosts or devices.
"""

from __future__ import annotations

import collections
from typing import Any, Iterator

import grain
import jax
import numpy as np

from fer_jax import sharding
from fer_jax.data.protocols import Examples


def gather(examples: Examples, indices: np.ndarray,
           with_landmarks: bool = False) -> dict[str, np.ndarray]:
  """Host batch for example ``indices``: uint8 images per slot and labels."""
  table = examples.table
  batch = {}
  for slot, rows in examples.slots.items():
    r = rows[indices]
    batch[slot] = np.asarray(table.images[r])
    if with_landmarks and table.landmarks is not None:
      batch[f"{slot}_landmarks"] = table.landmarks[r]
  batch["label"] = examples.label[indices].astype(np.int32)
  return batch


class TrainIterator:
  """Endless shuffled batches with a resumable position.

  ``state()`` is the Grain iterator state after the last batch handed out, so
  a checkpoint taken after step k resumes exactly at batch k+1 even though
  batches are prefetched.
  """

  def __init__(self, examples: Examples, global_batch: int, seed: int,
               with_landmarks: bool = False, num_threads: int = 2,
               prefetch: int = 4):
    if global_batch > len(examples):
      raise ValueError(f"batch size {global_batch} exceeds the "
                       f"{len(examples)} training examples")
    rows = sharding.local_slice(global_batch)
    dataset = (grain.MapDataset.range(len(examples)).seed(seed).shuffle()
               .repeat().batch(global_batch, drop_remainder=True)
               .map(lambda idx: gather(examples, idx[rows], with_landmarks)))
    self._dataset = dataset.to_iter_dataset(grain.ReadOptions(
        num_threads=num_threads, prefetch_buffer_size=prefetch))
    self._it = iter(self._dataset)
    self._state = self._it.get_state()

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    batch = next(self._it)
    self._state = self._it.get_state()
    return batch

  def state(self) -> dict[str, Any]:
    return dict(self._state)

  def restore(self, state: dict[str, Any]) -> None:
    self._it = iter(self._dataset)
    self._it.set_state(dict(state))
    self._state = self._it.get_state()


def device_prefetch(it: TrainIterator, mesh, depth: int = 2
                    ) -> Iterator[tuple[dict[str, jax.Array], dict[str, Any]]]:
  """Yields (global batch on device, iterator state after it), ``depth`` ahead.

  ``jax.make_array_from_process_local_data`` starts the host-to-device copy
  asynchronously, so the next batches travel while the current step runs.
  """
  queue = collections.deque()
  while True:
    while len(queue) < depth:
      local = next(it)
      queue.append((sharding.to_global(local, mesh), it.state()))
    yield queue.popleft()


def eval_batches(examples: Examples, global_batch: int,
                 with_landmarks: bool = False
                 ) -> Iterator[dict[str, np.ndarray]]:
  """Every example once, in order; the last batch is padded and ``mask``ed."""
  rows = sharding.local_slice(global_batch)
  n = len(examples)
  for start in range(0, n, global_batch):
    idx = np.arange(start, start + global_batch)
    mask = idx < n
    batch = gather(examples, np.where(mask, idx, 0)[rows], with_landmarks)
    batch["mask"] = mask[rows]
    yield batch
