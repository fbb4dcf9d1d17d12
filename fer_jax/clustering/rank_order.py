"""Rank-order distance (Zhu, Wen & Sun CVPR 2011) on k-NN lists.

Every point a has a ranked neighbour list f_a(0) = a, f_a(1), ..., f_a(k)
(itself then its k nearest neighbours), and O_a(x) is x's rank in it. Then

  D(a, b)   = sum_{i=0}^{O_a(b)} O_b(f_a(i))                 (asymmetric)
  D^R(a, b) = (D(a, b) + D(b, a)) / min(O_a(b), O_b(a))      (symmetric)

small when a and b share their top neighbours (cGAN+WSC section 5, fig. 6).
Zhu et al. compute it on top-K lists only; the convention for a face absent
from a list, as read here: its rank is k + 1, one past the list's end. So
O_b(f_a(i)) = k + 1 for an f_a(i) that b does not list, O_b(a) = k + 1 when a
is not in b's list, and D(b, a)'s sum, whose upper limit O_b(a) may then be
k + 1, stops at the list's last entry f_b(k) (f_b(k + 1) is unknown).

The graph: each point a is linked to its k nearest neighbours b (those in
its list, O_a(b) <= k) with weight D^R(a, b); a pair listed from both sides
gets the same value twice (D^R is symmetric). O(N k^3) work in row blocks,
O(N k) memory.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from fer_jax.clustering import graph as graph_lib


class RankOrderGraph(NamedTuple):
  indices: jax.Array  # (N, k) b = the k nearest neighbours of a
  distance: jax.Array  # (N, k) D^R(a, b)
  forward: jax.Array  # (N, k) D(a, b)
  backward: jax.Array  # (N, k) D(b, a)


@functools.partial(jax.jit, static_argnames=("block_size",))
def _rank_order(indices, block_size):
  n, k = indices.shape
  out_rank = k + 1
  lists = jnp.concatenate([jnp.arange(n, dtype=indices.dtype)[:, None],
                           indices], axis=1)  # (N, k+1), f_a(i)
  nb = -(-n // block_size)
  pad = nb * block_size - n
  rank = jnp.arange(k + 1, dtype=jnp.int32)

  def block(args):
    fa, nbr = args  # (B, k+1), (B, k)
    fb = lists[nbr]  # (B, k, k+1): lists of a's neighbours b
    eq = fa[:, None, :, None] == fb[:, :, None, :]  # [a, b, i, i']
    # O_b(f_a(i)) and O_a(f_b(i')), k + 1 when absent.
    ob_fa = jnp.where(jnp.any(eq, -1), jnp.sum(eq * rank, -1), out_rank)
    oa_fb = jnp.where(jnp.any(eq, -2), jnp.sum(eq * rank[:, None], -2),
                      out_rank)
    oab = jnp.arange(1, k + 1, dtype=jnp.int32)  # O_a(b) of slot j
    oba = ob_fa[:, :, 0]  # O_b(a)
    d_ab = jnp.take_along_axis(jnp.cumsum(ob_fa, -1),
                               jnp.broadcast_to(oab[None, :, None],
                                                ob_fa.shape[:2] + (1,)),
                               -1)[..., 0]
    d_ba = jnp.take_along_axis(jnp.cumsum(oa_fb, -1),
                               jnp.minimum(oba, k)[..., None], -1)[..., 0]
    dr = (d_ab + d_ba).astype(jnp.float32) / jnp.minimum(
        oab[None, :], oba).astype(jnp.float32)
    return dr, d_ab, d_ba

  fa = jnp.pad(lists, ((0, pad), (0, 0)))
  nbr = jnp.pad(indices, ((0, pad), (0, 0)))
  dr, d_ab, d_ba = lax.map(block, (fa.reshape(nb, block_size, k + 1),
                                   nbr.reshape(nb, block_size, k)))
  cut = lambda x: x.reshape(-1, k)[:n]
  return cut(dr), cut(d_ab), cut(d_ba)


def rank_order_from_knn(indices,
                        tile_bytes: int = graph_lib.DEFAULT_TILE_BYTES
                        ) -> RankOrderGraph:
  """Rank-order distances along k-NN lists (N, k) (nearest first, self
  excluded), in row blocks whose (block, k, k+1, k+1) comparison tile fits
  ``tile_bytes``."""
  indices = jnp.asarray(indices, jnp.int32)
  n, k = indices.shape
  bs = graph_lib.block_rows(n, 4 * k * (k + 1) ** 2, tile_bytes)
  dr, d_ab, d_ba = _rank_order(indices, bs)
  return RankOrderGraph(indices=indices, distance=dr, forward=d_ab,
                        backward=d_ba)


def rank_order_graph(points, k: int = 20,
                     tile_bytes: int = graph_lib.DEFAULT_TILE_BYTES,
                     approximate: bool = False, method: str = "auto",
                     num_trees: int = 8) -> RankOrderGraph:
  """k-NN of points (N, d) (graph.knn: exact, or above its limit the
  random-projection forest or the CPU's k-means cells,
  graph.search_method), then rank-order distances."""
  idx, _ = graph_lib.knn(points, k, tile_bytes=tile_bytes,
                         approximate=approximate, method=method,
                         num_trees=num_trees)
  return rank_order_from_knn(idx, tile_bytes)


def undirected_edges(ro: RankOrderGraph):
  """The graph's undirected edges once each, on the host: (src, dst,
  distance) numpy arrays, src < dst."""
  idx = np.asarray(ro.indices).astype(np.int64)
  n, k = idx.shape
  rows = np.broadcast_to(np.arange(n, dtype=np.int64)[:, None], (n, k))
  lo, hi = np.minimum(rows, idx).ravel(), np.maximum(rows, idx).ravel()
  keys, first = np.unique(lo * n + hi, return_index=True)
  return (keys // n).astype(np.int64), (keys % n).astype(np.int64), \
      np.asarray(ro.distance).ravel()[first]
