"""GroupGAN: the networks, which player learns from what in each variant,
the discriminators' positives and negatives, the test path, and phases that
resume mid-phase after a kill."""

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fer_jax import config_lib, train
from fer_jax.data import pipeline, run_data
from fer_jax.methods import groupgan
from fer_jax.models import groupgan_nets
from fer_jax.models.groupgan_nets import MagnifyingGenerator, VGGDiscriminator

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs")


def tiny_config(variant="2v2", **groupgan_overrides):
  """configs/groupgan.py:tiny (a width-8 VGG11-BN, the paper's plain G,
  SGD) as ``variant``."""
  c = config_lib.load_config_module(
      os.path.join(CONFIGS, "groupgan.py")).get_config("tiny")
  c.groupgan.variant = variant
  c.groupgan.update(**groupgan_overrides)
  return c


@pytest.fixture
def setup(make_table, tmp_path):
  table = make_table(num_subjects=4, num_frames=8, image_size=32)

  def make(variant="2v2", workdir=None, config=None, **overrides):
    config = config or tiny_config(variant, **overrides)
    return train.Trainer(config, str(workdir or tmp_path / variant),
                         run_data.from_table(config, table))
  return make


def pair_batch(trainer, n=4):
  ex = trainer.data.examples("train", "weak_peak_pair", "weak")
  return {k: jnp.asarray(v) for k, v in
          pipeline.gather(ex, np.arange(n)).items()}


def params_equal(a, b):
  return all(np.array_equal(x, y) for x, y in
             zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_generator_shapes_condition_and_size_check():
  g = MagnifyingGenerator(features=(4, 8, 8, 8))
  x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3), minval=-1)
  f = jax.random.normal(jax.random.key(1), (2, 5))
  variables = g.init(jax.random.key(2), x, f)
  out = g.apply(variables, x, f)
  assert out.shape == x.shape
  assert float(jnp.max(jnp.abs(out))) <= 1.0
  # The bottleneck is 2x2 (32 / 16) with 8 + 5 channels: F_exp is used.
  kernel = variables["params"]["dec0_deconv"]["kernel"]
  assert kernel.shape[2] == 8 + 5
  assert not np.allclose(out, g.apply(variables, x, f + 1.0))
  with pytest.raises(ValueError, match="divisible by 16"):
    g.init(jax.random.key(0), jnp.zeros((1, 40, 40, 3)), None)
  # A stride-1 first stage halves the downsampling (total stride 8).
  g1 = MagnifyingGenerator(features=(4, 8, 8, 8), strides=(1, 2, 2, 2))
  v1 = g1.init(jax.random.key(2), x, f)
  assert g1.apply(v1, x, f).shape == x.shape
  with pytest.raises(ValueError, match="divisible by 8"):
    g1.init(jax.random.key(0), jnp.zeros((1, 36, 36, 3)), None)


def test_residual_generator_starts_as_identity_and_learns_a_change():
  """g_residual: zero last conv -> G(x) = x (up to the atanh clip); a
  nonzero last conv moves the output, and gradient reaches the encoder."""
  g = MagnifyingGenerator(features=(4, 8, 8, 8), residual=True)
  x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3), minval=-0.99,
                         maxval=0.99)
  f = jax.random.normal(jax.random.key(1), (2, 5))
  variables = g.init(jax.random.key(2), x, f)
  np.testing.assert_allclose(g.apply(variables, x, f), x, atol=1e-5)
  params = jax.tree.map(lambda a: a, variables["params"])
  params["out1_conv"]["kernel"] = params["out1_conv"]["kernel"] + 0.1
  moved = g.apply({**variables, "params": params}, x, f)
  assert float(jnp.max(jnp.abs(moved - x))) > 0.05

  def loss(p):
    return jnp.sum(g.apply({**variables, "params": p}, x, f))
  grads = jax.grad(loss)(params)
  assert float(jnp.max(jnp.abs(grads["enc0_conv"]["kernel"]))) > 0


class _Decoder(MagnifyingGenerator):
  """G's decoder alone, fed a given bottleneck."""

  @nn.compact
  def __call__(self, h, x):
    return self.decode(h, None, False, x)[0]


