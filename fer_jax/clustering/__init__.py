"""cGAN features + scalable weakly supervised clustering (docs/methods.md
section 5).

Geometric features F1-F12 of 68-point landmarks (features.py, eq. 4-13, on
the batched ellipse fit of ellipse.py) and the raw landmark displacements
beside them (features.py), gain-ratio feature weights
(gain_ratio.py, eq. 14-18), the mutual k-NN graph and its Laplacian
(graph.py), the weakly supervised spectral embedding (wse.py, eq. 19), the
rank-order graph (rank_order.py), agglomerative clustering
(agglomerative.py), modularity (modularity.py, eq. 20) and the re-annotation
pipeline (reannotate.py); labels.py and pca.py hold the experiment knobs,
linear.py the classifier the re-annotated labels train.
"""

from fer_jax.clustering.agglomerative import cut, linkage
from fer_jax.clustering.ellipse import Ellipse, fit_ellipse
from fer_jax.clustering.features import (FEATURE_KINDS, FEATURE_NAMES,
                                         face_features, geometric_features,
                                         landmark_displacements)
from fer_jax.clustering.gain_ratio import (FeatureWeights,
                                           apply_feature_weights,
                                           feature_weights)
from fer_jax.clustering.graph import KnnGraph, knn, mutual_knn_graph
from fer_jax.clustering.labels import flip_labels, to_binary
from fer_jax.clustering.modularity import modularity as newman_modularity
from fer_jax.clustering.pca import pca_embedding
from fer_jax.clustering.rank_order import (RankOrderGraph,
                                           rank_order_from_knn,
                                           rank_order_graph)
from fer_jax.clustering.reannotate import (ReannotationResult, WSCConfig,
                                           majority_vote,
                                           weakly_supervised_reannotation)
from fer_jax.clustering.wse import (FORMS, WSEResult, wse_embedding,
                                    wse_embedding_stochastic)

__all__ = [
    "FEATURE_KINDS", "FEATURE_NAMES", "FORMS", "Ellipse", "FeatureWeights", "KnnGraph",
    "RankOrderGraph", "ReannotationResult", "WSCConfig", "WSEResult",
    "apply_feature_weights", "cut", "face_features", "feature_weights",
    "fit_ellipse", "flip_labels", "geometric_features", "knn", "landmark_displacements", "linkage",
    "majority_vote", "mutual_knn_graph", "newman_modularity",
    "pca_embedding", "rank_order_from_knn", "rank_order_graph", "to_binary",
    "weakly_supervised_reannotation", "wse_embedding",
    "wse_embedding_stochastic",
]
