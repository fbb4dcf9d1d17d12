"""Folds batched in one program (config.train.batch_folds) against k
separate runs of the same folds: each fold's final state, report, metric
log and files; a killed batched run's resume; the refusals.

The runs use threefry keys (JAX's default), not the suite's rbg keys
(tests/conftest.py): XLA's rbg bit generator draws other bits under vmap,
so only threefry gives each vmapped fold its separate run's dropout and
augmentation draws.

Tolerance: vmap turns each convolution over per-fold weights into one
grouped convolution, which sums in another order, so a fold's numbers
equal its separate run's to float rounding, not bit for bit. Parameters
and batch statistics are compared to atol = rtol = 1e-4 (measured after
the runs here: GNDL:tiny 1.4e-6, GroupGAN:tiny 1.5e-5); each network's
optimizer state (its moments hold the last gradients, which a GAN's losses
amplify, and leaves near 1e-11 that rounding dominates) as one vector, to a
relative L2 difference of 1e-2 (measured: GroupGAN's G 7.4e-4); losses to
rtol 1e-5 (measured 3e-7). The same checks between two different folds
fail (checked too).
"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from fer_jax import checkpoint as ckpt_lib
from fer_jax import config_lib, sharding, train

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                       "configs")
STATE_TOL, OPT_REL, LOSS_RTOL = 1e-4, 1e-2, 1e-5


@pytest.fixture(scope="module", autouse=True)
def threefry():
  old = jax.config.jax_default_prng_impl
  jax.config.update("jax_default_prng_impl", "threefry2x32")
  yield
  jax.config.update("jax_default_prng_impl", old)


def folds_config(method, num_folds=2, **train_overrides):
  """``configs/<method>.py:tiny`` over ``num_folds`` folds, all of them."""
  c = config_lib.load_config_module(
      os.path.join(CONFIGS, f"{method}.py")).get_config("tiny")
  c.data.num_folds = num_folds
  c.data.all_folds = True
  for k, v in train_overrides.items():
    setattr(c.train, k, v)
  return c


def final_state(fold_dir):
  c = ckpt_lib.Checkpointer(str(fold_dir), async_save=False)
  try:
    loop, meta = c.restore_as_saved(sharding.replicated(sharding.make_mesh()))
  finally:
    c.close()
  return jax.device_get(loop), meta


def losses(fold_dir):
  rows = [json.loads(line) for line in open(fold_dir / "metrics.jsonl")]
  return [(r["step"], r["train/loss"]) for r in rows if "train/loss" in r]


def run_files(fold_dir):
  """The files a run wrote; those named by a hash or a clock (Orbax's data
  files, TensorBoard's events) by their folder only."""
  out = set()
  for root, _, names in os.walk(fold_dir):
    rel = os.path.relpath(root, fold_dir)
    for n in names:
      hashed = "tfevents" in n or os.path.basename(root) == "d"
      out.add(os.path.join(rel, "*" if hashed else n))
  return out


def run_both(method, tmp, table, load_table, **train_overrides):
  """(separate runs' workdir, batched run's workdir, their cv reports)."""
  out = []
  for batch_folds in (False, True):
    wd = tmp / ("batched" if batch_folds else "separate")
    cfg = folds_config(method, batch_folds=batch_folds, **train_overrides)
    out.append((wd, train.train_and_evaluate(cfg, str(wd),
                                             load_table(table))))
  return out


def state_mismatches(want, got) -> list[str]:
  """What of ``got`` is outside the module docstring's tolerance of
  ``want`` (the same tree): leaves of parameters and statistics, whole
  optimizer states."""
  out, opt = [], {}
  leaves = jax.tree.leaves(got)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(want), leaves,
                          strict=True):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    name = jax.tree_util.keystr(path)
    if "opt_state" in name:
      net = name[:name.index("opt_state")]
      opt.setdefault(net, []).append((a.ravel(), b.ravel()))
    elif not np.allclose(b, a, rtol=STATE_TOL, atol=STATE_TOL):
      out.append(f"{name}: max difference {np.abs(a - b).max():.3g}")
  for net, pairs in opt.items():
    a = np.concatenate([x for x, _ in pairs])
    b = np.concatenate([y for _, y in pairs])
    rel = np.linalg.norm(a - b) / max(np.linalg.norm(a), 1e-30)
    if rel > OPT_REL:
      out.append(f"{net}opt_state: relative L2 difference {rel:.3g}")
  return out


