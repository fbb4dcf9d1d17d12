"""Exact blocked k-NN search, the mutual k-NN graph and its Laplacian.

The graph of WSE (Zhao, Chu & Martinez CVPR 2018; METHODS.md section 5):
i ~ j iff each is among the other's k nearest neighbours, with Gaussian
weights A_ij = exp(-d_ij^2 / 2 sigma^2), sigma = the median k-NN distance,
and the random-walk Laplacian L = D^-1 (D - A).

Scalability: nothing here forms an N x N matrix. The search runs query
blocks of rows against all points (one (block, N) distance tile at a time,
``lax.top_k`` per row), so it is exact with memory O(N k + block N); the
graph is stored padded, as (N, k) neighbour indices, distances, weights and
a mutual mask (each undirected edge appears in both endpoints' rows), and
the Laplacian is applied as a sparse matvec gathering a few neighbour
columns at a time. Dense helpers exist for tests on small N only.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# Default memory budget for one work tile (the (block, N) distance tile of
# the search, the (N, chunk, d) gather of a matvec).
DEFAULT_TILE_BYTES = 256 * 2**20


class KnnGraph(NamedTuple):
  """Mutual k-NN graph, padded: row i lists i's k nearest neighbours."""
  indices: jax.Array  # (N, k) int32, ascending distance, never i itself
  distances: jax.Array  # (N, k) Euclidean distances
  mutual: jax.Array  # (N, k) bool: i is also among indices[j]'s k
  weights: jax.Array  # (N, k) exp(-d^2 / 2 sigma^2) where mutual, else 0
  sigma: jax.Array  # () Gaussian bandwidth

  @property
  def num_nodes(self) -> int:
    return self.indices.shape[0]


