"""Evaluation protocols: subject-independent folds or a data set's own
split, frame roles and pairing.

The papers compare methods under subject-independent k-fold cross-validation
(no subject in two folds) on peak frames, or under the set's own train/test
split where it records no subjects (RAF-DB, AffectNet), and pair an examined
frame with a reference frame of the same face: its sequence's neutral first
frame (GNDL, IF-GAN, cGAN+WSC) or its sequence's peak (GroupGAN). Everything
here is numpy over :class:`FrameTable` rows, deterministic from the seed.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from fer_jax.data import classes as classes_lib
from fer_jax.data.frames import DataError, FrameTable

ROLES = ("neutral", "weak", "peak", "all")
EXAMPLE_KINDS = {
    # kind -> the image slots of one example, in order.
    "single": ("image",),
    "neutral_pair": ("image", "neutral"),
    "weak_peak_pair": ("weak", "peak"),
}
NEUTRAL = classes_lib.canonical_index("neutral")


@dataclasses.dataclass(frozen=True)
class Examples:
  """Index arrays into a FrameTable: one entry per training/eval example."""
  table: FrameTable
  slots: dict[str, np.ndarray]  # slot name -> frame row per example
  label: np.ndarray  # task class index per example
  # The labels before injected label noise (None: no noise was injected);
  # batches then carry ``label_flipped`` for diagnostics such as SNA's mask
  # precision. Never a training target.
  clean_label: np.ndarray | None = None

  def __len__(self) -> int:
    return len(self.label)

  @property
  def subjects(self) -> np.ndarray:
    return self.table.subject_id[next(iter(self.slots.values()))]


def frame_labels(table: FrameTable) -> np.ndarray:
  """Canonical label per frame: a sequence's first frame is 'neutral'."""
  labels = table.label.copy()
  if table.is_sequential:
    labels[(table.frame_index == 0) & (table.num_frames > 1)] = NEUTRAL
  return labels


def role_mask(table: FrameTable, role: str, peak_frames: int = 3,
              weak_frames: Sequence[int] = (6, 8)) -> np.ndarray:
  """Rows playing ``role``: neutral = first frame, peak = last ``peak_frames``,
  weak = frames weak_frames[0]..weak_frames[1] (1-based, GroupGAN's 6-8).

  Stills have no time axis: 'peak' is the non-neutral images, 'neutral'
  the images labelled neutral, 'all' every image (as for sequences, whose
  neutral first frames 'all' includes: RAF-DB's seven classes need it), and
  'weak' does not exist.
  """
  if role not in ROLES:
    raise ValueError(f"frame role {role!r} unknown; choose one of {ROLES}")
  if not table.is_sequential:
    if role == "weak":
      raise DataError(f"{table.name} holds still images: it has no weak "
                      "frames (role 'weak' needs a sequence data set)")
    if role == "all":
      return np.ones(len(table), bool)
    is_neutral = table.label == NEUTRAL
    return is_neutral if role == "neutral" else ~is_neutral
  f, n = table.frame_index, table.num_frames
  if role == "neutral":
    return f == 0
  if role == "peak":
    return f >= n - peak_frames
  if role == "weak":
    lo, hi = weak_frames
    return (f >= lo - 1) & (f <= hi - 1) & (f < n - 1)
  return np.ones(len(table), bool)


def assign_folds(groups: np.ndarray, num_folds: int, seed: int) -> np.ndarray:
  """Fold id per row such that no group (subject) spans two folds.

  Groups are shuffled by ``seed`` then dealt largest-first to the fold with
  the fewest rows, so folds are balanced in rows, not only in groups.
  """
  unique, counts = np.unique(groups, return_counts=True)
  if len(unique) < num_folds:
    raise DataError(f"{len(unique)} subjects cannot fill {num_folds} "
                    "subject-independent folds; lower config.data.num_folds")
  order = np.random.default_rng(seed).permutation(len(unique))
  order = order[np.argsort(-counts[order], kind="stable")]
  load = np.zeros(num_folds, np.int64)
  fold_of_group = np.zeros(len(unique), np.int32)
  for g in order:
    k = int(np.argmin(load))
    fold_of_group[g] = k
    load[k] += counts[g]
  return fold_of_group[np.searchsorted(unique, groups)]


