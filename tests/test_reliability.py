"""Issue #17: no silent wrong results, no poisoned checkpoint, recovery from
partial writes. The workdir's config.json is the run's identity, a
non-finite state is never saved, one run per workdir, torn files are read
tolerantly, and a corrupt newest checkpoint is skipped."""

import json
import os
import re
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fer_jax import checkpoint as ckpt_lib
from fer_jax import files, steps, train
from fer_jax import metrics as metrics_lib

from test_train import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------ 1. config.json is identity

@pytest.fixture(scope="module")
def fake_data(make_table, load_table):
  return load_table(make_table(num_subjects=6, num_frames=8, image_size=16))


@pytest.fixture(scope="module")
def trained_once(fake_data, tmp_path_factory):
  """A tiny GNDL run on fold 0 (4 steps, checkpoints at 2 and 4)."""
  wd = str(tmp_path_factory.mktemp("trained") / "run")
  train.train_and_evaluate(tiny_config(), wd, fake_data)
  return wd


@pytest.fixture
def trained(trained_once, tmp_path):
  """A copy of ``trained_once`` the test may change."""
  wd = str(tmp_path / "run")
  shutil.copytree(trained_once, wd)
  return wd


def test_eval_with_another_fold_is_refused_and_report_kept(trained,
                                                           fake_data):
  before = open(os.path.join(trained, "eval", "report.json")).read()
  cfg = tiny_config()
  cfg.data.fold = 1
  with pytest.raises(ValueError, match=r"config.data.fold is 0 in .*config"
                     r"\.json but 1 here"):
    train.evaluate_checkpoint(cfg, trained, load_data=fake_data)
  assert open(os.path.join(trained, "eval", "report.json")).read() == before


def test_resume_with_identity_overrides_is_refused(trained, fake_data):
  for field, value, shown in (("data.classes", "basic6", "'basic6'"),
                              ("optim.lr", 0.5, "0.5"),
                              ("model.base_width", 16, "16")):
    cfg = tiny_config()
    cfg.train.num_steps = 6
    section, name = field.split(".")
    setattr(cfg[section], name, value)
    with pytest.raises(ValueError, match=rf"config.{field} is .* but "
                       rf"{shown} here"):
      train.train_and_evaluate(cfg, trained, fake_data)
  saved = json.load(open(os.path.join(trained, "config.json")))
  assert saved["optim"]["lr"] == tiny_config().optim.lr  # not overwritten


def test_a_shorter_training_is_refused_but_eval_ignores_length(trained,
                                                               fake_data):
  cfg = tiny_config(num_steps=2)
  with pytest.raises(ValueError, match="config.train.num_steps is 4"):
    train.train_and_evaluate(cfg, trained, fake_data)
  report = train.evaluate_checkpoint(cfg, trained, load_data=fake_data)
  assert report["step"] == 4


def test_harmless_overrides_are_allowed_and_listed(trained, fake_data,
                                                   capsys):
  cfg = tiny_config(eval_batch_size=8, num_steps=6, log_every=3)
  report = train.train_and_evaluate(cfg, trained, fake_data)
  out = capsys.readouterr().out
  assert "train.eval_batch_size: 16 -> 8" in out
  assert "train.num_steps: 4 -> 6" in out
  assert report["step"] == 6
  assert json.load(open(os.path.join(trained, "config.json")))[
      "train"]["num_steps"] == 6


def test_checkpoint_of_another_fold_is_refused(trained, fake_data):
  """Without config.json (a run from before it, or a Trainer used
  directly), the fold in the checkpoint still guards it."""
  cfg = tiny_config()
  cfg.data.fold = 1
  with pytest.raises(ckpt_lib.CheckpointError,
                     match="config.data.fold=0, this run's config says 1"):
    train.Trainer(cfg, trained, fake_data(cfg)).restore()


# -------------------------------------- 2. a non-finite state is never saved

