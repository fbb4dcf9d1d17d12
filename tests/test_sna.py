"""SNA: its losses against hand computation, the mask's gradient, the
class-balanced batches, the autoencoder's loss weights and critic schedule,
the frozen perceptual network, the networks against Tables I and II, the
consistency counts, and a killed run that resumes."""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fer_jax import config_lib, losses, train
from fer_jax.data import pipeline, run_data
from fer_jax.methods import sna
from fer_jax.models.autoencoder import Decoder, Encoder
from fer_jax.models.multiscale import MultiScaleNet

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs")


def tiny_config(**sna_overrides):
  c = config_lib.load_config_module(
      os.path.join(CONFIGS, "sna.py")).get_config("tiny")
  c.sna.update(**sna_overrides)
  return c


TABLE = dict(num_subjects=4, num_frames=8, image_size=32)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, make_table):
  """One trainer, its initial state, a batch per phase and jitted steps,
  shared by the tests (every compile is paid once)."""
  table = make_table(**TABLE)
  cfg = tiny_config()
  trainer = train.Trainer(cfg, str(tmp_path_factory.mktemp("sna")),
                          run_data.from_table(cfg, table))
  state = trainer.init_state()["model"]
  phases = {p.name: p for p in trainer.phases}
  batches = {}
  for name, p in phases.items():
    ex = trainer.data.examples("train", p.example_kind, p.role)
    batches[name] = {k: jnp.asarray(v) for k, v in pipeline.gather(
        ex, np.arange(p.batch_size)).items()}
  steps = {name: jax.jit(p.step) for name, p in phases.items()}
  return trainer, state, batches, steps


def leaves_equal(a, b):
  return all(np.array_equal(x, y) for x, y in
             zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# ------------------------------------------------------------------ losses

def test_symmetric_kl_by_hand():
  lp = np.array([[1.0, 0.0, -1.0], [0.3, 0.3, 0.3]], np.float32)
  lq = np.array([[0.0, 2.0, 0.5], [0.3, 0.3, 0.3]], np.float32)
  p = np.exp(lp) / np.exp(lp).sum(-1, keepdims=True)
  q = np.exp(lq) / np.exp(lq).sum(-1, keepdims=True)
  kl = lambda a, b: np.sum(a * np.log(a / b), -1)
  want = 0.5 * (kl(p, q) + kl(q, p))
  got = losses.symmetric_kl(jnp.asarray(lp), jnp.asarray(lq))
  np.testing.assert_allclose(got, want, rtol=1e-5)
  assert float(got[1]) == pytest.approx(0.0, abs=1e-7)
  # Symmetric in its arguments.
  np.testing.assert_allclose(losses.symmetric_kl(lq, lp), got, rtol=1e-6)


def test_focal_loss_by_hand():
  logits = np.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]], np.float32)
  labels = np.array([0, 2])
  p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  pt = p[np.arange(2), labels]
  for gamma in (0.0, 2.0, 0.5):
    want = -((1 - pt) ** gamma) * np.log(pt)
    got = losses.focal_loss_per_sample(jnp.asarray(logits),
                                       jnp.asarray(labels), gamma)
    np.testing.assert_allclose(got, want, rtol=1e-5)
  # gamma 0 is the cross-entropy.
  np.testing.assert_allclose(
      jnp.mean(losses.focal_loss_per_sample(logits, labels, 0.0)),
      losses.cross_entropy(logits, labels), rtol=1e-6)


def test_mask_thresholds():
  div = jnp.array([0.1, 0.5, 0.2, 0.9])
  # BT: the batch mean 0.425 keeps 0.1 and 0.2 (eq. 14).
  np.testing.assert_array_equal(losses.neighbourhood_mask(div),
                                [1, 0, 1, 0])
  # T: strictly below (delta(T - Div) is 1 for T - Div > 0).
  np.testing.assert_array_equal(losses.neighbourhood_mask(div, 0.5),
                                [1, 0, 1, 0])
  np.testing.assert_array_equal(losses.neighbourhood_mask(div, 0.55),
                                [1, 1, 1, 0])


