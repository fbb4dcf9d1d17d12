"""cGAN+WSC clustering (fer_jax.clustering) against independent references:
networkx modularity, SciPy linkage and eigh, numpy brute force, and hand
computations written out below."""

import math

import jax
import jax.numpy as jnp
import networkx as nx
import numpy as np
import pytest
import scipy.cluster.hierarchy as sch
import scipy.linalg
from scipy.spatial.distance import pdist

from fer_jax.clustering import (agglomerative, ellipse, features, gain_ratio,
                                pca, rank_order, reannotate, wse)
from fer_jax.clustering import graph as graph_lib
from fer_jax.clustering import labels as labels_lib
from fer_jax.clustering.modularity import modularity
from fer_jax.data import classes as classes_lib


def same_partition(a, b):
  """Equal up to relabelling: the label pairs define a bijection."""
  a, b = np.asarray(a), np.asarray(b)
  pairs = set(zip(a.tolist(), b.tolist()))
  return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def blobs(num_classes, per_class, dim, spread, seed):
  rng = np.random.default_rng(seed)
  centers = rng.normal(0.0, spread, (num_classes, dim))
  x = np.concatenate([c + rng.normal(0.0, 1.0, (per_class, dim))
                      for c in centers])
  return x.astype(np.float32), np.repeat(np.arange(num_classes), per_class)


# --- Modularity ---------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_modularity_matches_networkx(seed):
  rng = np.random.default_rng(seed)
  n = 30
  g = nx.gnp_random_graph(n, 0.2, seed=seed)
  for u, v in g.edges:
    g[u][v]["weight"] = float(rng.uniform(0.1, 3.0))
  src, dst = np.array(list(g.edges)).T
  w = np.array([g[u][v]["weight"] for u, v in g.edges])
  for num in (2, 3, 7):
    lab = rng.integers(0, num, n)
    communities = [set(np.flatnonzero(lab == c).tolist())
                   for c in np.unique(lab)]
    want = nx.algorithms.community.modularity(g, communities, weight="weight")
    got = modularity(lab, src, dst, w, num_clusters=n)
    np.testing.assert_allclose(float(got), want, rtol=1e-5, atol=1e-6)
    # Unit weights count edges.
    want_u = nx.algorithms.community.modularity(g, communities, weight=None)
    np.testing.assert_allclose(float(modularity(lab, src, dst)), want_u,
                               rtol=1e-5, atol=1e-6)


# --- Ellipse fit and features -------------------------------------------------


def random_ellipses(rng, b):
  center = rng.uniform(-50, 300, (b, 2))
  a = rng.uniform(5, 80, b)
  ratio = rng.uniform(0.2, 0.9, b)  # eccentricity 0.44 .. 0.98
  angle = rng.uniform(-np.pi / 2, np.pi / 2, b)
  return center, np.stack([a, a * ratio], -1), angle, np.sqrt(1 - ratio**2)


def test_ellipse_fit_recovers_known_ellipses():
  rng = np.random.default_rng(0)
  b, p = 64, 10
  center, axes, angle, ecc = random_ellipses(rng, b)
  start = rng.uniform(0, 2 * np.pi, b)
  span = rng.uniform(0.6 * np.pi, 2 * np.pi, b)  # arcs, not only full rings
  t = start[:, None] + span[:, None] * np.linspace(0, 1, p)[None]
  pts = ellipse.ellipse_points(jnp.asarray(center[:, None]),
                               jnp.asarray(axes[:, None]),
                               jnp.asarray(angle[:, None]), jnp.asarray(t))
  fit = jax.jit(ellipse.fit_ellipse)(pts)
  np.testing.assert_allclose(fit.eccentricity, ecc, atol=1e-3)
  np.testing.assert_allclose(fit.center, center, atol=1e-2)
  np.testing.assert_allclose(fit.axes, axes, rtol=1e-3)
  d_angle = (np.asarray(fit.angle) - angle + np.pi / 2) % np.pi - np.pi / 2
  np.testing.assert_allclose(d_angle, 0.0, atol=1e-3)
  # Small noise (0.2% of the semi-major axis) on the full ring.
  t = np.linspace(0, 2 * np.pi, 24, endpoint=False)[None].repeat(b, 0)
  pts = ellipse.ellipse_points(jnp.asarray(center[:, None]),
                               jnp.asarray(axes[:, None]),
                               jnp.asarray(angle[:, None]), jnp.asarray(t))
  pts = pts + rng.normal(0, 0.002, pts.shape) * axes[:, :1, None]
  np.testing.assert_allclose(ellipse.fit_ellipse(pts).eccentricity, ecc,
                             atol=2e-2)


def test_ellipse_fit_five_points_and_degenerate():
  """Five points fit exactly; collinear points give e = 1, not NaN."""
  center, axes, angle = np.array([3.0, -2.0]), np.array([4.0, 1.5]), 0.3
  t = jnp.array([0.1, 1.0, 2.5, 3.3, 5.0])
  pts = ellipse.ellipse_points(jnp.asarray(center), jnp.asarray(axes),
                               jnp.asarray(angle), t)
  fit = ellipse.fit_ellipse(pts)
  np.testing.assert_allclose(fit.eccentricity, np.sqrt(1 - (1.5 / 4) ** 2),
                             atol=1e-3)
  line = jnp.stack([jnp.linspace(0, 10, 8), 2 * jnp.linspace(0, 10, 8)], -1)
  e = ellipse.fit_ellipse(line).eccentricity
  assert np.isfinite(e) and e > 0.999


