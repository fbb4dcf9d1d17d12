"""Tests of the fer_synth generator, its TFDS builder and its contact sheet."""

from __future__ import annotations

import dataclasses
import functools
import sys

import numpy as np
import pytest
from PIL import Image

from fer_jax.data_builders.fer_synth import contact_sheet, generator
from fer_jax.data_builders.fer_synth.generator import (
    EXPRESSIONS, SynthSpec, generate_frames, generate_sequence, mean_shape,
    sequence_expression, sequence_landmarks)
from fer_jax.data.classes import CANONICAL_CLASSES, canonical_index

TINY = SynthSpec(num_subjects=4, num_frames=8, image_size=32)
WEAK = slice(5, 8)  # frames 6-8, 1-based


def _align(points: np.ndarray) -> np.ndarray:
  """Similarity-aligns (..., 68, 2) landmarks to the template, stable points."""
  ref = mean_shape()[generator.STABLE_POINTS]
  src = points[..., generator.STABLE_POINTS, :]
  z = src[..., 0] + 1j * src[..., 1]
  w = ref[:, 0] + 1j * ref[:, 1]
  zc = z - z.mean(-1, keepdims=True)
  scale = (np.conj(zc) * (w - w.mean())).sum(-1) / (np.abs(zc) ** 2).sum(-1)
  all_z = points[..., 0] + 1j * points[..., 1]
  out = (all_z - z.mean(-1, keepdims=True)) * scale[..., None] + w.mean()
  return np.stack([out.real, out.imag], -1)


@functools.lru_cache(maxsize=None)
def _geometry(num_subjects: int = 24, seed: int = 0):
  """Aligned landmarks (N, T, 68, 2), labels and subjects of all sequences."""
  spec = SynthSpec(num_subjects=num_subjects, seed=seed)
  seqs = [(s, q) for s in range(spec.num_subjects)
          for q in range(spec.sequences_per_subject)]
  out = [sequence_landmarks(spec, s, q) for s, q in seqs]
  return (_align(np.stack([o["landmarks"] for o in out]).astype(np.float64)),
          np.array([o["label"] for o in out]), np.array([s for s, _ in seqs]))


# --- SynthSpec ---------------------------------------------------------------

@pytest.mark.parametrize("field, value, match", [
    ("num_subjects", 1, "num_subjects must be >= 2"),
    ("sequences_per_subject", 0, "sequences_per_subject must be >= 1"),
    ("num_frames", 7, "num_frames must be >= 8"),
    ("image_size", 31, "image_size must be >= 32"),
    ("seed", -1, "seed must be >= 0"),
    ("image_size", 64.0, "image_size must be an int"),
])
def test_spec_validation(field, value, match):
  with pytest.raises(ValueError, match=match):
    SynthSpec(**{field: value})


def test_spec_needs_every_expression():
  with pytest.raises(ValueError, match="every expression"):
    SynthSpec(num_subjects=2, sequences_per_subject=3)


def test_expression_names_are_canonical():
  assert set(EXPRESSIONS) == set(CANONICAL_CLASSES) - {"neutral"}


# --- determinism and records -------------------------------------------------

def test_deterministic_and_seeded():
  a = generate_sequence(TINY, 1, 2)
  b = generate_sequence(TINY, 1, 2)
  other_seed = generate_sequence(dataclasses.replace(TINY, seed=1), 1, 2)
  for fa, fb, fc in zip(a, b, other_seed):
    np.testing.assert_array_equal(fa["image"], fb["image"])
    np.testing.assert_array_equal(fa["landmarks"], fb["landmarks"])
    assert not np.array_equal(fa["image"], fc["image"])
  assert not np.array_equal(a[-1]["landmarks"], other_seed[-1]["landmarks"])


def test_subject_independent_of_spec_size():
  small = generate_sequence(TINY, 1, 3)
  large = generate_sequence(dataclasses.replace(TINY, num_subjects=9), 1, 3)
  for fs, fl in zip(small, large):
    np.testing.assert_array_equal(fs["image"], fl["image"])


def test_frame_records():
  frames = list(generate_frames(TINY))
  assert len(frames) == 4 * 7 * 8
  seq_ids = set()
  for f in frames:
    assert f["image"].shape == (32, 32, 3) and f["image"].dtype == np.uint8
    assert f["landmarks"].shape == (68, 2)
    assert f["landmarks"].dtype == np.float32
    assert f["num_frames"] == 8 and 0 <= f["frame_index"] < 8
    expected = sequence_expression(
        TINY, f["subject_id"], f["sequence_id"] % TINY.sequences_per_subject)
    assert f["label"] == canonical_index(expected)
    seq_ids.add(f["sequence_id"])
  assert seq_ids == set(range(28))
  # Sequence by sequence, frames in order.
  assert [f["frame_index"] for f in frames[:16]] == list(range(8)) * 2


