"""A built TFDS data set as one table of frames: numpy columns plus images.

Every face data set (sequences or stills) is read into the same columns, so
protocols select and pair rows by plain numpy indexing. Images are decoded once
and held in host memory when the split is small (``data.in_memory``); larger
sets keep only the columns and read images through the TFDS data source inside
the Grain workers.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

from absl import logging
import numpy as np

from fer_jax.data import registry

COLUMNS = ("label", "subject_id", "sequence_id", "frame_index", "num_frames",
           "intensity")


class DataError(ValueError):
  """A data set is missing or malformed; the message names what and where."""


class SourceImages:
  """Images read on demand from a TFDS data source (for sets too big to hold)."""

  def __init__(self, source: Sequence[dict[str, Any]], shape: tuple[int, ...]):
    self._source = source
    self.shape = (len(source),) + tuple(shape)
    self.dtype = np.dtype(np.uint8)

  def __len__(self) -> int:
    return self.shape[0]

  def __getitem__(self, index):
    if np.ndim(index) == 0:
      return np.asarray(self._source[int(index)]["image"])
    # One batched read (ArrayRecord fetches the records together): 1.5x the
    # images/s of reading them one by one (64 px PNGs, measured).
    flat = [int(i) for i in np.asarray(index).ravel()]
    records = self._source.__getitems__(flat) if flat else []
    out = np.empty((len(flat),) + self.shape[1:], np.uint8)
    for k, r in enumerate(records):
      out[k] = np.asarray(r["image"]).reshape(self.shape[1:])
    return out.reshape(np.shape(index) + self.shape[1:])


@dataclasses.dataclass
class FrameTable:
  """Columns of one split; row i of every column describes frame i."""
  name: str
  images: np.ndarray | SourceImages  # (N, H, W, C) uint8
  label: np.ndarray  # canonical class index
  subject_id: np.ndarray
  sequence_id: np.ndarray
  frame_index: np.ndarray
  num_frames: np.ndarray
  intensity: np.ndarray
  landmarks: np.ndarray | None  # (N, 68, 2) float32, pixel coordinates

  def __len__(self) -> int:
    return len(self.label)

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(self.images.shape[1:])

  @property
  def is_sequential(self) -> bool:
    """True for sequence data sets (CK+, Oulu, MMI, synthetic)."""
    return bool(np.any(self.num_frames > 1))


def _synth_builder(data_cfg, data_dir: str):
  return registry.synth_builder(data_dir, data_cfg.synth)


def get_builder(data_cfg) -> "tfds.core.DatasetBuilder":  # noqa: F821
  """The configured builder; the synthetic set is built on first use."""
  data_dir = data_dir_of(data_cfg)
  name = data_cfg.name
  if name == "fer_synth":
    builder = _synth_builder(data_cfg, data_dir)
    if not builder.is_prepared():
      print(f"fer_jax: building the synthetic set {builder.info.full_name} "
            f"into {data_dir} (once)", flush=True)
      builder.download_and_prepare(file_format="array_record")
    return builder
  cls = registry.builder_class(name)
  kwargs = {"data_dir": data_dir}
  if data_cfg.get("builder_config"):
    kwargs["config"] = data_cfg.builder_config
  builder = cls(**kwargs)
  if not builder.is_prepared():
    raise DataError(
        f"no built data set {builder.info.full_name!r} under {data_dir}; "
        f"build it first with:\n  "
        f"{registry.build_command(name, data_dir, kwargs.get('config', ''))}")
  return builder


def _bad_shard(builder, split: str) -> tuple[str, str]:
  """(path, fault) of the first of ``split``'s array_record shards that
  cannot be read through, or ("", "") if every one reads (only called
  once a read failed: it reads every record)."""
  from array_record.python import array_record_module  # pylint: disable=import-outside-toplevel
  for path in builder.info.splits[split].filepaths:
    try:
      reader = array_record_module.ArrayRecordReader(os.fspath(path))
      try:
        n = reader.num_records()
        for start in range(0, n, 1024):
          reader.read(list(range(start, min(n, start + 1024))))
      finally:
        reader.close()
    except (RuntimeError, OSError, ValueError) as e:
      return os.fspath(path), " ".join(str(e).split())[:300]
  return "", ""


def _unreadable(builder, split: str, data_cfg, error: Exception) -> DataError:
  """The DataError for records that cannot be read: the shard, the fault,
  and the command that rebuilds the set (a prepared set is never rebuilt
  in place, so its folder goes first)."""
  shard, fault = _bad_shard(builder, split)
  if not shard:
    shard = f"a shard of {builder.info.full_name}/{split} in {builder.data_dir}"
    fault = " ".join(str(error).split())[:300]
  if builder.info.name == "fer_synth":
    rebuild = (f"rm -r {builder.data_dir}   # the next run builds it again")
  else:
    rebuild = (f"rm -r {builder.data_dir} && " + registry.build_command(
        data_cfg.name, data_dir_of(data_cfg),
        data_cfg.get("builder_config", "")))
  return DataError(f"{shard} cannot be read ({fault}): the data set was "
                   f"cut short or damaged; rebuild it with: {rebuild}")


def _fits_in_memory(data_cfg, name: str, split: str, n: int,
                    image_shape) -> bool:
  """Whether ``n`` decoded images fit ``data.in_memory_max_gb``; if not,
  say so and keep them on disk (AffectNet at 256 px is ~56 GB)."""
  need = n * int(np.prod(image_shape)) / 2**30
  budget = float(data_cfg.get("in_memory_max_gb", 8.0))
  if need <= budget:
    return True
  logging.warning(
      "%s/%s: %d images of %s need %.1f GB, over "
      "config.data.in_memory_max_gb=%.1f: reading them from disk in the "
      "input workers instead (raise the limit to hold them in memory)",
      name, split, n, tuple(image_shape), need, budget)
  return False


def load_frames(data_cfg, split: str = "train") -> FrameTable:
  """Reads every record of ``split`` into a FrameTable.

  ``data.name = "a+b"`` mixes data sets (GroupGAN's CK+ and Oulu-CASIA):
  their tables are concatenated with subject and sequence ids kept apart.
  """
  names = data_cfg.name.split("+")
  if len(names) > 1:
    parts = []
    for name in names:
      part_cfg = data_cfg.copy_and_resolve_references()
      part_cfg.name = name
      parts.append(load_frames(part_cfg, split))
    return concat_tables(parts)
  builder = get_builder(data_cfg)
  if split not in builder.info.splits:
    raise DataError(f"data set {builder.info.full_name} has no split "
                    f"{split!r}; it has {', '.join(builder.info.splits)}")
  try:
    return _read_frames(builder, data_cfg, split)
  except (RuntimeError, OSError) as e:  # array_record's (Riegeli) errors
    raise _unreadable(builder, split, data_cfg, e) from None


def _read_frames(builder, data_cfg, split: str) -> FrameTable:
  source = builder.as_data_source(split=split)
  n = len(source)
  if n == 0:
    raise DataError(f"split {split!r} of {builder.info.full_name} is empty")
  has_landmarks = "landmarks" in builder.info.features
  # Defaults for stills: each image its own one-frame sequence, at full
  # intensity, subject unknown (-1) unless the data set records it.
  cols = {"label": np.zeros(n, np.int32),
          "subject_id": np.full(n, -1, np.int32),
          "sequence_id": np.arange(n, dtype=np.int32),
          "frame_index": np.zeros(n, np.int32),
          "num_frames": np.ones(n, np.int32),
          "intensity": np.ones(n, np.float32)}
  landmarks = np.zeros((n, 68, 2), np.float32) if has_landmarks else None
  # The builders write one fixed output size, declared in the features:
  # then whether the images fit is known before reading any.
  declared = tuple(builder.info.features["image"].shape)
  image_shape = declared if None not in declared else None
  in_memory = data_cfg.get("in_memory", True)
  if image_shape is not None:
    in_memory = in_memory and _fits_in_memory(
        data_cfg, builder.info.full_name, split, n, image_shape)
  images = (np.zeros((n,) + image_shape, np.uint8)
            if in_memory and image_shape is not None else None)
  # Images that stay on disk are not decoded to read the other columns
  # (AffectNet: ~290k JPEGs, minutes at every start).
  columns = source
  if not in_memory and image_shape is not None:
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    columns = builder.as_data_source(
        split=split, decoders={"image": tfds.decode.SkipDecoding()})
  for start in range(0, n, 256):
    idx = list(range(start, min(n, start + 256)))
    for i, ex in zip(idx, columns.__getitems__(idx)):
      for c in COLUMNS:
        if c in ex:
          cols[c][i] = ex[c]
      if has_landmarks:
        landmarks[i] = ex["landmarks"]
      if columns is not source:
        continue
      img = np.asarray(ex["image"])
      if img.ndim == 2:
        img = img[..., None]
      if image_shape is None:
        image_shape = img.shape
        in_memory = in_memory and _fits_in_memory(
            data_cfg, builder.info.full_name, split, n, image_shape)
      elif img.shape != image_shape:
        raise DataError(
            f"{builder.info.full_name}/{split} record {i} has image shape "
            f"{img.shape}, expected {image_shape} like the first record; "
            f"rebuild the data set with a fixed output size")
      if in_memory:
        if images is None:
          images = np.zeros((n,) + image_shape, np.uint8)
        images[i] = img
  if not in_memory:
    images = SourceImages(source, image_shape)
  return FrameTable(name=builder.info.full_name, images=images,
                    landmarks=landmarks, **cols)


class StackedImages:
  """Several tables' images read as one, rows in order (tables that keep
  their images on disk: data.in_memory=False)."""

  def __init__(self, parts: Sequence[np.ndarray | SourceImages]):
    self._parts = list(parts)
    self._starts = np.cumsum([0] + [len(p) for p in parts])
    self.shape = (int(self._starts[-1]),) + tuple(parts[0].shape[1:])
    self.dtype = np.dtype(np.uint8)

  def __len__(self) -> int:
    return self.shape[0]

  def __getitem__(self, index):
    flat = np.asarray(index).ravel()
    part = np.searchsorted(self._starts, flat, side="right") - 1
    out = np.empty((len(flat),) + self.shape[1:], np.uint8)
    for k in np.unique(part):
      sel = part == k
      out[sel] = np.asarray(self._parts[k][flat[sel] - self._starts[k]])
    return out.reshape(np.shape(index) + self.shape[1:])


def stack_tables(tables: Sequence[FrameTable], name: str) -> FrameTable:
  """The rows of several tables as one table, every column as it is."""
  shapes = {t.image_shape for t in tables}
  if len(shapes) > 1:
    raise DataError("cannot mix data sets of different image shapes "
                    f"{sorted(shapes)} ({', '.join(t.name for t in tables)}): "
                    "build them at one output size")
  images = [t.images for t in tables]
  images = (np.concatenate(images)
            if all(isinstance(i, np.ndarray) for i in images)
            else StackedImages(images))
  landmarks = (np.concatenate([t.landmarks for t in tables])
               if all(t.landmarks is not None for t in tables) else None)
  return FrameTable(name=name, images=images, landmarks=landmarks,
                    **{c: np.concatenate([getattr(t, c) for t in tables])
                       for c in COLUMNS})


def concat_tables(tables: Sequence[FrameTable]) -> FrameTable:
  """One table of several data sets' rows; ids offset so no subject or
  sequence of one set collides with another's (unknown subjects stay -1)."""
  shifted = []
  subject_base = sequence_base = 0
  for t in tables:
    shifted.append(dataclasses.replace(
        t, subject_id=np.where(t.subject_id >= 0, t.subject_id + subject_base,
                               -1),
        sequence_id=t.sequence_id + sequence_base))
    subject_base += int(t.subject_id.max(initial=-1)) + 1
    sequence_base += int(t.sequence_id.max(initial=-1)) + 1
  return stack_tables(shifted, "+".join(t.name for t in tables))