def test_multiscale_and_reconstruction_loss_weights():
  rng = np.random.default_rng(0)
  shapes = [(2, 8, 8, 1), (2, 4, 4, 3), (2, 2, 2, 5)]
  z = [rng.normal(size=s).astype(np.float32) for s in shapes]
  zh = [rng.normal(size=s).astype(np.float32) for s in shapes]
  mse = [np.mean((a - b) ** 2) for a, b in zip(z, zh)]
  total, levels = losses.multiscale_ae_loss(z, zh, (4.0, 1.0, 1.0))
  np.testing.assert_allclose(levels, mse, rtol=1e-6)
  # Eq. 4: alpha_l / |z^l| ||z^l - z_hat^l||^2, batch mean.
  by_hand = sum(a * np.sum((x - y) ** 2) / (x.size / 2) for a, x, y in
                zip((4.0, 1.0, 1.0), z, zh)) / 2
  np.testing.assert_allclose(total, by_hand, rtol=1e-5)
  rec, pixel, perc = losses.reconstruction_loss(
      zh[0], z[0], zh[1:], z[1:], 2.0, (100.0, 0.1))
  np.testing.assert_allclose(pixel, mse[0], rtol=1e-6)
  np.testing.assert_allclose(rec, 2 * mse[0] + 100 * mse[1] + 0.1 * mse[2],
                             rtol=1e-5)
  # WGAN (eq. 6-7) and clipping.
  real, fake = jnp.array([1.0, 3.0]), jnp.array([0.5, -0.5])
  assert float(losses.wgan_critic_loss(real, fake)) == pytest.approx(-2.0)
  assert float(losses.wgan_generator_loss(fake)) == pytest.approx(0.0)
  clipped = losses.clip_weights({"a": jnp.array([-1.0, 0.005, 2.0])}, 0.01)
  np.testing.assert_allclose(clipped["a"], [-0.01, 0.005, 0.01])


@pytest.mark.parametrize("kind", ["batch", "fixed"])
def test_mask_removes_exactly_the_unreliable_samples_from_the_gradient(
    tiny, kind):
  """The masked batch's gradient (eq. 11, sum_i m_i dL_i / N) equals the
  gradient of the same loss on a batch that omits the samples with
  Div >= T, scaled by kept / N (inference mode: no BatchNorm coupling)."""
  trainer, state, batches, _ = tiny
  method = trainer.method
  net = state["fer"]
  batch = batches["fer_sna"]
  x = method.eval_view(batch)
  labels = batch["label"]
  x_tr = method.neighbours(state, x, jax.random.key(1))[0]

  def fused(params, images):
    return method._fer_apply(net, params, images, False)[0]
  div = losses.symmetric_kl(fused(net["params"], x)[2],
                            fused(net["params"], x_tr)[2])
  # T: the batch's median Div (at init every Div is tiny).
  threshold = None if kind == "batch" else float(np.median(div))
  mask = losses.neighbourhood_mask(div, threshold)
  np.testing.assert_array_equal(
      mask, np.asarray(div) < (np.mean(div) if threshold is None
                               else threshold))
  keep = np.flatnonzero(np.asarray(mask))
  assert 0 < len(keep) < len(labels)

  def masked(params):
    return losses.masked_mean(
        method.per_sample_loss(fused(params, x), labels), mask)

  def subset(params):
    return jnp.mean(method.per_sample_loss(fused(params, x[keep]),
                                           labels[keep]))
  g_masked = jax.grad(masked)(net["params"])
  g_subset = jax.grad(subset)(net["params"])
  scale = len(keep) / len(labels)
  for a, b in zip(jax.tree.leaves(g_masked), jax.tree.leaves(g_subset)):
    np.testing.assert_allclose(a, scale * b, rtol=2e-4, atol=1e-7)


