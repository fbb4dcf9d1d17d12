"""Direct least-squares ellipse fit, batched (cGAN+WSC eq. 4-13 need it).

Fitzgibbon, Pilu & Fisher (PAMI 1999) minimise the algebraic distance
sum_i (a^T d_i)^2 of the conic a = (A, B, C, D, E, F),
A x^2 + B xy + C y^2 + D x + E y + F = 0, under 4AC - B^2 = 1, which forces an
ellipse. Halir & Flusser (WSCG 1998) make it numerically stable by splitting
the design matrix into its quadratic and linear parts and eliminating the
linear coefficients: with D1 = [x^2, xy, y^2], D2 = [x, y, 1],
S1 = D1^T D1, S2 = D1^T D2, S3 = D2^T D2,

  a2 = T a1,   T = -S3^-1 S2^T,   M = S1 + S2 T   (symmetric, PSD),
  M a1 = lambda C1 a1,   C1 = [[0, 0, 2], [0, -1, 0], [2, 0, 0]].

The ellipse is the one eigenvector with a1^T C1 a1 > 0. Their paper takes the
eigenvectors of the non-symmetric C1^-1 M; JAX's non-symmetric ``eig`` runs on
CPU only, so here the pencil is turned around, C1 a1 = mu M a1 with
mu = 1 / lambda: after a Cholesky M + eps I = R R^T it is the symmetric
R^-1 C1 R^-T y = mu y, and C1 (inertia 1 positive, 2 negative) makes the
ellipse the single positive mu, the largest eigenvalue of ``eigh``. A perfect
fit (M singular, lambda = 0, the case Fitzgibbon's code gets wrong) gives a
huge mu, still the largest: the small ridge eps only keeps the Cholesky
finite. Points are centred and scaled to unit RMS radius first so float32
suffices; the ellipse is mapped back to the input frame at the end.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

# Ridge on M's eigenvalues, relative to the largest: keeps (s^2)^(-1/2)
# finite on exact fits and biases the ellipse by ~1e-10 relative.
_RIDGE = 1e-10


class Ellipse(NamedTuple):
  """Ellipse parameters; every field has the fit's batch shape ``(...)``."""
  center: jax.Array  # (..., 2) x, y
  axes: jax.Array  # (..., 2) semi-axes a >= b
  angle: jax.Array  # (...,) angle of the major axis to +x, in (-pi/2, pi/2]
  eccentricity: jax.Array  # (...,) c / a with c = sqrt(a^2 - b^2), in [0, 1]


def fit_conic(points):
  """Conic coefficients (..., 6) of the direct ellipse fit to (..., P, 2),
  P >= 5, in the normalised frame u = (p - mean) / scale.

  Returns ``(conic, mean, scale)``; the conic satisfies 4AC - B^2 > 0 and is
  scaled to unit norm with A + C > 0.
  """
  p = jnp.asarray(points, jnp.float32)
  if p.shape[-1] != 2 or p.shape[-2] < 5:
    raise ValueError(f"fit_ellipse needs (..., P>=5, 2) points, got {p.shape}")
  mean = jnp.mean(p, axis=-2, keepdims=True)
  q = p - mean
  scale = jnp.sqrt(jnp.mean(jnp.sum(q * q, -1), -1))[..., None, None]
  q = q / jnp.maximum(scale, 1e-12)
  x, y = q[..., 0], q[..., 1]
  d1 = jnp.stack([x * x, x * y, y * y], -1)
  d2 = jnp.stack([x, y, jnp.ones_like(x)], -1)
  # T = -S3^-1 S2^T is the least-squares map D1 a1 -> linear part; M = S1 +
  # S2 T is the Gram matrix of D1's residual after projecting out span(D2).
  # Forming it from that residual keeps it PSD in float32 (S1 - S2 S3^-1 S2^T
  # loses it to cancellation on exact fits).
  q2, r2 = jnp.linalg.qr(d2)
  proj = jnp.einsum("...pi,...pj->...ij", q2, d1)  # Q2^T D1, (..., 3, 3)
  resid = d1 - q2 @ proj
  t = -jax.scipy.linalg.solve_triangular(r2, proj, lower=False)
  # M = V diag(s^2) V^T from the SVD of the residual; the pencil
  # C1 a1 = mu M a1 becomes symmetric in y = (s^2 + eps)^(1/2) V^T a1.
  _, s, vt = jnp.linalg.svd(resid, full_matrices=False)
  s2 = s * s
  s2 = s2 + _RIDGE * s2[..., :1] + 1e-30
  v = jnp.swapaxes(vt, -1, -2)
  c1 = jnp.array([[0.0, 0.0, 2.0], [0.0, -1.0, 0.0], [2.0, 0.0, 0.0]],
                 jnp.float32)
  w = v * jax.lax.rsqrt(s2)[..., None, :]  # V (s^2 + eps)^(-1/2)
  k = jnp.einsum("...ji,jk,...kl->...il", w, c1, w)
  k = 0.5 * (k + jnp.swapaxes(k, -1, -2))
  _, vecs = jnp.linalg.eigh(k)
  a1 = jnp.einsum("...ij,...j->...i", w, vecs[..., :, -1])
  a2 = jnp.einsum("...ij,...j->...i", t, a1)
  conic = jnp.concatenate([a1, a2], -1)
  conic = conic / jnp.linalg.norm(conic, axis=-1, keepdims=True)
  sign = jnp.where(conic[..., 0] + conic[..., 2] < 0, -1.0, 1.0)
  return conic * sign[..., None], mean[..., 0, :], scale[..., 0, 0]