FOLD_BY = {"subject": "subject_id", "sequence": "sequence_id"}


def fold_rows(table: FrameTable, num_folds: int, fold: int, val_folds: int,
              seed: int, fold_by: str = "subject") -> dict[str, np.ndarray]:
  """Boolean row masks of the train / val / test splits of one fold.

  Test is fold ``fold``; validation the next ``val_folds`` folds (IF-GAN's
  8/1/1 is num_folds=10, val_folds=1); training the rest. Folds group rows
  by subject (subject-independent) or by sequence (GroupGAN's "sequences
  divided into 5 groups": frames of one sequence never straddle folds).
  """
  if fold_by not in FOLD_BY:
    raise ValueError(f"config.data.fold_by={fold_by!r}; choose one of "
                     f"{', '.join(FOLD_BY)}")
  group_by = FOLD_BY[fold_by]
  if not 0 <= fold < num_folds:
    raise ValueError(f"config.data.fold={fold} is out of range: "
                     f"0 <= fold < num_folds={num_folds}")
  if not 0 <= val_folds <= num_folds - 2:
    raise ValueError(f"config.data.val_folds={val_folds} must leave at least "
                     f"one training fold of num_folds={num_folds}")
  groups = getattr(table, group_by)
  if group_by == "subject_id" and np.any(groups < 0):
    raise DataError(f"{table.name} does not record subjects, so "
                    "subject-independent folds are impossible; use its "
                    "own train/test split: config.data.protocol='official'")
  fold_id = assign_folds(groups, num_folds, seed)
  test = fold_id == fold
  val = np.zeros(len(table), bool)
  for j in range(1, val_folds + 1):
    val |= fold_id == (fold + j) % num_folds
  return {"train": ~(test | val), "val": val, "test": test}


def hold_out(groups: np.ndarray, rows: np.ndarray, fraction: float,
             seed: int) -> np.ndarray:
  """Mask of whole groups among ``rows``, shuffled by ``seed`` and taken
  until they hold ``fraction`` of the rows (at least one group if > 0)."""
  held = np.zeros(len(groups), bool)
  if fraction <= 0 or not rows.any():
    return held
  unique, counts = np.unique(groups[rows], return_counts=True)
  order = np.random.default_rng(seed).permutation(len(unique))
  taken = np.cumsum(counts[order])
  num = int(np.searchsorted(taken, fraction * rows.sum())) + 1
  held[rows] = np.isin(groups[rows], unique[order[:num]])
  return held


def official_rows(split_rows: dict[str, np.ndarray], table: FrameTable,
                  val_fraction: float, seed: int) -> dict[str, np.ndarray]:
  """Train / val / test masks of a data set's own split (RAF-DB, AffectNet).

  Test is its ``test`` split. Validation is its ``validation`` split where
  the builder has one (AffectNet's, carved from training at build time);
  otherwise ``val_fraction`` of ``train`` held out by ``seed`` in whole
  sequences (each still is its own). Training is the rest of ``train``.
  """
  train = split_rows["train"]
  val = split_rows.get("validation")
  if val is None:
    val = hold_out(table.sequence_id, train, val_fraction, seed)
    train = train & ~val
  return {"train": train, "val": val, "test": split_rows["test"]}


def _first_frame_of_sequence(table: FrameTable) -> np.ndarray:
  """Row of each row's sequence's frame 0 (or -1 if the sequence lacks it)."""
  first = {}
  for r in np.flatnonzero(table.frame_index == 0):
    first[int(table.sequence_id[r])] = r
  return np.array([first.get(int(s), -1) for s in table.sequence_id], np.int64)


def _last_frame_of_sequence(table: FrameTable) -> np.ndarray:
  last = {}
  for r in np.flatnonzero(table.frame_index == table.num_frames - 1):
    last[int(table.sequence_id[r])] = r
  return np.array([last.get(int(s), -1) for s in table.sequence_id], np.int64)