def test_resize_upsampling_has_no_checkerboard():
  """A constant bottleneck decodes to a constant interior with resize-conv
  upsampling; the paper's k4 s2 transposed conv makes the four pixel
  parities with four different sub-kernels (a checkerboard at init)."""
  x = jnp.zeros((1, 64, 64, 3))
  h = jnp.ones((1, 32, 32, 8))
  spread = {}
  for up in ("transpose", "resize"):
    dec = _Decoder(features=(4, 8, 8, 8), strides=(1, 1, 1, 2), upsample=up)
    variables = dec.init(jax.random.key(0), h, x)
    names = set(variables["params"])
    assert ("dec3_deconv" in names) == (up == "transpose")
    assert ("dec3_conv" in names) == (up == "resize")
    out = np.asarray(dec.apply(variables, h, x))
    assert out.shape == x.shape
    interior = out[0, 16:-16, 16:-16]
    parities = [interior[i::2, j::2].mean() for i in (0, 1) for j in (0, 1)]
    spread[up] = (float(np.ptp(parities)), float(interior.std()))
  assert spread["transpose"][0] > 1e-3
  assert spread["resize"][0] < 1e-6 and spread["resize"][1] < 1e-6
  with pytest.raises(ValueError, match="upsample"):
    _Decoder(features=(4, 8, 8, 8), upsample="bilinear").init(
        jax.random.key(0), jnp.ones((1, 2, 2, 8)), jnp.zeros((1, 32, 32, 3)))


def test_composite_and_mask_total_variation_by_hand():
  """GANimation's composite A * colour + (1 - A) * x per pixel, and the
  mask's TV: squared differences of adjacent values, summed per image,
  averaged over the batch."""
  mask = np.array([[[0.0, 0.25, 1.0]]], np.float32)  # (1, 1, 3)
  colour = np.array([[[[1.0], [1.0], [1.0]]]], np.float32)  # (1, 1, 3, 1)
  x = np.array([[[[-1.0], [0.2], [0.5]]]], np.float32)
  out = np.asarray(groupgan_nets.composite(mask[..., None], colour, x))
  np.testing.assert_allclose(out[0, 0, :, 0], [-1.0, 0.25 + 0.75 * 0.2, 1.0],
                             rtol=1e-6)
  m = np.array([[[0.0, 1.0, 1.0], [0.5, 0.5, 1.0]],
                [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]], np.float32)  # (2, 2, 3)
  # Image 0: horizontal (0-1)^2 + 0 + 0 + (0.5-1)^2 = 1.25; vertical
  # 0.25 + 0.25 + 0 = 0.5. Image 1 is constant: 0. Batch mean 0.875.
  assert float(groupgan_nets.mask_total_variation(m)) == pytest.approx(
      0.875, rel=1e-6)


@pytest.mark.parametrize("residual", [True, False])
def test_attention_generator_mask_bounds_and_composite(residual):
  """g_attention: A = sigmoid(.) lies in [0, 1], starts at 0.5 everywhere
  (zero head); G's face is exactly A * colour + (1 - A) * x, so where A is
  0 the face is the input. The residual G still starts as the identity."""
  g = MagnifyingGenerator(features=(4, 8, 8, 8), residual=residual,
                          attention=True)
  x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3), minval=-0.99,
                         maxval=0.99)
  f = jax.random.normal(jax.random.key(1), (2, 5))
  variables = g.init(jax.random.key(2), x, f)
  out, mask = g.apply(variables, x, f, with_mask=True)
  assert mask.shape == (2, 32, 32)
  np.testing.assert_allclose(mask, 0.5, atol=1e-7)
  np.testing.assert_allclose(g.apply(variables, x, f), out)
  if residual:
    np.testing.assert_allclose(out, x, atol=1e-5)
  params = jax.tree.map(lambda a: a, variables["params"])
  params["out1_conv"]["kernel"] = params["out1_conv"]["kernel"] + 0.2
  # A large negative bias left of column 16, a large positive one right.
  kernel = np.zeros(params["mask_conv"]["kernel"].shape, np.float32)
  params["mask_conv"]["kernel"] = jnp.asarray(kernel)
  params["mask_conv"]["bias"] = jnp.asarray([0.0])
  v = {**variables, "params": params}
  out, mask = g.apply(v, x, f, with_mask=True)
  # The colour image: the same G with A forced to 1 (bias +inf).
  params_one = {**params, "mask_conv": {**params["mask_conv"],
                                        "bias": jnp.asarray([1e4])}}
  colour, ones = g.apply({**variables, "params": params_one}, x, f,
                         with_mask=True)
  np.testing.assert_allclose(ones, 1.0)
  np.testing.assert_allclose(
      out, 0.5 * np.asarray(colour) + 0.5 * np.asarray(x), atol=1e-6)
  assert float(jnp.max(jnp.abs(colour - x))) > 0.05
  params_zero = {**params, "mask_conv": {**params["mask_conv"],
                                         "bias": jnp.asarray([-1e4])}}
  kept, zeros = g.apply({**variables, "params": params_zero}, x, f,
                        with_mask=True)
  np.testing.assert_allclose(zeros, 0.0)
  np.testing.assert_allclose(kept, x, atol=1e-6)
  # Trained weights: A stays in [0, 1].
  params["mask_conv"]["kernel"] = jnp.asarray(
      np.random.default_rng(0).normal(0, 3.0, kernel.shape), jnp.float32)
  _, mask = g.apply({**variables, "params": params}, x, f, with_mask=True)
  assert float(jnp.min(mask)) >= 0.0 and float(jnp.max(mask)) <= 1.0
  assert float(jnp.std(mask)) > 0.05
  # Without attention there is no mask.
  plain = MagnifyingGenerator(features=(4, 8, 8, 8), residual=residual)
  pv = plain.init(jax.random.key(2), x, f)
  assert "mask_conv" not in pv["params"]
  assert plain.apply(pv, x, f, with_mask=True)[1] is None