def conic_to_ellipse(conic):
  """Centre, semi-axes, major-axis angle and eccentricity of an ellipse conic.

  With Q = [[A, B/2], [B/2, C]] (eigenvalues 0 < l1 <= l2 after A + C > 0),
  the centre solves 2Q c = -(D, E), F0 = F + (D, E).c / 2 is the conic at the
  centre, a = sqrt(-F0 / l1), b = sqrt(-F0 / l2) and c/a =
  sqrt(1 - l1 / l2), which needs neither F0 nor the scale. The major axis
  minimises the quadratic form: angle = atan2(B, A - C) / 2 + pi / 2.
  Degenerate fits (l1 -> 0, a line) give eccentricity 1, not NaN.
  """
  a, b, c, d, e, f = [conic[..., i] for i in range(6)]
  half_sum = 0.5 * (a + c)
  radius = jnp.sqrt(0.25 * (a - c) ** 2 + 0.25 * b * b)
  l1 = half_sum - radius
  l2 = half_sum + radius
  tiny = 1e-12 * jnp.maximum(jnp.abs(l2), 1e-30)
  l1 = jnp.maximum(l1, tiny)
  det = 4.0 * a * c - b * b
  det = jnp.where(jnp.abs(det) < 1e-30, 1e-30, det)
  cx = (b * e - 2.0 * c * d) / det
  cy = (b * d - 2.0 * a * e) / det
  f0 = f + 0.5 * (d * cx + e * cy)
  neg_f0 = jnp.maximum(-f0, 0.0)
  major = jnp.sqrt(neg_f0 / l1)
  minor = jnp.sqrt(neg_f0 / l2)
  ecc = jnp.sqrt(jnp.clip(1.0 - l1 / l2, 0.0, 1.0))
  angle = 0.5 * jnp.arctan2(b, a - c) + 0.5 * jnp.pi
  angle = jnp.where(angle > 0.5 * jnp.pi, angle - jnp.pi, angle)
  return Ellipse(center=jnp.stack([cx, cy], -1),
                 axes=jnp.stack([major, minor], -1), angle=angle,
                 eccentricity=ecc)


@jax.jit
def fit_ellipse(points) -> Ellipse:
  """Direct least-squares ellipse (Halir-Flusser) of (..., P, 2) points.

  Batched over every leading axis, jittable, float32. P >= 5; five points
  fit exactly. Returns the :class:`Ellipse` in the input's coordinates.
  """
  conic, mean, scale = fit_conic(points)
  ell = conic_to_ellipse(conic)
  return Ellipse(center=mean + scale[..., None] * ell.center,
                 axes=scale[..., None] * ell.axes, angle=ell.angle,
                 eccentricity=ell.eccentricity)


def ellipse_points(center, axes, angle, t):
  """Points of an ellipse at parameters t (...,): (..., 2). For tests/plots."""
  ca, sa = jnp.cos(angle), jnp.sin(angle)
  x = axes[..., 0] * jnp.cos(t)
  y = axes[..., 1] * jnp.sin(t)
  return jnp.stack([center[..., 0] + ca * x - sa * y,
                    center[..., 1] + sa * x + ca * y], -1)