def test_fer_sna_step_all_masked_leaves_weights_and_counts_the_mask(tiny):
  """In the jitted stage-4 step: T = 0 masks every sample, so F's weights
  do not move (SGD, no weight decay) while the counters record it; T huge
  masks none and reproduces the unmasked update. F0 never moves."""
  trainer, state, batches, _ = tiny
  method = trainer.method
  batch, key = batches["fer_sna"], jax.random.key(0)
  cfg = method.cfg
  results = {}
  try:
    for name, mask, t in (("all", "fixed", 0.0), ("none_fixed", "fixed", 1e9),
                          ("none", "none", 0.0)):
      cfg.mask, cfg.threshold = mask, t
      results[name] = method.fer_sna_step(state, batch, key)
  finally:
    cfg.mask, cfg.threshold = "batch", tiny_config().sna.threshold
  new, m = results["all"]
  assert leaves_equal(new["fer"]["params"], state["fer"]["params"])
  assert float(m["masked_fraction"]) == 1.0
  n = batch["label"].shape[0]
  assert float(new["counters"]["masked"]) == n
  assert float(new["counters"]["seen"]) == n
  a, _ = results["none_fixed"]
  b, _ = results["none"]
  assert not leaves_equal(a["fer"]["params"], state["fer"]["params"])
  for x, y in zip(jax.tree.leaves(a["fer"]["params"]),
                  jax.tree.leaves(b["fer"]["params"])):
    np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
  for r, _ in results.values():
    assert leaves_equal(r["fer0"], state["fer0"])


def test_mask_precision_against_known_flipped_labels():
  """A hand-made batch of 8: the mask drops samples 0, 1, 2 and 5; labels
  1, 5 and 6 were flipped. Precision = 2 of 4 masked were flipped, recall =
  2 of 3 flipped were masked."""
  div_mask = jnp.array([0, 0, 0, 1, 1, 0, 1, 1], jnp.float32)
  flipped = jnp.array([0, 1, 0, 0, 0, 1, 1, 0], jnp.float32)
  counts = {k: float(v) for k, v in sna.mask_counts(div_mask,
                                                    flipped).items()}
  assert counts == {"div_masked": 4.0, "div_masked_flipped": 2.0,
                    "flipped": 3.0}
  out = sna.mask_precision(counts, seen=8.0)
  assert out["precision"] == 0.5
  assert out["recall"] == pytest.approx(2 / 3)
  assert out["flipped_fraction"] == 3 / 8
  assert out["masked_fraction"] == 0.5
  assert sna.mask_precision({"div_masked": 0.0, "div_masked_flipped": 0.0,
                             "flipped": 0.0}, 0.0)["precision"] is None


def test_fer_sna_step_counts_masked_flipped_samples(tiny):
  """The jitted stage-4 step with a batch that carries label_flipped: with
  T = 0 every sample is masked, so the masked-and-flipped count is the
  number of flipped labels; mask='none' still counts what the batch-mean
  rule would drop, but trains on every sample."""
  trainer, state, batches, _ = tiny
  method = trainer.method
  batch = dict(batches["fer_sna"])
  n = batch["label"].shape[0]
  flipped = np.zeros(n, bool)
  flipped[[0, 3]] = True
  batch["label_flipped"] = jnp.asarray(flipped)
  cfg = method.cfg
  try:
    cfg.mask, cfg.threshold = "fixed", 0.0
    new, _ = jax.jit(method.fer_sna_step)(state, batch, jax.random.key(0))
    cfg.mask = "none"
    new_none, m = jax.jit(method.fer_sna_step)(state, batch,
                                               jax.random.key(0))
  finally:
    cfg.mask, cfg.threshold = "batch", tiny_config().sna.threshold
  c = jax.device_get(new["counters"])
  assert float(c["div_masked"]) == n
  assert float(c["div_masked_flipped"]) == 2.0
  assert float(c["flipped"]) == 2.0
  c = jax.device_get(new_none["counters"])
  assert float(m["masked_fraction"]) == 0.0
  assert float(c["masked"]) == 0.0
  assert 0 < float(c["div_masked"]) < n  # below-mean Div is kept