def assert_folds_match(separate, batched, num_folds=2):
  (sep_dir, sep_cv), (bat_dir, bat_cv) = separate, batched
  assert [f["accuracy"] for f in bat_cv["folds"]] == [
      f["accuracy"] for f in sep_cv["folds"]]
  assert bat_cv["mean_accuracy"] == sep_cv["mean_accuracy"]
  states = []
  for k in range(num_folds):
    a, b = sep_dir / f"fold_{k}", bat_dir / f"fold_{k}"
    assert run_files(b) == run_files(a)
    sep_state, sep_meta = final_state(a)
    bat_state, bat_meta = final_state(b)
    assert bat_meta["global_step"] == sep_meta["global_step"]
    assert bat_meta["fold"] == k
    assert bat_meta["iterator"] == sep_meta["iterator"]
    assert not state_mismatches(sep_state, bat_state), k
    la, lb = losses(a), losses(b)
    assert [s for s, _ in lb] == [s for s, _ in la] and la
    np.testing.assert_allclose([v for _, v in lb], [v for _, v in la],
                               rtol=LOSS_RTOL)
    ra = json.load(open(a / "eval" / "report.json"))
    rb = json.load(open(b / "eval" / "report.json"))
    assert rb["confusion_matrix"] == ra["confusion_matrix"]
    assert (rb["fold"], rb["step"]) == (ra["fold"], ra["step"]) == (
        k, sep_meta["global_step"])
    states.append((sep_state, bat_state))
  # The comparison can fail: fold 0's batched state is not fold 1's.
  assert len(state_mismatches(states[1][0], states[0][1])) > 10


@pytest.fixture(scope="module")
def gndl_runs(tmp_path_factory, make_table, load_table):
  tmp = tmp_path_factory.mktemp("gndl_folds")
  return run_both("gndl", tmp, make_table(num_subjects=6, num_frames=8,
                                          image_size=16), load_table)


@pytest.mark.slow  # threefry compiles: 27 min cold on the shared 2-core CPU
def test_gndl_batched_folds_match_separate_runs(gndl_runs):
  """Two GNDL folds trained as one vmapped program end where each fold's
  own run ends: state, confusion matrix, losses, files."""
  separate, batched = gndl_runs
  assert_folds_match(separate, batched)
  cv = json.load(open(batched[0] / "cv_report.json"))
  assert [f["fold"] for f in cv["folds"]] == [0, 1]