def test_landmarks_match_generated_frames():
  frames = generate_sequence(TINY, 2, 5)
  geo = sequence_landmarks(TINY, 2, 5)
  np.testing.assert_array_equal(
      np.stack([f["landmarks"] for f in frames]), geo["landmarks"])
  np.testing.assert_array_equal(
      np.array([f["intensity"] for f in frames], np.float32), geo["intensity"])


def test_expressions_cover_and_cycle():
  few = SynthSpec(num_subjects=4, sequences_per_subject=2)
  assert {sequence_expression(few, s, q) for s in range(4)
          for q in range(2)} == set(EXPRESSIONS)
  many = SynthSpec(num_subjects=2, sequences_per_subject=9)
  names = [sequence_expression(many, 0, q) for q in range(9)]
  assert names[:7] == list(EXPRESSIONS) and names[7:] == list(EXPRESSIONS[:2])


# --- geometry ----------------------------------------------------------------

def test_intensity_profile():
  spec = SynthSpec(num_subjects=24)
  for s in range(spec.num_subjects):
    for q in range(7):
      i = sequence_landmarks(spec, s, q)["intensity"]
      assert i[0] == 0.0 and np.all(np.diff(i) > 0) and i[-1] <= 1.0
      assert i[-1] == i.max() >= 0.6
      assert i[WEAK].max() < 0.5 * i[-1]  # weak frames are clearly weak


def test_landmark_layout():
  spec = SynthSpec(num_subjects=24)
  for s in range(spec.num_subjects):
    for q in range(7):
      lm = sequence_landmarks(spec, s, q)["landmarks"]
      assert lm.min() >= 0 and lm.max() <= spec.image_size
      for p in lm[[0, -1]]:
        brows, eyes, mouth = (p[g, 1].mean() for g in (
            generator.BROWS, generator.EYES, generator.MOUTH))
        assert brows < eyes < p[30, 1] < mouth < p[8, 1]
        assert p[36, 0] < p[39, 0] < p[42, 0] < p[45, 0]
        assert p[48, 0] < p[54, 0] and p[0, 0] < p[16, 0]


def test_identity_exceeds_weak_expression():
  lm, _, subjects = _geometry()
  neutral = lm[:, 0]
  weak = lm[:, WEAK]
  between = np.linalg.norm(
      neutral[subjects == 0][0] - neutral[subjects != 0], axis=-1).mean()
  weak_motion = np.linalg.norm(weak - neutral[:, None], axis=-1).mean()
  assert between > 2 * weak_motion, (between, weak_motion)

  spec = SynthSpec(num_subjects=6, image_size=64)
  seqs = [generate_sequence(spec, s, 4) for s in range(6)]
  neutrals = np.stack([s[0]["image"] for s in seqs]).astype(np.float32)
  weak_px = np.stack([s[6]["image"] for s in seqs]).astype(np.float32)
  between_px = np.abs(neutrals[:, None] - neutrals[None]).mean(axis=(2, 3, 4))
  within_px = np.abs(weak_px - neutrals).mean(axis=(1, 2, 3))
  assert between_px[~np.eye(6, dtype=bool)].min() > 2 * within_px.max()


def _displacement(name: str) -> np.ndarray:
  lm, labels, _ = _geometry()
  sel = labels == canonical_index(name)
  return lm[sel, -1] - lm[sel, 0]  # (subjects, 68, 2), y down


@pytest.mark.parametrize("name, cue", [
    ("happiness", lambda d: -d[:, generator.MOUTH_CORNERS, 1].mean(1)),
    ("happiness", lambda d: d[:, 54, 0] - d[:, 48, 0]),  # mouth wider
    ("surprise", lambda d: -d[:, generator.BROWS, 1].mean(1)),  # brows up
    ("surprise", lambda d: d[:, 66, 1] - d[:, 62, 1]),  # mouth opens
    ("surprise", lambda d: -d[:, [37, 38, 43, 44], 1].mean(1)),  # eyes widen
    ("fear", lambda d: -d[:, [20, 21, 22, 23], 1].mean(1)),  # inner brows up
    ("fear", lambda d: d[:, 54, 0] - d[:, 48, 0]),  # lips stretched
    ("sadness", lambda d: -d[:, [21, 22], 1].mean(1)),  # inner brows up
    ("sadness", lambda d: d[:, generator.MOUTH_CORNERS, 1].mean(1)),
    ("anger", lambda d: d[:, generator.BROWS, 1].mean(1)),  # brows down
    ("anger", lambda d: d[:, 21, 0] - d[:, 22, 0]),  # brows drawn together
    ("disgust", lambda d: -d[:, generator.NOSE_BASE, 1].mean(1)),  # nose up
    ("disgust", lambda d: -d[:, [50, 51, 52], 1].mean(1)),  # upper lip up
    ("contempt", lambda d: np.abs(d[:, 48, 1] - d[:, 54, 1])),  # one-sided
])
def test_expression_direction(name, cue):
  values = cue(_displacement(name))
  scale = np.linalg.norm(_displacement(name), axis=-1).mean()
  assert np.mean(values > 0.2 * scale) >= 0.9, values / scale