def test_discriminator_takes_the_condition():
  d = VGGDiscriminator(features=(4, 8), fc_width=6)
  x = jnp.zeros((3, 16, 16, 3))
  plain = d.init(jax.random.key(0), x)
  cond = d.init(jax.random.key(0), x, jnp.ones((3, 5)))
  # 4x4x8 flattened features, plus the 5-d F_exp in 2V2.
  assert plain["params"]["fc"]["kernel"].shape == (128, 6)
  assert cond["params"]["fc"]["kernel"].shape == (133, 6)
  assert d.apply(cond, x, jnp.ones((3, 5))).shape == (3,)


def test_mse_and_heat_map_by_hand():
  a = np.arange(24, dtype=np.float32).reshape(1, 2, 4, 3) / 24
  b = np.ones_like(a) * 0.5
  np.testing.assert_allclose(groupgan.mse_loss(a, b), np.mean((a - b) ** 2),
                             rtol=1e-6)
  h = groupgan.heat_map(a, b)
  assert h.shape == (1, 2, 4)
  np.testing.assert_allclose(h[0, 1, 2], np.sum((a[0, 1, 2] - 0.5) ** 2),
                             rtol=1e-6)


def test_change_map_correlation_by_hand():
  """Pearson's r of the two eq. 22 change maps, against scipy on each
  image: a G that changes the face exactly where the peak does gets 1, one
  that changes it elsewhere less, one that leaves it unchanged NaN."""
  scipy_stats = pytest.importorskip("scipy.stats")
  rng = np.random.default_rng(0)
  weak = rng.uniform(-1, 1, (3, 6, 5, 2)).astype(np.float32)
  peak = weak.copy()
  peak[:, 1:3, 2:4] += 0.5  # the expression moves one region
  fake = np.stack([peak[0],  # exactly the peak's change
                   weak[1] + rng.normal(0, 0.3, weak[1].shape),  # elsewhere
                   weak[2]]).astype(np.float32)  # no change at all
  r = np.asarray(groupgan.change_map_correlation(weak, fake, peak))
  for i in range(2):
    h_fake = np.sum((fake[i] - weak[i]) ** 2, -1).ravel()
    h_peak = np.sum((peak[i] - weak[i]) ** 2, -1).ravel()
    np.testing.assert_allclose(r[i], scipy_stats.pearsonr(h_fake,
                                                          h_peak)[0],
                               rtol=1e-4)
  assert r[0] == pytest.approx(1.0, abs=1e-5)
  assert r[1] < 0.9
  assert np.isnan(r[2])


