"""Grain pipelines: examples -> batches of indices -> global jax.Arrays.

Grain walks an endless order of global batches of example indices (shuffled
epochs, or class-balanced draws). In the streaming mode the host gathers the
decoded uint8 frames of those indices; in the device-resident mode
(``fer_jax.data.resident``) only the indices travel and the step gathers from
the split already in device memory. Augmentation runs on the device inside
the jitted step (``fer_jax.data.augment``) either way. Every process walks the
same order of global batches and takes its own rows of each, so a run's
batches do not depend on the number of hosts or devices.
"""

from __future__ import annotations

import collections
import itertools
from typing import Any, Iterable, Iterator

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
  if examples.clean_label is not None:
    batch["label_flipped"] = (examples.label[indices]
                              != examples.clean_label[indices])
  return batch


SAMPLERS = ("shuffle", "class_balanced")


class _PermutedStream:
  """Endless stream over range(n): epoch 0's permutation, then epoch 1's,
  ...; epoch e's order is drawn from the seed (``seed`` + (e,)), so any
  stretch of the stream is a pure function of its positions."""

  def __init__(self, n: int, seed: tuple[int, ...]):
    self._n, self._seed = n, seed
    self._perms: dict[int, np.ndarray] = {}

  def _perm(self, epoch: int) -> np.ndarray:
    perm = self._perms.get(epoch)
    if perm is None:
      if len(self._perms) > 4:
        self._perms.clear()
      perm = self._perms[epoch] = np.random.default_rng(
          list(self._seed) + [epoch]).permutation(self._n)
    return perm

  def take(self, start: int, count: int) -> np.ndarray:
    """Stream positions [start, start + count) (may straddle epochs)."""
    epoch, within = np.divmod(np.arange(start, start + count), self._n)
    out = np.empty(count, np.int64)
    for e in np.unique(epoch):
      sel = epoch == e
      out[sel] = self._perm(int(e))[within[sel]]
    return out


class _ClassBalancedBatches:
  """Global batch j of a class-balanced order (SNA's selective learning).

  Every batch holds ``global_batch // C`` examples of each of the C classes
  present. Each class walks its own :class:`_PermutedStream`, so a rare
  class repeats sooner than a common one; within a batch the classes are
  shuffled, so no device's rows hold one class. Batch j is a pure function of
  (seed, j): Grain's iterator state (the next j) resumes it exactly.
  """

  def __init__(self, labels: np.ndarray, global_batch: int, seed: int):
    classes = np.unique(labels)
    if global_batch % len(classes):
      raise ValueError(
          f"class-balanced batches: the batch size {global_batch} must be a "
          f"multiple of the {len(classes)} classes in the training examples")
    self._per_class = global_batch // len(classes)
    self._members = [np.flatnonzero(labels == c) for c in classes]
    self._streams = [_PermutedStream(len(m), (seed, c))
                     for c, m in enumerate(self._members)]
    self._seed = seed

  def __len__(self) -> int:
    return 1 << 40  # endless for any run

  def __getitem__(self, j: int) -> np.ndarray:
    per = self._per_class
    batch = np.concatenate([
        members[stream.take(j * per, per)]
        for members, stream in zip(self._members, self._streams)])
    return batch[np.random.default_rng([self._seed, j, 1]).permutation(
        len(batch))]


class _ShuffledBatches:
  """Global batch j of endless shuffled epochs: positions [j*B, (j+1)*B)
  of a :class:`_PermutedStream` (a batch may straddle two epochs).

  One Python call per batch: Grain's ``MapDataset.batch`` fetches its
  elements one by one, ~0.1 ms each, which at batch 128 was 13 ms of host
  time per step and held a 3 ms GPU step to half speed.
  """

  def __init__(self, n: int, global_batch: int, seed: int):
    self._batch = global_batch
    self._stream = _PermutedStream(n, (seed,))

  def __len__(self) -> int:
    return 1 << 40  # endless for any run

  def __getitem__(self, j: int) -> np.ndarray:
    return self._stream.take(j * self._batch, self._batch)


def index_batches(labels: np.ndarray, global_batch: int, seed: int,
                  sampler: str = "shuffle") -> grain.MapDataset:
  """Endless global batches of example indices (int64, ``global_batch``).

  ``shuffle``: :class:`_ShuffledBatches`. ``class_balanced``: see
  :class:`_ClassBalancedBatches`. Batch j is a pure function of (seed, j):
  Grain's iterator state (the next j) resumes the order exactly.
  """
  n = len(labels)
  if global_batch > n:
    raise ValueError(f"batch size {global_batch} exceeds the {n} training "
                     "examples")
  if sampler == "shuffle":
    return grain.MapDataset.source(_ShuffledBatches(n, global_batch, seed))
  if sampler == "class_balanced":
    return grain.MapDataset.source(
        _ClassBalancedBatches(np.asarray(labels), global_batch, seed))
  raise ValueError(f"sampler {sampler!r} is not one of {', '.join(SAMPLERS)}")


class TrainIterator:
  """Endless batches with a resumable position.

  Yields host batches of this process's rows: the gathered uint8 frames and
  labels, or with ``indices_only`` just ``{"index": int32 example indices}``
  for a step that gathers from device-resident data.

  ``state()`` is the Grain iterator state after the last batch handed out, so
  a checkpoint taken after step k resumes exactly at batch k+1 even though
  batches are prefetched.
  """

  def __init__(self, examples: Examples, global_batch: int, seed: int,
               with_landmarks: bool = False, num_threads: int = 2,
               prefetch: int = 4, sampler: str = "shuffle",
               indices_only: bool = False):
    rows = sharding.local_slice(global_batch)
    dataset = index_batches(examples.label, global_batch, seed, sampler)
    if indices_only:
      dataset = dataset.map(
          lambda idx: {"index": idx[rows].astype(np.int32)})
    else:
      dataset = dataset.map(
          lambda idx: gather(examples, idx[rows], with_landmarks))
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


def device_prefetch(it: TrainIterator, mesh,
                    group_sizes: Iterable[int] | None = None, depth: int = 2
                    ) -> Iterator[tuple[dict[str, jax.Array], dict[str, Any]]]:
  """Yields (global batch group on device, iterator state after it),
  ``depth`` groups ahead.

  Group i holds ``group_sizes[i]`` (default 1) consecutive batches: one
  batch as it is,
  several stacked on a new leading axis (one ``lax.scan`` dispatch of
  several steps). ``jax.make_array_from_process_local_data`` starts the
  host-to-device copy asynchronously, so the next groups travel while the
  current step runs.
  """
  sizes = iter(itertools.repeat(1) if group_sizes is None else group_sizes)
  queue = collections.deque()
  while True:
    while len(queue) < depth:
      n = next(sizes, None)
      if n is None:
        break
      local = [next(it) for _ in range(n)]
      if n == 1:
        queue.append((sharding.to_global(local[0], mesh), it.state()))
      else:
        stacked = {k: np.stack([b[k] for b in local]) for k in local[0]}
        queue.append((sharding.to_global(stacked, mesh, stacked=True),
                      it.state()))
    if not queue:
      return
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
