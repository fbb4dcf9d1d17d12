"""Re-annotation: embedding -> rank-order graph -> tree -> best cut -> vote.

cGAN+WSC section 5: the WSE embedding W (wse.py) is turned into a k-NN graph
with rank-order distances (rank_order.py), clustered hierarchically
(agglomerative.py), the cluster count with the largest Newman modularity
(eq. 20, modularity.py) among the candidates (the paper tries 2^4..2^9,
table 3) is kept, and inside each cluster the noisy labels vote ("minority
follows majority"): every member gets the cluster's majority label.

Choices the paper leaves open, made here:
- modularity is measured on the graph that is clustered, the rank-order
  k-NN graph, with unit weights ("m is the total number of connected edges
  in the original neighbouring matrix");
- a tied vote keeps the member's own noisy label when it is among the tied
  winners, else the smallest tied class index (ties do not flip labels);
- equal modularity picks the smaller cluster count.

Settings that follow N (issue 21; :func:`scaled_settings`, used wherever a
WSCConfig leaves ``knn_k`` / ``rank_order_k`` at 0 or ``candidates`` empty,
the default). Fixed settings tuned for a few hundred faces break both ways:
k = 100 on 504 faces in classes of 72 links every face to other classes, and
2^4..2^9 clusters on 1e6 points leave each cluster thousands of points of
an embedding that has not separated. With m = N / C the mean class size:

- knn_k = clip(round(m / 6), 10, 30): a neighbourhood well inside a class,
  at least 10 for a connected graph, at most 30 (memory O(N k));
- rank_order_k = clip(round(m / 8), 5, 20) (Zhu et al.'s 20 once classes
  hold 160 points);
- candidates: the powers of two from 2^ceil(log2 C) up to N /
  ``min_cluster_size`` (8): a cluster of fewer points casts too few votes to
  out-vote its own flipped labels.

The vote (``vote``): 'absolute' (default) relabels a cluster's members only
when one label holds more than half of its votes and the cluster has at least
``min_cluster_size`` members; otherwise every member keeps its own noisy
label. A cluster that mixes classes then returns the noisy labels instead of
imposing one class on all of them. 'plurality' is the paper's "minority
follows majority" for every cluster.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fer_jax.clustering import agglomerative, gain_ratio, rank_order, wse
from fer_jax.clustering import graph as graph_lib
from fer_jax.clustering.modularity import modularity as newman_modularity

DEFAULT_CANDIDATES = (16, 32, 64, 128, 256, 512)  # 2^4 .. 2^9, table 3
MIN_CLUSTER_SIZE = 8
VOTES = ("absolute", "plurality", "tree")
CUTS = ("count", "min_size")


@dataclasses.dataclass(frozen=True)
class WSCConfig:
  """Every knob of the clustering pipeline (defaults: docs/methods.md
  section 5)."""
  # Mutual k-NN graph of the features (Zhao et al.'s k = 100); 0: scaled
  # with N (:func:`scaled_settings`).
  knn_k: int = 0
  # Neighbour search of both graphs: graph.KNN_METHODS ('auto':
  # graph.search_method, by backend and N).
  knn_method: str = "auto"
  knn_trees: int = 8
  embed_dim: int = 10
  # The weak labels' weight. The paper's 1 holds the normalized embedding
  # on the noisy labels themselves (the vote then returns them: 0.72 at
  # N = 1e3 on benchmarks/wsc_scaling.py's data, 0.998 at 1/16).
  lam: float = 2.0**-4
  # wse.FORMS: 'normalized' (W^T D W = I, the spectral embedding at lambda =
  # 0) or 'matlab' (W^T W = I with (L + L^T) / 2, the release's form).
  form: str = "normalized"
  eta: float = 0.1
  backtrack: float = 0.9
  tol: float = 1e-5
  max_iter: int = 1000
  # WSE's start: 'labels' (the noisy labels' one-hot columns, then random
  # ones; :func:`label_init`) or 'random' (an orthonormal random W).
  init: str = "labels"
  # > 0: the stochastic solver on this many random edge partitions.
  stochastic_partitions: int = 0
  stochastic_epochs: int = 200
  stochastic_eta_decay: float = 0.1
  rank_order_k: int = 0  # lists for the rank-order distance; 0: scaled
  linkage: str = "average"
  # Join the rank-order graph's components by centroid distance before
  # the cut (:func:`bridged_linkage`) instead of in index order.
  bridge_components: bool = True
  # Cluster the embedding's rows scaled to unit length (:func:`row_normalize`).
  row_normalize: bool = False
  candidates: tuple[int, ...] = ()  # cluster counts tried; (): scaled
  # CUTS: 'count' (every cluster counts, the paper) or 'min_size' (only
  # clusters of >= min_cluster_size points; :func:`select_num_clusters`).
  cut: str = "count"
  vote: str = "absolute"  # VOTES (module docstring)
  min_cluster_size: int = MIN_CLUSTER_SIZE
  standardize: bool = True  # z-score feature columns before weighting
  seed: int = 0
  tile_bytes: int = graph_lib.DEFAULT_TILE_BYTES


class ReannotationResult(NamedTuple):
  labels: np.ndarray  # (N,) re-annotated labels
  num_clusters: int  # the chosen count
  candidates: np.ndarray  # (C,) cluster counts tried
  modularity: np.ndarray  # (C,) Q of each
  clusters: np.ndarray  # (N,) cluster of each point at the chosen count
  embedding: jax.Array  # (N, embed_dim) WSE embedding
  objective: np.ndarray  # WSE objective per iteration (epoch), trimmed
  linkage: np.ndarray  # (N - 1, 4) merge sequence



def scaled_settings(n: int, num_classes: int,
                    min_cluster_size: int = MIN_CLUSTER_SIZE) -> dict:
  """knn_k, rank_order_k and candidates for N points in ``num_classes``
  classes (the rules in the module docstring)."""
  n, c = int(n), max(int(num_classes), 1)
  m = n / c
  knn_k = int(np.clip(round(m / 6), 10, 30))
  rank_k = int(np.clip(round(m / 8), 5, 20))
  lo = int(np.ceil(np.log2(max(c, 2))))
  hi = int(np.floor(np.log2(max(n // max(min_cluster_size, 1), 2))))
  cands = tuple(2 ** j for j in range(lo, max(hi, lo) + 1))
  return dict(knn_k=min(knn_k, n - 1), rank_order_k=min(rank_k, n - 1),
              candidates=cands)


def cut_min_size(cfg: WSCConfig) -> int:
  """The ``min_size`` of :func:`select_num_clusters` for cfg.cut."""
  if cfg.cut not in CUTS:
    raise ValueError(f"cut={cfg.cut!r}; choose one of {CUTS}")
  return cfg.min_cluster_size if cfg.cut == "min_size" else 1


def resolve(cfg: WSCConfig, n: int, num_classes: int) -> WSCConfig:
  """cfg with its scaled fields (0 / empty) filled in for N points."""
  scaled = scaled_settings(n, num_classes, cfg.min_cluster_size)
  return dataclasses.replace(
      cfg, knn_k=cfg.knn_k or scaled["knn_k"],
      rank_order_k=cfg.rank_order_k or scaled["rank_order_k"],
      candidates=tuple(cfg.candidates) or scaled["candidates"])


def _cluster_vote(clusters, noisy_labels, num_clusters: int,
                  num_classes: int, min_cluster_size: int):
  """(winner (N,), decided (N,), valid (N,), labels (N,)): each point's
  cluster's plurality label (ties keep the own label) and whether that
  label holds more than half the cluster's votes in a cluster of at least
  ``min_cluster_size`` members."""
  clusters = jnp.asarray(clusters, jnp.int32)
  labels = jnp.asarray(noisy_labels, jnp.int32)
  valid = (labels >= 0) & (labels < num_classes)
  votes = jnp.zeros((num_clusters, num_classes), jnp.float32).at[
      clusters, jnp.where(valid, labels, 0)].add(valid.astype(jnp.float32))
  own = jax.nn.one_hot(jnp.where(valid, labels, -1), num_classes)
  # +0.5 for the own label breaks ties in its favour, never a strict order.
  winner = jnp.argmax(votes[clusters] + 0.5 * own, axis=-1).astype(jnp.int32)
  size = jnp.zeros((num_clusters,), jnp.float32).at[clusters].add(1.0)
  total = jnp.sum(votes, axis=1)
  decided = (2.0 * jnp.max(votes, axis=1) > total) & (
      size >= min_cluster_size)
  return winner, decided[clusters], valid, labels


def majority_vote(clusters, noisy_labels, num_clusters: int,
                  num_classes: int, vote: str = "plurality",
                  min_cluster_size: int = 1):
  """Each point's cluster's majority noisy label (N,) (ties: module doc).

  Labels < 0 (unlabelled) do not vote and receive the cluster's majority.
  vote='absolute': only a label with more than half of its cluster's votes,
  in a cluster of at least ``min_cluster_size`` members, replaces the
  members' own labels (module docstring). 'tree' needs the finer cuts too
  (:func:`tree_vote`); on one cut it is 'absolute'.
  """
  if vote not in VOTES:
    raise ValueError(f"vote={vote!r}; choose one of {VOTES}")
  winner, decided, valid, labels = _cluster_vote(
      clusters, noisy_labels, num_clusters, num_classes, min_cluster_size)
  if vote == "plurality":
    return winner
  return jnp.where(valid & ~decided, labels, winner)


def tree_vote(cuts, noisy_labels, num_classes: int,
              min_cluster_size: int = MIN_CLUSTER_SIZE):
  """The absolute vote down the tree: (N,) labels from cuts (C, N), the
  chosen cut first, then finer ones (more clusters).

  A cluster of the chosen cut that mixes classes has no label with more
  than half its votes, and the absolute vote gives its members their noisy
  labels back; its sub-clusters in the finer cuts are purer. So each point
  takes the label of its cluster in the first cut where that cluster is
  decided (absolute majority, >= ``min_cluster_size`` members); a point
  never decided keeps its noisy label (unlabelled: the last cut's
  plurality). At N = 1e4 of benchmarks/wsc_scaling.py the chosen 16-cluster
  cut re-annotated 0.879 with the absolute vote and 0.975 down the tree.
  """
  cuts = np.asarray(cuts)
  labels = jnp.asarray(noisy_labels, jnp.int32)
  out, done = labels, jnp.zeros(labels.shape, bool)
  for c in cuts:
    winner, decided, valid, _ = _cluster_vote(
        c, noisy_labels, int(c.max()) + 1, num_classes, min_cluster_size)
    out = jnp.where(decided & ~done, winner, out)
    done = done | decided
    last = winner
  return jnp.where(done | valid, out, last)


def vote_at(cuts, best: int, noisy_labels, num_classes: int,
            vote: str, min_cluster_size: int):
  """Re-annotated labels (N,) with cut ``best`` of cuts (C, N) (ascending
  cluster counts) chosen; 'tree' also reads the finer cuts after it."""
  if vote == "tree":
    return tree_vote(cuts[best:], noisy_labels, num_classes,
                     min_cluster_size)
  return majority_vote(cuts[best], noisy_labels, int(cuts[best].max()) + 1,
                       num_classes, vote, min_cluster_size)


def neighbour_vote_accuracy(features, labels, k: int = 5) -> float:
  """Leave-one-out accuracy of a k-NN vote with the given labels on
  standardised (N, F) features: how separable the classes are in the
  feature space. With the true labels it bounds what any clustering of
  those features can re-annotate (a diagnostic, never an input of it)."""
  labels = np.asarray(labels, np.int64)
  x = gain_ratio.standardise(features)
  k = int(min(k, x.shape[0] - 1))
  idx, _ = graph_lib.knn(x, k, method="exact")
  votes = np.zeros((len(labels), int(labels.max()) + 1))
  np.add.at(votes, (np.repeat(np.arange(len(labels)), k),
                    labels[np.asarray(idx)].ravel()), 1.0)
  return float(np.mean(np.argmax(votes, axis=1) == labels))


def valid_candidates(candidates: Sequence[int], n: int) -> np.ndarray:
  """Distinct counts in [1, N], ascending; N itself when none fits."""
  c = sorted({int(x) for x in candidates if 1 <= int(x) <= n})
  return np.asarray(c if c else [n], np.int64)


def attach_small_clusters(clusters, src, dst, min_size: int,
                          rounds: int = 10):
  """Members of clusters under ``min_size`` points join the big cluster
  they share the most graph edges (src, dst) with; repeated ``rounds``
  times, so a chain of outliers reaches in from its end. Ties: the smaller
  cluster id; a point with no path to a big cluster stays. Returns
  labels 0..K-1 (K the clusters left), in order of smallest member."""
  lab = np.asarray(clusters, np.int64).copy()
  a = np.concatenate([np.asarray(src, np.int64), np.asarray(dst, np.int64)])
  b = np.concatenate([np.asarray(dst, np.int64), np.asarray(src, np.int64)])
  big = np.bincount(lab) >= min_size
  k = len(big)
  for _ in range(rounds):
    small = ~big[lab]
    use = small[a] & big[lab[b]]
    if not np.any(use):
      break
    pair, count = np.unique(a[use] * k + lab[b[use]], return_counts=True)
    point, target = pair // k, pair % k
    order = np.lexsort((target, -count, point))  # most edges, then lower id
    point, target = point[order], target[order]
    first = np.r_[True, point[1:] != point[:-1]]
    lab[point[first]] = target[first]
  _, first, inv = np.unique(lab, return_index=True, return_inverse=True)
  return np.argsort(np.argsort(first))[inv]


def select_num_clusters(z, src, dst, candidates: Sequence[int],
                        weights=None, min_size: int = 1):
  """Cut the tree at every candidate count and score each cut's modularity
  on the graph (src, dst, weights). Returns (candidates, Q (C,), cuts (C,
  N)); the best is the first argmax of Q.

  ``min_size`` > 1 (``cut='min_size'``): a candidate c counts only
  clusters of at least ``min_size`` points (agglomerative.big_cluster_merges:
  the coarsest cut with c of them), and the smaller ones then join the big
  cluster they share most edges with (:func:`attach_small_clusters`) before
  modularity and the vote; counts no cut reaches are dropped. Outliers,
  which average linkage merges last, then neither pass for clusters nor
  hide a cut's real ones (benchmarks/RESULTS.md, 2026-12-05).
  """
  n = z.shape[0] + 1
  cands = valid_candidates(candidates, n)
  if min_size <= 1:
    cuts = agglomerative.cut(z, cands)
  else:
    merges = agglomerative.big_cluster_merges(z, cands, min_size)
    ok = merges >= 0
    if not np.any(ok):  # fewer points than one big cluster: the top cut
      cands, merges = cands[:1], np.asarray([n - int(cands[0])])
    else:
      cands, merges = cands[ok], merges[ok]
    cuts = np.stack([attach_small_clusters(
        agglomerative.cut(z, n - int(m)), src, dst, min_size)
                     for m in merges])
  q = np.asarray([float(newman_modularity(
      c, src, dst, weights, num_clusters=n)) for c in cuts])
  return cands, q, cuts


def prepare_features(features, weights=None, standardize: bool = True):
  """(N, F) -> standardised (optional) and weighted float32 features.

  ``weights``: None, an (F,) array, or gain_ratio.FeatureWeights (dropped
  features get weight 0).
  """
  x = (gain_ratio.standardise(features) if standardize
       else jnp.asarray(features, jnp.float32))
  if weights is None:
    return x
  if isinstance(weights, gain_ratio.FeatureWeights):
    weights = jnp.where(weights.keep, weights.weights, 0.0)
  return x * jnp.asarray(weights, jnp.float32)


INITS = ("labels", "random")


def label_init(noisy_labels, num_classes: int, dim: int, key):
  """A WSE start (N, dim): the noisy labels' indicator columns (the first
  ``dim`` of them), then random columns.

  Eq. 19's minimiser puts each well-separated class on an indicator-like
  direction; the noisy labels are 1 - rate right, and their flips are
  high-frequency on the graph, which the graph term's gradient damps first,
  so from here the solver needs tens of iterations at any N where a random
  start needs a number that grows with the graph's diameter (issue 21: 50
  iterations from a random start left N = 1e6 at 0.40).
  """
  labels = jnp.asarray(noisy_labels, jnp.int32)
  onehot = jax.nn.one_hot(jnp.where(labels >= 0, labels, -1), num_classes)
  rest = jax.random.normal(key, (labels.shape[0], max(dim - num_classes, 0)))
  return jnp.concatenate([onehot, 0.1 * rest], axis=1)[:, :dim]


def balance_blocks(blocks):
  """Concatenate (N, F_b) feature blocks, each divided by the square root
  of its total variance (sum of column variances), so each block adds the
  same expected squared distance whatever its width. One block: as is."""
  blocks = [jnp.asarray(b, jnp.float32) for b in blocks]
  if len(blocks) == 1:
    return blocks[0]
  return jnp.concatenate(
      [b / jnp.sqrt(jnp.maximum(jnp.sum(jnp.var(b, axis=0)), 1e-12))
       for b in blocks], axis=1)


def embed(x, noisy_labels, num_classes: int, cfg: WSCConfig):
  """Mutual k-NN graph of x and its WSE embedding -> (graph, WSEResult).
  Scaled fields of cfg (0 / empty) are resolved for x's N."""
  n = x.shape[0]
  cfg = resolve(cfg, n, num_classes)
  g = graph_lib.mutual_knn_graph(x, k=min(cfg.knn_k, n - 1),
                                 tile_bytes=cfg.tile_bytes,
                                 method=cfg.knn_method,
                                 num_trees=cfg.knn_trees,
                                 connect_isolated=(cfg.form == "normalized"
                                                   and not cfg.stochastic_partitions))
  key = jax.random.PRNGKey(cfg.seed)
  dim = min(cfg.embed_dim, n)
  if cfg.init not in INITS:
    raise ValueError(f"WSE init={cfg.init!r}; choose one of {INITS}")
  init = (label_init(noisy_labels, num_classes, dim,
                     jax.random.fold_in(key, 1))
          if cfg.init == "labels" else None)
  if cfg.stochastic_partitions > 0:
    res = wse.wse_embedding_stochastic(
        g, noisy_labels, num_classes, dim=dim, lam=cfg.lam, eta=cfg.eta,
        num_partitions=cfg.stochastic_partitions,
        eta_decay=cfg.stochastic_eta_decay, tol=cfg.tol,
        max_epochs=cfg.stochastic_epochs, key=key, init=init)
  else:
    res = wse.wse_embedding(g, noisy_labels, num_classes, dim=dim,
                            lam=cfg.lam, eta=cfg.eta, backtrack=cfg.backtrack,
                            tol=cfg.tol, max_iter=cfg.max_iter, key=key,
                            form=cfg.form, init=init)
  return g, res