def test_label_noise_batches_carry_the_flip_flag(make_table):
  """Injected label noise marks each training example whose label it
  changed, in host batches; clean splits carry no flag."""
  cfg = tiny_config()
  cfg.data.label_noise = 0.4
  data = run_data.from_table(cfg, make_table(**TABLE))
  ex = data.examples("train", "single", "peak")
  assert ex.clean_label is not None
  batch = pipeline.gather(ex, np.arange(len(ex)))
  np.testing.assert_array_equal(batch["label_flipped"],
                                ex.label != ex.clean_label)
  assert 0 < batch["label_flipped"].mean() < 1
  test = data.examples("test", "single", "peak")
  assert "label_flipped" not in pipeline.gather(test, np.arange(2))


# ------------------------------------------------------------------ data

def test_batches_are_class_balanced(tiny):
  """Stage 1 and 4 draw selective-learning batches: each of the 7 classes
  twice in every batch of 14 (through the trainer's own iterator)."""
  trainer, _, _, _ = tiny
  for phase in (trainer.phases[0], trainer.phases[3]):
    assert phase.sampler == "class_balanced"
    ex = trainer.data.examples("train", phase.example_kind, phase.role)
    it = pipeline.TrainIterator(ex, phase.batch_size, seed=0,
                                sampler=phase.sampler)
    for _ in range(5):
      counts = np.bincount(next(it)["label"], minlength=7)
      np.testing.assert_array_equal(counts, 2)
  assert trainer.phases[1].sampler == "shuffle"


# ------------------------------------------------------------------ stages

def test_ae_pretrain_loss_is_eq4_with_alpha_4_and_1(tiny):
  trainer, state, batches, steps = tiny
  assert trainer.method._ae_alphas() == (4.0, 1.0, 1.0, 1.0, 1.0)
  new, m = steps["ae_pretrain"](state, batches["ae_pretrain"],
                                jax.random.key(0))
  want = 4 * m["ae_pixel"] + sum(m[f"ae_level{i}"] for i in range(1, 5))
  np.testing.assert_allclose(m["loss"], want, rtol=1e-5)
  assert not leaves_equal(new["ae"]["params"]["enc"],
                          state["ae"]["params"]["enc"])


def test_refine_perceptual_features_come_from_frozen_stage1_net(tiny):
  """The decoder's refinement update changes with F0's weights (its
  Conv3-5 features are eq. 5's C) and not with F's; the encoder stays."""
  trainer, state, batches, steps = tiny
  batch, key = batches["ae_refine"], jax.random.key(0)
  base_new, m = steps["ae_refine"](state, batch, key)
  assert leaves_equal(base_new["ae"]["params"]["enc"],
                      state["ae"]["params"]["enc"])
  assert leaves_equal(base_new["fer0"], state["fer0"])
  bump = lambda net: {**net, "params": jax.tree.map(lambda p: p * 1.5,
                                                    net["params"])}
  other_f, _ = steps["ae_refine"]({**state, "fer": bump(state["fer"])},
                                  batch, key)
  other_f0, _ = steps["ae_refine"]({**state, "fer0": bump(state["fer0"])},
                                   batch, key)
  dec = lambda s: s["ae"]["params"]["dec"]
  assert leaves_equal(dec(other_f), dec(base_new))
  assert not leaves_equal(dec(other_f0), dec(base_new))
  assert float(m["g_perc_conv3"]) > 0