def test_report_has_the_change_map_correlation(setup):
  """evaluate_split predicts as predict does and reports the per-image r
  summary; the CNN variant (no G) keeps the usual path."""
  trainer = setup("2v2")
  method = trainer.method
  state = method.start_classifier(trainer.init_state()["model"])
  ex = trainer.data.examples("test", method.eval_kind, "weak")
  labels, preds, extra = method.evaluate_split(state, ex, None)
  batch = {k: jnp.asarray(v) for k, v in
           pipeline.gather(ex, np.arange(len(ex))).items()}
  np.testing.assert_array_equal(
      preds, np.argmax(np.asarray(method.predict(state, batch)), -1))
  np.testing.assert_array_equal(labels, ex.label)
  cm = extra["change_map_correlation"]
  assert cm["num_images"] == len(ex)
  assert -1.0 <= cm["mean"] <= 1.0
  assert setup("cnn").method.evaluate_split(state, ex, None) is None


@pytest.mark.parametrize("variant, phases, nets", [
    ("cnn", ["cnn"], {"c"}),
    ("dcgan", ["pretrain_extractor", "pretrain_autoencoder", "groupgan"],
     {"c", "e", "g", "d"}),
    ("1v2", ["pretrain_extractor", "pretrain_autoencoder", "groupgan"],
     {"c", "e", "g", "d", "dp"}),
    ("2v2", ["pretrain_extractor", "pretrain_autoencoder", "groupgan"],
     {"c", "e", "g", "d", "dp"}),
])
def test_variants_have_their_players(setup, variant, phases, nets):
  trainer = setup(variant)
  assert [p.name for p in trainer.phases] == phases
  state = trainer.init_state()["model"]
  assert set(state) == nets
  if variant == "cnn":
    # The CNN variant trains C on the weak frames alone.
    (phase,) = trainer.phases
    assert (phase.example_kind, phase.role) == ("single", "weak")
    # As many C updates as the GAN variants (E pre-training + loop).
    assert phase.num_steps == 2 + 2
  else:
    assert trainer.phases[0].role == "peak"
    assert trainer.phases[2].example_kind == "weak_peak_pair"


def test_cnn_variant_trains_c_on_weak_frames_alone(setup):
  """The CNN phase's examples are frames 6-8 (the weak ones, 0-based 5-7)
  of each sequence, never its last (peak) frame, and its step needs nothing
  but them and the labels."""
  trainer = setup("cnn")
  (phase,) = trainer.phases
  ex = trainer.data.examples("train", phase.example_kind, phase.role)
  assert set(ex.slots) == {"image"}
  rows = ex.slots["image"]
  frames = ex.table.frame_index[rows]
  # The fixture's sequences have 8 frames: 6 and 7 are weak, 8 the peak.
  assert set(np.unique(frames)) == {5, 6}
  assert np.all(frames < ex.table.num_frames[rows] - 1)
  batch = {k: jnp.asarray(v)
           for k, v in pipeline.gather(ex, np.arange(4)).items()}
  assert set(batch) == {"image", "label"}
  state = trainer.init_state()["model"]
  new, metrics = jax.jit(phase.step)(state, batch, jax.random.key(0))
  assert set(new) == {"c"}
  assert not params_equal(state["c"]["params"], new["c"]["params"])
  assert np.isfinite(float(metrics["loss"]))


def test_cnn_variant_schedule_spans_its_whole_run(setup):
  """A decaying schedule spans every update C gets in the CNN variant (2
  pre-training-length + 2 loop steps), not only the loop's length: its
  third update still moves C (a 2-step cosine would be at lr 0)."""
  config = tiny_config("cnn")
  config.optim.schedule = "cosine"
  trainer = setup("cnn", config=config)
  (phase,) = trainer.phases
  assert phase.num_steps == 4
  ex = trainer.data.examples("train", phase.example_kind, phase.role)
  batch = {k: jnp.asarray(v)
           for k, v in pipeline.gather(ex, np.arange(4)).items()}
  step = jax.jit(phase.step)
  state = trainer.init_state()["model"]
  for i in range(3):
    prev, (state, _) = state, step(state, batch, jax.random.key(i))
  assert not params_equal(prev["c"]["params"], state["c"]["params"])