def synthetic_face(rng):
  """68 landmarks whose regions lie exactly on known ellipses.

  Returns (landmarks (68, 2), expected F1-F12 (12,)). Brow and nose arcs
  end on the major axis with the middle point on the minor one, so eq. 5's
  mirrored point lands on the same ellipse.
  """
  lm = np.zeros((68, 2))
  want = {}

  def put(idx, center, a, b, angle, ts):
    lm[list(idx)] = np.asarray(ellipse.ellipse_points(
        jnp.asarray(center, jnp.float32), jnp.asarray([a, b], jnp.float32),
        jnp.float32(angle), jnp.asarray(ts, jnp.float32)))
    return math.sqrt(1 - (b / a) ** 2)

  arc_up = -np.linspace(0, np.pi, 5)  # y down: upper half of the ellipse
  arc_down = np.linspace(np.pi, 2 * np.pi, 5) - np.pi
  ring = lambda m: np.linspace(0, 2 * np.pi, m, endpoint=False)
  want[0] = put(features.LEFT_BROW, (-40, -40), 22, 8, 0.05, arc_up)
  want[1] = put(features.RIGHT_BROW, (40, -42), 21, 6, -0.04, arc_up)
  want[2] = put(features.LEFT_EYE, (-38, -20), 14, 5, 0.02, ring(6))
  want[3] = put(features.RIGHT_EYE, (38, -20), 13, 6, -0.03, ring(6))
  want[6] = put(features.LOWER_NOSE, (0, 18), 12, 4, 0.0, arc_down)
  want[8] = put(features.OUTER_MOUTH, (0, 45), 30, 12, 0.01, ring(12))
  want[9] = put(features.INNER_MOUTH, (0, 45), 22, 5, 0.0, ring(8))
  iod = np.linalg.norm(lm[36] - lm[45])
  want[4], want[5] = 2 * 5 / iod, 2 * 6 / iod
  want[10], want[11] = 2 * 12 / iod, 2 * 5 / iod
  want[7] = np.mean(np.linalg.norm(lm[31:36] - lm[49:54], axis=1)) / iod
  for i in range(17):  # jaw
    lm[i] = (-60 + 7.5 * i, 30)
  lm[27:31] = [(0, -30), (0, -20), (0, -10), (0, 0)]  # nose bridge
  return lm, np.array([want[i] for i in range(12)])


def test_face_features_on_constructed_face():
  rng = np.random.default_rng(0)
  lm, want = synthetic_face(rng)
  got = features.face_features(jnp.asarray(lm[None], jnp.float32))[0]
  np.testing.assert_allclose(got, want, atol=2e-3)
  # Similarity-invariant: rotate, scale, translate the face.
  c, s = math.cos(0.4), math.sin(0.4)
  moved = 2.5 * lm @ np.array([[c, s], [-s, c]]) + np.array([300.0, -20.0])
  got2 = features.face_features(jnp.asarray(moved[None], jnp.float32))[0]
  np.testing.assert_allclose(got2, got, atol=2e-3)
  # Difference to the neutral face; None gives F(expr) alone.
  neutral = lm.copy()
  neutral[list(features.INNER_MOUTH)] = lm[list(features.INNER_MOUTH)] * [
      1.0, 0.5] + [0.0, 22.5]
  both = np.stack([lm, neutral]).astype(np.float32)
  diff = features.geometric_features(both[:1], both[1:])
  f = features.face_features(both)
  np.testing.assert_allclose(diff[0], f[0] - f[1], atol=1e-6)
  assert abs(float(diff[0, 11])) > 0.01 and abs(float(diff[0, 0])) < 1e-6
  np.testing.assert_allclose(features.geometric_features(both[:1]), f[:1])


# --- Gain ratio ---------------------------------------------------------------


def test_gain_ratio_hand_computation():
  y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
  bins = np.array([
      [0, 0, 0, 1, 1, 1, 1, 1],  # one pure bin, one 1:4 bin
      [0, 1, 0, 1, 0, 1, 0, 1],  # independent of y
      [0, 0, 1, 1, 2, 2, 3, 3],  # four pure bins
      [0, 0, 0, 0, 0, 0, 0, 0],  # constant
  ]).T
  h = lambda *p: -sum(q * math.log2(q) for q in p if q > 0)
  h_d = h(4 / 8, 4 / 8)  # eq. 14: 1 bit
  # Feature 0: D_0 = {0,0,0} (H = 0), D_1 = {0,1,1,1,1}.
  gain0 = h_d - (3 / 8 * 0.0 + 5 / 8 * h(1 / 5, 4 / 5))
  gr0 = gain0 / h(3 / 8, 5 / 8)
  # Feature 1: both bins {0,0,1,1}: no gain. Feature 2: pure bins, H_A = 2.
  gr2 = (h_d - 0.0) / h(1 / 4, 1 / 4, 1 / 4, 1 / 4)
  want = np.array([gr0, 0.0, gr2, 0.0])  # ~[0.5750, 0, 0.5, 0]
  got = gain_ratio.gain_ratio_from_bins(bins, y, num_bins=4, num_classes=2)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
  # Normalised weights and the 0.125 selection, through feature_weights
  # (bins are already 0..3 integers: 4 equal-width bins reproduce them).
  fw = gain_ratio.feature_weights(bins.astype(np.float32) * [1, 1, 1, 0]
                                  + [0, 0, 0, 5.0], y, num_classes=2,
                                  num_bins=4, discretisation="equal_width")
  np.testing.assert_allclose(np.asarray(fw.gain_ratio)[[1, 3]], 0.0,
                             atol=1e-7)
  np.testing.assert_allclose(fw.weights, want / want.sum(), rtol=1e-4,
                             atol=1e-6)
  np.testing.assert_array_equal(fw.keep, [True, False, True, False])