def block_rows(n: int, row_bytes: int, tile_bytes: int = DEFAULT_TILE_BYTES,
               cap: int | None = None) -> int:
  """Rows per block so a block's tile (rows * row_bytes) fits tile_bytes."""
  rows = max(1, tile_bytes // max(row_bytes, 1))
  return int(min(rows, n if cap is None else min(n, cap)))


@functools.partial(jax.jit, static_argnames=("k", "block_size", "approximate",
                                             "recall_target"))
def _knn_blocked(x, k, block_size, approximate, recall_target):
  n, d = x.shape
  x = x - jnp.mean(x, axis=0)  # |q|^2 + |x|^2 - 2 q.x loses less precision
  nb = -(-n // block_size)
  xq = jnp.pad(x, ((0, nb * block_size - n), (0, 0)))
  sq = jnp.sum(x * x, axis=-1)
  cols = jnp.arange(n)

  def block(args):
    q, start = args
    rows = start + jnp.arange(block_size)
    d2 = (jnp.sum(q * q, -1)[:, None] + sq[None, :]
          - 2.0 * jnp.matmul(q, x.T, precision=lax.Precision.HIGHEST))
    d2 = jnp.where(rows[:, None] == cols[None, :], jnp.inf,
                   jnp.maximum(d2, 0.0))
    if approximate:  # fast path on TPU; elsewhere XLA falls back to exact
      _, idx = lax.approx_min_k(d2, k, recall_target=recall_target)
    else:
      _, idx = lax.top_k(-d2, k)
    # Exact distances of the chosen pairs (the expansion above only ranks).
    dist = jnp.linalg.norm(q[:, None, :] - x[idx], axis=-1)
    return idx.astype(jnp.int32), dist

  idx, dist = lax.map(block, (xq.reshape(nb, block_size, d),
                              jnp.arange(nb) * block_size))
  return idx.reshape(-1, k)[:n], dist.reshape(-1, k)[:n]


def knn(x, k: int, block_size: int | None = None,
        tile_bytes: int = DEFAULT_TILE_BYTES, approximate: bool = False,
        recall_target: float = 0.95):
  """The k nearest neighbours of every row of x (N, d), itself excluded.

  Returns (indices (N, k) int32, Euclidean distances (N, k)), nearest first.
  Exact: query blocks of ``block_size`` rows (default: as many as fit a
  ``tile_bytes`` float32 (block, N) tile) are compared with all N points.
  ``approximate`` uses ``lax.approx_min_k`` (approximate only on TPU).
  """
  x = jnp.asarray(x, jnp.float32)
  n = x.shape[0]
  if not 0 < k < n:
    raise ValueError(f"k={k} neighbours need 0 < k < N={n} points")
  if block_size is None:
    block_size = block_rows(n, 4 * n, tile_bytes)
  return _knn_blocked(x, k, int(min(block_size, n)), approximate,
                      recall_target)


@functools.partial(jax.jit, static_argnames=("block_size",))
def _mutual_mask(indices, block_size):
  n, k = indices.shape
  nb = -(-n // block_size)
  padded = jnp.pad(indices, ((0, nb * block_size - n), (0, 0)))

  def block(args):
    nbr, start = args
    rows = start + jnp.arange(block_size)
    back = indices[nbr]  # (block, k, k): the neighbours' own lists
    return jnp.any(back == rows[:, None, None], axis=-1)

  m = lax.map(block, (padded.reshape(nb, block_size, k),
                      jnp.arange(nb) * block_size))
  return m.reshape(-1, k)[:n]


def mutual_mask(indices, tile_bytes: int = DEFAULT_TILE_BYTES):
  """(N, k) bool: j = indices[i, m] also lists i among its k neighbours.

  Blocked over rows so the (block, k, k) gather of back-references stays
  within ``tile_bytes``: O(N k^2) work, O(N k) memory.
  """
  n, k = indices.shape
  return _mutual_mask(indices, block_rows(n, 4 * k * k, tile_bytes))


def mutual_knn_graph(x, k: int = 100, sigma=None,
                     block_size: int | None = None,
                     tile_bytes: int = DEFAULT_TILE_BYTES,
                     approximate: bool = False) -> KnnGraph:
  """WSE's graph of points x (N, d): mutual k-NN with Gaussian weights.

  sigma defaults to the median of all N k neighbour distances (the k-NN
  distances before the mutual filter; "the median k-NN distance"). Points
  with no mutual neighbour get degree 0 (see :func:`laplacian_matmul`).
  """
  idx, dist = knn(x, k, block_size, tile_bytes, approximate)
  mutual = mutual_mask(idx, tile_bytes)
  if sigma is None:
    sigma = jnp.median(dist)
  sigma = jnp.maximum(jnp.asarray(sigma, jnp.float32), 1e-12)
  w = jnp.where(mutual, jnp.exp(-dist * dist / (2.0 * sigma * sigma)), 0.0)
  return KnnGraph(indices=idx, distances=dist, mutual=mutual, weights=w,
                  sigma=sigma)


# --- Sparse operators -------------------------------------------------------


def neighbour_sum(indices, weights, x, tile_bytes: int = DEFAULT_TILE_BYTES):
  """sum_m weights[i, m] x[indices[i, m]]: (N, k) x (N, d) -> (N, d).

  With the graph's symmetric padded storage this is A x. Neighbour columns
  are gathered ``chunk`` at a time (an (N, chunk, d) tile within
  ``tile_bytes``) in a ``fori_loop``, so memory stays O(N (k + d)).
  """
  x = jnp.asarray(x)
  n, k = indices.shape
  d = x.shape[-1]
  chunk = max(1, min(k, tile_bytes // max(4 * n * d, 1)))
  steps = -(-k // chunk)
  pad = steps * chunk - k
  it = jnp.pad(indices, ((0, 0), (0, pad))).T.reshape(steps, chunk, n)
  wt = jnp.pad(weights, ((0, 0), (0, pad))).T.reshape(steps, chunk, n)
  wt = wt.astype(x.dtype)

  def body(s, acc):
    return acc + jnp.einsum("cn,cnd->nd", wt[s], x[it[s]])

  return lax.fori_loop(0, steps, body, jnp.zeros((n, d), x.dtype))


def degree(graph: KnnGraph):
  return jnp.sum(graph.weights, axis=1)


def _inv_degree(graph: KnnGraph):
  deg = degree(graph)
  return jnp.where(deg > 0, 1.0 / jnp.where(deg > 0, deg, 1.0), 0.0), deg > 0


def laplacian_matmul(graph: KnnGraph, x):
  """L x with L = D^+ (D - A) = I' - D^+ A (x: (N, d)).

  D^+ is the pseudo-inverse: an isolated point (no mutual neighbour) has a
  zero row in L (I' is I without those rows), so it is free in
  tr(W^T L W) instead of making D^-1 infinite.
  """
  dinv, active = _inv_degree(graph)
  ax = neighbour_sum(graph.indices, graph.weights, x)
  return jnp.where(active[:, None], x, 0.0) - dinv[:, None] * ax


def laplacian_t_matmul(graph: KnnGraph, x):
  """L^T x = I' x - A D^+ x (A is symmetric)."""
  dinv, active = _inv_degree(graph)
  return (jnp.where(active[:, None], x, 0.0)
          - neighbour_sum(graph.indices, graph.weights, dinv[:, None] * x))


def sym_laplacian_matmul(graph: KnnGraph, x):
  """((L + L^T) / 2) x in one neighbour pass (gathers [x, D^+ x] together).

  tr(W^T L W) = tr(W^T S W) with S the symmetric part, so S, not L, gives
  the gradient 2 S W of the WSE graph term.
  """
  dinv, active = _inv_degree(graph)
  d = x.shape[-1]
  both = neighbour_sum(graph.indices, graph.weights,
                       jnp.concatenate([x, dinv[:, None] * x], axis=-1))
  return (jnp.where(active[:, None], x, 0.0)
          - 0.5 * (dinv[:, None] * both[:, :d] + both[:, d:]))


# --- Host-side views and small-N dense references ----------------------------


def edge_list(graph: KnnGraph):
  """Undirected mutual edges once each, on the host: (src, dst, w) numpy
  arrays with src < dst."""
  idx = np.asarray(graph.indices)
  mutual = np.asarray(graph.mutual)
  rows = np.broadcast_to(np.arange(idx.shape[0])[:, None], idx.shape)
  keep = mutual & (rows < idx)
  return rows[keep], idx[keep], np.asarray(graph.weights)[keep]


def dense_adjacency(graph: KnnGraph):
  """A as an (N, N) array. Small N only (tests)."""
  n, k = graph.indices.shape
  rows = jnp.broadcast_to(jnp.arange(n)[:, None], (n, k))
  return jnp.zeros((n, n), jnp.float32).at[rows, graph.indices].add(
      graph.weights)


def dense_laplacian(graph: KnnGraph):
  """L = D^+ (D - A) as an (N, N) array. Small N only (tests)."""
  a = dense_adjacency(graph)
  deg = jnp.sum(a, axis=1)
  dinv = jnp.where(deg > 0, 1.0 / jnp.where(deg > 0, deg, 1.0), 0.0)
  return dinv[:, None] * (jnp.diag(deg) - a)
