"""cGAN+WSC: landmark geometry, the NME, the pix2pix step, and a run whose
report carries the re-annotation experiment."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fer_jax import config_lib, train
from fer_jax.data import augment as augment_lib
from fer_jax.data import pipeline, run_data
from fer_jax.models.landmarks import (LandmarkNet, normalised_mean_error,
                                      soft_argmax)

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs")


def tiny_config():
  return config_lib.load_config_module(
      os.path.join(CONFIGS, "cgan_wsc.py")).get_config("tiny")


@pytest.fixture
def trainer(make_table, tmp_path):
  table = make_table(num_subjects=6, num_frames=8, image_size=32,
                     with_landmarks=True)
  cfg = tiny_config()
  return train.Trainer(cfg, str(tmp_path), run_data.from_table(cfg, table))


def test_nme_by_hand():
  true = np.zeros((1, 68, 2), np.float32)
  true[0, 36] = (0.0, 0.0)
  true[0, 45] = (4.0, 0.0)  # inter-ocular distance 4
  pred = true.copy()
  pred[0, :, 1] += 1.0  # every point 1 off
  np.testing.assert_allclose(normalised_mean_error(pred, true), [0.25])


def test_landmarks_follow_resize_and_centre_crop(trainer):
  """A point at source pixel p lands at (p * resize / src - offset) / crop
  of the evaluation view."""
  m = trainer.method
  object.__setattr__(m.spec, "resize", 40)  # 40 -> centre crop 32, offset 4
  p = jnp.asarray([[[16.0, 8.0]]])
  np.testing.assert_allclose(augment_lib.view_points(m.spec, p, 32),
                             [[[(20 - 4) / 32, (10 - 4) / 32]]])


def test_landmark_net_starts_at_the_centre():
  net = LandmarkNet("resnet18", base_width=8, head="regression")
  x = jnp.zeros((2, 32, 32, 3))
  variables = net.init(jax.random.key(0), x)
  np.testing.assert_allclose(net.apply(variables, x), 0.5)


def test_heatmap_head_shapes_and_soft_argmax():
  """A peaked map gives its cell's centre, a flat one the map's centre;
  the heat-map net sees 64 px through 16 x 16 maps."""
  logits = np.zeros((1, 4, 8, 2), np.float32)
  logits[0, 1, 6, 0] = 100.0  # row 1 of 4, column 6 of 8
  np.testing.assert_allclose(soft_argmax(jnp.asarray(logits)),
                             [[[6.5 / 8, 1.5 / 4], [0.5, 0.5]]], atol=1e-6)
  net = LandmarkNet("resnet18", base_width=8)
  x = jax.random.normal(jax.random.key(1), (2, 64, 64, 3))
  variables = net.init(jax.random.key(0), x)
  assert variables["params"]["heatmaps"]["kernel"].shape == (1, 1, 32, 68)
  out = net.apply(variables, x)
  assert out.shape == (2, 68, 2)
  assert np.all((np.asarray(out) > 0) & (np.asarray(out) < 1))
  with pytest.raises(ValueError, match="head"):
    LandmarkNet(head="mlp").init(jax.random.key(0), x)


def test_cgan_step_lowers_l1_on_a_fixed_batch(trainer):
  ex = trainer.data.examples("train", "neutral_pair", "peak")
  batch = {k: jnp.asarray(v) for k, v in
           pipeline.gather(ex, np.arange(4)).items()}
  state = trainer.init_state()["model"]
  step = jax.jit(trainer.phases[0].step)
  key = jax.random.key(0)
  _, first = step(state, batch, key)
  for _ in range(5):
    state, _ = step(state, batch, key)
  _, after = step(state, batch, key)
  assert float(after["g_l1"]) < float(first["g_l1"])


def test_run_reports_the_reannotation_experiment(trainer, tmp_path):
  report = trainer.train()
  saved = json.load(open(tmp_path / "eval" / "report.json"))
  assert saved["accuracy"] == report["accuracy"]
  n = report["num_examples"]
  # 30% of the test labels flipped, exactly.
  assert report["noisy_label_accuracy"] == pytest.approx(
      1 - round(0.3 * n) / n)
  assert report["num_clusters"] in [p["num_clusters"]
                                    for p in report["curve"]]
  best = max(report["curve"], key=lambda p: p["modularity"])
  assert best["accuracy"] == report["accuracy"]
  assert set(report["baselines"]) == {"pca", "not_optimised",
                                      "true_landmarks",
                                      "true_face_generated_neutral"}
  assert report["reannotation_accuracy"] == report["accuracy"]
  # Issue 21: every feature set and WSE form re-annotated side by side.
  assert set(report["feature_kinds"]) == {"geometric", "displacement",
                                          "both"}
  assert report["features"] == "both"  # the synthetic default's
  assert report["feature_kinds"]["both"]["cgan"] == report["accuracy"]
  assert report["wse_forms"]["normalized"] == report["accuracy"]
  for arm in ("reannotated", "noisy"):
    assert 0.0 <= report["classifier"][arm]["accuracy"] <= 1.0
  assert len(report["classifier"]["halves_reannotation_accuracy"]) == 2
  assert report["binary"]["num_examples"] > 0
  assert set(report["clean_label_knn_accuracy"]) == {
      "cgan", "true_face_generated_neutral", "true_landmarks"}
  assert 0 <= report["landmark_nme"]
  for name in ("reannotation.png", "neutral.png", "confusion_matrix.png"):
    assert os.path.exists(tmp_path / "eval" / name)
