"""IF-GAN: class-average targets from the training split only, each loss
reaches only the networks the paper routes it to, G's L1 falls, images."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fer_jax import config_lib, train
from fer_jax.data import pipeline, run_data

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs")


def tiny_config(**ifgan_overrides):
  c = config_lib.load_config_module(
      os.path.join(CONFIGS, "ifgan.py")).get_config("tiny")
  c.ifgan.update(**ifgan_overrides)
  return c


@pytest.fixture
def setup(make_table, tmp_path):
  table = make_table(num_subjects=6, num_frames=8, image_size=16)
  # Faces whose brightness encodes the class, so the class averages are
  # distinct, learnable targets (random pixels average to flat grey).
  noise = np.random.default_rng(0).integers(0, 40, table.images.shape)
  table.images = (table.label[:, None, None, None] * 25 + noise).astype(
      np.uint8)

  def make(**overrides):
    cfg = tiny_config(**overrides)
    return train.Trainer(cfg, str(tmp_path), run_data.from_table(cfg, table))
  return table, make


def fixed_batch(trainer, n=8):
  ex = trainer.data.examples("train", "single", "peak")
  return {k: jnp.asarray(v) for k, v in
          pipeline.gather(ex, np.arange(n)).items()}


def test_class_averages_use_the_training_split_only(setup, tmp_path):
  table, make = setup
  trainer = make()
  ex = trainer.data.examples("train", "single", "peak")
  train_rows = set(ex.slots["image"].tolist())
  test_rows = trainer.data.examples("test", "single", "peak").slots["image"]
  assert not train_rows & set(test_rows.tolist())
  avg = trainer.method.class_avg
  for k in range(avg.shape[0]):
    rows = ex.slots["image"][ex.label == k]
    np.testing.assert_allclose(avg[k], table.images[rows].mean(0), atol=1e-4)
  # The held-out frames would change the averages: they are not in them.
  all_ex = trainer.data.examples("test", "single", "peak")
  k = int(all_ex.label[0])
  rows = np.concatenate([ex.slots["image"][ex.label == k],
                         all_ex.slots["image"][all_ex.label == k]])
  assert not np.allclose(avg[k], table.images[rows].mean(0), atol=1e-2)
  assert (tmp_path / "class_averages.png").exists()
  cached = np.load(tmp_path / "class_averages.npz")
  np.testing.assert_array_equal(cached["images"], avg)


# Which networks each loss term must move (docs/methods.md section 2).
ROUTES = {
    "w_gan": {"g", "d"},
    "w_l1": {"g"},
    "w_softmax": {"g", "e"},
    "w_island": {"e"},
}


@pytest.mark.parametrize("term", sorted(ROUTES))
def test_each_loss_reaches_only_its_networks(setup, term):
  _, make = setup
  weights = {k: 0.0 for k in ROUTES}
  weights[term] = 1.0
  trainer = make(**weights)
  state = trainer.init_state()["model"]
  new, _ = jax.jit(trainer.phases[0].step)(state, fixed_batch(trainer),
                                           jax.random.PRNGKey(1))
  moved = {net for net in ("g", "d", "e") if any(
      not np.array_equal(a, b) for a, b in zip(
          jax.tree.leaves(state[net]["params"]),
          jax.tree.leaves(new[net]["params"])))}
  assert moved == ROUTES[term]


def test_steps_lower_g_l1_on_a_fixed_batch(setup):
  _, make = setup
  trainer = make()
  state = trainer.init_state()["model"]
  step = jax.jit(trainer.phases[0].step)
  batch = fixed_batch(trainer)
  key = jax.random.PRNGKey(0)
  _, first = step(state, batch, key)
  for _ in range(5):
    state, m = step(state, batch, key)
  assert float(m["g_l1"]) < float(first["g_l1"])


@pytest.mark.parametrize("mode", ["pair", "generated"])
def test_predict_runs_e_on_generated_faces(setup, mode):
  _, make = setup
  trainer = make(classifier_input=mode)
  state = trainer.init_state()["model"]
  logits = jax.jit(trainer.method.predict)(state, fixed_batch(trainer))
  assert logits.shape == (8, 7) and np.all(np.isfinite(logits))
  first_conv = state["e"]["params"]["net"]["backbone"]["conv1"]["kernel"]
  assert first_conv.shape[2] == (6 if mode == "pair" else 3)


def test_writes_generated_and_attention_grids(setup, tmp_path):
  _, make = setup
  trainer = make()
  state = trainer.init_state()["model"]
  trainer.method.write_images(state, fixed_batch(trainer), str(tmp_path))
  from PIL import Image
  grid = np.asarray(Image.open(tmp_path / "generated.png"))
  assert grid.shape[0] > 3 * 16  # three rows: input, generated, target
  att = np.asarray(Image.open(tmp_path / "attention.png"))
  assert att.shape[1] > 5 * 16  # input, generated, three query maps
  stats = json.loads((tmp_path / "generated_stats.json").read_text())
  assert stats["num_examples"] == 8
  assert 0 <= stats["nearest_class_average_accuracy"] <= 1


def test_generated_stats_by_hand(setup):
  """A G that outputs the true class average scores 1 and distance 0; the
  distances are mean |G(x) - I_AE| over pixels, as computed by hand."""
  _, make = setup
  trainer = make()
  method = trainer.method
  state = trainer.init_state()["model"]
  batch = fixed_batch(trainer)
  avgs = method.eval_view({"image": state["class_avg"].round().astype(
      jnp.uint8)})
  labels = np.asarray(batch["label"])
  method._generate = lambda st, x, return_attention=False: jnp.asarray(
      np.asarray(avgs)[labels])
  stats = jax.device_get(method._generated_stats(state, batch))
  assert float(stats["nearest_class_average_accuracy"]) == 1.0
  assert float(stats["l1_to_true_class_average"]) < 0.01
  a = np.asarray(avgs)
  d = np.abs(a[labels][:, None] - a[None]).mean(axis=(2, 3, 4))
  d[np.arange(len(labels)), labels] = np.inf
  np.testing.assert_allclose(stats["l1_to_nearest_other_class_average"],
                             d.min(1).mean(), rtol=2e-2)


def test_patchgan_too_deep_for_the_image_is_refused():
  from fer_jax.models.patchgan import PatchGAN
  with pytest.raises(ValueError, match="PatchGAN.num_layers=3"):
    jax.eval_shape(lambda: PatchGAN(num_layers=3).init(
        jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 6)), train=False))


def test_unknown_classifier_input_is_refused(setup):
  _, make = setup
  with pytest.raises(ValueError, match="config.ifgan.classifier_input"):
    make(classifier_input="both")