def test_guard_rejects_a_finite_loss_with_a_nonfinite_state():
  """The loss is computed before the update, so it can be finite while the
  update overflows the parameters: the step is still skipped."""
  def step(state, batch, rng):
    return {"w": state["w"] * batch["x"]}, {"loss": jnp.sum(state["w"])}

  loop = {"model": {"w": jnp.ones(2)}, "step": jnp.int32(0),
          "rng": jax.random.PRNGKey(0),
          "guard": {"nonfinite": jnp.int32(0),
                    "first_bad_step": jnp.int32(-1),
                    "halted": jnp.asarray(False)}}
  fn = jax.jit(steps.guarded_step(step, stop_on_nonfinite=False))
  loop, m = fn(loop, {"x": jnp.full(2, 2.0)})
  assert float(m["skipped"]) == 0.0
  loop, m = fn(loop, {"x": jnp.array([jnp.inf, 1.0])})
  assert float(m["loss"]) == 4.0 and float(m["skipped"]) == 1.0
  np.testing.assert_array_equal(loop["model"]["w"], [2.0, 2.0])
  assert int(loop["guard"]["first_bad_step"]) == 2


def _healthy_then_infinite_lr(fake_data, wd, **overrides):
  """2 healthy steps (checkpointed), then a resume at lr=inf (through the
  Trainer, as a run with another learning rate would have before #17)."""
  cfg = tiny_config(num_steps=2, checkpoint_every=1, log_every=1)
  train.Trainer(cfg, wd, fake_data(cfg)).train()
  cfg = tiny_config(num_steps=8, checkpoint_every=1, log_every=1,
                    **overrides)
  cfg.optim.lr = float("inf")
  return cfg, train.Trainer(cfg, wd, fake_data(cfg))


def _every_checkpoint_is_finite(cfg, wd, fake_data):
  trainer = train.Trainer(cfg, wd, fake_data(cfg))
  saved = trainer.ckpt.all_steps()
  for s in saved:
    loop, _ = trainer.restore(s)
    assert bool(steps.all_finite(loop)), f"checkpoint {s} is not finite"
  trainer.ckpt.close()
  return saved


def test_infinite_lr_stops_and_no_nonfinite_state_is_saved(fake_data,
                                                           tmp_path):
  wd = str(tmp_path / "run")
  cfg, trainer = _healthy_then_infinite_lr(fake_data, wd)
  with pytest.raises(train.NonFiniteLossError,
                     match=r"at step 3; .*checkpoint, step 2, holds finite"):
    trainer.train()
  assert _every_checkpoint_is_finite(cfg, wd, fake_data)[-1] == 2


def test_infinite_lr_from_the_start_saves_nothing(fake_data, tmp_path):
  cfg = tiny_config(checkpoint_every=1, log_every=1)
  cfg.optim.lr = float("inf")
  with pytest.raises(train.NonFiniteLossError,
                     match="at step 1; .*no checkpoint had been written"):
    train.Trainer(cfg, str(tmp_path), fake_data(cfg)).train()
  assert not ckpt_lib.has_checkpoint(str(tmp_path))


def test_skip_counts_skipped_steps_and_stops_past_the_share(fake_data,
                                                            tmp_path):
  wd = str(tmp_path / "run")
  cfg, trainer = _healthy_then_infinite_lr(
      fake_data, wd, nonfinite="skip", skip_window=4,
      max_skipped_fraction=0.5)
  with pytest.raises(train.NonFiniteLossError,
                     match=r"4 of the 4 steps up to step \d were skipped"):
    trainer.train()
  _every_checkpoint_is_finite(cfg, wd, fake_data)
  rows = [json.loads(l) for l in open(os.path.join(wd, "metrics.jsonl"))
          if "train/loss" in l]
  assert [r["train/skipped_steps"] for r in rows if r["step"] <= 2] == [0, 0]
  assert sum(r["train/skipped_steps"] for r in rows) >= 3


def test_skip_within_the_share_finishes_and_reports_the_count(fake_data,
                                                              tmp_path):
  wd = str(tmp_path / "run")
  cfg, trainer = _healthy_then_infinite_lr(
      fake_data, wd, nonfinite="skip", max_skipped_fraction=1.0)
  report = trainer.train()
  assert report["nonfinite_steps"] == 6 and report["step"] == 8
  rows = [json.loads(l) for l in open(os.path.join(wd, "metrics.jsonl"))]
  assert sum(r.get("train/skipped_steps", 0) for r in rows) == 6
  assert _every_checkpoint_is_finite(cfg, wd, fake_data)[-1] == 8