def test_contempt_is_one_sided_happiness_is_not():
  def asymmetry(d):
    return np.abs(d[:, 48, 1] - d[:, 54, 1]) / np.abs(d[:, [48, 54], 1]).sum(1)
  assert asymmetry(_displacement("contempt")).mean() > 0.6
  assert asymmetry(_displacement("happiness")).mean() < 0.25


# --- learnability: expression is learnable, identity is a nuisance -----------

def _nearest_class_mean_accuracy(train_x, train_y, test_x, test_y) -> float:
  classes = np.unique(train_y)
  means = np.stack([train_x[train_y == c].mean(0) for c in classes])
  dist = ((test_x[:, None] - means[None]) ** 2).sum(-1)
  return float((classes[dist.argmin(1)] == test_y).mean())


def _subject_split_accuracy(features, labels, subjects, test_features=None):
  """Mean accuracy over two folds: even subjects vs odd subjects."""
  x = features.reshape(len(features), -1)
  tx = x if test_features is None else test_features.reshape(len(x), -1)
  accs = []
  for half in (0, 1):
    train = subjects % 2 == half
    accs.append(_nearest_class_mean_accuracy(
        x[train], labels[train], tx[~train], labels[~train]))
  return float(np.mean(accs))


def test_learnability():
  lm, labels, subjects = _geometry()
  neutral, peak = lm[:, 0], lm[:, -1]
  raw = _subject_split_accuracy(peak, labels, subjects)
  disp = _subject_split_accuracy(peak - neutral, labels, subjects)
  weak = np.mean([_subject_split_accuracy(lm[:, t] - neutral, labels, subjects)
                  for t in range(WEAK.start, WEAK.stop)])
  chance = 1 / len(EXPRESSIONS)
  print(f"NCM accuracy: raw peak {raw:.3f}, peak - neutral {disp:.3f}, "
        f"weak (frames 6-8) - neutral {weak:.3f}, chance {chance:.3f}")
  assert disp > 0.8
  assert raw < disp - 0.15
  assert chance + 0.2 < weak < disp


# --- TFDS builder and contact sheet ------------------------------------------

def test_tfds_tiny_build_and_read(tmp_path):
  from fer_jax.data_builders.fer_synth import FerSynth

  builder = FerSynth(config="tiny", data_dir=str(tmp_path))
  builder.download_and_prepare(file_format="array_record")
  source = builder.as_data_source()["train"]
  spec = builder.builder_config.spec
  assert spec == TINY
  assert len(source) == 4 * 7 * 8
  features = builder.info.features
  assert features["label"].names == list(CANONICAL_CLASSES)
  assert features["landmarks"].shape == (68, 2)
  expected = {(f["sequence_id"], f["frame_index"]): f
              for f in generate_frames(spec)}
  for i in range(0, len(source), 7):
    got = source[i]
    want = expected[(int(got["sequence_id"]), int(got["frame_index"]))]
    np.testing.assert_array_equal(got["image"], want["image"])
    np.testing.assert_array_equal(got["landmarks"], want["landmarks"])
    for key in ("label", "subject_id", "num_frames"):
      assert int(got[key]) == want[key]
    assert float(got["intensity"]) == pytest.approx(want["intensity"])
  assert "tensorflow" not in sys.modules


def test_config_from_spec():
  from fer_jax.data_builders.fer_synth import FerSynthConfig

  config = FerSynthConfig.from_spec(SynthSpec())
  assert config.name == "s24_q7_f12_r128_seed0"
  assert config.spec == SynthSpec()
  with pytest.raises(ValueError, match="num_frames"):
    FerSynthConfig(name="bad", num_frames=4)


def test_contact_sheet(tmp_path):
  out = tmp_path / "sheet.png"
  contact_sheet.main([f"--out={out}", "--size=32", "--subjects=2",
                      "--num_frames=8", "--sequence_subject=1"])
  sheet = Image.open(out)
  assert sheet.width == 7 * 32 and sheet.height > 3 * 32