def test_extractor_gets_adversarial_gradient_only_in_2v2(setup):
  batch = pair_batch(setup("2v2"))
  key = jax.random.key(3)
  results = {}
  for name, weights in (("none", 0.0), ("adv", 1.0)):
    trainer = setup("2v2", config=tiny_config(
        "2v2", alpha_e=weights, beta_e=weights))
    state = trainer.init_state()["model"]
    new, _ = jax.jit(trainer.phases[2].step)(state, batch, key)
    results[name] = (state, new)
  before, no_adv = results["none"]
  _, with_adv = results["adv"]
  # Phi_C alone already moves E (through G's bottleneck) ...
  assert not params_equal(before["e"]["params"], no_adv["e"]["params"])
  # ... and the adversarial terms add their own gradient.
  assert not params_equal(no_adv["e"]["params"], with_adv["e"]["params"])
  # G's update does not depend on E's weights alpha_E, beta_E.
  assert params_equal(no_adv["g"]["params"], with_adv["g"]["params"])

  # 1V2 and DCGAN have no extractor in their loop: E's pre-trained params
  # (C's starting point) stay as they are, and G gets no F_exp.
  for variant in ("1v2", "dcgan"):
    trainer = setup(variant)
    state = trainer.init_state()["model"]
    # The decoder's first layer reads the 8 bottleneck channels alone.
    assert state["g"]["params"]["dec0_conv"]["kernel"].shape[2] == 8
    new, _ = jax.jit(trainer.phases[2].step)(state, batch, key)
    assert params_equal(state["e"], new["e"])
    assert not params_equal(state["g"]["params"], new["g"]["params"])


@pytest.mark.parametrize("net", ["d", "dp"])
def test_discriminators_see_peaks_as_positive_and_fakes_as_negative(
    setup, net):
  """One SGD step of D (D') widens its logit margin between the real peaks
  and G's outputs on the same batch."""
  config = tiny_config("1v2", dprime_weak_negatives=False)
  config.data.flip = False
  trainer = setup("1v2", config=config)
  method = trainer.method
  batch = pair_batch(trainer)
  state = trainer.init_state()["model"]
  new, _ = jax.jit(method.train_step)(state, batch, jax.random.key(0))
  weak = method.eval_view(batch, "weak")
  peak = method.eval_view(batch, "peak")
  g = state["g"]
  fake, _ = method.g.apply({"params": g["params"],
                            "batch_stats": g["batch_stats"]}, weak, None,
                           train=True, mutable=["batch_stats"])

  def margin(s, negative):
    logit = lambda x: float(jnp.mean(method._disc(s[net]["params"], x, None)))
    return logit(peak) - logit(negative)
  assert margin(new, fake) > margin(state, fake)


def test_predict_is_c_of_the_magnified_weak_face(setup):
  trainer = setup("2v2")
  method = trainer.method
  batch = pair_batch(trainer)
  state = trainer.init_state()["model"]
  state = method.start_classifier(state)
  weak = method.eval_view(batch, "weak")
  f_exp, _ = method._extract(state, weak)
  fake = method._generate(state, weak, f_exp)
  want, _, _ = method._classify(state["c"], fake, train=False)
  np.testing.assert_allclose(method.predict(state, batch), want, atol=1e-5)
  # The CNN variant classifies the weak face itself.
  cnn = setup("cnn")
  cstate = cnn.init_state()["model"]
  direct, _, _ = cnn.method._classify(cstate["c"], weak, train=False)
  np.testing.assert_allclose(cnn.method.predict(cstate, batch), direct,
                             atol=1e-5)


def test_classifier_starts_from_the_pretrained_extractor(setup):
  trainer = setup("2v2")
  state = trainer.init_state()["model"]
  assert not params_equal(state["c"]["params"], state["e"]["params"])
  entered = trainer.phases[2].enter(state)
  assert params_equal(entered["c"]["params"], state["e"]["params"])


def test_training_lowers_g_content_loss_on_a_fixed_batch(setup):
  trainer = setup("2v2", config=tiny_config("2v2"))
  batch = pair_batch(trainer)
  state = trainer.init_state()["model"]
  step = jax.jit(trainer.phases[2].step)
  key = jax.random.key(0)
  _, first = step(state, batch, key)
  for _ in range(5):
    state, _ = step(state, batch, key)
  _, after = step(state, batch, key)
  assert float(after["g_content"]) < float(first["g_content"])