# ----------------------------------------------- 4. one run per workdir

def hold_lock(wd) -> subprocess.Popen:
  """Another process holding ``wd``'s lock (as a live run does)."""
  proc = subprocess.Popen(
      [sys.executable, "-c",
       "import sys, time; from fer_jax.files import WorkdirLock; "
       f"WorkdirLock({str(wd)!r}).acquire(); print('held', flush=True); "
       "time.sleep(120)"],
      env=dict(os.environ, PYTHONPATH=ROOT), stdout=subprocess.PIPE,
      text=True)
  assert proc.stdout.readline().strip() == "held"
  return proc


def test_a_second_run_is_refused_and_a_killed_holder_frees_it(fake_data,
                                                              tmp_path):
  wd = tmp_path / "run"
  wd.mkdir()
  holder = hold_lock(wd)
  try:
    with pytest.raises(files.FileError,
                       match=rf"in use by another run \(pid {holder.pid} on "
                       r"host .*\.fer_jax\.lock"):
      train.train_and_evaluate(tiny_config(), str(wd), fake_data)
    with pytest.raises(files.FileError, match=f"pid {holder.pid}"):
      train.evaluate_checkpoint(tiny_config(), str(wd), load_data=fake_data)
    assert not (wd / "config.json").exists()
  finally:
    holder.kill()  # SIGKILL: no cleanup runs, the OS drops the lock
    holder.wait()
  with files.WorkdirLock(str(wd)):
    pass
  with files.WorkdirLock(str(wd)):  # released on exit, taken again
    pass


# --------------------------------------------- 5. a torn metrics.jsonl line

def test_torn_last_metrics_line_is_dropped_with_a_warning(tmp_path, capsys):
  path = tmp_path / "metrics.jsonl"
  rows = [{"step": s, "train/loss": 1.0 / s} for s in (2, 4, 6)]
  good = "".join(json.dumps(r) + "\n" for r in rows)
  path.write_text(good + '{"step": 8, "train/lo')
  assert metrics_lib.read_metrics(str(tmp_path)) == rows
  assert "line 4 is not a complete JSON row" in capsys.readouterr().out
  metrics_lib.MetricWriter(str(tmp_path), resume_step=4).close()
  assert path.read_text() == "".join(json.dumps(r) + "\n" for r in rows[:2])
  assert "line 4" in capsys.readouterr().out
  inode = path.stat().st_ino
  metrics_lib.MetricWriter(str(tmp_path), resume_step=4).close()
  assert path.stat().st_ino == inode  # nothing to cut: not rewritten


def test_resume_after_a_torn_metrics_line(trained, fake_data):
  path = os.path.join(trained, "metrics.jsonl")
  before = metrics_lib.read_metrics(trained)
  with open(path, "a") as f:
    f.write('{"step": 5, "train/loss": 0.')
  report = train.train_and_evaluate(tiny_config(num_steps=6), trained,
                                    fake_data)
  assert report["step"] == 6
  after = [json.loads(l) for l in open(path)]  # every line parses again
  assert after[:len(before)] == before
  assert [r["step"] for r in after if "train/loss" in r] == [2, 4, 6]


# ------------------------------------ 3. a corrupt newest checkpoint is skipped

def _state_dir(wd, step):
  return os.path.join(wd, "checkpoints", str(step), "state")


def _biggest_data_file(wd, step):
  d = os.path.join(_state_dir(wd, step), "ocdbt.process_0", "d")
  return max((os.path.join(d, f) for f in os.listdir(d)),
             key=os.path.getsize)


def _cut(path):
  """Truncates ``path`` to half its size (a copy or a write cut short)."""
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)