# --- the 'benchmark' profile ---------------------------------------------------

BENCH = SynthSpec(num_subjects=24, num_frames=12, image_size=64,
                  profile="benchmark")


def test_benchmark_profile_is_eye_aligned():
  """Every frame's eye centres sit where fer_jax.data.align puts them."""
  prof = BENCH.params
  for s, q in ((0, 0), (5, 3), (11, 6)):
    lm = sequence_landmarks(BENCH, s, q)["landmarks"].astype(np.float64)
    left = lm[:, 36:42].mean(1) - 0.5  # pixel-index coordinates
    right = lm[:, 42:48].mean(1) - 0.5
    size = BENCH.image_size
    np.testing.assert_allclose(right[:, 1] - left[:, 1], 0, atol=1e-3)
    np.testing.assert_allclose(np.hypot(*(right - left).T),
                               prof.eye_distance * size, rtol=1e-4)
    np.testing.assert_allclose((left + right)[:, 0] / 2, (size - 1) / 2,
                               atol=0.02)
  frames = generate_sequence(BENCH, 5, 3)
  np.testing.assert_array_equal(
      np.stack([f["landmarks"] for f in frames]),
      sequence_landmarks(BENCH, 5, 3)["landmarks"])


def test_benchmark_profile_plateau_and_weak_frames():
  for s in range(BENCH.num_subjects):
    for q in range(7):
      i = sequence_landmarks(BENCH, s, q)["intensity"]
      assert i[0] == 0 and np.all(i[-3:] == i[-1]) and i[-1] >= 0.85
      assert i[WEAK].max() < 0.5 * i[-1]  # frames 6-8: really weak
      assert i[WEAK].min() > 0.1 * i[-1]  # ... but not neutral


def test_benchmark_class_averages_carry_class_signal():
  """Aligned, stronger expressions: class-average peak faces differ from the
  mean face beyond the classic profile's (1.33x on these 12 subjects, whose
  class averages hold sampling noise too; 1.7x on 96 subjects)."""
  def spread(spec):
    imgs, labels = [], []
    for s in range(12):
      for q in range(7):
        f = generate_sequence(spec, s, q)[-1]
        imgs.append(f["image"].astype(np.float32) / 127.5 - 1)
        labels.append(f["label"])
    imgs, labels = np.stack(imgs), np.array(labels)
    mean = imgs.mean(0)
    return np.mean([np.abs(imgs[labels == c].mean(0) - mean).mean()
                    for c in np.unique(labels)])
  classic = dataclasses.replace(BENCH, profile="classic")
  assert spread(BENCH) > 1.2 * spread(classic)


def test_profile_validation_and_builder_name():
  from fer_jax.data_builders.fer_synth import FerSynthConfig
  with pytest.raises(ValueError, match="profile"):
    SynthSpec(profile="wild")
  config = FerSynthConfig.from_spec(BENCH)
  assert config.name == "s24_q7_f12_r64_seed0_benchmark"
  assert config.spec == BENCH


def _held_out_r2(x, y, train_share=0.7):
  """R^2 on the last 30% of rows of a least-squares fit on the first 70%."""
  n = len(x)
  train = np.arange(n) < n * train_share
  x = np.c_[x, np.ones(n)]
  w = np.linalg.lstsq(x[train], y[train], rcond=None)[0]
  residual = y[~train] - x[~train] @ w
  return 1 - residual.var(0).sum() / y[~train].var(0).sum()


def test_coupled_profile_makes_the_resting_face_inferable():
  """identity_coupling: resting brow heights and mouth corners (traits that
  copy expressions) are predictable from expression-free landmarks (jaw,
  nose, eye corners) in 'coupled', not in 'benchmark' (README's figures:
  1500 subjects of seed 5)."""
  from fer_jax.data_builders.fer_synth import generator as g
  stable = np.r_[g.JAW, g.NOSE_BRIDGE, g.NOSE_BASE, [36, 39, 42, 45]]
  r2 = {}
  for name in ("benchmark", "coupled"):
    p = g.PROFILES[name]
    faces = np.stack([g._identity(5, s, p.identity_confound,
                                  p.identity_coupling).neutral
                      for s in range(1500)])
    x = faces[:, stable].reshape(len(faces), -1)
    r2[name] = {part: _held_out_r2(x, faces[:, idx, 1]) for part, idx in
                (("brows", g.BROWS), ("mouth_corners", [48, 54, 60, 64]))}
  print(r2)
  assert r2["benchmark"]["brows"] < 0.1 < 0.5 < r2["coupled"]["brows"]
  assert r2["coupled"]["mouth_corners"] > r2["benchmark"]["mouth_corners"] + 0.3
