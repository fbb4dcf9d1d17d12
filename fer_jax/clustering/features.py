"""Geometric expression features F1-F12 (cGAN+WSC eq. 4-13) from landmarks.

Input: (B, 68, 2) iBUG landmarks, 0-based indices, x right / y down (any
similarity frame works). Regions: brows 17-21 / 22-26, nose 27-35 (lower end
31-35), eyes 36-41 / 42-47, outer mouth 48-59, inner mouth 60-67. "Left" and
"right" mean image-left and image-right (iBUG 17-21 is the subject's right
brow, drawn on the image's left).

  F1, F2    eccentricity c/a of the brow ellipses (eq. 4), each fitted to the
            5 brow points plus P_n = P1 + P5 - P3 (eq. 5)
  F3, F4    eccentricity of the eye ellipses (eq. 6), 6 points each
  F5, F6    eye openings 2b (eq. 7)
  F7        eccentricity of the lower-nose ellipse (eq. 8)
  F8        mean nose-to-upper-lip distance (eq. 9)
  F9, F10   eccentricity of the outer / inner mouth ellipses (eq. 10, 11)
  F11, F12  outer / inner mouth openings 2b (eq. 12, 13)

Where the paper is open, this module reads it as follows:
- Lower nose (eq. 8): the 5 nostril-base points 31-35. They form an open arc
  exactly like a brow, whose 5-point conic is often a hyperbola, so by
  default the fit also gets eq. 5's mirrored point P31 + P35 - P33
  (``mirror_nose=False`` fits the 5 points alone).
- F8 (eq. 9 prints "arg(D(...))"; the text says "average distance ... of
  corresponding points"): the mean of |P_i - Q_i| over the pairs
  (31, 49), (32, 50), (33, 51), (34, 52), (35, 53), lower-nose point i to
  the upper outer-lip point above which it sits.
- "2b" is twice the fitted ellipse's semi-minor axis, as the paper writes,
  even when a mouth opens taller than wide (b is then the width).
- Scale: the paper differences raw pixel distances. Distances here (F5, F6,
  F8, F11, F12) are divided by each face's inter-ocular distance, the outer
  eye corners |P36 - P45| (the 300-W normalisation), so the features do not
  depend on image size or face distance; eccentricities are scale-free
  already. ``scale='none'`` keeps pixels.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from fer_jax.clustering.ellipse import fit_ellipse

NUM_LANDMARKS = 68
LEFT_BROW = tuple(range(17, 22))
RIGHT_BROW = tuple(range(22, 27))
NOSE = tuple(range(27, 36))
LOWER_NOSE = tuple(range(31, 36))
LEFT_EYE = tuple(range(36, 42))
RIGHT_EYE = tuple(range(42, 48))
OUTER_MOUTH = tuple(range(48, 60))
INNER_MOUTH = tuple(range(60, 68))
UPPER_OUTER_LIP = tuple(range(49, 54))
OUTER_EYE_CORNERS = (36, 45)

FEATURE_NAMES = (
    "F1_left_brow_ecc", "F2_right_brow_ecc", "F3_left_eye_ecc",
    "F4_right_eye_ecc", "F5_left_eye_open", "F6_right_eye_open",
    "F7_lower_nose_ecc", "F8_nose_lip_dist", "F9_outer_mouth_ecc",
    "F10_inner_mouth_ecc", "F11_outer_mouth_open", "F12_inner_mouth_open",
)
NUM_FEATURES = len(FEATURE_NAMES)
SCALES = ("inter_ocular", "none")


def with_mirrored_point(arc):
  """Eq. 5: append P_n = P1 + P5 - P3 to a (..., 5, 2) arc -> (..., 6, 2).

  P_n mirrors the middle point through the midpoint of the end points, so
  the fit sees both halves of the ellipse instead of only the arc.
  """
  pn = arc[..., 0, :] + arc[..., -1, :] - arc[..., arc.shape[-2] // 2, :]
  return jnp.concatenate([arc, pn[..., None, :]], axis=-2)


def face_scale(landmarks, scale: str = "inter_ocular"):
  """Per-face length unit (B,): outer-eye-corner distance or 1."""
  if scale not in SCALES:
    raise ValueError(f"scale={scale!r}; choose one of {SCALES}")
  if scale == "none":
    return jnp.ones(landmarks.shape[:-2], jnp.float32)
  i, j = OUTER_EYE_CORNERS
  d = jnp.linalg.norm(landmarks[..., i, :] - landmarks[..., j, :], axis=-1)
  return jnp.maximum(d, 1e-6)


@functools.partial(jax.jit, static_argnames=("scale", "mirror_nose"))
def face_features(landmarks, scale: str = "inter_ocular",
                  mirror_nose: bool = True):
  """F1-F12 of one set of faces: (B, 68, 2) -> (B, 12) float32 (jitted).

  The five 6-point ellipses (brows + P_n, eyes, lower nose + P_n) are
  fitted as one batch.
  """
  lm = jnp.asarray(landmarks, jnp.float32)
  if lm.shape[-2:] != (NUM_LANDMARKS, 2):
    raise ValueError(f"expected (..., 68, 2) iBUG landmarks, got {lm.shape}")
  take = lambda idx: lm[..., jnp.asarray(idx), :]
  unit = face_scale(lm, scale)
  nose = take(LOWER_NOSE)
  nose = with_mirrored_point(nose) if mirror_nose else nose
  six = [with_mirrored_point(take(LEFT_BROW)),
         with_mirrored_point(take(RIGHT_BROW)), take(LEFT_EYE),
         take(RIGHT_EYE)]
  if mirror_nose:
    six.append(nose)
  fits = fit_ellipse(jnp.stack(six, axis=-3))  # (..., 4 or 5) ellipses
  ecc = fits.eccentricity
  minor = fits.axes[..., 1]
  nose_ecc = (ecc[..., 4] if mirror_nose
              else fit_ellipse(nose).eccentricity)
  mouth_o = fit_ellipse(take(OUTER_MOUTH))
  mouth_i = fit_ellipse(take(INNER_MOUTH))
  nose_lip = jnp.mean(jnp.linalg.norm(
      take(LOWER_NOSE) - take(UPPER_OUTER_LIP), axis=-1), axis=-1)
  return jnp.stack([
      ecc[..., 0], ecc[..., 1], ecc[..., 2], ecc[..., 3],
      2.0 * minor[..., 2] / unit, 2.0 * minor[..., 3] / unit,
      nose_ecc, nose_lip / unit,
      mouth_o.eccentricity, mouth_i.eccentricity,
      2.0 * mouth_o.axes[..., 1] / unit, 2.0 * mouth_i.axes[..., 1] / unit,
  ], axis=-1)


def geometric_features(expr_landmarks, neutral_landmarks=None,
                       scale: str = "inter_ocular", mirror_nose: bool = True):
  """F(expr) - F(neutral), (B, 12): the residual the paper clusters.

  Differencing against the same subject's (generated) neutral face removes
  most identity (section 4.1). ``neutral_landmarks=None`` returns F(expr)
  alone: the paper's "not optimised" baseline without the cGAN neutral.
  """
  f = face_features(expr_landmarks, scale, mirror_nose)
  if neutral_landmarks is None:
    return f
  return f - face_features(neutral_landmarks, scale, mirror_nose)


# --- Raw landmark displacements (issue 21) ----------------------------------

# Points that expressions barely move: the eye corners and the nose bridge
# and tip. Each face is put in their frame before two faces are differenced.
STABLE_POINTS = (27, 28, 29, 30, 36, 39, 42, 45)
FEATURE_KINDS = ("geometric", "displacement", "both")


def normalise_pose(landmarks):
  """(B, 68, 2) -> the same points in a face-own frame: origin at the
  stable points' mean, x along the outer eye corners (36 -> 45), unit = the
  inter-ocular distance. Removes where the face sits, its roll and size."""
  lm = jnp.asarray(landmarks, jnp.float32)
  centre = jnp.mean(lm[..., jnp.asarray(STABLE_POINTS), :], axis=-2,
                    keepdims=True)
  i, j = OUTER_EYE_CORNERS
  axis = lm[..., j, :] - lm[..., i, :]
  unit = jnp.maximum(jnp.linalg.norm(axis, axis=-1), 1e-6)
  c, s = axis[..., 0] / unit, axis[..., 1] / unit
  p = lm - centre
  # Rotate by -roll: (x, y) -> (c x + s y, -s x + c y).
  x = c[..., None] * p[..., 0] + s[..., None] * p[..., 1]
  y = -s[..., None] * p[..., 0] + c[..., None] * p[..., 1]
  return jnp.stack([x, y], axis=-1) / unit[..., None, None]


def landmark_displacements(expr_landmarks, neutral_landmarks):
  """(B, 136): every landmark's move from the (generated) neutral face to
  the expression, both in their own pose-free frame (:func:`normalise_pose`),
  in inter-ocular units. The raw counterpart of F(expr) - F(neutral): the
  review of issue 21 measured 0.94 leave-one-out 5-NN accuracy with clean
  labels on the synthetic set where F1-F12 reach 0.79."""
  d = (normalise_pose(expr_landmarks) - normalise_pose(neutral_landmarks))
  return d.reshape(d.shape[:-2] + (2 * NUM_LANDMARKS,))