# (how the newest step is damaged, the file the message names)
CORRUPTIONS = {
    "data file cut": (lambda wd: _cut(_biggest_data_file(wd, 4)),
                      r"checkpoints/4/state cannot be read \(OUT_OF_RANGE"),
    "data file deleted": (lambda wd: os.remove(_biggest_data_file(wd, 4)),
                          r"checkpoints/4/state cannot be read"),
    "manifest deleted": (
        lambda wd: os.remove(os.path.join(_state_dir(wd, 4),
                                          "manifest.ocdbt")),
        r"checkpoints/4/state/manifest\.ocdbt is missing"),
    "array metadata cut": (
        lambda wd: _cut(os.path.join(_state_dir(wd, 4), "_METADATA")),
        r"checkpoints/4/state/_METADATA is not valid JSON \(Unterminated"),
    "meta JSON cut": (
        lambda wd: _cut(os.path.join(wd, "checkpoints", "4", "meta",
                                     "metadata")),
        r"checkpoints/4/meta/metadata is not valid JSON \(Unterminated"),
    "meta JSON deleted": (
        lambda wd: os.remove(os.path.join(wd, "checkpoints", "4", "meta",
                                          "metadata")),
        r"checkpoints/4/meta/metadata is missing"),
}


@pytest.mark.parametrize("damage", sorted(CORRUPTIONS))
def test_a_corrupt_newest_step_is_skipped_and_named(damage, trained,
                                                    fake_data, capsys):
  corrupt, names = CORRUPTIONS[damage]
  corrupt(trained)
  cfg = tiny_config()
  trainer = train.Trainer(cfg, trained, fake_data(cfg))
  try:
    # A resume falls back to step 2 and says, in one line, what it skipped.
    loop, meta = trainer.restore(fallback=True)
    assert meta["global_step"] == int(loop["step"]) == 2
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and re.search(
        r"^fer_jax: checkpoint .*checkpoints/4 cannot be restored, "
        rf"skipping it: .*{names}", out[0]), out
    # An evaluation of the newest step names the file and the older step.
    with pytest.raises(ckpt_lib.CorruptCheckpoint,
                       match=rf"{names}.*; --checkpoint_step=2 uses the "
                       "newest older step"):
      trainer.restore()
  finally:
    trainer.ckpt.close()


def test_resume_past_a_corrupt_step_ends_at_the_uninterrupted_digest(
    trained_once, trained, fake_data, capsys):
  """The newest step's data file cut short: the rerun resumes from step 2,
  moves step 4 aside (not deleted), trains steps 3-4 again and ends at the
  state of the run that was never damaged."""
  full = json.load(open(os.path.join(trained_once, "eval", "report.json")))
  _cut(_biggest_data_file(trained, 4))
  report = train.train_and_evaluate(tiny_config(), trained, fake_data)
  out = capsys.readouterr().out
  assert re.search(r"checkpoints/4 cannot be restored, skipping it: .*"
                   r"OUT_OF_RANGE", out)
  assert "fer_jax: resuming from step 2" in out
  assert "1 newer checkpoint(s) were moved, not deleted" in out
  aside = os.listdir(os.path.join(trained, ckpt_lib.SET_ASIDE))
  assert len(aside) == 1 and aside[0].startswith("checkpoints_4_")
  assert report["step"] == 4
  assert report["state_digest"] == full["state_digest"]
  assert report["accuracy"] == full["accuracy"]
  assert sorted(int(s) for s in os.listdir(os.path.join(
      trained, "checkpoints")) if s.isdigit()) == [2, 4]


def test_train_resumes_from_checkpoint_step_and_sets_newer_aside(
    trained_once, trained, fake_data, capsys):
  full = json.load(open(os.path.join(trained_once, "eval", "report.json")))
  report = train.train_and_evaluate(tiny_config(), trained, fake_data,
                                    checkpoint_step=2)
  out = capsys.readouterr().out
  assert "fer_jax: resuming from step 2" in out
  assert re.search(r"newer checkpoint\(s\) were moved, not deleted, to "
                   r".*checkpoints_set_aside \(checkpoints_4_\d+-\d+\); "
                   r"steps after 2 are trained again", out)
  assert report["state_digest"] == full["state_digest"]
  with pytest.raises(ckpt_lib.CheckpointError,
                     match=r"no checkpoint for step 3 .*available: \[2, 4\]"):
    train.train_and_evaluate(tiny_config(), trained, fake_data,
                             checkpoint_step=3)