def split_names(data_cfg) -> tuple[str, ...]:
  """The splits of the built data set (of a mix: those every part has)."""
  names = None
  for name in data_cfg.name.split("+"):
    part_cfg = data_cfg.copy_and_resolve_references()
    part_cfg.name = name
    have = tuple(get_builder(part_cfg).info.splits)
    names = have if names is None else tuple(s for s in names if s in have)
  return names


def load_splits(data_cfg, splits: Sequence[str]
                ) -> tuple[FrameTable, dict[str, np.ndarray]]:
  """Several splits of one data set as one table, and each split's rows.

  Subject ids are kept (a subject is one person in every split); sequence
  ids are offset per split, as a sequence never straddles two.
  """
  tables, base = [], 0
  for split in splits:
    t = load_frames(data_cfg, split)
    tables.append(dataclasses.replace(t, sequence_id=t.sequence_id + base))
    base += int(t.sequence_id.max(initial=-1)) + 1
  table = stack_tables(tables, tables[0].name)
  ends = np.cumsum([len(t) for t in tables])
  rows = np.arange(len(table))
  return table, {s: (rows >= end - len(t)) & (rows < end)
                 for s, t, end in zip(splits, tables, ends)}


def data_dir_of(data_cfg) -> str:
  """config.data.data_dir, else the default; '~' expanded as the build
  command expands it (TFDS does not, and the shell leaves '--x=~/...')."""
  return os.path.expanduser(os.fspath(data_cfg.get("data_dir")
                                      or registry.default_data_dir()))