def test_critic_trains_every_step_of_first_epoch_then_every_tenth(tiny):
  trainer, state, batches, steps = tiny
  method = trainer.method
  spe = method.refine_spe
  want = [r < spe or r % 10 == 0 for r in range(spe + 25)]
  got = [bool(method.critic_trains(jnp.int32(r))) for r in range(spe + 25)]
  assert got == want
  off = next(r for r in range(spe, spe + 10) if r % 10)
  on = (spe // 10 + 1) * 10
  for r, trained in ((off, False), (on, True)):
    s = {**state, "counters": {**state["counters"],
                               "refine_step": jnp.int32(r)}}
    new, m = steps["ae_refine"](s, batches["ae_refine"], jax.random.key(0))
    assert bool(m["critic_trained"]) == trained
    assert leaves_equal(new["critic"], s["critic"]) != trained
    assert int(new["counters"]["refine_step"]) == r + 1
    clip = method.cfg.critic_clip
    if trained:
      assert all(float(jnp.max(jnp.abs(p))) <= clip
                 for p in jax.tree.leaves(new["critic"]["params"]))


def test_fer_init_baseline_starts_f_from_f0(tiny):
  trainer, state, _, _ = tiny
  method = trainer.method
  # The synthetic default (and its :tiny) starts F from F0; 'scratch'
  # keeps F's own init (no enter).
  assert trainer.phases[3].enter == method.start_from_baseline
  try:
    method.cfg.fer_init = "scratch"
    assert method.phases()[3].enter is None
  finally:
    method.cfg.fer_init = "baseline"
  assert not leaves_equal(state["fer"]["params"], state["fer0"]["params"])
  entered = trainer.method.start_from_baseline(state)
  assert leaves_equal(entered["fer"]["params"], state["fer0"]["params"])
  assert leaves_equal(entered["fer"]["batch_stats"],
                      state["fer0"]["batch_stats"])
  assert leaves_equal(entered["fer0"], state["fer0"])


def test_lambda_ae_decays_every_20_epochs(tiny):
  method = tiny[0].method
  every = int(round(20 * method.refine_spe))
  assert float(method.lambda_ae(jnp.int32(every - 1))) == pytest.approx(1e-3)
  assert float(method.lambda_ae(jnp.int32(every))) == pytest.approx(1e-4)


# ------------------------------------------------------------------ networks

def param_count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_multiscale_net_matches_table_ii_at_paper_width():
  net = MultiScaleNet(num_classes=7)
  x = jnp.zeros((2, 112, 112, 1))
  variables = jax.eval_shape(lambda: net.init(jax.random.key(0), x))
  logits, feats = jax.eval_shape(
      lambda v: net.apply(v, x, return_features=True), variables)
  assert [lg.shape for lg in logits] == [(2, 7)] * 3
  assert feats["conv3"].shape == (2, 14, 14, 256)
  assert feats["conv4"].shape == (2, 7, 7, 512)
  assert feats["conv5"].shape == (2, 7, 7, 128)

  # By hand from Table II: convs (no bias) + BN scale/bias per branch.
  def conv(k, cin, cout):
    return k * k * cin * cout + 2 * cout
  branch = (conv(5, 1, 64) + conv(5, 64, 64) + conv(3, 64, 128)
            + conv(3, 128, 128) + conv(3, 128, 256) + conv(3, 256, 256)
            + conv(3, 256, 512) + conv(1, 512, 128))
  ori_fc = 7 * 7 * 128 * 64 + 64
  half_fc = 3 * 3 * 128 * 32 + 32
  heads = (64 * 7 + 7) + (32 * 7 + 7) + (96 * 7 + 7)
  assert param_count(variables["params"]) == (2 * branch + ori_fc + half_fc
                                              + heads)
  half = variables["params"]["half"]
  assert half["fc"]["kernel"].shape == (3 * 3 * 128, 32)


def test_autoencoder_matches_table_i_at_paper_width():
  enc, dec = Encoder(), Decoder()
  x = jnp.zeros((2, 112, 112, 1))
  ev = jax.eval_shape(lambda: enc.init(jax.random.key(0), x))
  code, hidden = jax.eval_shape(lambda v: enc.apply(v, x), ev)
  assert code.shape == (2, 64)
  assert [h.shape for h in hidden] == [(2, 56, 56, 16), (2, 28, 28, 32),
                                       (2, 14, 14, 64), (2, 7, 7, 80)]
  c = jnp.zeros((2, 64))
  dv = jax.eval_shape(lambda: dec.init(jax.random.key(0), c))
  img, rec = jax.eval_shape(lambda v: dec.apply(v, c), dv)
  assert img.shape == (2, 112, 112, 1)
  # The decoder recovers every encoder level (the scales of eq. 4).
  assert [r.shape for r in rec] == [h.shape for h in hidden]
  res = [k for k in dv["params"] if k.startswith("res")]
  assert len(res) == 9  # "nine ResBlocks in decoder"

  def conv(k, cin, cout, bias=True):
    return k * k * cin * cout + (cout if bias else 0)
  enc_n = (conv(3, 1, 16) + conv(3, 16, 32) + conv(3, 32, 64)
           + conv(3, 64, 80) + 2 * (16 + 32 + 64 + 80) + 7 * 7 * 80 * 64 + 64)
  assert param_count(ev["params"]) == enc_n
  resblock = lambda w: 2 * conv(3, w, w, bias=False) + 4 * w
  dec_n = (64 * 80 * 49 + 80 * 49 + conv(3, 80, 64) + 2 * resblock(64)
           + conv(3, 64, 32) + 2 * resblock(32) + conv(3, 32, 16)
           + 2 * resblock(16) + conv(3, 16, 16) + 2 * resblock(16)
           + conv(3, 16, 1) + resblock(1))
  assert param_count(dv["params"]) == dec_n


# ------------------------------------------------------------------ eval

def test_consistency_counts_by_hand():
  seq = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])
  labels = np.array([3] * 4 + [1] * 4 + [2] * 4)
  preds = np.array([3, 3, 3, 3,  # right
                    5, 5, 5, 5,  # consistent failure
                    0, 1, 2, 2])  # failure, not consistent
  got = sna.SNA.consistency_counts(seq, labels, preds)
  assert got == {"failure_cases": 2, "consistent_failure_cases": 1,
                 "num_sequences": 3}


