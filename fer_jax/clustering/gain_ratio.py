"""Feature weights by information gain ratio (cGAN+WSC eq. 14-18, section 4.2).

Each feature is discretised into bins and treated as a decision-tree split:

  H(D)   = -sum_k |C_k|/|D| log2 |C_k|/|D|                     (eq. 14)
  H(D|A) =  sum_v |D_v|/|D| H(D_v)                              (eq. 16, 17)
  IG     =  H(D) - H(D|A)                                       (eq. 15)
  H_A(D) = -sum_v |D_v|/|D| log2 |D_v|/|D|                      (eq. 18)
  GR     =  IG / H_A(D)    (0 where H_A = 0: a constant feature splits nothing)

The paper leaves eq. 14's log base open and writes log2 in eq. 18; log2 is
used throughout (the base cancels in the normalised weights anyway).
Normalised weights are GR / sum GR (they sum to 1, so the paper's threshold
0.125 keeps at most 7 of 12 features, matching its "random drop rate" 0.7
study); features whose normalised weight is under ``select_threshold`` are
dropped. The labels are the only labels there are at re-annotation time:
the noisy ones.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

DISCRETISATIONS = ("equal_width", "equal_frequency")


class FeatureWeights(NamedTuple):
  gain_ratio: jax.Array  # (F,) raw information gain ratio
  weights: jax.Array  # (F,) gain_ratio / sum(gain_ratio)
  keep: jax.Array  # (F,) bool, weights >= select_threshold


def discretise(features, num_bins: int = 10, method: str = "equal_frequency"):
  """Bin index (N, F) int32 in [0, num_bins) of every value, per column.

  'equal_width': num_bins equal intervals between the column's min and max.
  'equal_frequency': cut at the column's i/num_bins quantiles (ties share a
  bin, so heavy ties give fewer, larger bins). A constant column is bin 0.
  """
  if method not in DISCRETISATIONS:
    raise ValueError(f"discretisation {method!r}; choose one of "
                     f"{DISCRETISATIONS}")
  x = jnp.asarray(features, jnp.float32)
  if method == "equal_width":
    lo = jnp.min(x, axis=0)
    width = jnp.max(x, axis=0) - lo
    pos = (x - lo) / jnp.where(width > 0, width, 1.0) * num_bins
    return jnp.clip(jnp.floor(pos), 0, num_bins - 1).astype(jnp.int32)
  qs = jnp.linspace(0.0, 1.0, num_bins + 1)[1:-1]
  edges = jnp.quantile(x, qs, axis=0)  # (num_bins - 1, F)
  return jax.vmap(lambda e, col: jnp.searchsorted(e, col, side="right"),
                  in_axes=(1, 1), out_axes=1)(edges, x).astype(jnp.int32)


def _entropy(counts, axis=-1):
  """Entropy in bits of count vectors along ``axis`` (0 log 0 = 0)."""
  total = jnp.sum(counts, axis=axis, keepdims=True)
  p = counts / jnp.maximum(total, 1.0)
  return -jnp.sum(jnp.where(p > 0, p * jnp.log2(jnp.where(p > 0, p, 1.0)),
                            0.0), axis=axis)


def gain_ratio_from_bins(bins, labels, num_bins: int, num_classes: int):
  """Eq. 14-18 on discretised features (N, F) and integer labels (N,)."""
  bins = jnp.asarray(bins, jnp.int32)
  labels = jnp.asarray(labels, jnp.int32)
  n, f = bins.shape
  cols = jnp.broadcast_to(jnp.arange(f)[None, :], (n, f))
  # counts[f, v, k] = #rows with feature f in bin v and label k (C_VK).
  counts = jnp.zeros((f, num_bins, num_classes), jnp.float32).at[
      cols, bins, jnp.broadcast_to(labels[:, None], (n, f))].add(1.0)
  h_d = _entropy(jnp.sum(counts[0], axis=0))  # eq. 14
  bin_sizes = jnp.sum(counts, axis=-1)  # |D_v|, (F, V)
  h_dv = _entropy(counts, axis=-1)  # eq. 17, (F, V)
  h_d_given_a = jnp.sum(bin_sizes / n * h_dv, axis=-1)  # eq. 16
  gain = h_d - h_d_given_a  # eq. 15
  split_info = _entropy(bin_sizes, axis=-1)  # H_A(D), eq. 18
  return jnp.where(split_info > 0, gain / jnp.where(split_info > 0,
                                                    split_info, 1.0), 0.0)


def feature_weights(features, labels, num_classes: int, num_bins: int = 10,
                    discretisation: str = "equal_frequency",
                    select_threshold: float = 0.125) -> FeatureWeights:
  """Gain ratio, normalised weights and keep mask of (N, F) features."""
  bins = discretise(features, num_bins, discretisation)
  gr = jnp.maximum(gain_ratio_from_bins(bins, labels, num_bins, num_classes),
                   0.0)
  total = jnp.sum(gr)
  weights = jnp.where(total > 0, gr / jnp.where(total > 0, total, 1.0),
                      jnp.full_like(gr, 1.0 / gr.shape[0]))
  return FeatureWeights(gain_ratio=gr, weights=weights,
                        keep=weights >= select_threshold)


def standardise(features, eps: float = 1e-8):
  """Columns to zero mean, unit variance (constant columns to 0)."""
  x = jnp.asarray(features, jnp.float32)
  mu = jnp.mean(x, axis=0)
  sd = jnp.std(x, axis=0)
  return (x - mu) / jnp.where(sd > eps, sd, 1.0)


def apply_feature_weights(features, fw: FeatureWeights,
                          standardize: bool = True):
  """Weighted features (N, F) for the clustering; dropped columns become 0.

  The paper weighs features without saying how their units compare; by
  default every column is first standardised, so the gain-ratio weight alone
  sets its share of the Euclidean distance. Zeroed columns leave every
  distance as if the feature were removed, and keep the shape static.
  """
  x = standardise(features) if standardize else jnp.asarray(features,
                                                             jnp.float32)
  return x * jnp.where(fw.keep, fw.weights, 0.0)
