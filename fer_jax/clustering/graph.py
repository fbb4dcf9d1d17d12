"""Exact blocked k-NN search, the mutual k-NN graph and its Laplacian.

The graph of WSE (Zhao, Chu & Martinez CVPR 2018; docs/methods.md section 5):
i ~ j iff each is among the other's k nearest neighbours, with Gaussian
weights A_ij = exp(-d_ij^2 / 2 sigma^2), sigma = the median k-NN distance,
and the random-walk Laplacian L = D^-1 (D - A).

Scalability: nothing here forms an N x N matrix. The search runs query
blocks of rows against all points (one (block, N) distance tile at a time,
``lax.top_k`` per row), so it is exact with memory O(N k + block N) but
O(N^2 d) work; above ``EXACT_MAX_POINTS`` a random-projection forest finds
approximate neighbours in O(T N leaf d) (``rp_forest_knn``), on the CPU
above ``CPU_EXACT_MAX_POINTS`` host k-means cells (``cell_knn``). The
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


KNN_METHODS = ("auto", "exact", "rp_forest", "cells")


def search_method(method: str, n: int, backend: str | None = None) -> str:
  """The search ``knn(method=method)`` runs on n points: 'exact',
  'rp_forest' or 'cells'.

  'auto' follows the backend (default: jax.default_backend()). On an
  accelerator: exact up to EXACT_MAX_POINTS, the forest above (both JAX).
  On the CPU: exact up to CPU_EXACT_MAX_POINTS, the host's k-means cells
  above: XLA's CPU sort and top_k, which the forest's merges lean on, ran
  ~10x slower than numpy's argpartition on the same rows
  (benchmarks/RESULTS.md, 2026-12-05), and a k-d tree degrades to a scan
  in 12-d.
  """
  if method not in KNN_METHODS:
    raise ValueError(f"k-NN method {method!r} is not one of {KNN_METHODS}")
  if method == "auto":
    if (backend or jax.default_backend()) == "cpu":
      return "exact" if n <= CPU_EXACT_MAX_POINTS else "cells"
    return "exact" if n <= EXACT_MAX_POINTS else "rp_forest"
  return method


def knn(x, k: int, block_size: int | None = None,
        tile_bytes: int = DEFAULT_TILE_BYTES, approximate: bool = False,
        recall_target: float = 0.95, method: str = "auto",
        num_trees: int = 8, seed: int = 0):
  """The k nearest neighbours of every row of x (N, d), itself excluded.

  Returns (indices (N, k) int32, Euclidean distances (N, k)), nearest first.
  ``method``: 'exact' compares query blocks of ``block_size`` rows (default:
  as many as fit a ``tile_bytes`` float32 (block, N) tile) with all N
  points; 'rp_forest' is :func:`rp_forest_knn` (approximate, for large N
  on an accelerator); 'cells' is :func:`cell_knn` (approximate, host
  numpy, for large N on the CPU); 'auto': :func:`search_method`.
  ``approximate`` makes the exact search use ``lax.approx_min_k``
  (approximate only on TPU).
  """
  x = jnp.asarray(x, jnp.float32)
  n = x.shape[0]
  if not 0 < k < n:
    raise ValueError(f"k={k} neighbours need 0 < k < N={n} points")
  chosen = search_method(method, n)
  if chosen == "rp_forest":
    return rp_forest_knn(x, k, num_trees=num_trees, seed=seed,
                         tile_bytes=tile_bytes)
  if chosen == "cells":
    return cell_knn(x, k, seed=seed, tile_bytes=tile_bytes)
  if block_size is None:
    block_size = block_rows(n, 4 * n, tile_bytes)
  return _knn_blocked(x, k, int(min(block_size, n)), approximate,
                      recall_target)


# --- Approximate search for large N: a random-projection forest -------------

# Above this many points ``knn(method="auto")`` leaves the exact O(N^2 d)
# search for the forest on an accelerator, for the k-means cells on the CPU
# (the exact search of 1e5 points takes minutes on the CPU).
EXACT_MAX_POINTS = 100_000
CPU_EXACT_MAX_POINTS = 20_000


# --- Approximate search on the host (CPU): k-means cells --------------------

# Points per cell and cells searched per cell (its own and its nearest).
CELL_SIZE = 500
CELL_PROBE = 8


def _sq_dist(a, b):
  """(len a, len b) squared distances by the expansion (BLAS matmul)."""
  return (np.einsum("ij,ij->i", a, a)[:, None]
          + np.einsum("ij,ij->i", b, b)[None, :] - 2.0 * (a @ b.T))


def _nearest_centroid(x, centroids, tile_bytes):
  rows = block_rows(len(x), 4 * len(centroids), tile_bytes)
  return np.concatenate([np.argmin(_sq_dist(x[s:s + rows], centroids), 1)
                         for s in range(0, len(x), rows)])


def _kmeans(x, num_cells, iters, rng, tile_bytes):
  """Lloyd's k-means on a sample of 40 points per cell (a start from sample
  points; an emptied cell keeps its centroid)."""
  sample = x[rng.choice(len(x), min(len(x), 40 * num_cells), replace=False)]
  cen = sample[rng.choice(len(sample), num_cells, replace=False)].copy()
  for _ in range(iters):
    a = _nearest_centroid(sample, cen, tile_bytes)
    count = np.bincount(a, minlength=num_cells)
    sums = np.zeros_like(cen)
    np.add.at(sums, a, sample)
    full = count > 0
    cen[full] = sums[full] / count[full, None]
  return cen


def cell_knn(x, k: int, cell_size: int = CELL_SIZE, probe: int = CELL_PROBE,
             kmeans_iters: int = 10, seed: int = 0,
             tile_bytes: int = DEFAULT_TILE_BYTES):
  """Approximate k nearest neighbours of every row of x (N, d) on the host.

  The points go into N / ``cell_size`` k-means cells (an inverted file,
  as in Jegou et al. 2011); each cell's points are compared exactly (BLAS
  distances, numpy argpartition) with the points of the ``probe`` cells
  whose centroids lie nearest its own (itself first; more cells while they
  hold <= k points). Work O(N probe cell_size d), memory O(N k) plus one
  tile. With ``probe`` >= the number of cells it is the exact search.
  Returns (indices (N, k) int32, distances (N, k) float32) like :func:`knn`.
  Recall against the exact lists: tests/test_clustering.py and
  benchmarks/RESULTS.md (2026-12-05).
  """
  x = np.asarray(x, np.float32)
  n, d = x.shape
  if not 0 < k < n:
    raise ValueError(f"k={k} neighbours need 0 < k < N={n} points")
  x = x - x.mean(axis=0)
  rng = np.random.default_rng(seed)
  num_cells = max(1, n // max(int(cell_size), 1))
  cen = _kmeans(x, num_cells, kmeans_iters, rng, tile_bytes)
  cell = _nearest_centroid(x, cen, tile_bytes)
  order = np.argsort(cell, kind="stable")
  starts = np.searchsorted(cell[order], np.arange(num_cells + 1))
  size = np.diff(starts)
  near = np.argsort(_sq_dist(cen, cen), axis=1, kind="stable")
  idx = np.empty((n, k), np.int32)
  dist = np.empty((n, k), np.float32)
  for c in np.flatnonzero(size):
    reach = np.cumsum(size[near[c]])
    num = max(min(int(probe), num_cells),
              int(np.searchsorted(reach, k + 1)) + 1)
    cand = np.concatenate([order[starts[j]:starts[j + 1]]
                           for j in near[c, :num]])
    members = order[starts[c]:starts[c + 1]]
    xc = x[cand]
    rows = block_rows(len(members), 4 * 3 * len(cand), tile_bytes)
    for s in range(0, len(members), rows):
      q = members[s:s + rows]
      d2 = _sq_dist(x[q], xc)
      d2[cand[None, :] == q[:, None]] = np.inf  # never itself
      part = np.argpartition(d2, k - 1, axis=1)[:, :k]
      # Exact distances of the chosen pairs (the expansion only ranks).
      exact = np.linalg.norm(x[q][:, None, :] - xc[part], axis=-1)
      o = np.argsort(exact, axis=1, kind="stable")
      idx[q] = cand[np.take_along_axis(part, o, 1)]
      dist[q] = np.take_along_axis(exact, o, 1)
  return jnp.asarray(idx), jnp.asarray(dist)


def _rp_tree_leaves(x, key, levels: int, leaf_size: int):
  """One random-projection tree's leaves: (2^levels, leaf_size) row ids.

  x is padded to ``leaf_size * 2^levels`` rows (pad ids >= N). At each level
  every group is sorted by its projection on its own random direction and
  halved at the median, so all leaves hold exactly ``leaf_size`` ids.
  """
  m, d = x.shape
  order = jnp.arange(m, dtype=jnp.int32)
  for level in range(levels):
    groups = 2 ** level
    dirs = jax.random.normal(jax.random.fold_in(key, level), (groups, d))
    pts = x[order].reshape(groups, m // groups, d)
    proj = jnp.einsum("gsd,gd->gs", pts, dirs)
    perm = jnp.argsort(proj, axis=1)
    order = jnp.take_along_axis(order.reshape(groups, -1), perm,
                                axis=1).reshape(-1)
  return order.reshape(2 ** levels, leaf_size)


def _merge_candidates(idx_a, dist_a, idx_b, dist_b, k):
  """The k nearest distinct ids of two candidate lists per row."""
  ids = jnp.concatenate([idx_a, idx_b], axis=1)
  dist = jnp.concatenate([dist_a, dist_b], axis=1)
  ids, dist = lax.sort((ids, dist), dimension=1, num_keys=1)
  dup = jnp.concatenate([jnp.zeros_like(ids[:, :1], bool),
                         ids[:, 1:] == ids[:, :-1]], axis=1)
  neg, pos = lax.top_k(-jnp.where(dup, jnp.inf, dist), k)
  return jnp.take_along_axis(ids, pos, axis=1), -neg


@functools.partial(jax.jit, static_argnames=(
    "k", "leaf_size", "levels", "num_trees", "leaf_block", "refine_rounds",
    "refine_fanout", "row_block"))
def _rp_forest_knn(x, key, k, leaf_size, levels, num_trees, leaf_block,
                   refine_rounds, refine_fanout, row_block):
  n = x.shape[0]
  x = x - jnp.mean(x, axis=0)
  m = leaf_size * 2 ** levels
  # Pads sit on real points (so they split like data) but are never chosen.
  xp = jnp.concatenate([x, x[jnp.arange(m - n) % n]])
  num_leaves = 2 ** levels
  nb = num_leaves // leaf_block

  def leaf_knn(leaf_ids):  # (leaf_block, leaf_size) -> per slot top k
    p = xp[leaf_ids]
    sq = jnp.sum(p * p, -1)
    d2 = (sq[:, :, None] + sq[:, None, :]
          - 2.0 * jnp.einsum("lad,lbd->lab", p, p,
                             precision=lax.Precision.HIGHEST))
    bad = ((leaf_ids[:, None, :] >= n)
           | (leaf_ids[:, :, None] == leaf_ids[:, None, :]))
    _, pos = lax.top_k(-jnp.where(bad, jnp.inf, d2), k)
    nbr = jnp.take_along_axis(leaf_ids[:, None, :], pos, axis=2)
    dist = jnp.linalg.norm(p[:, :, None, :] - xp[nbr], axis=-1)
    # A pad neighbour (only when a leaf holds < k real points) is never kept.
    return nbr, jnp.where(nbr >= n, jnp.inf, dist)

  def tree(t, best):
    leaves = _rp_tree_leaves(xp, jax.random.fold_in(key, t), levels,
                             leaf_size)
    nbr, dist = lax.map(leaf_knn, leaves.reshape(nb, leaf_block, leaf_size))
    # Back from leaf slots to row order (pad rows are dropped).
    slot = leaves.reshape(-1)
    idx_t = jnp.zeros((m, k), jnp.int32).at[slot].set(nbr.reshape(-1, k))
    dist_t = jnp.zeros((m, k), x.dtype).at[slot].set(dist.reshape(-1, k))
    return _merge_candidates(best[0], best[1], idx_t[:n], dist_t[:n], k)

  init = (jnp.full((n, k), n, jnp.int32), jnp.full((n, k), jnp.inf, x.dtype))
  idx, dist = lax.fori_loop(0, num_trees, tree, init)
  return _refine(x, idx, dist, refine_rounds, refine_fanout, row_block)


def _refine(x, idx, dist, rounds, fanout, row_block):
  """Neighbours of neighbours (the NN-descent step): each row also tries
  the lists of its ``fanout`` nearest candidates; ``rounds`` times."""
  n, k = idx.shape
  nb = -(-n // row_block)
  pad = nb * row_block - n
  xs = jnp.concatenate([x, jnp.full((1, x.shape[1]), jnp.inf, x.dtype)])

  def block(args):
    rows, cur_idx, cur_dist = args
    cand = idx[jnp.minimum(cur_idx[:, :fanout], n - 1)].reshape(
        row_block, fanout * k)
    cand = jnp.where(cand == rows[:, None], n, cand)  # never itself
    d = jnp.linalg.norm(xs[jnp.minimum(rows, n)][:, None, :] - xs[cand],
                        axis=-1)
    return _merge_candidates(cur_idx, cur_dist, cand,
                             jnp.where(jnp.isnan(d), jnp.inf, d), k)

  rows = jnp.arange(nb * row_block, dtype=jnp.int32)
  for _ in range(rounds):
    pi = jnp.pad(idx, ((0, pad), (0, 0)), constant_values=n)
    pd = jnp.pad(dist, ((0, pad), (0, 0)), constant_values=jnp.inf)
    new_idx, new_dist = lax.map(block, (rows.reshape(nb, row_block),
                                        pi.reshape(nb, row_block, k),
                                        pd.reshape(nb, row_block, k)))
    idx = new_idx.reshape(-1, k)[:n]
    dist = new_dist.reshape(-1, k)[:n]
  return idx, dist


def rp_forest_knn(x, k: int, num_trees: int = 8, leaf_size: int | None = None,
                  refine_rounds: int = 1, refine_fanout: int = 8,
                  seed: int = 0, tile_bytes: int = DEFAULT_TILE_BYTES):
  """Approximate k nearest neighbours of every row of x (N, d).

  A forest of ``num_trees`` random-projection trees (Dasgupta & Freund
  2008): each splits the points at the median of a random projection until
  leaves of ``leaf_size`` (default max(4 k, 256)); the exact k-NN inside
  every leaf are merged over the trees, then ``refine_rounds`` rounds of
  neighbours-of-neighbours (each row tries the lists of its
  ``refine_fanout`` nearest) lift the recall (~0.99 at N = 2e4, k = 100 in
  tests/test_clustering.py). Work O(N (T leaf + R fanout k) d), memory
  O(N k): what makes 1e6 points feasible. Same outputs as
  :func:`knn`; rows whose leaves held fewer than k other points (only for
  N near k) would carry index N and distance inf, so keep leaf_size > k.
  """
  x = jnp.asarray(x, jnp.float32)
  n = x.shape[0]
  if not 0 < k < n:
    raise ValueError(f"k={k} neighbours need 0 < k < N={n} points")
  leaf_size = int(leaf_size or max(4 * k, 256))
  if leaf_size <= k:
    raise ValueError(f"leaf_size={leaf_size} must exceed k={k}")
  levels = max(0, int(np.ceil(np.log2(n / leaf_size))))
  # Leaves per lax.map step: their (leaf_size^2) distance tiles and
  # (leaf_size, k, d) gathers within tile_bytes.
  per_leaf = 4 * leaf_size * (leaf_size + k * x.shape[1])
  leaf_block = 2 ** levels
  while leaf_block > 1 and leaf_block * per_leaf > tile_bytes:
    leaf_block //= 2
  fanout = int(min(refine_fanout, k))
  row_block = block_rows(n, 4 * fanout * k * (x.shape[1] + 2), tile_bytes)
  return _rp_forest_knn(x, jax.random.PRNGKey(seed), int(k), leaf_size,
                        levels, int(num_trees), leaf_block,
                        int(refine_rounds), fanout, row_block)


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
                     approximate: bool = False, method: str = "auto",
                     num_trees: int = 8,
                     connect_isolated: bool = False) -> KnnGraph:
  """WSE's graph of points x (N, d): mutual k-NN with Gaussian weights.

  sigma defaults to the median of all N k neighbour distances (the k-NN
  distances before the mutual filter; "the median k-NN distance"). Points
  with no mutual neighbour get degree 0 (see :func:`laplacian_matmul`),
  unless ``connect_isolated``: then such a point keeps the edge to its
  nearest neighbour (weight at least exp(-2)), listed in its own row only, so the stored weights are
  no longer symmetric and :func:`symmetric_adjacency_matmul` (A + A^T) / 2
  is the graph's operator (the normalised WSE uses it: a point of degree 0
  has no place under W^T D W = I).
  """
  idx, dist = knn(x, k, block_size, tile_bytes, approximate,
                  method=method, num_trees=num_trees)
  mutual = mutual_mask(idx, tile_bytes)
  if sigma is None:
    sigma = jnp.median(dist)
  sigma = jnp.maximum(jnp.asarray(sigma, jnp.float32), 1e-12)
  gauss = jnp.exp(-dist * dist / (2.0 * sigma * sigma))
  w = jnp.where(mutual, gauss, 0.0)
  if connect_isolated:
    # The rescue edge weighs at least exp(-2) (a neighbour at 2 sigma): an
    # outlier's Gaussian weight may underflow to 0, leaving it isolated.
    rescue = (~jnp.any(mutual, axis=1))[:, None] & (
        jnp.arange(idx.shape[1]) == 0)[None, :]
    w = jnp.where(rescue, jnp.maximum(gauss, jnp.exp(-2.0)), w)
  return KnnGraph(indices=idx, distances=dist, mutual=mutual, weights=w,
                  sigma=sigma)


# --- Sparse operators -------------------------------------------------------


def _column_tiles(indices, weights, dtype, d: int, tile_elems: int):
  """The (N, k) neighbour columns in ``steps`` tiles of ``chunk`` columns,
  (steps, chunk, N) each (zero-weight padding), a tile of ``chunk`` x N x d
  values within ``tile_elems``: (indices, weights as ``dtype``, steps)."""
  n, k = indices.shape
  chunk = max(1, min(k, tile_elems // max(n * d, 1)))
  steps = -(-k // chunk)
  pad = steps * chunk - k
  it = jnp.pad(indices, ((0, 0), (0, pad))).T.reshape(steps, chunk, n)
  wt = jnp.pad(weights, ((0, 0), (0, pad))).T.reshape(steps, chunk, n)
  return it, wt.astype(dtype), steps


def neighbour_sum(indices, weights, x, tile_bytes: int = DEFAULT_TILE_BYTES):
  """sum_m weights[i, m] x[indices[i, m]]: (N, k) x (N, d) -> (N, d).

  With the graph's symmetric padded storage this is A x. Neighbour columns
  are gathered ``chunk`` at a time (an (N, chunk, d) tile within
  ``tile_bytes``) in a ``fori_loop``, so memory stays O(N (k + d)).
  """
  x = jnp.asarray(x)
  n, d = indices.shape[0], x.shape[-1]
  it, wt, steps = _column_tiles(indices, weights, x.dtype, d,
                                tile_bytes // 4)

  def body(s, acc):
    return acc + jnp.einsum("cn,cnd->nd", wt[s], x[it[s]])

  return lax.fori_loop(0, steps, body, jnp.zeros((n, d), x.dtype))


def symmetric_adjacency_matmul(indices, weights, x,
                               tile_bytes: int = DEFAULT_TILE_BYTES):
  """((A + A^T) / 2) x for the stored (N, k) weights A (rows: sources).

  A^T x scatters each row's weighted x to its neighbours; both passes run
  ``chunk`` neighbour columns at a time, memory O(N (k + d)). Equal to
  :func:`neighbour_sum` on a symmetric graph (mutual edges only).
  """
  x = jnp.asarray(x)
  n, d = indices.shape[0], x.shape[-1]
  it, wt, steps = _column_tiles(indices, weights, x.dtype, d,
                                tile_bytes // 8)

  def body(s, acc):
    gathered = jnp.einsum("cn,cnd->nd", wt[s], x[it[s]])
    scattered = jax.ops.segment_sum(
        (wt[s][:, :, None] * x[None, :, :]).reshape(-1, d),
        it[s].reshape(-1), num_segments=n)
    return acc + 0.5 * (gathered + scattered)

  return lax.fori_loop(0, steps, body, jnp.zeros((n, d), x.dtype))


def symmetric_degree(graph: KnnGraph):
  """Row sums of (A + A^T) / 2 (= :func:`degree` on a symmetric graph)."""
  n = graph.num_nodes
  col = jax.ops.segment_sum(graph.weights.reshape(-1),
                            graph.indices.reshape(-1), num_segments=n)
  return 0.5 * (jnp.sum(graph.weights, axis=1) + col)


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


def dense_symmetric_adjacency(graph: KnnGraph):
  """(A + A^T) / 2 as an (N, N) array. Small N only (tests)."""
  a = dense_adjacency(graph)
  return 0.5 * (a + a.T)


def dense_laplacian(graph: KnnGraph):
  """L = D^+ (D - A) as an (N, N) array. Small N only (tests)."""
  a = dense_adjacency(graph)
  deg = jnp.sum(a, axis=1)
  dinv = jnp.where(deg > 0, 1.0 / jnp.where(deg > 0, deg, 1.0), 0.0)
  return dinv[:, None] * (jnp.diag(deg) - a)