def test_eval_of_a_corrupt_newest_step_is_one_line(trained, tmp_path):
  """The command line, in a process of its own: Orbax's failed reads leave
  tracebacks behind at exit unless they are silenced; none may show."""
  from fer_jax.data import frames  # pylint: disable=import-outside-toplevel
  _cut(_biggest_data_file(trained, 4))
  cfg = tiny_config()
  cfg.data.data_dir = str(tmp_path / "tfds")
  frames.get_builder(cfg.data)  # built here: its progress bars stay here
  out = subprocess.run(
      [sys.executable, "-m", "fer_jax.main", "--config=configs/gndl.py:tiny",
       f"--workdir={trained}", "--mode=eval", "--compilation_cache="],
      cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT,
                         FER_JAX_DATA_DIR=str(tmp_path / "tfds")),
      capture_output=True, text=True, timeout=600, check=False)
  assert out.returncode == 2, out.stderr[-3000:]
  err = [l for l in out.stderr.splitlines() if "xla_bridge" not in l]
  assert len(err) == 1, out.stderr[-3000:]
  assert re.fullmatch(
      r"fer_jax: error: checkpoint .*/checkpoints/4 cannot be restored: "
      r".*/checkpoints/4/state cannot be read \(OUT_OF_RANGE: .*\); "
      r"--checkpoint_step=2 uses the newest older step", err[0]), err[0]


def test_another_configs_checkpoint_is_an_error_not_a_fallback(trained,
                                                               fake_data):
  """Other shapes mean a config change: no older step would fit either, so
  it is refused, naming an array and both shapes."""
  cfg = tiny_config()
  cfg.model.base_width = 16
  trainer = train.Trainer(cfg, trained, fake_data(cfg))
  try:
    with pytest.raises(ckpt_lib.CheckpointError,
                       match=r"checkpoints/4 does not match the state this "
                       r"config builds .*arrays differ, e.g. .*saved \(8,\) "
                       r"float32, this config builds \(16,\)") as e:
      trainer.restore(fallback=True)
    assert not isinstance(e.value, ckpt_lib.CorruptCheckpoint)
  finally:
    trainer.ckpt.close()


def test_every_step_corrupt_is_one_error_listing_each(trained, fake_data):
  for step in (2, 4):
    _cut(os.path.join(trained, "checkpoints", str(step), "meta", "metadata"))
  with pytest.raises(ckpt_lib.CheckpointError,
                     match=r"no checkpoint under .*checkpoints restores "
                     r"\(step 4: .*; step 2: .*\): move .* away"):
    train.train_and_evaluate(tiny_config(), trained, fake_data)


# ------------------------------------- 7. data and config errors, one line