def row_normalize(embedding, eps: float = 1e-12):
  """Rows of the embedding to unit length (Ng, Jordan and Weiss 2001): a
  class's points share a direction in the spectral embedding but not a
  length, which follows their degree and where in the class they sit."""
  e = jnp.asarray(embedding, jnp.float32)
  return e / jnp.maximum(jnp.linalg.norm(e, axis=1, keepdims=True), eps)


def cluster_embedding(embedding, cfg: WSCConfig, num_classes: int = 2):
  """Rank-order graph of the embedding and its merge sequence -> (src, dst,
  distance, Z)."""
  n = embedding.shape[0]
  cfg = resolve(cfg, n, num_classes)
  if cfg.row_normalize:
    embedding = row_normalize(embedding)
  ro = rank_order.rank_order_graph(embedding, k=min(cfg.rank_order_k, n - 1),
                                   tile_bytes=cfg.tile_bytes,
                                   method=cfg.knn_method,
                                   num_trees=cfg.knn_trees)
  src, dst, dist = rank_order.undirected_edges(ro)
  z = agglomerative.linkage(n, src, dst, dist, cfg.linkage)
  if cfg.bridge_components:
    z = bridged_linkage(embedding, z, src, dst, dist, cfg)
  return src, dst, dist, z


def bridged_linkage(embedding, z, src, dst, dist, cfg: WSCConfig):
  """Re-run the linkage with the rank-order graph's components joined.

  Rank-order lists close on themselves where the embedding packs a class
  tightly, so the graph falls into many components; the linkage then joins
  them at distance inf in index order, and a cut below the component count
  lumps unrelated components into one cluster (N = 1e4 of
  benchmarks/wsc_scaling.py: modularity 0 at 8 clusters). Here every
  component's centroid in the embedding is linked to its nearest
  (up to 10) other centroids by a bridge edge between the two components'
  first members, of length H + centroid distance, H above every rank-order
  distance: all rank-order merges still come first, then the components
  merge by (average-linked) centroid distance.
  """
  n = z.shape[0] + 1
  finite = int(np.sum(np.isfinite(z[:, 2])))
  comp = agglomerative.cut(z, n - finite)
  num_comp = int(comp.max()) + 1
  if num_comp <= 1:
    return z
  emb = np.asarray(embedding, np.float64)
  counts = np.bincount(comp, minlength=num_comp).astype(np.float64)
  centroids = np.zeros((num_comp, emb.shape[1]))
  np.add.at(centroids, comp, emb)
  centroids /= counts[:, None]
  first = np.full(num_comp, n, np.int64)
  np.minimum.at(first, comp, np.arange(n))
  kc = min(10, num_comp - 1)
  idx, cdist = graph_lib.knn(centroids.astype(np.float32), kc,
                             method=cfg.knn_method, num_trees=cfg.knn_trees)
  rows = np.repeat(np.arange(num_comp), kc)
  top = float(np.max(dist)) + 1.0 if len(dist) else 1.0
  bsrc, bdst = first[rows], first[np.asarray(idx).ravel()]
  bdist = top + np.asarray(cdist, np.float64).ravel()
  return agglomerative.linkage(
      n, np.concatenate([src, bsrc]), np.concatenate([dst, bdst]),
      np.concatenate([np.asarray(dist, np.float64), bdist]), cfg.linkage)