def test_change_l1_penalty_enters_g_loss_only(setup):
  """g_change_l1 adds w * mean|G(weak) - weak| to G's loss (not the
  discriminators'), and with a large weight G's change shrinks."""
  batch = pair_batch(setup("1v2"))
  key = jax.random.key(0)
  runs = {}
  for w in (0.0, 5.0):
    trainer = setup("1v2", config=tiny_config("1v2", g_change_l1=w))
    state = trainer.init_state()["model"]
    step = jax.jit(trainer.phases[2].step)
    new, first = step(state, batch, key)
    s = new
    for _ in range(8):
      s, last = step(s, batch, key)
    runs[w] = (new, first, last)
  (new0, first0, last0), (new5, first5, last5) = runs[0.0], runs[5.0]
  np.testing.assert_allclose(float(first5["g_change"]),
                             float(first0["g_change"]), rtol=1e-6)
  np.testing.assert_allclose(
      float(first5["g_loss"]) - float(first0["g_loss"]),
      5.0 * float(first0["g_change"]), rtol=1e-4)
  assert params_equal(new0["d"]["params"], new5["d"]["params"])
  assert not params_equal(new0["g"]["params"], new5["g"]["params"])
  assert float(last5["g_change"]) < float(last0["g_change"])


def test_attention_penalties_enter_g_loss_only(setup):
  """g_attention: G's loss gains l1 * mean(A) + tv * TV(A) on the first
  step (A = 0.5 everywhere, TV 0), the discriminators' updates do not
  change, and a large l1 weight shrinks the mask over a few steps."""
  batch = pair_batch(setup("1v2"))
  key = jax.random.key(0)
  runs = {}
  for name, over in (("off", {}),
                     ("light", dict(g_attention=True, g_attention_l1=0.0,
                                    g_attention_tv=0.0)),
                     ("heavy", dict(g_attention=True, g_attention_l1=50.0,
                                    g_attention_tv=1.0))):
    trainer = setup("1v2", config=tiny_config("1v2", **over))
    state = trainer.init_state()["model"]
    step = jax.jit(trainer.phases[2].step)
    new, first = step(state, batch, key)
    s = new
    for _ in range(6):
      s, last = step(s, batch, key)
    runs[name] = (new, first, last)
  (_, off, _), (new_l, light, last_l), (new_h, heavy, last_h) = (
      runs["off"], runs["light"], runs["heavy"])
  assert "g_mask_mean" not in off
  for m in (light, heavy):
    assert float(m["g_mask_mean"]) == pytest.approx(0.5, abs=1e-6)
    assert float(m["g_mask_tv"]) == pytest.approx(0.0, abs=1e-9)
  np.testing.assert_allclose(float(heavy["g_loss"]) - float(light["g_loss"]),
                             50.0 * 0.5, rtol=1e-4)
  assert params_equal(new_l["d"]["params"], new_h["d"]["params"])
  assert not params_equal(new_l["g"]["params"], new_h["g"]["params"])
  assert float(last_h["g_mask_mean"]) < 0.45
  assert float(last_h["g_mask_mean"]) < float(last_l["g_mask_mean"])


def test_attention_report_and_picture_have_the_mask(setup, tmp_path):
  """With g_attention the report gives the mask's mean (0.5 at init),
  magnified.png gains the mask column, and a negative weight is refused."""
  trainer = setup("2v2", config=tiny_config("2v2", g_attention=True))
  method = trainer.method
  state = method.start_classifier(trainer.init_state()["model"])
  ex = trainer.data.examples("test", method.eval_kind, "weak")
  _, _, extra = method.evaluate_split(state, ex, None)
  assert extra["attention_mask_mean"] == pytest.approx(0.5, abs=1e-6)
  batch = {k: jnp.asarray(v) for k, v in
           pipeline.gather(ex, np.arange(2)).items()}
  method.write_images(state, batch, str(tmp_path))
  from PIL import Image  # pylint: disable=import-outside-toplevel
  wide = Image.open(tmp_path / "magnified.png").size[0]
  plain = setup("2v2", workdir=tmp_path / "plain")
  pstate = plain.method.start_classifier(plain.init_state()["model"])
  plain.method.write_images(pstate, batch, str(tmp_path / "plain"))
  assert wide > Image.open(tmp_path / "plain" / "magnified.png").size[0]
  assert "attention_mask_mean" not in plain.method.evaluate_split(
      pstate, ex, None)[2]
  with pytest.raises(ValueError, match="g_attention_l1"):
    setup("2v2", config=tiny_config("2v2", g_attention=True,
                                    g_attention_l1=-1.0))