@pytest.mark.slow  # the GNDL runs above, then two more batched runs
def test_killed_batched_run_resumes_every_fold_at_a_common_step(
    gndl_runs, make_table, load_table, tmp_path, monkeypatch, capsys):
  """Killed when fold 0 had saved step 4 and fold 1 only step 2, the rerun
  takes both folds from step 2 (fold 0's step 4 set aside, not deleted) and
  ends as the uninterrupted batched run did."""
  _, (full_dir, _) = gndl_runs
  wd = tmp_path / "killed"
  cfg = folds_config("gndl", batch_folds=True)
  load = load_table(make_table(num_subjects=6, num_frames=8, image_size=16))

  class Killed(Exception):
    pass

  real_save = ckpt_lib.Checkpointer.save

  def save_then_die(self, step, *a, **k):
    real_save(self, step, *a, **k)
    if step == 4 and self.workdir.endswith("fold_0"):
      self.wait()
      raise Killed()

  with monkeypatch.context() as m:
    m.setattr(ckpt_lib.Checkpointer, "save", save_then_die)
    with pytest.raises(Killed):
      train.train_and_evaluate(cfg, str(wd), load)
  assert ckpt_lib.Checkpointer(str(wd / "fold_0")).all_steps() == [2, 4]
  assert ckpt_lib.Checkpointer(str(wd / "fold_1")).all_steps() == [2]
  capsys.readouterr()
  cv = train.train_and_evaluate(cfg, str(wd), load)
  out = capsys.readouterr().out
  assert "batched folds go on together from step 2" in out
  assert "from step 2" in out
  assert os.listdir(wd / "fold_0" / "checkpoints_set_aside")
  full = json.load(open(full_dir / "cv_report.json"))
  assert [f["accuracy"] for f in cv["folds"]] == [
      f["accuracy"] for f in full["folds"]]
  for k in range(2):
    a = json.load(open(full_dir / f"fold_{k}" / "eval" / "report.json"))
    b = json.load(open(wd / f"fold_{k}" / "eval" / "report.json"))
    assert b["state_digest"] == a["state_digest"]
    assert losses(wd / f"fold_{k}") == losses(full_dir / f"fold_{k}")


@pytest.mark.slow
def test_groupgan_batched_folds_match_separate_runs(tmp_path, make_table,
                                                    load_table):
  """GroupGAN (the issue's small-batch case, batch 4 here) over its three
  phases, E's hand-over to C (a Phase.enter) included."""
  separate, batched = run_both(
      "groupgan", tmp_path, make_table(num_subjects=6, num_frames=8,
                                       image_size=32), load_table)
  assert_folds_match(separate, batched)


# ------------------------------------------------- the vmapped dispatch

TOY = textwrap.dedent("""
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_default_prng_impl", "threefry2x32")
    from fer_jax import batched_folds, sharding, steps

    def step(state, batch, rng):
      x = batch["image"].astype(jnp.float32).mean()
      noise = jax.random.uniform(rng)
      new = {"w": state["w"] * 0.5 + x + noise}
      return new, {"loss": x, "noise": noise, "label": batch["label"].sum()}

    def run(group):
      mesh = sharding.make_mesh()
      n = 24
      host = {"images": np.arange(n * 4, dtype=np.uint8).reshape(n, 2, 2, 1),
              "rows": {"image": np.arange(n, dtype=np.int32)[::-1].copy()},
              "label": np.arange(n, dtype=np.int32)}
      data = jax.device_put(host, sharding.replicated(mesh))
      offsets = (0, 10)
      loops = [{"model": {"w": jnp.full((), float(k))}, "step": jnp.zeros((), jnp.int32),
                "rng": jax.random.PRNGKey(k),
                "guard": {"nonfinite": jnp.zeros((), jnp.int32),
                          "first_bad_step": jnp.full((), -1, jnp.int32),
                          "halted": jnp.zeros((), bool)}} for k in range(2)]
      shape = (4,) if group == 1 else (group, 4)
      idx = [np.arange(8, dtype=np.int32)[k * 4:k * 4 + 4].reshape(1, 4).repeat(
          group, 0).reshape(shape) + k for k in range(2)]
      put = lambda a: sharding.to_global({"index": a}, mesh, stacked=group > 1)
      one = jax.jit(steps.dispatch_step(step, True, group, True))
      want = []
      for k in range(2):
        # A separate run's data holds only its fold: rows from offset on.
        fold = {"images": data["images"],
                "rows": {"image": data["rows"]["image"][offsets[k]:]},
                "label": data["label"][offsets[k]:]}
        l, m = one(loops[k], put(idx[k]), fold)
        want.append((float(l["model"]["w"]), {a: np.asarray(b).tolist() for a, b in m.items()}))
      stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *loops)
      fn = jax.jit(batched_folds.batched_dispatch(step, True, group, offsets, mesh))
      l, ms = fn(stacked, [put(i) for i in idx], data)
      got = [(float(l["model"]["w"][k]), {a: np.asarray(b).tolist() for a, b in ms[k].items()})
             for k in range(2)]
      return want, got, jax.device_count()

    print(json.dumps({g: run(g) for g in (1, 2)}))
""")