def test_consistency_frames_are_the_four_before_the_peak(tiny):
  trainer = tiny[0]
  ex = trainer.data.examples("test", "single", "peak")
  cons, seq = trainer.method.consistency_examples(ex)
  table = ex.table
  frames = table.frame_index[cons.slots["image"]]
  assert set(frames.tolist()) == {3, 4, 5, 6}  # 8 frames: peak is 7
  assert len(np.unique(seq)) == len(np.unique(
      table.sequence_id[ex.slots["image"]]))
  np.testing.assert_array_equal(
      table.label[cons.slots["image"]] >= 0, True)


def test_report_fields_and_neighbour_grid(tiny, tmp_path):
  """evaluate_split: F's predictions, F0's accuracy, the masked fraction
  from the state's counters and Table VII's counts; write_images: one row
  per face of original, two reconstructions and the neighbour draws."""
  trainer, state, _, _ = tiny
  method = trainer.method
  ex = trainer.data.examples("test", "single", "peak")
  state = {**state, "counters": {**state["counters"],
                                 "masked": jnp.float32(7.0),
                                 "seen": jnp.float32(28.0)}}
  labels, preds, extra = method.evaluate_split(state, ex, None)
  np.testing.assert_array_equal(labels, ex.label)
  batch = pipeline.gather(ex, np.arange(len(ex)))
  want = np.argmax(jax.jit(method.predict)(state, batch), -1)
  np.testing.assert_array_equal(preds, want)
  assert extra["masked_fraction"] == 0.25
  cons = extra["consistency"]
  num_seq = len(np.unique(ex.table.sequence_id[ex.slots["image"]]))
  assert cons["sna"]["num_sequences"] == num_seq
  assert 0 <= cons["baseline"]["consistent_failure_cases"] <= \
      cons["baseline"]["failure_cases"] <= num_seq
  method.write_images(state, pipeline.gather(ex, np.arange(4)),
                      str(tmp_path))
  from PIL import Image
  grid = np.asarray(Image.open(tmp_path / "neighbours.png"))
  draws = method.cfg.num_image_draws
  # 4 faces x (input, pre-trained, refined, draws, heat map), 32 px tiles
  # upscaled 3x, plus the title, column labels, row captions and legend.
  tile = 3 * 32 + 2
  assert grid.shape[0] > 2 + 4 * tile
  assert grid.shape[1] >= 2 + (4 + draws) * tile


