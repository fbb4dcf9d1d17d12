"""Experiment knobs of cGAN+WSC section 6: label noise and the binary task.

The paper flips labels "at a rate of 0.3" so the weak annotations are 70%
correct: exactly round(rate N) labels, chosen without replacement, each moved
to a class drawn uniformly among the other num_classes - 1. Its main task is
positive vs negative expressions (table 1): happiness and surprise against
disgust, fear and sadness; anger, contempt and neutral are in neither.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fer_jax.data import classes as classes_lib

POSITIVE = ("happiness", "surprise")
NEGATIVE = ("disgust", "fear", "sadness")
BINARY_CLASSES = ("negative", "positive")  # task index 0, 1


def _as_key(rng):
  if isinstance(rng, (int, np.integer)):
    return jax.random.PRNGKey(int(rng))
  return rng


def flip_labels(labels, rate: float, num_classes: int, rng):
  """Noisy copy of labels (N,): round(rate N) of them, uniformly chosen,
  each replaced by a uniformly drawn different class.

  rng: a jax PRNG key or an int seed. Returns (noisy (N,) int32, flipped
  (N,) bool).
  """
  if not 0.0 <= rate <= 1.0:
    raise ValueError(f"flip rate {rate} not in [0, 1]")
  if num_classes < 2 and rate > 0:
    raise ValueError("flipping needs at least 2 classes")
  labels = jnp.asarray(labels, jnp.int32)
  n = labels.shape[0]
  num_flip = round(rate * n)
  k_pick, k_shift = jax.random.split(_as_key(rng))
  order = jax.random.permutation(k_pick, n)
  flipped = jnp.zeros((n,), bool).at[order[:num_flip]].set(True)
  shift = jax.random.randint(k_shift, (n,), 1, max(num_classes, 2))
  noisy = jnp.where(flipped, (labels + shift) % num_classes, labels)
  return noisy.astype(jnp.int32), flipped


def binary_task_map() -> np.ndarray:
  """Canonical class index -> 1 positive, 0 negative, -1 not in the task."""
  table = np.full(len(classes_lib.CANONICAL_CLASSES), -1, np.int32)
  for name in POSITIVE:
    table[classes_lib.canonical_index(name)] = 1
  for name in NEGATIVE:
    table[classes_lib.canonical_index(name)] = 0
  return table


def to_binary(canonical_labels):
  """Canonical labels (N,) -> (binary labels (N,) in {0, 1, -1}, in-task
  mask (N,)). Select rows with the mask before clustering."""
  b = binary_task_map()[np.asarray(canonical_labels, np.int64)]
  return b, b >= 0