@pytest.mark.parametrize("devices", [1, 4])
def test_batched_dispatch_gathers_each_folds_rows_with_its_own_key(devices):
  """``batched_dispatch`` over two folds of a toy step (one and a scan of
  two steps per dispatch, on 1 and 4 simulated devices) gives each fold
  what ``steps.dispatch_step`` gives a run over that fold alone: its rows
  of the shared array (offset), its PRNG stream, its guard and metrics."""
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  out = subprocess.run([sys.executable, "-c", TOY], env=env,
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  runs = json.loads(out.stdout.strip().splitlines()[-1])
  for group, (want, got, count) in runs.items():
    assert count == devices
    for (w_want, m_want), (w_got, m_got) in zip(want, got):
      assert w_got == pytest.approx(w_want, rel=1e-6), group
      for key in m_want:
        np.testing.assert_allclose(m_got[key], m_want[key], rtol=1e-6)
    # The folds differ (other rows, other keys): the check can fail.
    assert got[0][1]["label"] != got[1][1]["label"]
    assert got[0][1]["noise"] != got[1][1]["noise"]


# ------------------------------------------------------------ refusals

def refusal(cfg, table, load_table, tmp_path):
  with pytest.raises(ValueError) as e:
    train.train_and_evaluate(cfg, str(tmp_path / "wd"), load_table(table))
  return str(e.value)


def test_batch_folds_needs_all_folds():
  cfg = folds_config("gndl", batch_folds=True)
  # A fold's own config (its config.json) is valid: nothing to batch.
  config_lib.validate(config_lib.with_fold(cfg, 1))
  cfg.data.all_folds = False
  with pytest.raises(ValueError, match=r"config\.train\.batch_folds.*"
                     r"data\.all_folds=True"):
    config_lib.validate(cfg)


def test_folds_of_unequal_epochs_are_refused(make_table, load_table,
                                             tmp_path):
  """5 subjects in 2 folds: one epoch is 3 subjects' steps in one fold and
  2 subjects' in the other."""
  cfg = folds_config("gndl", batch_folds=True, num_steps=0, num_epochs=1.0)
  msg = refusal(cfg, make_table(num_subjects=5), load_table, tmp_path)
  assert "config.train.batch_folds: fold 1's phases" in msg
  assert "config.train.num_steps" in msg


def test_a_schedule_in_each_folds_epochs_is_refused(make_table, load_table,
                                                    tmp_path):
  """Equal step counts, but the step schedule decays after each fold's
  own epoch: two programs (their jaxprs differ), refused."""
  cfg = folds_config("gndl", batch_folds=True)
  cfg.optim.update(schedule="step", decay_epochs=1.0)
  msg = refusal(cfg, make_table(num_subjects=5), load_table, tmp_path)
  assert "fold 1's step of phase 'gndl' is another program" in msg
  # The same config with equal folds is one program: not refused.
  cfg.train.num_steps = 1
  from fer_jax import batched_folds  # pylint: disable=import-outside-toplevel
  trainers = [train.Trainer(config_lib.with_fold(cfg, k),
                            str(tmp_path / f"eq{k}"),
                            load_table(make_table(num_subjects=6))(
                                config_lib.with_fold(cfg, k)))
              for k in range(2)]
  try:
    batched_folds.check(trainers)
  finally:
    for t in trainers:
      t.close()


def test_streamed_frames_are_refused(make_table, load_table, tmp_path):
  cfg = folds_config("gndl", batch_folds=True)
  cfg.data.device_resident = "off"
  msg = refusal(cfg, make_table(), load_table, tmp_path)
  assert "config.data.device_resident='on'" in msg
  assert "phase 'gndl'" in msg
