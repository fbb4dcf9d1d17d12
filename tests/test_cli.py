"""The command line end to end on the synthetic set: train, report, eval
mode, a SIGKILLed run that resumes to the same result, and clear errors."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    "--config.data.synth.num_subjects=6", "--config.data.synth.num_frames=8",
    "--config.data.synth.image_size=32", "--config.data.resize=32",
    "--config.data.crop=28", "--config.data.num_folds=3",
    "--config.model.base_width=8", "--config.train.batch_size=8",
    "--config.train.eval_batch_size=16", "--config.train.log_every=10",
    "--config.train.eval_every=0", "--config.train.progress_bar=False",
]
REPORT_KEYS = {"method", "dataset", "fold", "split", "accuracy",
               "per_class_accuracy", "confusion_matrix", "classes",
               "num_examples", "step", "state_digest"}


def run_cli(workdir, *extra, data_dir, config="configs/gndl.py", wait=True):
  cmd = [sys.executable, "-m", "fer_jax.main", f"--config={config}",
         f"--workdir={workdir}", "--compilation_cache=", *TINY, *extra]
  env = dict(os.environ, FER_JAX_DATA_DIR=str(data_dir), JAX_PLATFORMS="cpu")
  if not wait:
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
  return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=600)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, data_dir):
  """An uninterrupted 120-step run (checkpoints every 30)."""
  wd = tmp_path_factory.mktemp("full")
  out = run_cli(wd, "--config.train.num_steps=120",
                "--config.train.checkpoint_every=30", data_dir=data_dir)
  assert out.returncode == 0, out.stderr[-3000:]
  return wd, out


def test_train_writes_report_metrics_and_plots(full_run):
  wd, out = full_run
  report = json.load(open(wd / "eval" / "report.json"))
  assert REPORT_KEYS <= set(report)
  assert report["method"] == "gndl" and report["split"] == "test"
  assert report["step"] == 120
  assert report["dataset"].startswith("fer_synth/")
  cm = report["confusion_matrix"]
  assert sum(map(sum, cm)) == report["num_examples"] > 0
  assert (wd / "eval" / "confusion_matrix.png").stat().st_size > 1000
  logged = [json.loads(l) for l in open(wd / "metrics.jsonl")]
  # Every 10 steps, and at the end of the CE warm-up (30% of 120 steps).
  assert [r["step"] for r in logged if "train/loss" in r] == sorted(
      set(range(10, 121, 10)) | {36})
  events = [f for f in os.listdir(wd / "tensorboard")
            if f.startswith("events.out.tfevents")]
  assert events
  # The confusion matrix reaches TensorBoard as an image too.
  blob = b"".join((wd / "tensorboard" / f).read_bytes() for f in events)
  assert b"test/confusion_matrix" in blob
  assert json.loads(out.stdout.strip().splitlines()[-1])["accuracy"] == (
      report["accuracy"])
  # The closing lines say what the run ended at and where its files are.
  assert (f"fer_jax: done: test accuracy {100 * report['accuracy']:.1f}% "
          "(gndl, fold 0)") in out.stdout
  assert f"report:      {wd / 'eval' / 'report.json'}" in out.stdout
  assert f"tensorboard --logdir {wd / 'tensorboard'}" in out.stdout


def test_eval_mode_reproduces_the_report(full_run, data_dir):
  wd, _ = full_run
  before = json.load(open(wd / "eval" / "report.json"))
  out = run_cli(wd, "--config.train.num_steps=120", "--mode=eval",
                data_dir=data_dir)
  assert out.returncode == 0, out.stderr[-3000:]
  after = json.load(open(wd / "eval" / "report.json"))
  for k in ("accuracy", "state_digest", "confusion_matrix", "step"):
    assert after[k] == before[k]


def test_eval_of_another_fold_is_refused(full_run, data_dir):
  """The issue's silent wrong result: fold 0's checkpoint scored on fold 1."""
  wd, _ = full_run
  before = (wd / "eval" / "report.json").read_text()
  out = run_cli(wd, "--config.train.num_steps=120", "--mode=eval",
                "--config.data.fold=1", data_dir=data_dir)
  assert out.returncode == 2, out.stderr[-3000:]
  assert "fer_jax: error:" in out.stderr
  assert "config.data.fold is 0" in out.stderr and "but 1 here" in out.stderr
  assert "Traceback" not in out.stderr
  assert (wd / "eval" / "report.json").read_text() == before


def test_sigkill_then_rerun_matches_uninterrupted(full_run, data_dir,
                                                  tmp_path):
  wd_full, _ = full_run
  wd = tmp_path / "killed"
  proc = run_cli(wd, "--config.train.num_steps=120",
                 "--config.train.checkpoint_every=30", data_dir=data_dir,
                 wait=False)
  ckpt_dir = wd / "checkpoints"
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    steps = [d for d in (os.listdir(ckpt_dir) if ckpt_dir.exists() else [])
             if re.fullmatch(r"\d+", d)]
    if steps:
      break
    time.sleep(0.02)
  assert proc.poll() is None, "run ended before it could be killed"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  out = run_cli(wd, "--config.train.num_steps=120",
                "--config.train.checkpoint_every=30", data_dir=data_dir)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "resuming from step" in out.stdout + out.stderr
  full = json.load(open(wd_full / "eval" / "report.json"))
  resumed = json.load(open(wd / "eval" / "report.json"))
  assert resumed["state_digest"] == full["state_digest"]
  assert resumed["accuracy"] == full["accuracy"]


@pytest.mark.parametrize("args,message", [
    (["--config.train.no_such_field=1"], "no_such_field"),
    (["--config.data.fold=9"], "config.data.fold"),
    (["--config.data.name=nosuchset"], "config.data.name"),
    (["--config.data.protocol=kfold"], "config.data.protocol"),
])
def test_bad_input_gets_a_clear_error(tmp_path, data_dir, args, message):
  out = run_cli(tmp_path / "wd", *args, data_dir=data_dir)
  assert out.returncode != 0
  assert message in out.stderr
  assert "Traceback" not in out.stderr


def test_second_run_on_a_live_workdir_is_refused(tmp_path, data_dir):
  from test_reliability import hold_lock  # pylint: disable=import-outside-toplevel
  wd = tmp_path / "wd"
  wd.mkdir()
  holder = hold_lock(wd)
  try:
    out = run_cli(wd, data_dir=data_dir)
  finally:
    holder.kill()
    holder.wait()
  assert out.returncode == 2, out.stderr[-3000:]
  assert f"fer_jax: error: the workdir is in use by another run (pid " \
         f"{holder.pid} on host" in out.stderr
  assert "Traceback" not in out.stderr


def test_reproduce_run_retrains_a_run_spec_and_compares_its_state(
    tmp_path, data_dir, monkeypatch, capsys):
  """benchmarks/reproduce_run.py: a run retrained from its run_spec.json
  at the same code ends in the same state (exit 0); a committed digest
  that differs is reported (exit 1)."""
  run = tmp_path / "run"
  args = ["--config=configs/gndl.py", "--compilation_cache=", *TINY,
          "--config.train.num_steps=4"]
  out = run_cli(run, "--config.train.num_steps=4", data_dir=data_dir)
  assert out.returncode == 0, out.stderr[-3000:]
  with open(run / "run_spec.json", "w") as f:
    json.dump({"module": "fer_jax.main", "args": args,
               "git_commit": "abc"}, f)
  monkeypatch.setenv("FER_JAX_DATA_DIR", str(data_dir))
  sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
  import reproduce_run  # pylint: disable=import-outside-toplevel
  assert reproduce_run.main([str(run), f"--keep={tmp_path / 'again'}"]) == 0
  line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert line["reproduced"] and line["trained_at"] == "abc"
  assert (tmp_path / "again" / "run0" / "eval" / "report.json").exists()
  with pytest.raises(SystemExit, match="exists; a retrain needs a fresh"):
    reproduce_run.main([str(run), f"--keep={tmp_path / 'again'}"])
  report = json.load(open(run / "eval" / "report.json"))
  report["state_digest"] = "0" * 16
  with open(run / "eval" / "report.json", "w") as f:
    json.dump(report, f)
  assert reproduce_run.main([str(run)]) == 1
  line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert not line["reproduced"] and line["digest"][0] == "0" * 16
