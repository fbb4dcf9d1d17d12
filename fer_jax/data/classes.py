"""Canonical expression classes and each data set's map onto them.

Every data set stores labels as indices into ``CANONICAL_CLASSES``; a protocol
then selects the task's classes (6 basic, 7 with contempt, 7 with neutral, ...)
and re-indexes them contiguously with :func:`task_label_map`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

CANONICAL_CLASSES: tuple[str, ...] = (
    "anger", "contempt", "disgust", "fear", "happiness", "neutral", "sadness",
    "surprise",
)

BASIC6: tuple[str, ...] = (
    "anger", "disgust", "fear", "happiness", "sadness", "surprise")
BASIC6_CONTEMPT: tuple[str, ...] = (
    "anger", "contempt", "disgust", "fear", "happiness", "sadness", "surprise")
BASIC6_NEUTRAL: tuple[str, ...] = (
    "anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")

NAMED_CLASS_SETS: dict[str, tuple[str, ...]] = {
    "basic6": BASIC6,
    "basic6+contempt": BASIC6_CONTEMPT,
    "basic6+neutral": BASIC6_NEUTRAL,
    "all8": CANONICAL_CLASSES,
}


def canonical_index(name: str) -> int:
  """Index of a canonical class name; raises naming the valid names."""
  try:
    return CANONICAL_CLASSES.index(name)
  except ValueError:
    raise ValueError(
        f"unknown expression class {name!r}; canonical classes are "
        f"{', '.join(CANONICAL_CLASSES)}") from None


def resolve_class_set(spec: str | Sequence[str]) -> tuple[str, ...]:
  """A named class set ('basic6', ...) or an explicit list of canonical names."""
  if isinstance(spec, str):
    if spec in NAMED_CLASS_SETS:
      return NAMED_CLASS_SETS[spec]
    spec = [s.strip() for s in spec.split(",") if s.strip()]
  names = tuple(spec)
  for n in names:
    canonical_index(n)
  if len(set(names)) != len(names):
    raise ValueError(f"class set {names} names a class twice")
  return names


def task_label_map(classes: Sequence[str]) -> np.ndarray:
  """Array mapping canonical index -> task index, or -1 where not in the task."""
  table = np.full(len(CANONICAL_CLASSES), -1, np.int32)
  for task_idx, name in enumerate(classes):
    table[canonical_index(name)] = task_idx
  return table


# Each data set's own label codes -> canonical class names (each builder in
# data_builders/<name>/ documents its set's codes).
# Codes a data set has but no canonical class covers (AffectNet's none,
# uncertain, non-face) are absent: their examples are dropped.
DATASET_CODES: dict[str, dict] = {
    "ckplus": {0: "neutral", 1: "anger", 2: "contempt", 3: "disgust",
               4: "fear", 5: "happiness", 6: "sadness", 7: "surprise"},
    "oulu_casia": {"anger": "anger", "disgust": "disgust", "fear": "fear",
                   "happiness": "happiness", "sadness": "sadness",
                   "surprise": "surprise"},
    # session.xml <Metatag Name="Emotion" Value="N"/>
    "mmi": {1: "anger", 2: "disgust", 3: "fear", 4: "happiness",
            5: "sadness", 6: "surprise"},
    "jaffe": {"AN": "anger", "DI": "disgust", "FE": "fear", "HA": "happiness",
              "NE": "neutral", "SA": "sadness", "SU": "surprise"},
    "bu3dfe": {"AN": "anger", "DI": "disgust", "FE": "fear", "HA": "happiness",
               "NE": "neutral", "SA": "sadness", "SU": "surprise"},
    "rafdb": {1: "surprise", 2: "fear", 3: "disgust", 4: "happiness",
              5: "sadness", 6: "anger", 7: "neutral"},
    "affectnet": {0: "neutral", 1: "happiness", 2: "sadness", 3: "surprise",
                  4: "fear", 5: "disgust", 6: "anger", 7: "contempt"},
}


def dataset_label(dataset: str, code) -> int | None:
  """Canonical index of a data set's label code, or None if it has none."""
  name = DATASET_CODES[dataset].get(code)
  return None if name is None else canonical_index(name)