def test_checkpoint_mid_refine_restores_every_stage(tiny, tmp_path):
  """A checkpoint taken inside ae_refine holds every stage's networks and
  the counters the jitted steps read (critic schedule, masked fraction), and
  restores bit for bit (the full kill/resume run is the slow test below)."""
  trainer, state, batches, steps = tiny
  state, _ = steps["ae_refine"](state, batches["ae_refine"],
                                jax.random.key(0))
  loop = {**trainer.init_state(), "model": state}
  ckpt = train.ckpt_lib.Checkpointer(str(tmp_path), 2, async_save=False)
  ckpt.save(5, loop, {"method": "sna", "phase": 2, "phase_name": "ae_refine",
                      "phase_step": 1, "global_step": 5, "iterator": {},
                      "fold": 0})
  restored, meta = ckpt.restore(trainer.abstract_state(), method="sna")
  ckpt.close()
  assert meta["phase_name"] == "ae_refine"
  assert int(restored["model"]["counters"]["refine_step"]) == 1
  assert leaves_equal(restored["model"], state)
  assert set(restored["model"]) == {"fer0", "fer", "ae", "refine_opt_state",
                                    "dec_pretrained", "critic", "counters"}


# ------------------------------------------------------------------ resume

@pytest.mark.slow  # ~90 s: four phases compiled and run three times
def test_kill_mid_phase_then_resume_matches_uninterrupted(tmp_path,
                                                          monkeypatch,
                                                          make_table):
  """Killed inside ae_refine (step 5 of 2 + 2 + 2 + 2), the resumed run
  ends with the uninterrupted run's parameters, report and log; the report
  carries the baseline accuracy, masked fraction and consistency counts,
  and the neighbour grid is written."""
  table = make_table(**TABLE)
  cfg = tiny_config()
  data = run_data.from_table(cfg, table)
  full = train.Trainer(cfg, str(tmp_path / "full"), data).train()

  class Killed(Exception):
    pass

  workdir = tmp_path / "killed"
  trainer = train.Trainer(cfg, str(workdir), run_data.from_table(cfg, table))
  real_save = trainer.ckpt.save

  def save_then_die(step, *a, **k):
    real_save(step, *a, **k)
    if step == 5:
      trainer.ckpt.wait()
      raise Killed()
  trainer.ckpt.save = save_then_die
  with pytest.raises(Killed):
    trainer.train()
  resumed = train.Trainer(cfg, str(workdir),
                          run_data.from_table(cfg, table)).train()
  assert resumed["state_digest"] == full["state_digest"]
  assert resumed["accuracy"] == full["accuracy"]
  log = lambda d: [{k: v for k, v in json.loads(line).items()
                    if "per_sec" not in k}
                   for line in open(d / "metrics.jsonl")]
  assert log(workdir) == log(tmp_path / "full")
  # 2 stage-4 steps of 14: the masked fraction is a count over 28.
  frac = full["masked_fraction"]
  assert 0 <= frac <= 1 and math.isclose(frac * 28, round(frac * 28))
  cons = full["consistency"]
  assert cons["sna"]["num_sequences"] == cons["baseline"]["num_sequences"]
  assert 0 <= cons["sna"]["consistent_failure_cases"] <= \
      cons["sna"]["failure_cases"] <= cons["sna"]["num_sequences"]
  assert 0 <= full["baseline_accuracy"] <= 1
  assert os.path.exists(tmp_path / "full" / "eval" / "neighbours.png")
