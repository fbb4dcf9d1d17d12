"""Procedural face sequences: the embedded default data set of fer_jax.

Each subject is a random identity (face shape, feature proportions, skin, hair,
glasses, beard, lighting, head pose). Each sequence moves that face from a
neutral first frame to an expression peak on its last frame through
action-unit-like displacements of the 68 iBUG landmarks, and every image is
rendered from its landmarks, so pixels and landmarks always agree.

Identity variation is deliberately larger than a weak expression, and some
identity traits copy expression cues (mouth corners turned up or down at rest,
low, high or slanted brows, wide or narrow eyes, an uneven mouth), so a model
that ignores the subject's own neutral face is misled: the confound that GNDL
and IF-GAN are built to remove.

Pure numpy + PIL. Every random draw comes from a generator keyed by
(seed, stream, subject[, sequence[, frame]]): a subject looks the same however
many subjects a spec asks for, and a spec always gives bit-identical output.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np
from PIL import Image, ImageDraw

from fer_jax.data import align
from fer_jax.data.classes import canonical_index

EXPRESSIONS: tuple[str, ...] = (
    "anger", "contempt", "disgust", "fear", "happiness", "sadness", "surprise")

# iBUG 68-point groups. "Right" is the subject's right, on the image's left.
NUM_LANDMARKS = 68
JAW = np.arange(0, 17)
RIGHT_BROW = np.arange(17, 22)  # outer -> inner
LEFT_BROW = np.arange(22, 27)  # inner -> outer
NOSE_BRIDGE = np.arange(27, 31)
NOSE_BASE = np.arange(31, 36)
RIGHT_EYE = np.arange(36, 42)  # outer corner, upper lid, inner, lower lid
LEFT_EYE = np.arange(42, 48)  # inner corner, upper lid, outer corner, lower lid
OUTER_LIP = np.arange(48, 60)  # right corner, upper lip, left corner, lower lip
INNER_LIP = np.arange(60, 68)  # right corner, upper lip, left corner, lower lip
BROWS = np.concatenate([RIGHT_BROW, LEFT_BROW])
EYES = np.concatenate([RIGHT_EYE, LEFT_EYE])
MOUTH = np.concatenate([OUTER_LIP, INNER_LIP])
MOUTH_CORNERS = np.array([48, 54])
INNER_UPPER_LIP = np.array([61, 62, 63])
INNER_LOWER_LIP = np.array([67, 66, 65])  # below 61, 62, 63 respectively
# Points expressions barely move: use them to align faces (similarity fit).
STABLE_POINTS = np.array([0, 1, 2, 14, 15, 16, 27, 28, 29, 30, 36, 39, 42, 45])

_MIRROR_PAIRS = (
    [(i, 16 - i) for i in range(8)] + [(17 + i, 26 - i) for i in range(5)]
    + [(31, 35), (32, 34), (36, 45), (37, 44), (38, 43), (39, 42), (40, 47),
       (41, 46), (48, 54), (49, 53), (50, 52), (55, 59), (56, 58), (60, 64),
       (61, 63), (65, 67)])
MIRROR = np.arange(NUM_LANDMARKS)
for _a, _b in _MIRROR_PAIRS:
  MIRROR[_a], MIRROR[_b] = _b, _a
_EYE_LEVEL = 0.44
_FACE_CENTRE = 0.5
# Template of the right half in unit image coordinates (x right, y down).
_TEMPLATE_RIGHT = {
    17: (.270, .365), 18: (.310, .345), 19: (.355, .338), 20: (.400, .342),
    21: (.455, .352),
    27: (.5, .44), 28: (.5, .48), 29: (.5, .52), 30: (.5, .56),
    31: (.455, .585), 32: (.475, .593), 33: (.5, .598),
    36: (.315, .442), 37: (.345, .424), 38: (.385, .424), 39: (.415, .443),
    40: (.385, .456), 41: (.345, .456),
    48: (.410, .680), 49: (.440, .665), 50: (.475, .657), 51: (.5, .660),
    57: (.5, .710), 58: (.470, .708), 59: (.440, .700),
    60: (.420, .680), 61: (.460, .680), 62: (.5, .680), 66: (.5, .680),
    67: (.460, .680),
}
_MOUTH_LINE = 0.68
# Subject's right half plus the midline: everything else is its mirror image.
_RIGHT_HALF = np.array(sorted(set(JAW[:9]) | set(_TEMPLATE_RIGHT)))

# Action units: displacement of right-half landmarks at full intensity, in unit
# coordinates (dy < 0 is up); the left half mirrors them.
_AU_RIGHT = {
    "AU1": {21: (0, -.035), 20: (0, -.028), 19: (0, -.016), 18: (0, -.008),
            17: (0, -.002)},
    "AU2": {17: (0, -.030), 18: (0, -.030), 19: (0, -.022), 20: (0, -.010),
            21: (0, -.004)},
    "AU4": {17: (0, .006), 18: (.004, .014), 19: (.008, .020),
            20: (.012, .024), 21: (.014, .024), 37: (0, .003), 38: (0, .003)},
    "AU5": {37: (0, -.011), 38: (0, -.011), 36: (0, -.002), 39: (0, -.002),
            40: (0, .002), 41: (0, .002)},
    "AU6": {40: (0, -.007), 41: (0, -.007), 36: (0, -.002)},
    "AU7": {40: (0, -.005), 41: (0, -.005), 37: (0, .004), 38: (0, .004)},
    "AU9": {31: (.003, -.012), 32: (0, -.010), 33: (0, -.008), 30: (0, -.004),
            29: (0, -.003), 21: (.004, .010), 20: (.002, .006), 50: (0, -.006),
            51: (0, -.006)},
    "AU10": {49: (0, -.012), 50: (0, -.018), 51: (0, -.018), 61: (0, -.016),
             62: (0, -.016), 48: (0, -.004), 60: (0, -.004)},
    "AU12": {48: (-.018, -.026), 60: (-.016, -.024), 49: (-.008, -.012),
             59: (-.010, -.014), 61: (-.006, -.008), 67: (-.006, -.008),
             50: (-.003, -.004), 58: (-.003, -.006)},
    "AU14": {48: (-.012, -.006), 60: (-.012, -.006), 49: (-.004, -.002),
             59: (-.004, -.002)},
    "AU15": {48: (.002, .020), 60: (.002, .018), 49: (0, .008), 59: (0, .008),
             61: (0, .006), 67: (0, .006)},
    "AU17": {57: (0, -.010), 58: (0, -.010), 59: (0, -.006), 66: (0, -.004),
             67: (0, -.004), 61: (0, -.004), 62: (0, -.004), 60: (0, -.002),
             51: (0, -.002), 8: (0, -.012), 7: (0, -.010), 6: (0, -.006)},
    "AU20": {48: (-.026, .006), 60: (-.024, .006), 49: (-.012, .002),
             59: (-.012, .004), 61: (-.010, 0), 67: (-.010, 0),
             50: (-.004, 0), 58: (-.004, 0)},
    "AU23": {48: (.008, 0), 60: (.008, 0), 49: (.003, .006), 50: (0, .006),
             51: (0, .006), 57: (0, -.008), 58: (0, -.008), 59: (.003, -.006)},
    "AU26": {57: (0, .050), 58: (0, .047), 59: (.002, .035), 66: (0, .048),
             67: (.001, .044), 48: (.006, .018), 60: (.006, .020),
             61: (0, -.004), 62: (0, -.004), 8: (0, .050), 7: (0, .047),
             6: (0, .038), 5: (0, .026), 4: (0, .014), 3: (0, .005)},
}
_AU_NAMES = tuple(_AU_RIGHT)
# FACS-style prototypes (weights of each AU at full intensity). Contempt is
# one-sided: its AUs act on one half of the mouth only.
_EXPRESSION_AUS = {
    "anger": {"AU4": 1.0, "AU5": 0.3, "AU7": 1.0, "AU23": 1.0, "AU17": 0.5},
    "contempt": {"AU12": 0.6, "AU14": 1.0},
    "disgust": {"AU9": 1.0, "AU10": 1.0, "AU15": 0.5, "AU17": 0.5, "AU4": 0.4},
    "fear": {"AU1": 0.9, "AU2": 0.6, "AU4": 0.35, "AU5": 1.0, "AU20": 1.0,
             "AU26": 0.4},
    "happiness": {"AU6": 1.0, "AU12": 1.0, "AU26": 0.15},
    "sadness": {"AU1": 1.0, "AU4": 0.3, "AU15": 1.0, "AU17": 0.6},
    "surprise": {"AU1": 1.0, "AU2": 1.0, "AU5": 1.0, "AU26": 1.0},
}
_ONE_SIDED = frozenset({"contempt"})

# Random streams, so that e.g. pixel noise never shifts a landmark draw.
_IDENTITY_STREAM, _SEQUENCE_STREAM, _PIXEL_STREAM = 0, 1, 2
_SUPERSAMPLE = 3
_PIXEL_NOISE_STD = 2.0  # uint8 levels
_LANDMARK_JITTER = 0.002  # per-frame micro-motion, unit coordinates

_SKIN_TONES = np.array([
    (255, 224, 196), (241, 194, 160), (224, 172, 135), (198, 134, 96),
    (161, 102, 64), (110, 70, 46), (80, 52, 36)], np.float64)
_HAIR_COLOURS = np.array([
    (22, 18, 16), (60, 40, 28), (110, 75, 45), (150, 88, 48), (205, 170, 110),
    (140, 138, 135), (225, 220, 210)], np.float64)
_HAIR_COLOUR_P = (0.3, 0.25, 0.15, 0.08, 0.1, 0.08, 0.04)
_IRIS_COLOURS = ((90, 55, 30), (45, 30, 20), (70, 110, 160), (80, 115, 80),
                 (120, 95, 55))
_HAIR_STYLES = ("bald", "short", "long", "bangs", "side_part", "curly")
_HAIR_STYLE_P = (0.1, 0.3, 0.2, 0.15, 0.15, 0.1)
_BEARDS = ("none", "stubble", "full", "goatee", "moustache")
_BEARD_P = (0.6, 0.1, 0.12, 0.09, 0.09)
_MOUTH_INSIDE = (70, 18, 24)
_TEETH = (236, 230, 214)
_SCLERA = (238, 236, 230)


@dataclasses.dataclass(frozen=True)
class Profile:
  """How faces are posed and how strongly they move (see PROFILES).

  aligned: every frame is eye-aligned after rendering, by
    fer_jax.data.align (the code the real builders use), to eye_distance and
    eye_height (fractions of the image), as every paper aligns its faces.
  expression_gain: scales every action unit's displacement.
  identity_confound: scales the identity traits that copy expression cues
    (see _identity).
  peak_range: a sequence's peak intensity is drawn uniformly from it.
  plateau: intensity reaches the peak on the first of the last
    ``plateau_frames`` frames and stays there (the frames a protocol calls
    peak), rising as (t / t_peak) ** ease before; otherwise the classic
    ease-in to the last frame, (t / (T - 1)) ** U(1.8, 2.6).
  identity_coupling: c in [0, 1). Every shape trait of a subject (face and
    jaw, eyes, brows, nose, mouth, and the traits that copy expression cues)
    is c * (its loading on a 3-d identity latent) + sqrt(1 - c^2) * (its own
    draw), in units of the trait's spread. At c > 0 a face's resting brows,
    eyes and mouth corners follow from its expression-free traits (jaw,
    nose, eye spacing), so its neutral face can be inferred from an
    expressive frame, the premise under which a model that sees no neutral
    at test time (GNDL's generated neutral) can remove the confound. At 0
    the traits are independent (and drawn exactly as before).
  """
  aligned: bool = False
  eye_distance: float = 0.36
  eye_height: float = 0.40
  expression_gain: float = 1.0
  identity_confound: float = 1.0
  peak_range: tuple[float, float] = (0.65, 1.0)
  plateau: bool = False
  plateau_frames: int = 3
  ease: float = 3.0
  identity_coupling: float = 0.0


PROFILES = {
    # The original set: unaligned faces (roll up to 9 degrees, scale
    # 1.0-1.2, offsets up to 4.5%), about one pixel of expression at 64 px
    # and no plateau. Kept so that earlier runs and their data stay valid.
    "classic": Profile(),
    # Built for the evidence runs (docs/results): aligned faces, 1.5x the
    # expression amplitude (brows and mouth move ~2 px at 64 px), a peak
    # plateau over the last 3 frames and weak frames 6-8 at ~0.17-0.47 of it
    # (ease 3 over 12 frames), and identity traits that copy expression cues
    # 1.5x as large, so a face's own neutral matters. (At gain 2 and
    # confound 1 a plain ResNet-18 reached 93.5% on a held-out population,
    # no room for any method to show an effect.)
    "benchmark": Profile(aligned=True, eye_distance=0.36, eye_height=0.40,
                         expression_gain=1.5, identity_confound=1.5,
                         peak_range=(0.85, 1.0), plateau=True),
}
# The benchmark profile with identity traits coupled through a latent
# (identity_coupling 0.9): the resting expression-like traits are
# predictable from the rest of the face, as GNDL's Neutral Feature
# Generator presumes of real faces. GNDL's evidence runs use it.
PROFILES["coupled"] = dataclasses.replace(PROFILES["benchmark"],
                                          identity_coupling=0.9)

_LATENT_STREAM = 3
_LATENT_DIM = 3
_MAX_TRAITS = 32
# Each shape trait's direction in the identity latent (fixed unit vectors:
# trait k of every subject loads on the latent the same way).
_TRAIT_LOADINGS = np.random.default_rng(20261204).normal(
    size=(_MAX_TRAITS, _LATENT_DIM))
_TRAIT_LOADINGS /= np.linalg.norm(_TRAIT_LOADINGS, axis=1, keepdims=True)


@dataclasses.dataclass(frozen=True)
class SynthSpec:
  """What to generate: everything else follows from these six fields."""
  num_subjects: int = 24
  sequences_per_subject: int = 7
  num_frames: int = 12
  image_size: int = 128
  seed: int = 0
  profile: str = "classic"

  @property
  def params(self) -> Profile:
    return PROFILES[self.profile]

  def __post_init__(self):
    if self.profile not in PROFILES:
      raise ValueError(f"SynthSpec.profile must be one of "
                       f"{', '.join(PROFILES)}, got {self.profile!r}")
    for field, low, why in (
        ("num_subjects", 2, "subject-independent splits need two subjects"),
        ("sequences_per_subject", 1, "each subject needs a sequence"),
        ("num_frames", 8, "weak frames are frames 6-8 (1-based)"),
        ("image_size", 32, "smaller faces lose the eyes and brows"),
        ("seed", 0, "seeds are non-negative integers")):
      value = getattr(self, field)
      if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise ValueError(f"SynthSpec.{field} must be an int, got {value!r}")
      if value < low:
        raise ValueError(
            f"SynthSpec.{field} must be >= {low} ({why}), got {value}")
    if self.num_subjects * self.sequences_per_subject < len(EXPRESSIONS):
      raise ValueError(
          "SynthSpec.num_subjects * sequences_per_subject must be >= "
          f"{len(EXPRESSIONS)} so that every expression occurs, got "
          f"{self.num_subjects} * {self.sequences_per_subject}")


def _rng(*key: int) -> np.random.Generator:
  return np.random.default_rng([int(k) for k in key])


def _mirror_right(points: np.ndarray) -> np.ndarray:
  """Copies the right half onto the left, reflected about the midline."""
  out = points.copy()
  out[MIRROR[_RIGHT_HALF], 0] = 2 * _FACE_CENTRE - points[_RIGHT_HALF, 0]
  out[MIRROR[_RIGHT_HALF], 1] = points[_RIGHT_HALF, 1]
  return out


def _jaw(half_width: float, depth: float, squareness: float) -> np.ndarray:
  """17 jaw points on a superellipse from the right ear, round the chin."""
  phi = np.linspace(np.pi, 0.0, 17)
  e = 2.0 / squareness
  c, s = np.cos(phi), np.sin(phi)
  return np.stack([_FACE_CENTRE + half_width * np.sign(c) * np.abs(c) ** e,
                   _EYE_LEVEL + depth * np.abs(s) ** e], axis=1)


def mean_shape() -> np.ndarray:
  """The (68, 2) template face in unit image coordinates (x right, y down)."""
  points = np.zeros((NUM_LANDMARKS, 2))
  points[JAW] = _jaw(0.30, 0.36, 2.4)
  for i, xy in _TEMPLATE_RIGHT.items():
    points[i] = xy
  return _mirror_right(points)


def _au_basis(side: int) -> np.ndarray:
  """(num_AUs, 68, 2) displacements; side 0 both halves, -1 right, +1 left."""
  basis = np.zeros((len(_AU_NAMES), NUM_LANDMARKS, 2))
  for k, name in enumerate(_AU_NAMES):
    for i, (dx, dy) in _AU_RIGHT[name].items():
      if side <= 0 or MIRROR[i] == i:
        basis[k, i] += (dx, dy)
      if side >= 0 and MIRROR[i] != i:
        basis[k, MIRROR[i]] += (-dx, dy)
  return basis


_AU_BASIS = {side: _au_basis(side) for side in (-1, 0, 1)}
_EXPRESSION_WEIGHTS = np.array(
    [[_EXPRESSION_AUS[e].get(a, 0.0) for a in _AU_NAMES] for e in EXPRESSIONS])


def _arc(cx, cy, rx, ry, a0, a1, n, power=1.0) -> np.ndarray:
  """Points on a (super)ellipse arc from angle a0 to a1 (-pi/2 is up)."""
  a = np.linspace(a0, a1, n)
  c, s = np.cos(a), np.sin(a)
  return np.stack([cx + rx * np.sign(c) * np.abs(c) ** power,
                   cy + ry * np.sign(s) * np.abs(s) ** power], axis=1)


@dataclasses.dataclass(frozen=True)
class _Identity:
  """One subject: neutral geometry, appearance, pose and expression style."""
  neutral: np.ndarray  # (68, 2) face-frame landmarks, unit coordinates
  forehead: float
  skin: np.ndarray
  hair: np.ndarray
  brow_colour: np.ndarray
  lip: np.ndarray
  iris: tuple
  hair_style: str
  hair_volume: float
  hairline_gap: float
  beard: str
  glasses: str
  glasses_colour: tuple
  brow_thickness: float
  gaze: np.ndarray
  background: tuple
  shirt: tuple
  light_angle: float
  light_strength: float
  brightness: float
  roll: float
  scale: float
  offset: np.ndarray
  expression_displacement: np.ndarray  # (7, 68, 2) at intensity 1


def _identity(seed: int, subject: int, confound: float = 1.0,
              coupling: float = 0.0) -> _Identity:
  """Draws a subject; traits that mimic expressions are scaled to confuse.

  ``confound`` scales those traits (eye openness, brow height, slant and
  arch, mouth-corner lift and tilt) after the draw, so every profile draws
  the same random numbers. Contempt acts on the subject's right mouth corner
  for 80% of subjects and on the left for the rest.
  """
  rng = _rng(seed, _IDENTITY_STREAM, subject)
  latent = _rng(seed, _LATENT_STREAM, subject).normal(size=_LATENT_DIM)
  trait = iter(range(_MAX_TRAITS))

  def n(sd, lo, hi):  # clipped normal: no grotesque outliers
    own = rng.normal(0.0, sd)
    if coupling:  # see Profile.identity_coupling
      shared = float(_TRAIT_LOADINGS[next(trait)] @ latent)
      own = sd * (coupling * shared
                  + np.sqrt(1.0 - coupling ** 2) * own / sd)
    return float(np.clip(own, lo, hi))

  def mimic(sd, lo, hi):  # a trait that copies an expression cue
    return confound * n(sd, lo, hi)

  face_w = 1 + n(0.07, -0.15, 0.15)
  points = mean_shape()
  points[JAW] = _jaw(0.30 * face_w, 0.36 * (1 + n(0.08, -0.15, 0.15)),
                     rng.uniform(2.0, 3.2))
  # Eyes: spacing, height, width and (the confound) openness at rest.
  eye = RIGHT_EYE
  centre = points[eye].mean(0)
  eye_shift = np.array([-n(0.012, -0.025, 0.025), n(0.012, -0.025, 0.025)])
  eye_size = np.array([1 + n(0.1, -0.2, 0.2),
                       1 + float(np.clip(mimic(0.28, -0.5, 0.7), -0.6, 1.0))])
  points[eye] = centre + eye_shift + (points[eye] - centre) * eye_size
  # Brows: height, slant and arch at rest mimic anger, surprise or sadness.
  ramp = np.linspace(0.0, 1.0, 5)  # outer -> inner
  brow = RIGHT_BROW
  brow_centre = points[brow].mean(0)
  points[brow] = brow_centre + (points[brow] - brow_centre) * (
      1 + n(0.1, -0.2, 0.2))
  points[brow, 0] += eye_shift[0]
  points[brow, 1] += (mimic(0.016, -0.035, 0.035)
                      + mimic(0.011, -0.025, 0.025) * ramp
                      - mimic(0.006, -0.012, 0.012) * np.sin(np.pi * ramp))
  # Nose: length and width.
  nose_len = n(0.018, -0.035, 0.035)
  points[NOSE_BRIDGE, 1] += nose_len * np.linspace(0, 1, 4)
  points[NOSE_BASE, 1] += nose_len
  points[NOSE_BASE, 0] = _FACE_CENTRE + (
      points[NOSE_BASE, 0] - _FACE_CENTRE) * (1 + n(0.12, -0.25, 0.25))
  # Mouth: height, width, lip thickness, corners up/down at rest, parted lips.
  mouth_line = _MOUTH_LINE + nose_len + n(0.012, -0.02, 0.02)
  points[MOUTH, 1] += mouth_line - _MOUTH_LINE
  points[MOUTH, 0] = _FACE_CENTRE + (points[MOUTH, 0] - _FACE_CENTRE) * (
      1 + n(0.09, -0.18, 0.18))
  upper, lower = np.array([49, 50, 51]), np.array([57, 58, 59])
  points[upper, 1] = mouth_line + (points[upper, 1] - mouth_line) * (
      1 + n(0.2, -0.4, 0.5))
  points[lower, 1] = mouth_line + (points[lower, 1] - mouth_line) * (
      1 + n(0.2, -0.4, 0.5))
  lift = mimic(0.011, -0.025, 0.025)
  points[[48, 60], 1] -= lift
  points[[49, 59, 61, 67], 1] -= 0.4 * lift
  parted = abs(n(0.004, -0.01, 0.01))
  points[[57, 58, 59, 66, 67], 1] += parted
  points = _mirror_right(points)
  # Asymmetry: one corner or brow higher than the other (contempt-like).
  tilt = mimic(0.006, -0.012, 0.012)
  points[[48, 60], 1] += tilt
  points[[54, 64], 1] -= tilt
  points[LEFT_BROW, 1] += mimic(0.004, -0.008, 0.008)

  tone = rng.uniform(0, len(_SKIN_TONES) - 1)
  lo = min(int(tone), len(_SKIN_TONES) - 2)
  skin = _SKIN_TONES[lo] + (tone - lo) * (_SKIN_TONES[lo + 1] - _SKIN_TONES[lo])
  hair = _HAIR_COLOURS[rng.choice(len(_HAIR_COLOURS), p=_HAIR_COLOUR_P)]
  hair = np.clip(hair * rng.uniform(0.85, 1.15), 0, 255)
  brow_colour = np.minimum(hair, skin) * 0.75
  lip = np.clip(skin * (0.82, 0.55, 0.55) + (25, 5, 10), 0, 255)

  # Expression style: per-subject gain of every AU in every expression.
  gains = rng.lognormal(0.0, 0.3, _EXPRESSION_WEIGHTS.shape)
  gains *= rng.lognormal(0.0, 0.15)
  side = -1 if rng.random() < 0.8 else 1
  displacement = np.einsum(
      "ea,akd->ekd", _EXPRESSION_WEIGHTS * gains, _AU_BASIS[0]) * face_w
  for e, name in enumerate(EXPRESSIONS):
    if name in _ONE_SIDED:
      displacement[e] = np.einsum(
          "a,akd->kd", _EXPRESSION_WEIGHTS[e] * gains[e], _AU_BASIS[side]
      ) * face_w

  return _Identity(
      neutral=points,
      forehead=rng.uniform(0.26, 0.31),
      skin=skin,
      hair=hair,
      brow_colour=brow_colour,
      lip=lip,
      iris=_IRIS_COLOURS[rng.integers(len(_IRIS_COLOURS))],
      hair_style=_HAIR_STYLES[rng.choice(len(_HAIR_STYLES), p=_HAIR_STYLE_P)],
      hair_volume=rng.uniform(0.01, 0.05),
      hairline_gap=rng.uniform(0.04, 0.1),
      beard=_BEARDS[rng.choice(len(_BEARDS), p=_BEARD_P)],
      glasses=("none", "round", "rect")[rng.choice(3, p=(0.7, 0.15, 0.15))],
      glasses_colour=tuple(int(c) for c in rng.choice(
          [(20, 20, 25), (90, 60, 40), (170, 170, 180)])),
      brow_thickness=rng.uniform(0.010, 0.022),
      gaze=rng.normal(0.0, 0.08, 2),
      background=tuple(rng.uniform(50, 210, (2, 1))
                       + rng.normal(0, 18, (2, 3))),  # greyish, top/bottom
      shirt=tuple(int(c) for c in rng.uniform(20, 230, 3)),
      light_angle=rng.uniform(0, 2 * np.pi),
      light_strength=rng.uniform(0.05, 0.35),
      brightness=rng.uniform(0.8, 1.15),
      roll=np.deg2rad(n(4.0, -9.0, 9.0)),
      scale=rng.uniform(1.0, 1.2),
      offset=np.array([n(0.02, -0.045, 0.045), n(0.02, -0.04, 0.03)]),
      expression_displacement=displacement,
  )


def sequence_expression(spec: SynthSpec, subject_id: int,
                        seq_in_subject: int) -> str:
  """Expressions cycle so that any spec covers all seven across subjects."""
  k = subject_id * spec.sequences_per_subject + seq_in_subject
  return EXPRESSIONS[k % len(EXPRESSIONS)]


@dataclasses.dataclass(frozen=True)
class _Geometry:
  expression: str
  intensity: np.ndarray  # (T,) float32
  face: np.ndarray  # (T, 68, 2) face-frame unit coordinates
  pose: np.ndarray  # (T, 4): roll, scale, dx, dy


def _geometry(spec: SynthSpec, ident: _Identity, subject_id: int,
              seq: int) -> _Geometry:
  """Landmark motion of one sequence: ease-in from neutral to the peak."""
  rng = _rng(spec.seed, _SEQUENCE_STREAM, subject_id, seq)
  expression = sequence_expression(spec, subject_id, seq)
  prof = spec.params
  peak = rng.uniform(*prof.peak_range)
  ease = rng.uniform(1.8, 2.6)
  seq_pose = np.array([ident.roll + np.deg2rad(rng.normal(0, 1.0)),
                       ident.scale * (1 + rng.normal(0, 0.01)),
                       *(ident.offset + rng.normal(0, 0.006, 2))])
  if prof.plateau:
    t_peak = max(1, spec.num_frames - prof.plateau_frames)
    t = np.minimum(np.arange(spec.num_frames) / t_peak, 1.0)
    intensity = (peak * t ** prof.ease).astype(np.float32)
  else:
    t = np.arange(spec.num_frames) / (spec.num_frames - 1)
    intensity = (peak * t ** ease).astype(np.float32)
  jitter = rng.normal(0, _LANDMARK_JITTER, (spec.num_frames, NUM_LANDMARKS, 2))
  frame_pose = seq_pose + rng.normal(0, 1, (spec.num_frames, 4)) * (
      np.deg2rad(0.3), 0.002, 0.002, 0.002)
  disp = (prof.expression_gain
          * ident.expression_displacement[EXPRESSIONS.index(expression)])
  face = ident.neutral + intensity[:, None, None] * disp + jitter
  # Lips may touch but never cross.
  face[:, INNER_LOWER_LIP, 1] = np.maximum(face[:, INNER_LOWER_LIP, 1],
                                           face[:, INNER_UPPER_LIP, 1])
  return _Geometry(expression, intensity, face, frame_pose)


def _apply_pose(points: np.ndarray, pose: np.ndarray) -> np.ndarray:
  """Roll, scale and shift about the image centre."""
  roll, scale, dx, dy = pose
  c, s = np.cos(roll), np.sin(roll)
  rot = scale * np.array([[c, -s], [s, c]])
  return (points - _FACE_CENTRE) @ rot.T + _FACE_CENTRE + (dx, dy)


def _check_indices(spec: SynthSpec, subject_id: int, seq_in_subject: int):
  if not 0 <= subject_id < spec.num_subjects:
    raise ValueError(f"subject_id must be in [0, {spec.num_subjects}), "
                     f"got {subject_id}")
  if not 0 <= seq_in_subject < spec.sequences_per_subject:
    raise ValueError(f"seq_in_subject must be in [0, "
                     f"{spec.sequences_per_subject}), got {seq_in_subject}")


def sequence_landmarks(spec: SynthSpec, subject_id: int,
                       seq_in_subject: int) -> dict:
  """Landmarks of one sequence without rendering (cheap: for geometry work).

  Returns label, intensity (T,) float32 and landmarks (T, 68, 2) float32 in
  pixel coordinates, identical to what generate_sequence records.
  """
  _check_indices(spec, subject_id, seq_in_subject)
  ident = _identity(spec.seed, subject_id, spec.params.identity_confound,
                    spec.params.identity_coupling)
  geo = _geometry(spec, ident, subject_id, seq_in_subject)
  landmarks, _ = _frame_landmarks(spec, geo)
  return {"label": canonical_index(geo.expression),
          "intensity": geo.intensity, "landmarks": landmarks}


def _pixel_landmarks(geo: _Geometry, size: int) -> np.ndarray:
  return np.stack([_apply_pose(f, p) for f, p in zip(geo.face, geo.pose)]
                  ).astype(np.float32) * np.float32(size)


def _frame_landmarks(spec: SynthSpec, geo: _Geometry):
  """(T, 68, 2) pixel landmarks as recorded, and each frame's alignment
  affine on the canvas (None where the profile does not align)."""
  landmarks = _pixel_landmarks(geo, spec.image_size)
  if not spec.params.aligned:
    return landmarks, [None] * spec.num_frames
  affines = [_alignment(lm, spec.image_size, spec.params) for lm in landmarks]
  return np.stack([_aligned_landmarks(lm, a)
                   for lm, a in zip(landmarks, affines)]), affines


class _Canvas:
  """Draws face-frame shapes onto a supersampled, posed PIL canvas."""

  def __init__(self, ident: _Identity, pose: np.ndarray, size: int):
    self.px = size * _SUPERSAMPLE
    self.pose = pose
    self.unit = pose[1] * self.px  # canvas pixels per face-frame unit
    top, bottom = (np.array(c) for c in ident.background)
    ramp = np.linspace(0, 1, self.px)[:, None, None]
    column = (top + (bottom - top) * ramp).astype(np.uint8)
    self.image = Image.fromarray(column).resize(
        (self.px, self.px), Image.Resampling.NEAREST)
    self.draw = ImageDraw.Draw(self.image, "RGBA")

  def xy(self, points) -> list[tuple[float, float]]:
    # PIL puts pixel centres on integers; landmarks put them on half-integers.
    posed = _apply_pose(np.asarray(points, np.float64), self.pose) * self.px
    return [tuple(p) for p in posed - 0.5]

  def width(self, unit_width: float) -> int:
    return max(1, int(round(unit_width * self.unit)))

  def polygon(self, points, colour):
    self.draw.polygon(self.xy(points), fill=_rgba(colour))

  def line(self, points, colour, unit_width, closed=False):
    points = np.asarray(points)
    if closed:
      points = np.concatenate([points, points[:1]])
    self.draw.line(self.xy(points), fill=_rgba(colour),
                   width=self.width(unit_width), joint="curve")

  def ellipse(self, centre, rx, ry, colour):
    self.polygon(_arc(centre[0], centre[1], rx, ry, 0, 2 * np.pi, 24), colour)


def _rgba(colour) -> tuple[int, ...]:
  return tuple(min(255, max(0, int(round(float(c))))) for c in colour)


def _shade(colour, factor, alpha=None):
  rgb = tuple(np.clip(np.asarray(colour[:3], np.float64) * factor, 0, 255))
  return rgb if alpha is None else rgb + (alpha,)


def _draw_hair_back(cv: _Canvas, ident: _Identity, cx, cy, rx):
  if ident.hair_style != "long":
    return
  v = ident.hair_volume + 0.03
  top = _arc(cx, cy, rx + v, ident.forehead + v, 0, -np.pi, 21)
  bottom = cy + 0.40
  cv.polygon(np.concatenate([
      [(cx + rx + v + 0.03, bottom)], top, [(cx - rx - v - 0.03, bottom)]]),
      _shade(ident.hair, 0.8))


def _draw_body(cv: _Canvas, ident: _Identity, cx, cy, rx):
  chin = ident.neutral[8, 1]
  neck = 0.36 * rx
  shoulder = chin + 0.08
  cv.polygon([(cx - neck - 0.05, shoulder), (cx + neck + 0.05, shoulder),
              (cx + 0.55, shoulder + 0.12), (cx + 0.6, 1.5), (cx - 0.6, 1.5),
              (cx - 0.55, shoulder + 0.12)], ident.shirt)
  cv.polygon([(cx - neck, cy + 0.1), (cx + neck, cy + 0.1),
              (cx + neck, shoulder + 0.02), (cx, shoulder + 0.07),
              (cx - neck, shoulder + 0.02)], _shade(ident.skin, 0.78))
  for jaw_point, side in ((ident.neutral[1], 1), (ident.neutral[15], -1)):
    cv.ellipse((jaw_point[0] + side * 0.008, cy + 0.05), 0.028, 0.058,
               _shade(ident.skin, 0.88))


def _draw_face(cv: _Canvas, ident: _Identity, face: np.ndarray, cx, cy, rx):
  """Jaw plus forehead arc, in three shading rings (darker at the rim)."""
  outline = np.concatenate([
      face[JAW], _arc(cx, cy, rx, ident.forehead, 0, -np.pi, 17)[1:-1]])
  centre = outline.mean(0)
  for shrink, factor in ((1.0, 0.85), (0.93, 0.93), (0.84, 1.0)):
    cv.polygon(centre + (outline - centre) * shrink, _shade(ident.skin, factor))


def _draw_beard(cv: _Canvas, ident: _Identity, f: np.ndarray):
  if ident.beard in ("full", "stubble"):
    under_nose = f[33, 1] + 0.012
    shape = np.concatenate([f[2:15], [
        (f[14, 0] - 0.01, f[29, 1]), (f[35, 0] + 0.02, under_nose),
        (f[31, 0] - 0.02, under_nose), (f[2, 0] + 0.01, f[29, 1])]])
    alpha = 235 if ident.beard == "full" else 80
    cv.polygon(shape, _shade(ident.hair, 0.9, alpha))
  if ident.beard == "goatee":
    cv.polygon(np.concatenate([f[6:11], [
        (f[55, 0] + 0.008, f[55, 1] + 0.015), (f[57, 0], f[57, 1] + 0.01),
        (f[59, 0] - 0.008, f[59, 1] + 0.015)]]), _shade(ident.hair, 0.9, 235))
  if ident.beard in ("goatee", "moustache"):
    cv.polygon([(f[48, 0] - 0.01, f[48, 1] + 0.006), *f[49:54] - (0, 0.004),
                (f[54, 0] + 0.01, f[54, 1] + 0.006),
                (f[35, 0] + 0.015, f[35, 1] + 0.012), f[33] + (0, 0.007),
                (f[31, 0] - 0.015, f[31, 1] + 0.012)],
               _shade(ident.hair, 0.9, 235))


def _draw_hair(cv: _Canvas, ident: _Identity, cx, cy, rx):
  """Hair cap between an outer arc and a hairline that stays clear of brows."""
  if ident.hair_style == "bald":
    return
  v = ident.hair_volume
  ry = ident.forehead
  brow_top = ident.neutral[BROWS, 1].min()
  hairline = cy - (brow_top - ident.hairline_gap)
  a = np.linspace(0.15, -np.pi - 0.15, 29)
  outer_r = np.ones_like(a)
  if ident.hair_style == "curly":
    outer_r += 0.06 * np.abs(np.sin(9 * a))
    v += 0.02
  outer = np.stack([cx + (rx + v) * outer_r * np.cos(a),
                    cy + (ry + 1.3 * v) * outer_r * np.sin(a)], axis=1)
  power = 1.0
  inner_ry = np.full_like(a, hairline)
  if ident.hair_style == "bangs":
    power, inner_ry = 0.5, np.full_like(a, cy - (brow_top - 0.035))
  elif ident.hair_style == "side_part":
    inner_ry = hairline * (1 + 0.3 * np.cos(a))
  c, s = np.cos(a[::-1]), np.sin(a[::-1])
  inner = np.stack([cx + 0.97 * rx * np.sign(c) * np.abs(c) ** power,
                    cy + inner_ry[::-1] * np.sign(s) * np.abs(s) ** power], 1)
  cv.polygon(np.concatenate([outer, inner]), ident.hair)


def _draw_eye(cv: _Canvas, ident: _Identity, eye: np.ndarray):
  """Sclera polygon with an iris clipped to it, then lid lines."""
  pts = np.array(cv.xy(eye))
  x0, y0 = np.floor(pts.min(0)).astype(int) - 2
  x1, y1 = np.ceil(pts.max(0)).astype(int) + 2
  corner_dist = np.linalg.norm(eye[3] - eye[0])
  r = 0.22 * corner_dist * cv.unit
  centre = np.array(cv.xy([(eye[0] + eye[3]) / 2
                           + ident.gaze * corner_dist / 2]))[0] - (x0, y0)
  layer = Image.new("RGB", (x1 - x0, y1 - y0), _SCLERA)
  d = ImageDraw.Draw(layer)
  for radius, colour in ((r, ident.iris), (0.45 * r, (15, 10, 10))):
    d.ellipse([*(centre - radius), *(centre + radius)], fill=colour)
  glint = centre - 0.3 * r
  d.ellipse([*(glint - 0.2 * r), *(glint + 0.2 * r)], fill=(250, 250, 250))
  mask = Image.new("L", layer.size, 0)
  ImageDraw.Draw(mask).polygon([tuple(p) for p in pts - (x0, y0)], fill=255)
  cv.image.paste(layer, (int(x0), int(y0)), mask)
  cv.line(eye[0:4] - (0, 0.012), _shade(ident.skin, 0.82), 0.003)
  cv.line(eye[0:4], (35, 25, 25), 0.005)
  cv.line(np.concatenate([eye[3:6], eye[:1]]), _shade(ident.skin, 0.6), 0.003)


def _draw_brow(cv: _Canvas, ident: _Identity, brow: np.ndarray,
               outer_first: bool):
  taper = np.linspace(0.55, 1.0, 5) if outer_first else np.linspace(1, 0.55, 5)
  half = 0.5 * ident.brow_thickness * taper[:, None] * (0, 1)
  cv.polygon(np.concatenate([brow - half, (brow + half)[::-1]]),
             ident.brow_colour)


def _draw_nose(cv: _Canvas, ident: _Identity, f: np.ndarray):
  shadow_side = 1 if np.cos(ident.light_angle) < 0 else -1
  cv.line(f[27:31] + (shadow_side * 0.016, 0), _shade(ident.skin, 0.9), 0.008)
  for wing, side in ((f[31], -1), (f[35], 1)):
    cv.line([wing + (side * 0.004, -0.024), wing + (side * 0.01, -0.012), wing],
            _shade(ident.skin, 0.72), 0.004)
  cv.line(f[31:36], _shade(ident.skin, 0.7), 0.004)
  for a, b in ((31, 32), (34, 35)):
    cv.ellipse((f[a] + f[b]) / 2 - (0, 0.005), 0.009, 0.005,
               _shade(ident.skin, 0.42))


def _draw_mouth(cv: _Canvas, ident: _Identity, f: np.ndarray):
  """Dark opening, teeth, then both lips on top (they hide teeth overflow)."""
  inner = f[INNER_LIP]
  cv.polygon(inner, _MOUTH_INSIDE)
  upper_inner = f[60:65]
  teeth = np.concatenate([upper_inner, (upper_inner + (0, 0.016))[::-1]])
  cv.polygon(teeth, _TEETH)
  upper_lip = [48, 49, 50, 51, 52, 53, 54, 64, 63, 62, 61, 60]
  lower_lip = [54, 55, 56, 57, 58, 59, 48, 60, 67, 66, 65, 64]
  cv.polygon(f[upper_lip], ident.lip)
  cv.polygon(f[lower_lip], _shade(ident.lip, 1.08))
  cv.line(upper_inner, _shade(ident.lip, 0.55), 0.003)


def _draw_glasses(cv: _Canvas, ident: _Identity):
  if ident.glasses == "none":
    return
  f = ident.neutral
  power = 1.0 if ident.glasses == "round" else 0.4
  lenses = []
  for outer, inner in ((36, 39), (45, 42)):
    centre = (f[outer] + f[inner]) / 2 + (0, 0.004)
    hw = 0.62 * abs(f[inner, 0] - f[outer, 0]) + 0.01
    lens = _arc(centre[0], centre[1], hw, 0.042, 0, 2 * np.pi, 33, power)
    cv.polygon(lens, (255, 255, 255, 28))
    cv.line(lens, ident.glasses_colour, 0.006, closed=True)
    lenses.append((centre, hw))
  (cr, hr), (cl, hl) = lenses
  cv.line([(cr[0] + hr, cr[1] - 0.012), (_FACE_CENTRE, cr[1] - 0.02),
           (cl[0] - hl, cl[1] - 0.012)], ident.glasses_colour, 0.006)
  cv.line([(cr[0] - hr, cr[1] - 0.01), (f[0, 0], cr[1] - 0.014)],
          ident.glasses_colour, 0.006)
  cv.line([(cl[0] + hl, cl[1] - 0.01), (f[16, 0], cl[1] - 0.014)],
          ident.glasses_colour, 0.006)


def _alignment(landmarks: np.ndarray, size: int, prof: Profile) -> np.ndarray:
  """Eye alignment of one frame on the supersampled canvas: a 2x3 affine in
  its pixel-index coordinates (fer_jax.data.align's convention)."""
  px = size * _SUPERSAMPLE
  spec = align.AlignSpec(image_size=px, eye_distance=prof.eye_distance,
                         eye_height=prof.eye_height)
  return align.landmark_affine(landmarks * _SUPERSAMPLE - 0.5, spec)


def _aligned_landmarks(landmarks: np.ndarray, affine: np.ndarray) -> np.ndarray:
  """Pixel landmarks (centres on half-integers) through a canvas affine."""
  canvas = align.apply_affine(affine, landmarks * _SUPERSAMPLE - 0.5)
  return ((canvas + 0.5) / _SUPERSAMPLE).astype(np.float32)


def _render(ident: _Identity, face: np.ndarray, pose: np.ndarray, size: int,
            rng: np.random.Generator,
            affine: np.ndarray | None = None) -> np.ndarray:
  """Draws one supersampled frame, eye-aligns it if ``affine`` is given,
  downsamples (antialiasing), lights it and adds sensor noise."""
  cv = _Canvas(ident, pose, size)
  n = ident.neutral
  cx, cy = (n[0] + n[16]) / 2
  rx = (n[16, 0] - n[0, 0]) / 2
  _draw_hair_back(cv, ident, cx, cy, rx)
  _draw_body(cv, ident, cx, cy, rx)
  _draw_face(cv, ident, face, cx, cy, rx)
  _draw_beard(cv, ident, face)
  _draw_hair(cv, ident, cx, cy, rx)
  _draw_eye(cv, ident, face[RIGHT_EYE])
  _draw_eye(cv, ident, face[LEFT_EYE][[3, 2, 1, 0, 5, 4]])
  _draw_brow(cv, ident, face[RIGHT_BROW], outer_first=True)
  _draw_brow(cv, ident, face[LEFT_BROW], outer_first=False)
  _draw_nose(cv, ident, face)
  _draw_mouth(cv, ident, face)
  _draw_glasses(cv, ident)
  canvas = cv.image
  if affine is not None:
    canvas = align.warp(canvas, affine, cv.px)
  small = canvas.resize((size, size), Image.Resampling.LANCZOS)
  coords = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
  light = (coords[None, :] * np.cos(ident.light_angle)
           + coords[:, None] * np.sin(ident.light_angle))
  light = ident.brightness * (1 + 2 * ident.light_strength * light)
  image = np.asarray(small, np.float32) * light[..., None].astype(np.float32)
  image += rng.normal(0.0, _PIXEL_NOISE_STD, image.shape).astype(np.float32)
  return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def generate_sequence(spec: SynthSpec, subject_id: int,
                      seq_in_subject: int) -> list[dict]:
  """All frames of one sequence (neutral first, peak last) as frame dicts."""
  _check_indices(spec, subject_id, seq_in_subject)
  ident = _identity(spec.seed, subject_id, spec.params.identity_confound,
                    spec.params.identity_coupling)
  geo = _geometry(spec, ident, subject_id, seq_in_subject)
  landmarks, affines = _frame_landmarks(spec, geo)
  label = canonical_index(geo.expression)
  sequence_id = subject_id * spec.sequences_per_subject + seq_in_subject
  frames = []
  for t in range(spec.num_frames):
    rng = _rng(spec.seed, _PIXEL_STREAM, subject_id, seq_in_subject, t)
    frames.append({
        "image": _render(ident, geo.face[t], geo.pose[t], spec.image_size,
                         rng, affines[t]),
        "label": label,
        "subject_id": subject_id,
        "sequence_id": sequence_id,
        "frame_index": t,
        "num_frames": spec.num_frames,
        "intensity": float(geo.intensity[t]),
        "landmarks": landmarks[t],
    })
  return frames


def generate_frames(spec: SynthSpec) -> Iterator[dict]:
  """Every frame of the spec: subject by subject, sequence by sequence.

  Keys: image (H, W, 3) uint8; label (canonical index of the sequence's
  expression, on every frame as in CK+); subject_id, sequence_id (globally
  unique), frame_index (0-based), num_frames; intensity (float in [0, 1]);
  landmarks (68, 2) float32 pixel x, y (image corner at 0, 0; pixel (i, j)
  centred at (j + 0.5, i + 0.5)).
  """
  for subject in range(spec.num_subjects):
    for seq in range(spec.sequences_per_subject):
      yield from generate_sequence(spec, subject, seq)