def test_content_reduction_sum_is_eq12s_squared_norm_per_image(setup):
  """content_reduction='sum' scales G's content term by H x W x C (eq. 12's
  squared norm per image) and nothing else in the step."""
  batch = pair_batch(setup("1v2"))
  key = jax.random.key(0)
  got = {}
  for red in ("mean", "sum"):
    trainer = setup("1v2", config=tiny_config("1v2", content_reduction=red))
    state = trainer.init_state()["model"]
    got[red] = jax.jit(trainer.phases[2].step)(state, batch, key)[1]
  h, w = 32, 32
  np.testing.assert_allclose(float(got["sum"]["g_content"]),
                             h * w * 3 * float(got["mean"]["g_content"]),
                             rtol=1e-5)
  np.testing.assert_allclose(float(got["sum"]["d_loss"]),
                             float(got["mean"]["d_loss"]), rtol=1e-6)


@pytest.mark.parametrize("kill_at", [
    # Inside the GroupGAN loop: earlier phases and C's hand-over skipped.
    # 6 minutes on 2 cores with a cold compilation cache (CI's): slow.
    pytest.param(5, marks=pytest.mark.slow),
    pytest.param(3, marks=pytest.mark.slow),  # inside pretrain_autoencoder
    pytest.param(1, marks=pytest.mark.slow),  # inside pretrain_extractor
])
def test_kill_mid_phase_then_resume_matches_uninterrupted(setup, tmp_path,
                                                          kill_at):
  """Killed after step ``kill_at`` of 2 + 2 + 2, the resumed run ends with
  the uninterrupted run's parameters, report and metric log."""
  full = setup("2v2", workdir=tmp_path / "full").train()

  class Killed(Exception):
    pass

  workdir = tmp_path / f"killed_{kill_at}"
  trainer = setup("2v2", workdir=workdir)
  real_save = trainer.ckpt.save

  def save_then_die(step, *a, **k):
    real_save(step, *a, **k)
    if step == kill_at:
      trainer.ckpt.wait()
      raise Killed()
  trainer.ckpt.save = save_then_die
  with pytest.raises(Killed):
    trainer.train()
  resumed = setup("2v2", workdir=workdir).train()
  assert resumed["state_digest"] == full["state_digest"]
  assert resumed["accuracy"] == full["accuracy"]
  log = lambda d: [{k: v for k, v in json.loads(line).items()
                    if "per_sec" not in k}
                   for line in open(d / "metrics.jsonl")]
  assert log(workdir) == log(tmp_path / "full")
  assert os.path.exists(tmp_path / "full" / "eval" / "magnified.png")


def test_table1_markdown_from_run_reports(tmp_path):
  from fer_jax.tools import groupgan_table as table
  one = tmp_path / "vgg13_bn" / "cnn" / "eval"
  one.mkdir(parents=True)
  (one / "report.json").write_text(json.dumps({"accuracy": 0.6486}))
  cv = tmp_path / "vgg13_bn" / "2v2"
  cv.mkdir(parents=True)
  (cv / "cv_report.json").write_text(json.dumps(
      {"mean_accuracy": 0.7005, "std_accuracy": 0.0123}))
  results = {("vgg13_bn", v): table.read_result(str(tmp_path / "vgg13_bn" / v))
             for v in table.VARIANTS}
  md = table.markdown(results, ["vgg13_bn"], list(table.VARIANTS), "cap")
  assert "| BaseNet | CNN | DCGAN | GroupGAN (1v2) | GroupGAN (2v2) |" in md
  assert "| vgg13_bn | 64.86 | - | - | 70.05 ± 1.23 |" in md
  (cv / "wall_time.json").write_text(json.dumps({"wall_s": 512.4,
                                                 "cpu_s": 900.0}))
  times = {("vgg13_bn", v): table.read_wall_time(
      str(tmp_path / "vgg13_bn" / v)) for v in table.VARIANTS}
  assert times[("vgg13_bn", "2v2")] == 512.4
  assert times[("vgg13_bn", "cnn")] is None
  wall = table.wall_time_markdown(times, ["vgg13_bn"], list(table.VARIANTS))
  assert "| vgg13_bn | - | - | - | 512 |" in wall
