"""One fold's data: the frames, the train/val/test rows and the task's classes.

Built before a trainer, an evaluation or a restored model exists and handed to
them (``prepare_data`` reads the configured data set, ``from_table`` folds a
table already in memory), so none of them reads a data set itself and methods
see the fold's data through this data-layer type.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import numpy as np

from fer_jax.data import classes as classes_lib
from fer_jax.data import frames, protocols


@dataclasses.dataclass
class RunData:
  """One fold's frames, split masks and task classes; examples on demand."""
  config: Any
  table: frames.FrameTable
  splits: dict[str, np.ndarray]
  classes: tuple[str, ...]
  _examples: dict = dataclasses.field(default_factory=dict, repr=False)

  def examples(self, split: str, kind: str, role: str) -> protocols.Examples:
    key = (split, kind, role)
    if key not in self._examples:
      d = self.config.data
      ex = protocols.make_examples(
          self.table, self.splits[split], kind, self.classes, role,
          d.peak_frames, tuple(d.weak_frames), self.config.seed)
      if split == "train" and self.label_noise:  # training split only
        ex = protocols.with_label_noise(ex, self.label_flips,
                                        len(self.classes))
      self._examples[key] = ex
    return self._examples[key]

  @property
  def label_noise(self) -> float:
    return float(self.config.data.get("label_noise", 0.0))

  @functools.cached_property
  def label_flips(self) -> np.ndarray:
    """The injected noise's class offset per table row (0 = kept), drawn
    once for every example kind and the report."""
    d = self.config.data
    return protocols.label_flips(len(self.table), self.label_noise,
                                 d.get("label_noise_kind", "symmetric"),
                                 len(self.classes), self.config.seed)

  def report_fields(self) -> dict[str, Any]:
    """What a report records of the data beyond its split: the injected
    label noise and the fraction of training frames it actually flipped
    (a report's accuracies are always against the clean labels)."""
    if not self.label_noise:
      return {}
    rows = self.splits["train"]
    return {"label_noise": {
        "rate": self.label_noise, "kind": self.config.data.label_noise_kind,
        "seed": self.config.seed,
        "flipped_train_fraction":
            float((self.label_flips[rows] > 0).mean())}}

  def count(self, kind: str, role: str) -> int:
    return len(self.examples("train", kind, role))

  @property
  def eval_split(self) -> str:
    """Where evaluation during training looks: val if there is one."""
    return "val" if self.splits["val"].any() else "test"


# How the commands get a fold's data from its config (tests hand in tables).
LoadData = Callable[[Any], RunData]


def prepare_data(config) -> RunData:
  """The configured data set's frames and this run's train/val/test rows."""
  d = config.data
  if d.get("protocol", "folds") == "official":  # older config.json: folds
    table, splits = official_split(d)
    return RunData(config, table, splits,
                   classes_lib.resolve_class_set(d.classes))
  return from_table(config, frames.load_frames(d, split="train"))


def from_table(config, table: frames.FrameTable) -> RunData:
  """``table`` divided into the configured fold's train/val/test rows."""
  d = config.data
  splits = protocols.fold_rows(table, d.num_folds, d.fold, d.val_folds,
                               seed=d.split_seed, fold_by=d.fold_by)
  return RunData(config, table, splits,
                 classes_lib.resolve_class_set(d.classes))


def official_split(d) -> tuple[frames.FrameTable, dict[str, np.ndarray]]:
  """data.protocol='official': the builder's train, test and (if it has one)
  validation splits read as one table, and their row masks."""
  have = frames.split_names(d)
  if "test" not in have:
    raise frames.DataError(
        f"config.data.protocol='official' needs a 'test' split, and "
        f"config.data.name={d.name!r} has only {', '.join(have)}; use "
        "config.data.protocol='folds'")
  names = [s for s in ("train", "validation", "test") if s in have]
  table, rows = frames.load_splits(d, names)
  return table, protocols.official_rows(rows, table, d.val_fraction,
                                        d.split_seed)
