"""Newman modularity of a partition of a weighted sparse graph (eq. 20).

  Q = sum_c [ L_c / m - (D_c / 2m)^2 ]

with m the total edge weight, L_c the weight of the edges inside cluster c
and D_c the summed (weighted) degree of its nodes (Newman PNAS 2006; what
``networkx.algorithms.community.modularity`` computes at resolution 1). The
paper prints Q = 1/(2m) sum_c [2 l_c - d_c^2 / m] and calls d_c the number
of nodes; that is neither Newman's form (it halves the null-model term) nor
in his [-1/2, 1] range in general, so Newman's definition, which the paper
cites [30], is used. Unit weights count edges, as the paper does.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


@functools.partial(jax.jit, static_argnames=("num_clusters",))
def modularity(labels, src, dst, weights=None,
               num_clusters: int | None = None):
  """Q of cluster labels (N,) in [0, num_clusters) on undirected edges
  (src, dst, weights), each listed once and no self-loops.

  ``num_clusters`` defaults to N (any labels < N). Jittable.
  """
  labels = jnp.asarray(labels, jnp.int32)
  n = labels.shape[0]
  c = n if num_clusters is None else num_clusters
  src = jnp.asarray(src, jnp.int32)
  dst = jnp.asarray(dst, jnp.int32)
  w = (jnp.ones(src.shape, jnp.float32) if weights is None
       else jnp.asarray(weights, jnp.float32))
  m = jnp.sum(w)
  ls, ld = labels[src], labels[dst]
  inside = jax.ops.segment_sum(jnp.where(ls == ld, w, 0.0), ls,
                               num_segments=c)
  deg = (jax.ops.segment_sum(w, src, num_segments=n)
         + jax.ops.segment_sum(w, dst, num_segments=n))
  dc = jax.ops.segment_sum(deg, labels, num_segments=c)
  m_safe = jnp.where(m > 0, m, 1.0)
  q = jnp.sum(inside / m_safe - (dc / (2.0 * m_safe)) ** 2)
  return jnp.where(m > 0, q, 0.0)