def test_discretisation():
  x = np.arange(10, dtype=np.float32)[:, None]
  np.testing.assert_array_equal(
      gain_ratio.discretise(x, 5, "equal_width")[:, 0],
      [0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
  perm = np.random.default_rng(0).permutation(20).astype(np.float32)
  b = np.asarray(gain_ratio.discretise(perm[:, None], 4, "equal_frequency"))
  np.testing.assert_array_equal(np.bincount(b[:, 0]), [5, 5, 5, 5])
  np.testing.assert_array_equal(b[:, 0], (perm // 5).astype(int))


# --- k-NN graph ---------------------------------------------------------------


def test_knn_graph_matches_brute_force():
  rng = np.random.default_rng(0)
  n, k = 57, 6
  x = rng.normal(size=(n, 3)).astype(np.float32)
  d = np.linalg.norm(x[:, None].astype(np.float64) - x[None], axis=-1)
  np.fill_diagonal(d, np.inf)
  ref_idx = np.argsort(d, axis=1)[:, :k]
  idx, dist = graph_lib.knn(x, k, block_size=n)
  np.testing.assert_array_equal(idx, ref_idx)
  np.testing.assert_allclose(dist, np.take_along_axis(d, ref_idx, 1),
                             rtol=1e-5)
  idx_b, dist_b = graph_lib.knn(x, k, block_size=8)  # 8 blocks, last padded
  np.testing.assert_array_equal(idx_b, idx)
  np.testing.assert_allclose(dist_b, dist, rtol=1e-6)

  g = graph_lib.mutual_knn_graph(x, k)
  is_nbr = np.zeros((n, n), bool)
  is_nbr[np.arange(n)[:, None], ref_idx] = True
  mutual = is_nbr & is_nbr.T
  sigma = np.median(np.take_along_axis(d, ref_idx, 1))
  a_ref = np.where(mutual, np.exp(-d**2 / (2 * sigma**2)), 0.0)
  np.testing.assert_allclose(float(g.sigma), sigma, rtol=1e-5)
  np.testing.assert_array_equal(g.mutual, np.take_along_axis(mutual, idx, 1))
  a = np.asarray(graph_lib.dense_adjacency(g))
  np.testing.assert_allclose(a, a_ref, rtol=1e-4, atol=1e-6)
  src, dst, _ = graph_lib.edge_list(g)
  assert len(src) == mutual.sum() // 2 and np.all(src < dst)

  # Sparse Laplacian products against the dense L = D^+ (D - A).
  deg = a_ref.sum(1)
  dinv = np.where(deg > 0, 1 / np.where(deg > 0, deg, 1), 0)
  lap = dinv[:, None] * (np.diag(deg) - a_ref)
  v = rng.normal(size=(n, 4)).astype(np.float32)
  np.testing.assert_allclose(graph_lib.laplacian_matmul(g, v), lap @ v,
                             rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(graph_lib.laplacian_t_matmul(g, v), lap.T @ v,
                             rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(graph_lib.sym_laplacian_matmul(g, v),
                             0.5 * (lap + lap.T) @ v, rtol=1e-4, atol=1e-4)
  # Tiny tiles force the chunked gather (one neighbour column at a time).
  np.testing.assert_allclose(
      graph_lib.neighbour_sum(g.indices, g.weights, v, tile_bytes=1),
      a_ref @ v, rtol=1e-4, atol=1e-4)
  np.testing.assert_array_equal(graph_lib.mutual_mask(idx, tile_bytes=1),
                                g.mutual)


# --- Weakly supervised spectral embedding -------------------------------------


def ring_graph():
  """Three separate rings of evenly spaced points: each ring's 4-NN graph is
  regular, so S's null space is the 3 ring indicators and the next
  eigenvalue is ~0.15 (a clear gap)."""
  rng = np.random.default_rng(0)
  pts = []
  for c, m in enumerate([12, 14, 16]):
    t = 2 * np.pi * np.arange(m) / m
    ring = m / (2 * np.pi) * np.stack([np.cos(t), np.sin(t)], 1) + 100 * c
    pts.append(ring + rng.normal(0, 0.01, ring.shape))
  return graph_lib.mutual_knn_graph(np.concatenate(pts).astype(np.float32), 4)


def test_rp_forest_single_leaf_is_exact():
  """N under one leaf: the forest's one leaf is the brute-force search."""
  rng = np.random.default_rng(1)
  x = rng.normal(size=(120, 5)).astype(np.float32)
  ref_idx, ref_dist = graph_lib.knn(x, 7, method="exact")
  idx, dist = graph_lib.knn(x, 7, method="rp_forest", num_trees=2)
  np.testing.assert_array_equal(idx, ref_idx)
  np.testing.assert_allclose(dist, ref_dist, rtol=1e-5)


def test_rp_forest_recall_and_valid_lists(monkeypatch):
  """Many leaves: high recall of the exact lists; every listed distance is
  the true distance, lists are sorted, never self, never repeated."""
  rng = np.random.default_rng(2)
  n, d, k = 6000, 12, 20
  centres = rng.normal(0, 3, (6, d))
  x = (centres[rng.integers(0, 6, n)]
       + rng.normal(size=(n, d))).astype(np.float32)
  ref_idx, _ = graph_lib.knn(x, k, method="exact")
  idx, dist = (np.asarray(a) for a in graph_lib.rp_forest_knn(
      x, k, num_trees=4, leaf_size=128))
  recall = np.mean([len(np.intersect1d(a, b)) / k
                    for a, b in zip(np.asarray(ref_idx), idx)])
  assert recall > 0.9, recall
  true = np.linalg.norm(x[:, None, :] - x[idx], axis=-1)
  np.testing.assert_allclose(dist, true, rtol=1e-4, atol=1e-5)
  assert np.all(np.diff(dist, axis=1) >= 0)
  assert not np.any(idx == np.arange(n)[:, None])
  assert all(len(np.unique(r)) == k for r in idx)
  # 'auto' switches to the forest (accelerators) or the k-means cells (the
  # CPU) above the exact limits.
  monkeypatch.setattr(graph_lib, "EXACT_MAX_POINTS", n - 1)
  monkeypatch.setattr(graph_lib, "CPU_EXACT_MAX_POINTS", n - 1)
  chosen = graph_lib.search_method("auto", n)
  assert chosen == ("cells" if jax.default_backend() == "cpu"
                    else "rp_forest")
  auto_idx, _ = graph_lib.knn(x, k, num_trees=4)
  want_idx, _ = graph_lib.knn(x, k, method=chosen, num_trees=4)
  np.testing.assert_array_equal(auto_idx, want_idx)
  with pytest.raises(ValueError, match="not one of"):
    graph_lib.knn(x, k, method="kd_tree")


def test_wse_lambda_zero_is_bottom_eigenspace():
  g = ring_graph()
  lap = np.asarray(graph_lib.dense_laplacian(g), np.float64)
  ev, u = scipy.linalg.eigh(0.5 * (lap + lap.T))
  assert ev[3] - ev[2] > 0.1  # the eigengap the comparison relies on
  res = wse.wse_embedding(g, np.zeros(g.num_nodes, int), 1, dim=3, lam=0.0,
                          tol=1e-7)
  w = np.asarray(res.embedding, np.float64)
  np.testing.assert_allclose(w.T @ w, np.eye(3), atol=1e-5)
  assert np.max(scipy.linalg.subspace_angles(w, u[:, :3])) < 5e-3
  assert np.linalg.norm(w @ w.T - u[:, :3] @ u[:, :3].T, 2) < 5e-3
  assert bool(res.converged)


def test_wse_objective_decreases_monotonically():
  x, y = blobs(4, 40, 6, 6.0, seed=0)
  noisy, _ = labels_lib.flip_labels(y, 0.3, 4, 0)
  g = graph_lib.mutual_knn_graph(x, 10)
  res = wse.wse_embedding(g, noisy, 4, dim=5, lam=1.0)
  hist = np.asarray(res.objective)[: int(res.num_iters) + 1]
  assert np.all(np.isnan(np.asarray(res.objective)[int(res.num_iters) + 1:]))
  assert len(hist) > 5 and np.all(np.isfinite(hist))
  assert np.all(np.diff(hist) <= 0.0)
  assert hist[-1] < 0.5 * hist[0]
  groups = wse.make_groups(noisy, 4)
  np.testing.assert_allclose(
      hist[-1], wse.wse_objective(g, res.embedding, groups, 1.0), rtol=1e-5)
  w = np.asarray(res.embedding)
  np.testing.assert_allclose(w.T @ w, np.eye(5), atol=1e-5)

  # Stochastic variant (4 random edge partitions per epoch) ends near it.
  res_s = wse.wse_embedding_stochastic(g, noisy, 4, dim=5, lam=1.0,
                                       num_partitions=4, max_epochs=150)
  hist_s = np.asarray(res_s.objective)[: int(res_s.num_iters) + 1]
  assert hist_s[-1] < hist[-1] + 0.05 * (hist[0] - hist[-1])


def test_wse_objective_and_prox_closed_forms():
  """Penalty = sum_g n/(|G| n_g) ||W_g - mean||^2; prox = dense inverse."""
  rng = np.random.default_rng(0)
  lab = np.array([0, 0, 1, 1, 1, 2, -1, 2, 2, 2])  # 9 labelled, 3 groups
  v = rng.normal(size=(10, 3)).astype(np.float32)
  groups = wse.make_groups(lab, 4)  # group 3 stays empty
  lam, eta = 0.7, 0.3
  want_pen, want_prox = 0.0, v.astype(np.float64).copy()
  for gid in range(3):
    rows = np.flatnonzero(lab == gid)
    ng = len(rows)
    coef = 9 / (3 * ng)
    cg = np.eye(ng) - np.ones((ng, ng)) / ng
    want_pen += coef * np.trace(v[rows].T @ cg @ v[rows])
    want_prox[rows] = np.linalg.solve(
        np.eye(ng) + 2 * lam * eta * coef * cg, v[rows])
  np.testing.assert_allclose(wse.group_penalty(v, groups), want_pen,
                             rtol=1e-5)
  np.testing.assert_allclose(wse.group_prox(v, groups, lam, eta), want_prox,
                             rtol=1e-5, atol=1e-6)


# --- Rank-order distance ------------------------------------------------------


def test_rank_order_hand_example():
  """k = 2 lists given by hand; ranks outside a list count as k + 1 = 3.

  f0 = [0,1,2]  f1 = [1,0,2]  f2 = [2,1,3]  f3 = [3,4,2]  f4 = [4,3,0]
  (0,2): D(0,2) = O2(0)+O2(1)+O2(2) = 3+1+0 = 4; O2(0) = 3, so D(2,0) sums
         f2's whole list: O0(2)+O0(1)+O0(3) = 2+1+3 = 6; D^R = 10/min(2,3).
  (1,2): D(1,2) = O2(1)+O2(0)+O2(2) = 1+3+0 = 4; D(2,1) = O1(2)+O1(1) = 2;
         D^R = 6/min(2,1) = 6.
  (2,3): D(2,3) = O3(2)+O3(1)+O3(3) = 2+3+0 = 5; D(3,2) = O2(3)+O2(4)+O2(2)
         = 2+3+0 = 5; D^R = 10/2 = 5.
  (4,0): D(4,0) = O0(4)+O0(3)+O0(0) = 3+3+0 = 6; O0(4) = 3: D(0,4) =
         O4(0)+O4(1)+O4(2) = 2+3+3 = 8; D^R = 14/min(2,3) = 7.
  (0,1), (3,4): mutual first neighbours, D = 1 + 0 both ways, D^R = 2.
  """
  lists = np.array([[1, 2], [0, 2], [1, 3], [4, 2], [3, 0]])
  ro = rank_order.rank_order_from_knn(lists)
  np.testing.assert_array_equal(ro.forward,
                                [[1, 4], [1, 4], [2, 5], [1, 5], [1, 6]])
  np.testing.assert_array_equal(ro.backward,
                                [[1, 6], [1, 2], [4, 5], [1, 5], [1, 8]])
  np.testing.assert_allclose(ro.distance,
                             [[2, 5], [2, 6], [6, 5], [2, 5], [2, 7]])
  # Blocked the same; undirected edges once each, symmetric values.
  ro_b = rank_order.rank_order_from_knn(lists, tile_bytes=1)
  np.testing.assert_array_equal(ro_b.distance, ro.distance)
  src, dst, dist = rank_order.undirected_edges(ro)
  got = {(int(s), int(t)): float(d) for s, t, d in zip(src, dst, dist)}
  assert got == {(0, 1): 2, (0, 2): 5, (1, 2): 6, (2, 3): 5, (3, 4): 2,
                 (0, 4): 7}


# --- Agglomerative clustering -------------------------------------------------


@pytest.mark.parametrize("method", ["average", "single"])
@pytest.mark.parametrize("rounds", ["heap", "rnn"])
def test_agglomerative_matches_scipy(method, rounds):
  """Complete graph of Euclidean distances = SciPy's linkage, both by the
  greedy heap alone and by RNN rounds down to the last pair."""
  x, _ = blobs(3, 12, 4, 3.0, seed=1)
  n = len(x)
  iu, ju = np.triu_indices(n, 1)
  d = np.linalg.norm(x[iu].astype(np.float64) - x[ju], axis=1)
  z = agglomerative.linkage(n, iu, ju, d, method,
                            rnn_rounds=rounds == "rnn", min_round_merges=1)
  z_ref = sch.linkage(pdist(x.astype(np.float64)), method)
  np.testing.assert_allclose(z[:, 2], z_ref[:, 2], rtol=1e-9)
  np.testing.assert_array_equal(z[:, 3], z_ref[:, 3])
  counts = [1, 2, 3, 5, 8, 13, n]
  cuts = agglomerative.cut(z, counts)
  ref = [sch.cut_tree(z_ref, n_clusters=c)[:, 0] for c in counts]
  for c, a, b in zip(counts, cuts, ref):
    assert len(np.unique(a)) == c
    assert same_partition(a, b), c


@pytest.mark.parametrize("method", ["average", "single"])
def test_agglomerative_rnn_rounds_equal_heap_on_sparse_graph(method):
  """A 2000-point 8-NN graph: vectorised RNN rounds (all, or the default
  hybrid) give the greedy heap's merge sequence exactly."""
  rng = np.random.default_rng(0)
  n, k = 2000, 8
  x = rng.normal(size=(n, 3)).astype(np.float32)
  idx, dist = graph_lib.knn(x, k)
  src = np.repeat(np.arange(n), k)
  dst = np.asarray(idx).ravel()
  d = np.asarray(dist, np.float64).ravel() + rng.uniform(0, 1e-3, n * k)
  ref = agglomerative.linkage(n, src, dst, d, method, rnn_rounds=False)
  for m in (1, None):
    z = agglomerative.linkage(n, src, dst, d, method, min_round_merges=m)
    np.testing.assert_array_equal(z[:, [0, 1, 3]], ref[:, [0, 1, 3]])
    np.testing.assert_allclose(z[:, 2], ref[:, 2], rtol=1e-12)


def test_agglomerative_sparse_components():
  """Two components: distances merge inside them, then one inf merge."""
  src = np.array([0, 1, 3, 4])
  dst = np.array([1, 2, 4, 5])
  d = np.array([1.0, 2.0, 1.5, 0.5])
  z = agglomerative.linkage(6, src, dst, d, "average")
  np.testing.assert_array_equal(z[:, 2], [0.5, 1.0, 1.5, 2.0, np.inf])
  np.testing.assert_array_equal(agglomerative.cut(z, 2), [0, 0, 0, 1, 1, 1])
  # Average over observed edges only: 0-1-2 chain, then 2 joins {0,1}.
  z = agglomerative.linkage(3, [0, 1, 0], [1, 2, 2], [1.0, 3.0, 5.0])
  np.testing.assert_array_equal(z[:, 2], [1.0, 4.0])


# --- Labels, PCA, pipeline ----------------------------------------------------


def test_flip_labels_and_binary_task():
  y = np.repeat(np.arange(5), 20)
  noisy, flipped = labels_lib.flip_labels(y, 0.3, 5, jax.random.PRNGKey(3))
  noisy, flipped = np.asarray(noisy), np.asarray(flipped)
  assert flipped.sum() == 30
  assert np.all(noisy[flipped] != y[flipped])
  assert np.all(noisy[~flipped] == y[~flipped]) and noisy.max() < 5
  names = ["happiness", "surprise", "disgust", "fear", "sadness", "anger",
           "neutral", "contempt"]
  canon = [classes_lib.canonical_index(s) for s in names]
  b, mask = labels_lib.to_binary(canon)
  np.testing.assert_array_equal(b, [1, 1, 0, 0, 0, -1, -1, -1])
  np.testing.assert_array_equal(mask, b >= 0)


def test_pca_embedding():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(30, 8)) @ np.diag([5, 3, 2, 1, 0.5, 0.1, 0.1, 0.1])
  got = np.asarray(pca.pca_embedding(x, 3), np.float64)
  xc = x - x.mean(0)
  u, s, _ = np.linalg.svd(xc, full_matrices=False)
  ref = u[:, :3] * s[:3]
  np.testing.assert_allclose(np.abs(got), np.abs(ref), rtol=1e-3, atol=1e-3)


def test_neighbour_vote_accuracy_hand_example():
  """Points 0 1 2 (class 0), 10 11 25 (class 1), k = 2. 0, 1, 2 vote their
  two class-0 neighbours; 10 sees 11 (1) and 2 (0): a tie, smallest class
  0, wrong; 11 sees 10 (1) and 2 (0): wrong too; 25 sees 11 and 10: right.
  4 of 6."""
  x = np.array([[0.], [1.], [2.], [10.], [11.], [25.]], np.float32)
  y = np.array([0, 0, 0, 1, 1, 1])
  assert reannotate.neighbour_vote_accuracy(x, y, k=2) == pytest.approx(4 / 6)
  assert reannotate.neighbour_vote_accuracy(x, y, k=1) == pytest.approx(1.0)


def test_majority_vote_ties_keep_own_label():
  clusters = np.array([0, 0, 0, 1, 1, 1, 1])
  noisy = np.array([2, 2, 1, 0, 1, 0, 1])
  got = reannotate.majority_vote(clusters, noisy, 2, 3)
  np.testing.assert_array_equal(got, [2, 2, 2, 0, 1, 0, 1])


def test_reannotation_end_to_end_on_blobs():
  """Four well-separated blobs, 30% flipped labels -> accuracy >> 70%."""
  x, y = blobs(4, 150, 12, 4.0, seed=1)
  noisy, _ = labels_lib.flip_labels(y, 0.3, 4, 0)
  noisy = np.asarray(noisy)
  assert abs((noisy == y).mean() - 0.7) < 1e-9
  res = reannotate.weakly_supervised_reannotation(
      x, noisy, num_classes=4, knn_k=30, lam=2.0**-4)
  assert (res.labels == y).mean() > 0.9
  assert res.num_clusters in res.candidates
  assert res.modularity[list(res.candidates).index(res.num_clusters)] == \
      res.modularity.max()
  assert res.embedding.shape == (600, 10)
  assert np.all(np.diff(res.objective) <= 0)
  # The release's setup (lambda = 1, W^T W = I from a random start, the
  # plurality vote, 2^4..2^9 clusters) leans on the noisy labels much more
  # (0.76 to 0.87 over seeds 0-3), still above the 70% it started from.
  res1 = reannotate.weakly_supervised_reannotation(
      x, noisy, num_classes=4, knn_k=30, lam=1.0, form="matlab",
      init="random", vote="plurality", min_cluster_size=1, rank_order_k=20,
      candidates=reannotate.DEFAULT_CANDIDATES)
  assert (res1.labels == y).mean() > 0.73


def generalized_bottom(g, dim):
  """Bottom generalised eigenvectors of (D - A) u = mu D u (scipy)."""
  a = np.asarray(graph_lib.dense_symmetric_adjacency(g), np.float64)
  deg = a.sum(1)
  return scipy.linalg.eigh(np.diag(deg) - a, np.diag(deg))


def test_normalized_wse_lambda_zero_is_generalized_eigenspace():
  """Issue 21: at lambda = 0 the normalized embedding spans the bottom
  generalised eigenvectors of (D - A, D) and is D-orthogonal; the
  release's form lands elsewhere on the same graph."""
  x, _ = blobs(3, 40, 5, 1.5, seed=3)  # touching blobs: one component
  g = graph_lib.mutual_knn_graph(x, 8, connect_isolated=True)
  ev, u = generalized_bottom(g, 3)
  assert ev[0] < 1e-6 and ev[3] - ev[2] > 0.05 and ev[2] > 1e-3
  res = wse.wse_embedding(g, np.zeros(g.num_nodes, int), 1, dim=3, lam=0.0,
                          tol=1e-9, max_iter=5000, form="normalized")
  w = np.asarray(res.embedding, np.float64)
  deg = np.asarray(graph_lib.symmetric_degree(g), np.float64)
  dn = deg / deg.mean()
  np.testing.assert_allclose(w.T @ (dn[:, None] * w), np.eye(3), atol=1e-4)
  angle = np.max(scipy.linalg.subspace_angles(w, u[:, :3]))
  assert angle < 1e-2
  # Objective = sum of the generalised eigenvalues (scaled by mean degree).
  np.testing.assert_allclose(np.asarray(res.objective)[int(res.num_iters)],
                             ev[:3].sum(), rtol=0, atol=2e-3)
  matlab = wse.wse_embedding(g, np.zeros(g.num_nodes, int), 1, dim=3,
                             lam=0.0, tol=1e-9, max_iter=5000)
  far = np.max(scipy.linalg.subspace_angles(
      np.asarray(matlab.embedding, np.float64), u[:, :3]))
  assert far > 10 * angle


def test_normalized_prox_matches_dense_solve():
  """normalized_group_prox = (I + a M C_g M)^-1 V per group (dense)."""
  rng = np.random.default_rng(1)
  n, d = 12, 3
  labels = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2, -1, 0, 1])
  scale = rng.uniform(0.5, 2.0, n).astype(np.float32)
  v = rng.normal(size=(n, d)).astype(np.float32)
  groups = wse.make_groups(labels, 3)
  lam, eta = 0.7, 0.3
  got = np.asarray(wse.normalized_group_prox(v, groups, lam, eta,
                                             jnp.asarray(scale)))
  want = v.astype(np.float64).copy()
  coef = np.asarray(groups.coef)
  for gi in range(3):
    rows = np.flatnonzero(labels == gi)
    m = np.diag(1.0 / scale[rows])
    c = np.eye(len(rows)) - 1.0 / len(rows)
    a = 2 * lam * eta * coef[gi]
    want[rows] = np.linalg.solve(np.eye(len(rows)) + a * m @ c @ m, v[rows])
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # Unit scale reduces to the release's prox.
  np.testing.assert_allclose(
      np.asarray(wse.normalized_group_prox(v, groups, lam, eta,
                                           jnp.ones(n))),
      np.asarray(wse.group_prox(v, groups, lam, eta)), rtol=1e-5, atol=1e-6)


def test_symmetric_adjacency_matmul_and_connect_isolated():
  x, _ = blobs(2, 20, 3, 4.0, seed=0)
  x = np.concatenate([x, np.full((1, 3), 50.0, np.float32)])  # an outlier
  g0 = graph_lib.mutual_knn_graph(x, 5)
  g = graph_lib.mutual_knn_graph(x, 5, connect_isolated=True)
  assert float(graph_lib.degree(g0)[-1]) == 0.0
  assert float(graph_lib.symmetric_degree(g)[-1]) > 0.0
  a = np.asarray(graph_lib.dense_adjacency(g), np.float64)
  assert not np.allclose(a, a.T)
  v = np.random.default_rng(0).normal(size=(x.shape[0], 4))
  np.testing.assert_allclose(
      np.asarray(graph_lib.symmetric_adjacency_matmul(
          g.indices, g.weights, v.astype(np.float32), tile_bytes=4096)),
      0.5 * (a + a.T) @ v, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(np.asarray(graph_lib.symmetric_degree(g)),
                             0.5 * (a + a.T).sum(1), rtol=1e-5)


# --- Issue 21: settings that follow N, the vote, displacement features -------


def test_scaled_settings_follow_n_and_class_size():
  """docs: knn_k = clip(round(m / 6), 10, 30), rank_order_k =
  clip(round(m / 8), 5, 20), candidates 2^ceil(log2 C) .. N / 8, with m =
  N / C the mean class size."""
  s = reannotate.scaled_settings(504, 7)  # the synthetic test fold, m = 72
  assert (s["knn_k"], s["rank_order_k"]) == (12, 9)
  assert s["candidates"] == (8, 16, 32)  # 504 / 8 = 63
  s = reannotate.scaled_settings(1000, 6)  # m = 166.7
  assert (s["knn_k"], s["rank_order_k"]) == (28, 20)
  assert s["candidates"] == (8, 16, 32, 64)  # 1000 / 8 = 125
  s = reannotate.scaled_settings(10**6, 6)
  assert (s["knn_k"], s["rank_order_k"]) == (30, 20)
  assert s["candidates"] == tuple(2 ** j for j in range(3, 17))  # <= 125000
  s = reannotate.scaled_settings(40, 2)  # tiny: floors
  assert (s["knn_k"], s["rank_order_k"]) == (10, 5)
  assert s["candidates"] == (2, 4)
  # resolve fills only the fields left at 0 / empty.
  cfg = reannotate.resolve(reannotate.WSCConfig(knn_k=7), 1000, 6)
  assert (cfg.knn_k, cfg.rank_order_k) == (7, 20)
  assert cfg.candidates == (8, 16, 32, 64)


def test_absolute_vote_keeps_own_labels_in_mixed_or_small_clusters():
  # Cluster 0: 5 of 9 say 1 (> half): all become 1. Cluster 1: 4 of 9 say
  # 2 (a plurality, not a majority): everyone keeps their own label.
  # Cluster 2: 2 of 3 say 0 but the cluster is under min_cluster_size.
  clusters = np.array([0] * 9 + [1] * 9 + [2] * 3)
  noisy = np.array([1, 1, 1, 1, 1, 0, 0, 2, 2,
                    2, 2, 2, 2, 0, 0, 1, 1, 0,
                    0, 0, 1])
  got = np.asarray(reannotate.majority_vote(clusters, noisy, 3, 3,
                                            "absolute", min_cluster_size=4))
  np.testing.assert_array_equal(got[:9], 1)
  np.testing.assert_array_equal(got[9:], noisy[9:])
  plural = np.asarray(reannotate.majority_vote(clusters, noisy, 3, 3))
  np.testing.assert_array_equal(plural[9:18], 2)
  np.testing.assert_array_equal(plural[18:], 0)
  with pytest.raises(ValueError, match="vote='x'"):
    reannotate.majority_vote(clusters, noisy, 3, 3, "x")


def test_label_init_and_balance_blocks():
  w = np.asarray(reannotate.label_init(np.array([2, 0, -1, 1]), 3, 5,
                                       jax.random.PRNGKey(0)))
  np.testing.assert_array_equal(w[:, :3], [[0, 0, 1], [1, 0, 0], [0, 0, 0],
                                           [0, 1, 0]])
  assert w.shape == (4, 5) and np.all(np.abs(w[:, 3:]) < 1.0)
  rng = np.random.default_rng(0)
  a, b = rng.normal(0, 5, (50, 2)), rng.normal(0, 0.1, (50, 30))
  x = np.asarray(reannotate.balance_blocks([a, b]))
  assert x.shape == (50, 32)
  np.testing.assert_allclose(x[:, :2].var(0).sum(), 1.0, rtol=1e-5)
  np.testing.assert_allclose(x[:, 2:].var(0).sum(), 1.0, rtol=1e-5)


def test_landmark_displacements_by_hand_and_pose_free():
  rng = np.random.default_rng(0)
  neutral = rng.uniform(0.2, 0.8, (1, 68, 2)).astype(np.float32)
  neutral[0, 36], neutral[0, 45] = (0.3, 0.4), (0.7, 0.4)  # iod 0.4
  expr = neutral.copy()
  expr[0, 62, 1] += 0.04  # inner lip down by 0.1 inter-ocular
  d = np.asarray(features.landmark_displacements(expr, neutral))
  assert d.shape == (1, 136)
  moved = d.reshape(68, 2)
  # Only point 62 moves (the stable points did not): +0.1 iod along y.
  np.testing.assert_allclose(moved[62], [0.0, 0.1], atol=1e-5)
  np.testing.assert_allclose(np.delete(moved, 62, 0), 0.0, atol=1e-5)
  # The expression face rotated by 20 degrees, scaled and shifted on the
  # image: the same displacements (each face is put in its own frame).
  t = np.deg2rad(20.0)
  rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
  posed = (1.7 * expr @ rot.T + np.array([0.1, -0.2])).astype(np.float32)
  np.testing.assert_allclose(
      np.asarray(features.landmark_displacements(posed, neutral)), d,
      atol=1e-5)


def test_linear_classifier_fits_separable_and_ignores_unlabelled():
  from fer_jax.clustering import linear
  x, y = blobs(3, 40, 4, 6.0, seed=2)
  train = np.arange(len(y)) % 2 == 0
  labels = np.where(np.arange(len(y)) % 10 == 0, -1, y)  # some unlabelled
  pred = np.asarray(linear.fit_predict(x[train], labels[train], x[~train],
                                       3))
  assert (pred == y[~train]).mean() == 1.0
  # Wrong labels on a whole class move its decision: the fit listens.
  bad = np.where(y == 2, 1, y)
  pred_bad = np.asarray(linear.fit_predict(x[train], bad[train], x[~train],
                                           3))
  assert not np.any(pred_bad == 2)


def test_bridged_linkage_joins_components_by_centroid_distance():
  """Four components of a graph (no edges between them): in index order
  the cut at 2 clusters would lump A, C and B together; bridged, A joins B
  and C joins D, the nearer centroids, and every in-graph merge comes
  first."""
  groups = [np.arange(0, 3), np.arange(3, 6), np.arange(6, 9),
            np.arange(9, 12)]  # A, C, B, D
  centre = {0: 0.0, 1: 100.0, 2: 1.0, 3: 101.0}
  emb = np.zeros((12, 2), np.float32)
  src, dst, dist = [], [], []
  for gi, g in enumerate(groups):
    emb[g, 0] = centre[gi] + 0.01 * np.arange(3)
    for a, b in ((0, 1), (1, 2)):
      src.append(g[a]); dst.append(g[b]); dist.append(1.0 + 0.1 * a)
  src, dst, dist = map(np.asarray, (src, dst, dist))
  z = agglomerative.linkage(12, src, dst, dist)
  plain = agglomerative.cut(z, 2)
  assert plain[0] == plain[3] == plain[6]  # index order: A, C, B lumped
  zb = reannotate.bridged_linkage(emb, z, src, dst, dist,
                                  reannotate.WSCConfig())
  assert np.all(np.isfinite(zb[:, 2]))
  assert np.all(np.diff(zb[:, 2]) >= 0)
  np.testing.assert_array_equal(agglomerative.cut(zb, 4),
                                agglomerative.cut(z, 4))
  two = agglomerative.cut(zb, 2)
  assert two[0] == two[6] and two[3] == two[9] and two[0] != two[3]


# --- Issue 21: cuts that count only clusters of min_size points, tree vote ----


def outlier_tree():
  """7 points: A = {0, 1, 2} and B = {3, 4, 5} merge first, then A with B,
  and the outlier 6 joins last (what average linkage does with outliers)."""
  return np.array([[0, 1, 1.0, 2], [3, 4, 1.0, 2], [2, 7, 2.0, 3],
                   [5, 8, 2.0, 3], [9, 10, 5.0, 6], [6, 11, 9.0, 7]])


def test_big_cluster_merges_on_hand_made_tree():
  z = outlier_tree()
  # Clusters of >= 3 points after m merges: 0, 0, 0, 1, 2, 1, 1 (m = 0..6).
  np.testing.assert_array_equal(
      agglomerative.big_cluster_merges(z, [1, 2, 3], 3), [6, 4, -1])
  # min_size 1 counts every cluster: c clusters after N - c merges.
  np.testing.assert_array_equal(
      agglomerative.big_cluster_merges(z, [1, 2, 7], 1), [6, 5, 0])
  # The count cut at 2 is {A, B} and the outlier; the min-size cut keeps A
  # and B apart (the outlier is a third, small cluster).
  np.testing.assert_array_equal(agglomerative.cut(z, 2),
                                [0, 0, 0, 0, 0, 0, 1])
  np.testing.assert_array_equal(agglomerative.cut(z, 7 - 4),
                                [0, 0, 0, 1, 1, 1, 2])


def test_attach_small_clusters_and_min_size_selection():
  z = outlier_tree()
  # Graph: A and B internally linked; 6 has two edges into B, one into A.
  src = np.array([0, 0, 1, 3, 3, 4, 6, 6, 6, 2])
  dst = np.array([1, 2, 2, 4, 5, 5, 5, 4, 0, 3])
  got = reannotate.attach_small_clusters([0, 0, 0, 1, 1, 1, 2], src, dst, 3)
  np.testing.assert_array_equal(got, [0, 0, 0, 1, 1, 1, 1])
  # A chain of outliers (6 -> 7 -> B) reaches in over rounds; 8 has no
  # edge at all and stays on its own.
  got = reannotate.attach_small_clusters(
      [0, 0, 0, 1, 1, 1, 2, 3, 4], [0, 1, 3, 4, 6, 7], [1, 2, 4, 5, 7, 5], 3)
  np.testing.assert_array_equal(got, [0, 0, 0, 1, 1, 1, 1, 1, 2])
  cands, q, cuts = reannotate.select_num_clusters(z, src, dst, [1, 2, 3],
                                                  min_size=3)
  np.testing.assert_array_equal(cands, [1, 2])  # no cut has 3 big clusters
  np.testing.assert_array_equal(cuts[1], [0, 0, 0, 1, 1, 1, 1])
  # Newman's Q of that partition by hand: 10 edges; inside A 0-1, 0-2, 1-2;
  # inside B (with 6) 3-4, 3-5, 4-5, 6-5, 6-4; 6-0 and 2-3 cross. Degree
  # sums: A 3 + 2 + 3 = 8, B 3 + 3 + 3 + 3 = 12.
  want = (3 + 5) / 10 - (8 / 20) ** 2 - (12 / 20) ** 2  # 0.28
  np.testing.assert_allclose(q[1], want, rtol=1e-6)
  # The count cut at 2 lumps A and B with the outlier apart: lower Q.
  _, q_count, cuts_count = reannotate.select_num_clusters(z, src, dst, [2])
  np.testing.assert_array_equal(cuts_count[0], [0, 0, 0, 0, 0, 0, 1])
  assert q[1] > q_count[0]


def test_tree_vote_descends_to_decided_sub_clusters():
  noisy = np.array([0, 0, 0, 0, 1, 1, 1, 1, 0, 1, 2, 2, 2, 1, 1, 0])
  coarse = np.array([0] * 10 + [1] * 4 + [2] * 2)
  fine = np.array([0] * 5 + [1] * 5 + [2, 2, 3, 3] + [4] * 2)
  # Coarse cluster 0 is 5 / 5: undecided; its halves are 4 / 5 for 0 and
  # 4 / 5 for 1. Coarse cluster 1 (3 of 4 say 2) is decided already; its
  # halves are too small. Cluster 2 (2 points) is never decided.
  got = np.asarray(reannotate.tree_vote([coarse, fine], noisy, 3,
                                        min_cluster_size=3))
  np.testing.assert_array_equal(got, [0] * 5 + [1] * 5 + [2] * 4 + [1, 0])
  # One cut: the absolute vote, which returns cluster 0's noisy labels.
  absolute = np.asarray(reannotate.majority_vote(coarse, noisy, 3, 3,
                                                 "absolute", 3))
  np.testing.assert_array_equal(absolute, noisy[:10].tolist() + [2] * 4
                                + [1, 0])
  np.testing.assert_array_equal(
      np.asarray(reannotate.vote_at(np.stack([coarse, fine]), 0, noisy, 3,
                                    "tree", 3)), got)
  np.testing.assert_array_equal(
      np.asarray(reannotate.vote_at(np.stack([coarse, fine]), 0, noisy, 3,
                                    "absolute", 3)), absolute)
  with pytest.raises(ValueError, match="cut='x'"):
    reannotate.cut_min_size(reannotate.WSCConfig(cut="x"))


# --- Issue 21: the CPU's k-NN search (k-means cells) ---------------------------


def test_cell_knn_is_exact_with_one_cell_and_recalls_with_many():
  """One cell (N < 2 cell_size) compares every pair: the exact search's
  lists and distances. Fifty cells of 100 points, 8 probed: recall > 0.9
  of the exact 30-NN on 5,000 points of 6 classes, lists valid."""
  x, _ = blobs(5, 100, 12, 3.0, seed=4)
  want_i, want_d = map(np.asarray, graph_lib.knn(x, 30, method="exact"))
  got_i, got_d = map(np.asarray, graph_lib.cell_knn(x, 30))
  np.testing.assert_allclose(got_d, want_d, rtol=1e-5, atol=1e-5)
  # Lists equal up to the order of equal distances (float ties).
  same = [set(a) == set(b) for a, b in zip(got_i, want_i)]
  assert np.mean(same) > 0.99
  np.testing.assert_array_equal(np.asarray(graph_lib.knn(
      x, 30, method="cells"))[0], got_i)
  x, _ = blobs(6, 834, 12, 3.0, seed=5)
  want_i = np.asarray(graph_lib.knn(x, 30, method="exact")[0])
  got_i, got_d = map(np.asarray, graph_lib.cell_knn(x, 30, cell_size=100))
  recall = np.mean([len(set(a) & set(b)) / 30
                    for a, b in zip(got_i, want_i)])
  assert 0.9 < recall < 1.0  # approximate, and not by much
  n = len(x)
  assert np.all(got_i != np.arange(n)[:, None])
  assert all(len(set(r)) == 30 for r in got_i.tolist())
  assert np.all(np.diff(got_d, axis=1) >= 0)
  np.testing.assert_allclose(
      got_d, np.linalg.norm(x[:, None, :] - x[got_i], axis=-1), rtol=1e-5,
      atol=1e-5)


def test_search_method_follows_backend_and_n():
  """docs: the CPU searches exactly up to 2e4 points, by k-means cells
  above; an accelerator exactly up to 1e5, by the forest above."""
  sm = graph_lib.search_method
  assert sm("auto", 20_000, "cpu") == "exact"
  assert sm("auto", 20_001, "cpu") == "cells"
  assert sm("auto", 100_000, "gpu") == "exact"
  assert sm("auto", 100_001, "gpu") == "rp_forest"
  assert sm("rp_forest", 10, "cpu") == "rp_forest"
  with pytest.raises(ValueError, match="not one of"):
    sm("kd", 10)
