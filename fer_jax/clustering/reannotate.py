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


@dataclasses.dataclass(frozen=True)
class WSCConfig:
  """Every knob of the clustering pipeline (defaults: docs/methods.md
  section 5)."""
  knn_k: int = 100  # mutual k-NN graph of the features (Zhao et al.'s k)
  # Neighbour search of both graphs: graph.KNN_METHODS ('auto': exact up to
  # graph.EXACT_MAX_POINTS points, a random-projection forest above).
  knn_method: str = "auto"
  knn_trees: int = 8
  embed_dim: int = 10
  lam: float = 1.0
  eta: float = 0.1
  backtrack: float = 0.9
  tol: float = 1e-5
  max_iter: int = 1000
  # > 0: the stochastic solver on this many random edge partitions.
  stochastic_partitions: int = 0
  stochastic_epochs: int = 200
  stochastic_eta_decay: float = 0.1
  rank_order_k: int = 20  # lists for the rank-order distance
  linkage: str = "average"
  candidates: tuple[int, ...] = DEFAULT_CANDIDATES
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



def majority_vote(clusters, noisy_labels, num_clusters: int,
                  num_classes: int):
  """Each point's cluster's majority noisy label (N,) (ties: module doc).

  Labels < 0 (unlabelled) do not vote and receive the cluster's majority.
  """
  clusters = jnp.asarray(clusters, jnp.int32)
  labels = jnp.asarray(noisy_labels, jnp.int32)
  valid = (labels >= 0) & (labels < num_classes)
  votes = jnp.zeros((num_clusters, num_classes), jnp.float32).at[
      clusters, jnp.where(valid, labels, 0)].add(valid.astype(jnp.float32))
  own = jax.nn.one_hot(jnp.where(valid, labels, -1), num_classes)
  # +0.5 for the own label breaks ties in its favour, never a strict order.
  return jnp.argmax(votes[clusters] + 0.5 * own, axis=-1).astype(jnp.int32)


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


def select_num_clusters(z, src, dst, candidates: Sequence[int],
                        weights=None):
  """Cut the tree at every candidate count and score each cut's modularity
  on the graph (src, dst, weights). Returns (candidates, Q (C,), cuts (C,
  N)); the best is the first argmax of Q."""
  n = z.shape[0] + 1
  cands = valid_candidates(candidates, n)
  cuts = agglomerative.cut(z, cands)
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


def embed(x, noisy_labels, num_classes: int, cfg: WSCConfig):
  """Mutual k-NN graph of x and its WSE embedding -> (graph, WSEResult)."""
  n = x.shape[0]
  g = graph_lib.mutual_knn_graph(x, k=min(cfg.knn_k, n - 1),
                                 tile_bytes=cfg.tile_bytes,
                                 method=cfg.knn_method,
                                 num_trees=cfg.knn_trees)
  key = jax.random.PRNGKey(cfg.seed)
  dim = min(cfg.embed_dim, n)
  if cfg.stochastic_partitions > 0:
    res = wse.wse_embedding_stochastic(
        g, noisy_labels, num_classes, dim=dim, lam=cfg.lam, eta=cfg.eta,
        num_partitions=cfg.stochastic_partitions,
        eta_decay=cfg.stochastic_eta_decay, tol=cfg.tol,
        max_epochs=cfg.stochastic_epochs, key=key)
  else:
    res = wse.wse_embedding(g, noisy_labels, num_classes, dim=dim,
                            lam=cfg.lam, eta=cfg.eta, backtrack=cfg.backtrack,
                            tol=cfg.tol, max_iter=cfg.max_iter, key=key)
  return g, res


def cluster_embedding(embedding, cfg: WSCConfig):
  """Rank-order graph of the embedding and its merge sequence -> (src, dst,
  distance, Z)."""
  n = embedding.shape[0]
  ro = rank_order.rank_order_graph(embedding, k=min(cfg.rank_order_k, n - 1),
                                   tile_bytes=cfg.tile_bytes,
                                   method=cfg.knn_method,
                                   num_trees=cfg.knn_trees)
  src, dst, dist = rank_order.undirected_edges(ro)
  z = agglomerative.linkage(n, src, dst, dist, cfg.linkage)
  return src, dst, dist, z


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
  _, res = embed(x, noisy, num_classes, cfg)
  src, dst, _, z = cluster_embedding(res.embedding, cfg)
  cands, q, cuts = select_num_clusters(z, src, dst, cfg.candidates)
  best = int(np.argmax(q))
  c = int(cands[best])
  new = majority_vote(cuts[best], noisy, c, num_classes)
  hist = np.asarray(res.objective)
  return ReannotationResult(
      labels=np.asarray(new), num_clusters=c, candidates=cands,
      modularity=q, clusters=cuts[best], embedding=res.embedding,
      objective=hist[: int(res.num_iters) + 1], linkage=z)
