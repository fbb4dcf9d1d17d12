"""Agglomerative clustering over a sparse weighted graph, full merge sequence.

cGAN+WSC section 5 clusters the rank-order k-NN graph hierarchically and
cuts the tree at the count of best modularity, so the whole dendrogram is
kept: a SciPy-style linkage matrix Z (N - 1, 4), row t merging clusters
Z[t, 0] < Z[t, 1] (leaves 0..N-1, merge t creates N + t) at distance Z[t, 2]
into a cluster of Z[t, 3] points, and :func:`cut` reads any cluster count
off it.

Linkage (``method``):
- 'average' (default, UPGMA): the distance of two clusters is the mean of
  the distances of the graph edges between them. On a complete graph this is
  SciPy's 'average' exactly; on a sparse graph, missing pairs are unknown,
  not far, so they are left out of the mean, and clusters with no edge
  between them never merge on distance.
- 'single': the smallest edge between them (SciPy's 'single' on complete
  graphs; Kruskal's minimum spanning forest on sparse ones).

Both are reducible (a merged cluster is never nearer to a third than the
nearer of its parts), so merge distances never decrease, and every pair of
reciprocal nearest neighbours (RNN) is merged, at its current distance, by
the greedy closest-pair-first algorithm too. That allows the fast path used
here: vectorised numpy rounds that merge all RNN pairs at once (segment
minima and one sort per round, O(E log E)), while rounds still merge many
pairs; the rest (chain-like tails, where a round would merge few) runs the
sequential greedy algorithm on the shrunken graph (a heap of candidate
pairs, neighbour maps merged smaller-into-larger). Merges are then ordered
by distance (ties: creation order) and numbered like SciPy's. With distinct
distances the result is the greedy algorithm's exactly; ``rnn_rounds=False``
runs the heap alone. When the graph has several components, the sequence is
completed with merges at distance inf (components by ascending smallest
member) so every count 1..N can be cut. Memory O(N + E). This is host-side
bookkeeping with dynamic shapes; JAX has no equivalent.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

import numpy as np

LINKAGES = ("average", "single")


def _canonical_edges(n, src, dst, dist):
  """Unique undirected edges (lo < hi), first distance of duplicates."""
  src = np.asarray(src, np.int64).ravel()
  dst = np.asarray(dst, np.int64).ravel()
  dist = np.asarray(dist, np.float64).ravel()
  if np.any(src == dst):
    raise ValueError("self-loops have no meaning in a linkage")
  if len(src) and (min(src.min(), dst.min()) < 0
                   or max(src.max(), dst.max()) >= n):
    raise ValueError(f"edge endpoints must be in [0, {n})")
  lo, hi = np.minimum(src, dst), np.maximum(src, dst)
  _, first = np.unique(lo * n + hi, return_index=True)
  return lo[first], hi[first], dist[first], np.ones(len(first))


def _aggregate(n, u, v, s, c, average):
  """Merge parallel edges: sum (or min) of distances, sum of counts."""
  if len(u) == 0:
    return u, v, s, c
  key = u * n + v
  order = np.argsort(key, kind="stable")
  key = key[order]
  starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
  reduce = np.add if average else np.minimum
  return (key[starts] // n, key[starts] % n,
          reduce.reduceat(s[order], starts), np.add.reduceat(c[order], starts))


def _rnn_rounds(n, u, v, s, c, average, size, height, min_merges):
  """Merge reciprocal nearest neighbours in vectorised rounds.

  Returns the merges (kept rep, absorbed rep, height, size) as arrays and
  the remaining edges. ``height`` (N,) carries each cluster's last merge
  height, so a merge's recorded height is never below its children's (a
  float-rounding guard on the monotone order).
  """
  merged = []
  while len(u):
    key = s / c if average else s
    node = np.concatenate([u, v])
    other = np.concatenate([v, u])
    kk = np.concatenate([key, key])
    best = np.full(n, np.inf)
    np.minimum.at(best, node, kk)
    tie = kk == best[node]  # ties on distance break on the lower id
    nn = np.full(n, n, np.int64)
    np.minimum.at(nn, node[tie], other[tie])
    cand = np.flatnonzero(nn < n)
    a = cand[(nn[nn[cand]] == cand) & (cand < nn[cand])]
    if len(a) < min_merges(len(cand)):
      break
    b = nn[a]
    h = np.maximum(best[a], np.maximum(height[a], height[b]))
    height[a] = h
    size[a] += size[b]
    merged.append((a, b, h, size[a].copy()))
    relabel = np.arange(n, dtype=np.int64)
    relabel[b] = a
    u, v = relabel[u], relabel[v]
    keep = u != v
    lo = np.minimum(u[keep], v[keep])
    hi = np.maximum(u[keep], v[keep])
    u, v, s, c = _aggregate(n, lo, hi, s[keep], c[keep], average)
  return merged, (u, v, s, c)


def _heap_merges(n, u, v, s, c, average, size, height):
  """Greedy closest-pair-first merging of the remaining edges."""
  adj: dict[int, dict] = {}
  for x, y, sx, cx in zip(u.tolist(), v.tolist(), s.tolist(), c.tolist()):
    e = [sx, cx]
    adj.setdefault(x, {})[y] = e
    adj.setdefault(y, {})[x] = e
  heap = [(sx / cx if average else sx, x, y)
          for x, y, sx, cx in zip(u.tolist(), v.tolist(), s.tolist(),
                                  c.tolist())]
  heapq.heapify(heap)
  alive = set(adj)
  out = []
  while heap:
    d, x, y = heapq.heappop(heap)
    if x not in alive or y not in alive or y not in adj[x]:
      continue
    sx, cx = adj[x][y]
    if (sx / cx if average else sx) != d:
      continue  # stale entry
    big, small = (x, y) if len(adj[x]) >= len(adj[y]) else (y, x)
    h = max(d, height[x], height[y])
    height[big] = h
    size[big] += size[small]
    out.append((big, small, h, size[big]))
    del adj[big][small]
    del adj[small][big]
    for w, (sw, cw) in adj[small].items():
      nw = adj[w]
      del nw[small]
      if w in adj[big]:
        e = adj[big][w]
        if average:
          e[0] += sw
          e[1] += cw
        else:
          e[0] = min(e[0], sw)
      else:
        e = [sw, cw]
        adj[big][w] = e
      nw[big] = e
      key = e[0] / e[1] if average else e[0]
      heapq.heappush(heap, (key, big, w) if big < w else (key, w, big))
    del adj[small]
    alive.discard(small)
  return out


def linkage(num_nodes: int, src, dst, dist, method: str = "average",
            rnn_rounds: bool = True, min_round_merges: int | None = None):
  """Merge sequence Z (N - 1, 4) of a sparse graph's undirected edges.

  src, dst, dist: the edges (any order; a pair listed twice keeps its
  first distance), src != dst. RNN rounds continue while a round merges at
  least ``min_round_merges`` pairs (default max(16, 0.2% of the clusters
  that still have edges)); equal distances break on the lower cluster id.
  """
  if method not in LINKAGES:
    raise ValueError(f"linkage {method!r}; choose one of {LINKAGES}")
  n = int(num_nodes)
  average = method == "average"
  u, v, s, c = _canonical_edges(n, src, dst, dist)
  size = np.ones(n, np.int64)
  height = np.full(n, -np.inf)
  kept, gone, hs, sizes, order = [], [], [], [], []
  if rnn_rounds:
    if min_round_merges is None:
      min_merges = lambda active: max(16, active // 500)
    else:
      min_merges = lambda active: min_round_merges
    rounds, (u, v, s, c) = _rnn_rounds(n, u, v, s, c, average, size, height,
                                       min_merges)
    for r, (a, b, h, sz) in enumerate(rounds):
      kept.append(a)
      gone.append(b)
      hs.append(h)
      sizes.append(sz)
      order.append(np.full(len(a), r, np.int64))
  tail = _heap_merges(n, u, v, s, c, average, size, height)
  if tail:
    a, b, h, sz = (np.asarray(x) for x in zip(*tail))
    kept.append(a.astype(np.int64))
    gone.append(b.astype(np.int64))
    hs.append(h.astype(np.float64))
    sizes.append(sz.astype(np.int64))
    base = len(order)
    order.append(base + np.arange(len(a), dtype=np.int64))
  if kept:
    kept, gone = np.concatenate(kept), np.concatenate(gone)
    hs, sizes = np.concatenate(hs), np.concatenate(sizes)
    seq = np.lexsort((np.concatenate(order), hs))
    kept, gone, hs, sizes = kept[seq], gone[seq], hs[seq], sizes[seq]
  else:
    kept = gone = sizes = np.zeros(0, np.int64)
    hs = np.zeros(0)
  # Number the merges like SciPy: leaves 0..N-1, merge t is cluster N + t.
  cur = np.arange(n, dtype=np.int64)  # surviving rep -> current cluster id
  z = np.empty((n - 1, 4), np.float64)
  cur_l = cur.tolist()
  for t, (a, b) in enumerate(zip(kept.tolist(), gone.tolist())):
    ia, ib = cur_l[a], cur_l[b]
    z[t, 0], z[t, 1] = (ia, ib) if ia < ib else (ib, ia)
    cur_l[a] = n + t
  z[: len(kept), 2] = hs
  z[: len(kept), 3] = sizes
  # Complete the forest: merge the remaining components at distance inf.
  t = len(kept)
  absorbed = np.zeros(n, bool)
  absorbed[gone] = True
  roots = np.flatnonzero(~absorbed).tolist()
  if roots:
    acc = roots[0]
    for r in roots[1:]:
      ia, ib = cur_l[acc], cur_l[r]
      z[t] = (min(ia, ib), max(ia, ib), np.inf, size[acc] + size[r])
      size[acc] += size[r]
      cur_l[acc] = n + t
      t += 1
  return z


def cut(z, num_clusters: int | Sequence[int]):
  """Cluster labels (N,) of the tree cut into ``num_clusters`` clusters
  (the first N - c merges), labels 0..c-1 in order of each cluster's smallest
  member. A sequence of counts gives a (len, N) array.

  Vectorised: parent pointers of the applied merges, then pointer doubling
  (O(N log N), no per-merge Python loop).
  """
  z = np.asarray(z)
  n = z.shape[0] + 1
  counts = np.atleast_1d(np.asarray(num_clusters, np.int64))
  if np.any((counts < 1) | (counts > n)):
    raise ValueError(f"cluster counts {counts.tolist()} not in [1, {n}]")
  left = z[:, 0].astype(np.int64)
  right = z[:, 1].astype(np.int64)
  out = np.empty((len(counts), n), np.int64)
  for row, c in enumerate(counts):
    m = n - int(c)
    parent = np.arange(2 * n - 1, dtype=np.int64)
    new = n + np.arange(m, dtype=np.int64)
    parent[left[:m]] = new
    parent[right[:m]] = new
    root = parent[:n]
    while True:
      nxt = parent[root]
      if np.array_equal(nxt, root):
        break
      root = nxt
      parent = parent[parent]
    _, first, inv = np.unique(root, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))  # relabel by smallest member
    out[row] = order[inv]
  return out[0] if np.ndim(num_clusters) == 0 else out


def big_cluster_merges(z, num_clusters: int | Sequence[int],
                       min_size: int) -> np.ndarray:
  """For each count c, the most merges (a prefix of Z) after which at least
  c clusters hold ``min_size`` or more points; -1 where no prefix has c.

  A cut by count alone treats an outlier as a cluster: average linkage on
  a connected rank-order graph merges the points whose distances are all
  large last, so at N = 1e4 a cut into 8 clusters is one giant cluster and
  7 outliers (benchmarks/RESULTS.md). Counting only clusters of
  ``min_size`` points, the cut stops where c real clusters still stand.
  Going up the tree the count of big clusters rises by one when two small
  clusters form a big one and falls by one when two big ones merge, so it
  is not monotone: the coarsest prefix that has c is taken.
  """
  z = np.asarray(z)
  n = z.shape[0] + 1
  size = np.concatenate([np.ones(n), z[:, 3]])
  left, right = z[:, 0].astype(np.int64), z[:, 1].astype(np.int64)
  step = ((z[:, 3] >= min_size).astype(np.int64)
          - (size[left] >= min_size) - (size[right] >= min_size))
  big = np.concatenate([[n if min_size <= 1 else 0],
                        (n if min_size <= 1 else 0) + np.cumsum(step)])
  counts = np.atleast_1d(np.asarray(num_clusters, np.int64))
  out = np.full(len(counts), -1, np.int64)
  for i, c in enumerate(counts.tolist()):
    have = np.flatnonzero(big >= c)
    if len(have):
      out[i] = have[-1]
  return out[0] if np.ndim(num_clusters) == 0 else out