def weakly_supervised_reannotation(features, noisy_labels, weights=None,
                                   num_classes: int | None = None,
                                   config: WSCConfig | None = None,
                                   **overrides) -> ReannotationResult:
  """The whole re-annotation of section 5 on (N, F) features.

  noisy_labels (N,) int in [0, num_classes) (-1: unlabelled); weights: see
  :func:`prepare_features`. ``overrides`` replace fields of ``config``
  (default WSCConfig()).
  """
  cfg = dataclasses.replace(config or WSCConfig(), **overrides)
  noisy = np.asarray(noisy_labels, np.int64)
  if num_classes is None:
    num_classes = int(noisy.max()) + 1
  x = prepare_features(features, weights, cfg.standardize)
  n = x.shape[0]
  if n < 3:
    raise ValueError(f"re-annotation needs at least 3 points, got {n}")
  cfg = resolve(cfg, n, num_classes)
  _, res = embed(x, noisy, num_classes, cfg)
  src, dst, _, z = cluster_embedding(res.embedding, cfg, num_classes)
  cands, q, cuts = select_num_clusters(z, src, dst, cfg.candidates,
                                      min_size=cut_min_size(cfg))
  best = int(np.argmax(q))
  c = int(cands[best])
  new = vote_at(cuts, best, noisy, num_classes, cfg.vote,
                cfg.min_cluster_size)
  hist = np.asarray(res.objective)
  return ReannotationResult(
      labels=np.asarray(new), num_clusters=c, candidates=cands,
      modularity=q, clusters=cuts[best], embedding=res.embedding,
      objective=hist[: int(res.num_iters) + 1], linkage=z)