def run_main(capsys, *args):
  """``python -m fer_jax.main ARGS`` in this process (a subprocess takes
  seconds to import JAX): (exit status, stderr)."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  from fer_jax import main  # pylint: disable=import-outside-toplevel
  flags.FLAGS.unparse_flags()
  capsys.readouterr()
  cwd = os.getcwd()
  os.chdir(ROOT)  # the README's relative config paths
  try:
    main.main(main.parse_flags(["fer_jax.main", "--compilation_cache=",
                                *args]))
    code = 0
  except SystemExit as e:
    code = e.code
  finally:
    os.chdir(cwd)
    flags.FLAGS.unparse_flags()
  return code, capsys.readouterr().err


def assert_one_error_line(err: str, *needles: str) -> None:
  lines = err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("fer_jax: error: "), err
  assert "Traceback" not in err
  for needle in needles:
    assert needle in lines[0], (needle, lines[0])


@pytest.mark.parametrize("config,needles", [
    ("configs/no_such_method.py",
     ["--config=configs/no_such_method.py: no config file",
      "packaged configs: baseline"]),
    ("configs/gndl.py:no_such_preset",
     ["--config=configs/gndl.py:no_such_preset: configs/gndl.py has no "
      "preset 'no_such_preset'; presets: ckplus"]),
    ("ifgan:no_such_preset", ["configs/ifgan.py has no preset"]),
])
def test_a_missing_config_file_or_unknown_preset_is_one_line(
    capsys, tmp_path, config, needles):
  code, err = run_main(capsys, f"--config={config}",
                       f"--workdir={tmp_path / 'wd'}")
  assert code == 2
  assert_one_error_line(err, *needles)
  assert not (tmp_path / "wd").exists()


def _flip_bytes(path):
  """Inverts 64 bytes in the middle of ``path`` (a disk or copy error that
  keeps the size)."""
  size = os.path.getsize(path)
  with open(path, "r+b") as f:
    f.seek(size // 2)
    chunk = f.read(64)
    f.seek(size // 2)
    f.write(bytes(b ^ 0xFF for b in chunk))


@pytest.mark.parametrize("damage", [_cut, _flip_bytes],
                         ids=["truncated", "bytes flipped"])
def test_a_corrupt_shard_names_it_and_the_rebuild_command(capsys, tmp_path,
                                                         monkeypatch, damage):
  from fer_jax.data import frames  # pylint: disable=import-outside-toplevel
  data_dir = tmp_path / "tfds"
  monkeypatch.setenv("FER_JAX_DATA_DIR", str(data_dir))
  cfg = tiny_config()
  cfg.data.data_dir = str(data_dir)
  built = frames.get_builder(cfg.data).data_dir
  shard = [os.path.join(built, f) for f in os.listdir(built)
           if ".array_record-" in f][0]
  damage(shard)
  code, err = run_main(
      capsys, "--config=configs/gndl.py:tiny", f"--workdir={tmp_path / 'wd'}")
  assert code == 2
  assert_one_error_line(
      err, f"{shard} cannot be read (", "Riegeli",
      f"rebuild it with: rm -r {built}   # the next run builds it again")
  assert not ckpt_lib.has_checkpoint(str(tmp_path / "wd"))


def test_an_eval_batch_the_devices_do_not_divide_fails_at_start(tmp_path):
  """Before #17 a run found it at its final evaluation, after training."""
  from test_evaluate_api import _run_on_four_devices  # pylint: disable=import-outside-toplevel
  wd = tmp_path / "run"
  out = _run_on_four_devices(
      "import test_train\n"
      "cfg = test_train.tiny_config()\n"
      "cfg.train.eval_batch_size = 6\n"
      "try:\n"
      f"  train.train_and_evaluate(cfg, {str(wd)!r}, load_data)\n"
      "except ValueError as e:\n"
      "  print(json.dumps(str(e)))\n")
  assert json.loads(out.strip().splitlines()[-1]) == (
      "config.train.eval_batch_size=6 must be a multiple of the 4 devices "
      "of the mesh: use 8")
  assert not (wd / "checkpoints").exists()
  assert not (wd / "metrics.jsonl").exists()


def _edit_config(wd, section, field, value):
  path = os.path.join(wd, "config.json")
  saved = json.load(open(path))
  saved[section][field] = value
  files.write_json_atomic(path, saved)
  return path


def test_load_validates_the_config_json_it_reads(trained):
  from fer_jax import evaluate  # pylint: disable=import-outside-toplevel
  path = _edit_config(trained, "data", "classes", 5)
  with pytest.raises(ValueError, match=re.escape(
      f"{path} (the run's config) is not one fer_jax can use: "
      "config.data.classes: 5 must be a string")):
    evaluate.load(trained)
  _edit_config(trained, "data", "classes", "basic6+contempt")
  _edit_config(trained, "data", "fold", 7)
  with pytest.raises(ValueError, match=r"config.json .*config.data.fold: 7 "
                     r"is out of range 0..2"):
    evaluate.load(trained)


def test_load_never_builds_a_data_set_in_a_changed_data_dir(trained,
                                                            tmp_path):
  from fer_jax import evaluate  # pylint: disable=import-outside-toplevel
  elsewhere = tmp_path / "no_such_dir"
  _edit_config(trained, "data", "data_dir", str(elsewhere))
  model = evaluate.load(trained)  # predicting needs no data set
  assert model.predict(np.zeros((2, 16, 16, 3), np.uint8)).shape == (2,)
  with pytest.raises(ValueError, match=r"config.data.data_dir=.*no_such_dir"
                     r".* in .*config.json is not a directory: "
                     r"load\(workdir, data_dir=DIR\)"):
    model.evaluate("test")
  assert not elsewhere.exists()
