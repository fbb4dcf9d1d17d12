"""data.label_noise: the rate is met, the draw is deterministic from the
seed, only the training split is touched, and reports record it."""

import os

import numpy as np
import pytest

from fer_jax import config_lib, train
from fer_jax.data import protocols

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs")


def test_label_flips_rate_and_determinism():
  a = protocols.label_flips(20000, 0.3, "symmetric", 7, seed=3)
  b = protocols.label_flips(20000, 0.3, "symmetric", 7, seed=3)
  c = protocols.label_flips(20000, 0.3, "symmetric", 7, seed=4)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  assert abs((a > 0).mean() - 0.3) < 0.015
  # Symmetric: every other class equally likely (offsets 1..6).
  counts = np.bincount(a[a > 0], minlength=7)[1:]
  assert counts.min() > 0.8 * counts.mean()
  pairs = protocols.label_flips(20000, 0.3, "pairs", 7, seed=3)
  assert set(np.unique(pairs)) == {0, 1}
  # Entry i's draw does not depend on how many entries there are.
  np.testing.assert_array_equal(
      protocols.label_flips(100, 0.3, "symmetric", 7, 3), a[:100])


def test_label_flips_rejects_bad_rate_and_kind():
  with pytest.raises(ValueError, match="label_noise="):
    protocols.label_flips(10, 1.0, "symmetric", 7, 0)
  with pytest.raises(ValueError, match="label_noise_kind"):
    protocols.label_flips(10, 0.1, "uniform", 7, 0)


def _config(rate, kind="symmetric", seed=0):
  c = config_lib.load_config_module(
      os.path.join(CONFIGS, "gndl.py")).get_config()
  c.data.num_folds = 3
  c.data.label_noise = rate
  c.data.label_noise_kind = kind
  c.seed = seed
  return c


def test_noise_touches_the_training_split_only(fake_data):
  clean = train.prepare_data(_config(0.0))
  noisy = train.prepare_data(_config(0.4))
  for kind in ("single", "neutral_pair"):
    c_tr = clean.examples("train", kind, "peak")
    n_tr = noisy.examples("train", kind, "peak")
    np.testing.assert_array_equal(c_tr.slots["image"], n_tr.slots["image"])
    flipped = (c_tr.label != n_tr.label).mean()
    assert 0.25 < flipped < 0.55, flipped
    for split in ("test",):
      np.testing.assert_array_equal(clean.examples(split, kind, "peak").label,
                                    noisy.examples(split, kind, "peak").label)
  # A frame keeps its noisy label whichever example kind it sits in.
  single = noisy.examples("train", "single", "peak")
  pair = noisy.examples("train", "neutral_pair", "peak")
  by_row = dict(zip(single.slots["image"], single.label))
  assert all(by_row[r] == y for r, y in zip(pair.slots["image"], pair.label))
  # Pairs noise: every flip is k -> k + 1 mod K.
  pairs = train.prepare_data(_config(0.4, "pairs"))
  p_tr = pairs.examples("train", "single", "peak")
  k = len(pairs.classes)
  changed = p_tr.label != clean.examples("train", "single", "peak").label
  c_lab = clean.examples("train", "single", "peak").label
  np.testing.assert_array_equal(p_tr.label[changed], (c_lab[changed] + 1) % k)


def test_report_records_the_noise(fake_data):
  data = train.prepare_data(_config(0.4, seed=2))
  fields = data.report_fields()["label_noise"]
  assert fields["rate"] == 0.4 and fields["kind"] == "symmetric"
  assert fields["seed"] == 2
  train_rows = data.splits["train"]
  assert 0.25 < fields["flipped_train_fraction"] < 0.55
  assert train_rows.any()
  assert train.prepare_data(_config(0.0)).report_fields() == {}


def test_validation_names_the_field():
  c = _config(1.5)
  with pytest.raises(ValueError, match="data.label_noise"):
    config_lib.validate(c)


class _ConstantClassifier:
  """A method stand-in that predicts class ``k`` for every face."""
  eval_kind = "single"

  def __init__(self, k, num_classes):
    self.k, self.num_classes = k, num_classes

  def predict(self, state, batch):
    del state
    n = batch["image"].shape[0]
    return np.tile(np.eye(self.num_classes, dtype=np.float32)[self.k], (n, 1))


def test_noisy_label_fit_against_a_hand_count(fake_data):
  """report.label_noise.fit_on_train: of the flipped training examples,
  the share predicted as the noisy and as the true label; accuracy on the
  rest. A constant classifier makes each share a count of labels."""
  from fer_jax import evaluate, sharding  # pylint: disable=import-outside-toplevel
  data = train.prepare_data(_config(0.4, seed=1))
  ex = data.examples("train", "single", data.config.data.role)
  flipped = ex.label != ex.clean_label
  assert 0 < flipped.sum() < len(ex)
  mesh = sharding.make_mesh()
  for k in range(3):
    method = _ConstantClassifier(k, len(data.classes))
    fit = evaluate.noisy_label_fit(method, None, data, 8, mesh,
                                   method.predict)
    assert fit == {
        "num_flipped": int(flipped.sum()),
        "flipped_predicted_as_noisy_label": float(
            np.mean(ex.label[flipped] == k)),
        "flipped_predicted_as_true_label": float(
            np.mean(ex.clean_label[flipped] == k)),
        "clean_accuracy": float(np.mean(ex.label[~flipped] == k))}
  # Clean data: nothing to measure.
  clean = train.prepare_data(_config(0.0))
  constant = _ConstantClassifier(0, len(clean.classes))
  assert evaluate.noisy_label_fit(constant, None, clean, 8, mesh,
                                  constant.predict) is None