def _neutral_of_subject(table: FrameTable, seed: int) -> np.ndarray:
  """For stills: one neutral image of each row's subject (-1 if none)."""
  rng = np.random.default_rng(seed)
  pool: dict[int, list[int]] = {}
  # Unknown subjects (-1) never pair: that would be another person's face.
  for r in np.flatnonzero((table.label == NEUTRAL) & (table.subject_id >= 0)):
    pool.setdefault(int(table.subject_id[r]), []).append(int(r))
  out = np.full(len(table), -1, np.int64)
  for r in range(len(table)):
    options = pool.get(int(table.subject_id[r]))
    if options:
      out[r] = options[rng.integers(len(options))]
  return out


LABEL_NOISE_KINDS = ("symmetric", "pairs")


def label_flips(num: int, rate: float, kind: str, num_classes: int,
                seed: int) -> np.ndarray:
  """Per-entry class offsets: 0 keeps a label, s > 0 turns k into k + s mod K.

  A ``rate`` fraction of entries is flipped. symmetric: to any other class,
  uniformly (the noise model of e.g. Patrini et al. 2017); pairs: class k to
  k + 1 mod K, a class-dependent flip between fixed neighbours.
  Deterministic from the seed; entry i's draw depends on i alone.
  """
  if not 0.0 <= rate < 1.0:
    raise ValueError(f"config.data.label_noise={rate}: expected a rate in "
                     "[0, 1)")
  if kind not in LABEL_NOISE_KINDS:
    raise ValueError(f"config.data.label_noise_kind={kind!r}: choose one of "
                     f"{', '.join(LABEL_NOISE_KINDS)}")
  # One (flip, offset) pair of uniforms per entry, drawn row by row.
  u = np.random.default_rng([int(seed), 0x4E015E]).random((num, 2))
  offset = 1 + np.floor(u[:, 1] * (max(num_classes, 2) - 1)).astype(np.int64)
  if kind == "pairs":
    offset = np.ones(num, np.int64)
  return np.where(u[:, 0] < rate, offset, 0)


def with_label_noise(ex: Examples, flips: np.ndarray,
                     num_classes: int) -> Examples:
  """``ex`` with labels shifted by ``flips``, one label_flips offset per
  table row, so a frame keeps its noisy label across example kinds."""
  offset = flips[next(iter(ex.slots.values()))]
  label = (ex.label + offset) % num_classes
  return dataclasses.replace(ex, label=label.astype(ex.label.dtype),
                             clean_label=ex.label)


def make_examples(table: FrameTable, rows: np.ndarray, kind: str,
                  classes: Sequence[str], role: str = "peak",
                  peak_frames: int = 3, weak_frames: Sequence[int] = (6, 8),
                  seed: int = 0) -> Examples:
  """Examples of ``kind`` from the rows in the boolean mask ``rows``.

  single: one frame of ``role``; neutral_pair: a frame of ``role`` with its
  sequence's neutral frame (stills: a neutral image of the same subject);
  weak_peak_pair: a weak frame with its sequence's last (peak) frame. Frames
  whose class is not in ``classes`` are dropped.
  """
  classes = classes_lib.resolve_class_set(classes)
  if kind not in EXAMPLE_KINDS:
    raise ValueError(f"example kind {kind!r} unknown; choose one of "
                     f"{', '.join(EXAMPLE_KINDS)}")
  if kind == "weak_peak_pair":
    role = "weak"
  mask = rows & role_mask(table, role, peak_frames, weak_frames)
  task = classes_lib.task_label_map(classes)[frame_labels(table)]
  mask &= task >= 0
  anchor = np.flatnonzero(mask)
  slots = {EXAMPLE_KINDS[kind][0]: anchor}
  if kind == "neutral_pair":
    ref = (_first_frame_of_sequence(table) if table.is_sequential
           else _neutral_of_subject(table, seed))[anchor]
    slots["neutral"] = ref
  elif kind == "weak_peak_pair":
    slots["peak"] = _last_frame_of_sequence(table)[anchor]
  keep = np.all(np.stack([v >= 0 for v in slots.values()]), axis=0)
  slots = {k: v[keep] for k, v in slots.items()}
  ex = Examples(table=table, slots=slots, label=task[anchor][keep])
  if len(ex) == 0:
    raise DataError(
        f"no {kind} examples of role {role!r} and classes {list(classes)} in "
        f"the selected rows of {table.name}; check config.data")
  return ex
