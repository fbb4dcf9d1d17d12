"""PCA features: the paper's baseline (table 3, first row) for the
geometric ones, e.g. on flattened face images."""

from __future__ import annotations

import jax.numpy as jnp


def pca_embedding(x, dim: int):
  """Scores (N, dim) of x (N, D) on its top ``dim`` principal components.

  Centred, from the thin SVD (O(N D min(N, D))); column signs fixed so each
  component's largest-magnitude loading is positive (deterministic output).
  """
  x = jnp.asarray(x, jnp.float32).reshape(x.shape[0], -1)
  if not 0 < dim <= min(x.shape):
    raise ValueError(f"PCA dim={dim} must be in (0, min(N, D)={min(x.shape)}]")
  xc = x - jnp.mean(x, axis=0)
  _, _, vt = jnp.linalg.svd(xc, full_matrices=False)
  vt = vt[:dim]
  big = jnp.take_along_axis(vt, jnp.argmax(jnp.abs(vt), 1)[:, None], 1)
  vt = vt * jnp.where(big < 0, -1.0, 1.0)
  return xc @ vt.T
