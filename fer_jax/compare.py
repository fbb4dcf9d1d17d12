r"""Train each method's arms over folds and seeds, then test its claims.

  python -m fer_jax.compare --preset=cpu --workdir=workdirs/compare
  python -m fer_jax.compare --preset=cpu_gan --workdir=workdirs/compare_gan
  python -m fer_jax.compare --preset=gpu --workdir=/runs/compare --parallel=2
  python -m fer_jax.compare --preset=gpu --workdir=/runs/compare_batched \
      --methods=groupgan --batch_folds
  python -m fer_jax.compare --preset=cpu --workdir=workdirs/compare \
      --methods=gndl --folds=0,1 --set=train.num_steps=300 --dry_run

A claim ("GNDL beats its ResNet-18 baseline") compares two arms of a method
(two configs) on the same folds and seeds. Each (method, arm, fold, seed) is
one ``python -m fer_jax.main`` subprocess in
WORKDIR/runs/<method>/<arm>/fold<f>_seed<s> (its output in log.txt there);
with --batch_folds, each (method, arm, seed) is one subprocess training all
its folds as one vmapped program, in WORKDIR/runs/<method>/<arm>/
seed<s>_batched (fold f's run in fold_<f> there).
Differences are paired over the (fold, seed) both arms finished, with a
Student-t 95% interval; a claim holds when the interval's lower end is
above 0.

Rerunning the same command resumes: finished runs (eval/report.json present,
same run_spec.json) are kept, the others are launched (a partly trained one
resumes from its checkpoint). A run directory holding a different spec is
refused (--restart retrains it). Rewritten after every finished run:
WORKDIR/compare.json (every run and claim), compare.md (the tables) and
compare.png (the intervals; redrawn at most every 20 s, and at the end).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import hashlib
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import fer_jax
from fer_jax import files, stats

# ---------------------------------------------------------------- the tables

# Arms per method: arm name -> config spec ("configs/x.py" or
# "configs/x.py:arg", relative to the repository root; an installed package
# finds them among its own, see config_path), or (spec, {dotted
# config field: value}) for an arm that differs by overrides.
ARMS: dict[str, dict[str, Any]] = {
    "gndl": {
        "gndl": "configs/gndl.py",
        "baseline": "configs/gndl.py:baseline",
        "oracle": "configs/gndl.py:oracle",
        # Ablation: the paper's L_neu as printed (mean L1, lambda 5 from
        # step 0) where the default warms up and uses the relative L1.
        "gndl_paper": ("configs/gndl.py", {"gndl.l_neu_reduction": "mean",
                                           "gndl.warmup_fraction": 0.0}),
    },
    "ifgan": {
        "ifgan": "configs/ifgan.py",
        "baseline": "configs/ifgan.py:baseline",
        # Ablation: E sees G's face alone (eq. 4 without I_SE), so its
        # accuracy is the class information G's faces carry.
        "generated_only": ("configs/ifgan.py",
                           {"ifgan.classifier_input": "generated"}),
    },
    # Table 1: the full 2V2 against the BaseNet CNN on weak expressions
    # (ResNet-18, the synthetic default); the other columns and the
    # VGG13-BN row with --arms=all.
    "groupgan": {
        "groupgan": "configs/groupgan.py",
        "cnn": ("configs/groupgan.py", {"groupgan.variant": "cnn"}),
        "dcgan": ("configs/groupgan.py", {"groupgan.variant": "dcgan"}),
        "1v2": ("configs/groupgan.py", {"groupgan.variant": "1v2"}),
        "vgg13_bn_2v2": ("configs/groupgan.py", {"basenet": "vgg13_bn"}),
        "vgg13_bn_cnn": ("configs/groupgan.py", {"basenet": "vgg13_bn",
                                                 "groupgan.variant": "cnn"}),
    },
    # The batch-level mask (BT) against the same four stages without it,
    # from the same initial networks (same seed), on training labels with
    # injected symmetric noise (test labels stay clean): the paper's
    # setting of noisy in-the-wild labels.
    "sna": {
        "sna": ("configs/sna.py", {"data.label_noise": 0.2}),
        "no_mask": ("configs/sna.py", {"data.label_noise": 0.2,
                                       "sna.mask": "none"}),
        # Diagnostic: the mask that drops exactly the flipped labels.
        "oracle_mask": ("configs/sna.py", {"data.label_noise": 0.2,
                                           "sna.mask": "oracle"}),
        "sna_noise40": ("configs/sna.py", {"data.label_noise": 0.4}),
        "no_mask_noise40": ("configs/sna.py", {"data.label_noise": 0.4,
                                               "sna.mask": "none"}),
    },
    # cGAN+WSC (issue 21): one arm; its report holds the re-annotation and
    # both classifiers the `wsc` claim compares (CLAIMS' metrics).
    "cgan_wsc": {"cgan_wsc": "configs/cgan_wsc.py"},
}

# Each claim: `arm` beats `reference` (paired accuracy difference > 0).
# informational=True: reported, but not one of the paper's claims.
CLAIMS: list[dict[str, Any]] = [
    dict(method="gndl", claim="GNDL beats its ResNet-18 baseline",
         arm="gndl", reference="baseline"),
    dict(method="gndl", claim="the oracle beats the ResNet-18 baseline",
         arm="oracle", reference="baseline", informational=True),
    dict(method="gndl",
         claim="GNDL with the paper's L_neu from scratch beats the baseline",
         arm="gndl_paper", reference="baseline", informational=True),
    dict(method="ifgan",
         claim="IF-GAN beats its ResNet + island-loss baseline",
         arm="ifgan", reference="baseline"),
    dict(method="ifgan",
         claim="E on G's generated face alone beats the baseline",
         arm="generated_only", reference="baseline", informational=True),
    dict(method="groupgan",
         claim="GroupGAN (2V2) beats its BaseNet CNN on weak expressions",
         arm="groupgan", reference="cnn"),
    dict(method="groupgan", claim="DCGAN beats the BaseNet CNN",
         arm="dcgan", reference="cnn", informational=True),
    dict(method="groupgan", claim="1V2 beats the BaseNet CNN",
         arm="1v2", reference="cnn", informational=True),
    dict(method="groupgan", claim="2V2 beats the CNN with VGG13-BN",
         arm="vgg13_bn_2v2", reference="vgg13_bn_cnn", informational=True),
    dict(method="sna",
         claim="SNA's batch-level mask beats the same network without it "
         "under 20% label noise", arm="sna", reference="no_mask"),
    dict(method="sna",
         claim="a mask of exactly the flipped labels beats no mask "
         "under 20% label noise", arm="oracle_mask", reference="no_mask",
         informational=True),
    dict(method="sna",
         claim="SNA's batch-level mask beats the same network without it "
         "under 40% label noise", arm="sna_noise40",
         reference="no_mask_noise40"),
    # `wsc` (issue 21), the paper's use of re-annotation: a linear
    # classifier on the cGAN features trained on WSC's re-annotated labels
    # against one trained on the noisy labels (30% flipped) they came from,
    # each predicting held-out subjects' faces scored with the true labels.
    # Both are in every run's report, so the claim pairs two metrics of
    # one run: the same networks, the same split.
    dict(method="cgan_wsc",
         claim="wsc: a classifier on WSC's re-annotated labels beats one on "
         "the noisy labels", arm="cgan_wsc",
         metric="extra.classifier.reannotated.accuracy",
         reference="cgan_wsc",
         reference_metric="extra.classifier.noisy.accuracy"),
    dict(method="cgan_wsc",
         claim="WSC's re-annotated labels are more accurate than the noisy "
         "labels", arm="cgan_wsc", metric="accuracy", reference="cgan_wsc",
         reference_metric="extra.noisy_label_accuracy", informational=True),
]

# folds and seeds every arm runs; methods=None: every method in ARMS.
# arms: {method: (arm, ...)} the preset runs (a method not named, or
# arms=None: every arm of it); --arms chooses others.
# overrides: {method or "*": {dotted config field: value}}, applied to
# every run of that method (before the arm's own overrides).
# method_seeds: {method: seeds} in place of `seeds` for that method.
PRESETS: dict[str, dict[str, Any]] = {
    # The claims and GNDL's oracle on 2 CPU cores; the ablations
    # (gndl_paper, generated_only: 40 run-minutes of IF-GAN's
    # generated_only alone) are there with --arms=all.
    # GNDL runs three training seeds: retraining a fold with only the
    # step's rounding changed moved it by 1.6 points, and GNDL's one-seed
    # fold differences (+5.8 to -5.2) are that size (docs/results/
    # README.md); set before seeds 1 and 2 were run, not after them.
    # IF-GAN (25 run-minutes a run) keeps one seed.
    "cpu": dict(folds=(0, 1, 2, 3), num_folds=4, seeds=(0,),
                method_seeds={"gndl": (0, 1, 2)},
                methods=("gndl", "ifgan"),
                arms={"gndl": ("gndl", "baseline", "oracle"),
                      "ifgan": ("ifgan", "baseline")},
                overrides={}),
    # GroupGAN's and SNA's claims (issue 16), 4 folds: 2V2 against the
    # CNN (ResNet-18), and the mask against none (and the oracle mask, the
    # ceiling of any mask) at 20% label noise; the 40% arms and Table 1's
    # other cells with --arms=all.
    # GroupGAN runs two training seeds (a fold's 2V2 - CNN difference moved
    # by up to 7 points between seeds; the second seed was added after
    # seed 0 alone did not hold, docs/results/README.md); SNA one seed.
    "cpu_gan": dict(folds=(0, 1, 2, 3), num_folds=4, seeds=(0,),
                    method_seeds={"groupgan": (0, 1)},
                    methods=("groupgan", "sna"),
                    arms={"groupgan": ("groupgan", "cnn"),
                          "sna": ("sna", "no_mask", "oracle_mask")},
                    overrides={}),
    # cGAN+WSC's `wsc` claim (issue 21), 4 folds.
    "cpu_wsc": dict(folds=(0, 1, 2, 3), num_folds=4, seeds=(0,),
                    methods=("cgan_wsc",), overrides={}),
    # Every method and arm in ARMS, 10 folds x 2 seeds.
    "gpu": dict(folds=tuple(range(10)), num_folds=10, seeds=(0, 1),
                methods=None, overrides={}),
}
# cpu, cpu_gan and cpu_wsc as one table (same folds, fold count and
# seeds): every claim of the five methods in one compare.json, as
# docs/results holds it; a workdir holding the three presets' finished runs
# launches nothing.
PRESETS["cpu_all"] = dict(
    PRESETS["cpu"],
    methods=(PRESETS["cpu"]["methods"] + PRESETS["cpu_gan"]["methods"]
             + PRESETS["cpu_wsc"]["methods"]),
    method_seeds={**PRESETS["cpu"]["method_seeds"],
                  **PRESETS["cpu_gan"]["method_seeds"]},
    arms={**PRESETS["cpu"]["arms"], **PRESETS["cpu_gan"]["arms"]})

# Set by the compare for every run; an override may not change them.
RESERVED = ("data.fold", "data.num_folds", "seed", "data.all_folds",
            "train.batch_folds", "train.progress_bar")
# One thread per process: N runs at once share the cores instead of each
# starting a thread per core.
SINGLE_THREAD_XLA_FLAGS = ("--xla_cpu_multi_thread_eigen=false "
                           "intra_op_parallelism_threads=1")
REPO = Path(fer_jax.__file__).resolve().parents[1]
LOG_TAIL_LINES = 40
FIGURE_EVERY_S = 20.0  # compare.png's redraws while runs finish
# report.json's fields that are not copied under a run's "extra".
REPORT_FIELDS = {"method", "dataset", "fold", "split", "accuracy",
                 "mean_class_accuracy", "macro_f1", "per_class_accuracy",
                 "per_class_f1", "confusion_matrix", "classes",
                 "num_examples", "step", "state_digest"}


class CompareError(Exception):
  """A compare that cannot start (bad tables, refused run directories)."""


def check_tables(arms=None, claims=None) -> None:
  """Raises CompareError where a claim names an arm that is not defined."""
  arms = ARMS if arms is None else arms
  claims = CLAIMS if claims is None else claims
  for c in claims:
    missing = {"method", "claim", "arm", "reference"} - set(c)
    if missing:
      raise CompareError(f"claim {c} lacks {sorted(missing)}")
    for key in ("metric", "reference_metric"):
      if not re.fullmatch(r"accuracy|extra(\.[A-Za-z0-9_]+)+",
                          c.get(key, "accuracy")):
        raise CompareError(
            f"claim {c['claim']!r}: {key} {c[key]!r} is not 'accuracy' or "
            "a dotted path under 'extra' (a number in the run's report)")
    for key in ("arm", "reference"):
      if c[key] not in arms.get(c["method"], {}):
        raise CompareError(
            f"claim {c['claim']!r}: {key} {c[key]!r} is not an arm of "
            f"{c['method']!r} (arms: {sorted(arms.get(c['method'], {}))})")
  for method, method_arms in arms.items():
    for arm, spec in method_arms.items():
      for name in (method, arm):  # directory names under runs/
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name in (".", ".."):
          raise CompareError(f"{name!r} (in {method}/{arm}): method and arm "
                             "names may hold letters, digits, _ . - only")
      try:
        config, overrides = split_arm(spec)
      except (TypeError, ValueError):
        config, overrides = None, None
      if not isinstance(config, str) or not isinstance(overrides, dict):
        raise CompareError(f"arm {method}/{arm}: {spec!r} is not a config "
                           "spec string or (spec, overrides dict)")
      _check_reserved(overrides, f"arm {method}/{arm}")


def split_arm(spec) -> tuple[str, dict[str, Any]]:
  if isinstance(spec, str):
    return spec, {}
  config, overrides = spec
  return config, dict(overrides)


def _check_reserved(overrides: Mapping[str, Any], where: str) -> None:
  bad = sorted(set(overrides) & set(RESERVED))
  if bad:
    raise CompareError(f"{where} overrides {bad}: the compare sets "
                       f"{', '.join(RESERVED)} itself (folds and seeds come "
                       "from the preset, --folds and --seeds)")


# ---------------------------------------------------------------- one run

def format_value(value: Any) -> str:
  """A config value as config_flags parses it on the command line."""
  if isinstance(value, bool):
    return str(value)
  if isinstance(value, (list, tuple)):
    return repr(tuple(value))
  return str(value)


@dataclasses.dataclass(frozen=True)
class Run:
  """One training: an arm of a method on one fold with one seed.

  ``batched``: trained with the other folds of its (method, arm, seed) in
  one ``fer_jax.main`` process, as one vmapped program
  (``config.train.batch_folds``, ``fer_jax.batched_folds``); its directory
  is then that process's ``fold_<k>/``, which holds what a separate run's
  holds (the same config.json: ``config_lib.with_fold``).
  """
  method: str
  arm: str
  fold: int
  seed: int
  num_folds: int
  config: str  # "configs/gndl.py:baseline", relative to the repository
  overrides: tuple[tuple[str, Any], ...] = ()
  batched: bool = False

  @property
  def name(self) -> str:
    return f"{self.method}/{self.arm} fold {self.fold} seed {self.seed}"

  @property
  def group_dir(self) -> str:
    """The workdir of the process that trains the run: its own, or for a
    batched run its folds' common one."""
    if self.batched:
      return f"runs/{self.method}/{self.arm}/seed{self.seed}_batched"
    return self.rel_dir

  @property
  def rel_dir(self) -> str:
    if self.batched:
      return f"{self.group_dir}/fold_{self.fold}"
    return f"runs/{self.method}/{self.arm}/fold{self.fold}_seed{self.seed}"

  def args(self) -> list[str]:
    """fer_jax.main's arguments but --workdir, with the config path as given
    (relative to the repository): what the spec hash covers, so moving the
    repository or the compare's workdir does not change it. A batched run's
    are its process's (every fold; the fold is its directory)."""
    folds = (["--config.data.all_folds=True", "--config.train.batch_folds=True"]
             if self.batched else [f"--config.data.fold={self.fold}"])
    return ([f"--config={self.config}"] + folds
            + [f"--config.data.num_folds={self.num_folds}",
               f"--config.seed={self.seed}",
               "--config.train.progress_bar=False"]
            + [f"--config.{k}={format_value(v)}" for k, v in self.overrides])

  def fold_args(self) -> list[str]:
    """The arguments of the run's fold alone: what its config.json holds
    (for a batched run, the separate run of that fold)."""
    return dataclasses.replace(self, batched=False).args()

  def spec(self) -> dict[str, Any]:
    args = self.args()
    return {"module": "fer_jax.main", "args": args,
            "spec_hash": spec_hash(args)}

  def argv(self, run_dir: str) -> list[str]:
    """The exact command: absolute config path and workdir."""
    return [sys.executable, "-m", "fer_jax.main",
            f"--config={config_path(self.config)}",
            f"--workdir={run_dir}"] + self.args()[1:]


def process_dir(run: Run, run_dir: str) -> str:
  """The workdir of the process that trains ``run`` (in ``run_dir``): a
  batched run's is its folds' common one (running.json, launches.jsonl)."""
  return os.path.dirname(run_dir) if run.batched else run_dir


def config_path(spec: str) -> str:
  """An arm's config spec ("configs/x.py[:arg]") with an absolute path: the
  repository's file in a source checkout, the packaged one
  (fer_jax/configs/x.py) in an installed package."""
  from fer_jax import config_lib  # pylint: disable=import-outside-toplevel
  return config_lib.config_file(spec, root=str(REPO))


def resolved_config(run: Run) -> dict[str, Any]:
  """The config ``fer_jax.main`` would build from the run's arguments, as
  the JSON it saves in the workdir (config files resolved from the
  repository this compare runs)."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel
  argv = (["compare", f"--config={config_path(run.config)}"]
          + run.fold_args()[1:])
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "the run's config",
                                  flag_values=values, lock_config=True,
                                  sys_argv=argv)
  values(argv)
  return json.loads(values.config.to_json_best_effort())


def config_drift(run: Run, run_dir: str) -> list[str]:
  """'field: trained -> now' for each field whose value in the run's saved
  config.json differs from what its arm resolves to today, so a config
  file edited after a run was trained never passes that run off as the new
  arm's. Fields added to the configs since (absent from the saved file)
  are not drift: a new field's default keeps the old behaviour."""
  try:
    with open(os.path.join(run_dir, "config.json")) as f:
      saved = json.load(f)
  except (OSError, ValueError):
    return []  # not trained yet (or torn): fer_jax.main rewrites it
  changed = []

  def walk(now, then, prefix):
    if isinstance(now, dict) and isinstance(then, dict):
      for k in sorted(set(now) & set(then)):
        walk(now[k], then[k], f"{prefix}{k}.")
    elif now != then:
      changed.append(f"{prefix[:-1]}: {then!r} -> {now!r}")

  walk(resolved_config(run), saved, "")
  return changed


def spec_hash(args: Sequence[str]) -> str:
  text = json.dumps({"module": "fer_jax.main", "args": list(args)})
  return hashlib.sha256(text.encode()).hexdigest()


@dataclasses.dataclass
class Job:
  """What a launcher gets: the run, its directory, command and environment;
  ``runs``: every run the process trains (a batched run's folds, whose
  directories are under ``run_dir``), ``(run,)`` by default."""
  run: Run
  run_dir: str
  argv: list[str]
  env: dict[str, str]
  log_path: str
  runs: tuple[Run, ...] = ()

  def __post_init__(self):
    self.runs = tuple(self.runs) or (self.run,)


Launcher = Callable[[Job], int]  # returns the exit status

_LIVE: set[subprocess.Popen] = set()
_LIVE_LOCK = threading.Lock()


def subprocess_launcher(job: Job) -> int:
  """Runs job.argv from the repository root, output appended to job.log_path.

  running.json in the run directory holds the child's pid while it runs, so
  a compare restarted after its parent was killed will not start a second
  training on the same workdir.
  """
  stamp = datetime.datetime.now().isoformat(timespec="seconds")
  with open(job.log_path, "ab") as log:
    log.write(f"=== fer_jax.compare {stamp}: {shlex.join(job.argv)}\n"
              .encode())
    log.flush()
    proc = subprocess.Popen(job.argv, cwd=REPO, env=job.env, stdout=log,
                            stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
  running = os.path.join(job.run_dir, "running.json")
  with _LIVE_LOCK:
    _LIVE.add(proc)
  try:
    _write_json(running, {"pid": proc.pid, "started": stamp})
    return proc.wait()
  finally:
    with _LIVE_LOCK:
      _LIVE.discard(proc)
    if os.path.exists(running):
      os.remove(running)


def _stop_live_runs() -> None:
  """Terminates the runs still training (the compare is being stopped)."""
  with _LIVE_LOCK:
    procs = list(_LIVE)
  for p in procs:
    if p.poll() is None:
      p.terminate()
  for p in procs:
    try:
      p.wait(timeout=30)
    except subprocess.TimeoutExpired:
      p.kill()


def _alive_pid(run_dir: str) -> int | None:
  """The pid in run_dir/running.json if that process still trains run_dir."""
  try:
    with open(os.path.join(run_dir, "running.json")) as f:
      pid = int(json.load(f)["pid"])
    os.kill(pid, 0)
  except (OSError, ValueError, KeyError, TypeError):
    return None
  cmdline = Path(f"/proc/{pid}/cmdline")
  if cmdline.exists():  # a reused pid is not our run
    text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
    if "fer_jax.main" not in text or run_dir not in text:
      return None
  return pid


# ---------------------------------------------------------------- run state

def read_report(run_dir: str) -> dict[str, Any] | None:
  """The run's final eval/report.json, or None where it is absent or cut
  short (a run killed while writing it resumes and writes it again)."""
  try:
    with open(os.path.join(run_dir, "eval", "report.json")) as f:
      report = json.load(f)
  except (OSError, ValueError):
    return None
  return report if isinstance(report, dict) and "accuracy" in report else None


@dataclasses.dataclass
class State:
  status: str  # new | resume | done | mismatch | running
  detail: str = ""


def run_state(run: Run, run_dir: str) -> State:
  spec_path = os.path.join(run_dir, "run_spec.json")
  if not os.path.isdir(run_dir) or not os.listdir(run_dir):
    return State("new")
  if not os.path.exists(spec_path):
    return State("mismatch", "it holds files but no run_spec.json (not "
                 "started by this compare)")
  try:
    with open(spec_path) as f:
      recorded = json.load(f)
    recorded_args = list(recorded["args"])
  except (OSError, ValueError, KeyError, TypeError) as e:
    return State("mismatch", f"its run_spec.json is unreadable ({e})")
  planned = run.args()
  if spec_hash(recorded_args) != spec_hash(planned):
    only_old = [a for a in recorded_args if a not in planned]
    only_new = [a for a in planned if a not in recorded_args]
    return State("mismatch", f"it was trained with {only_old or '(none)'} "
                 f"where this compare asks for {only_new or '(none)'}")
  pid = _alive_pid(process_dir(run, run_dir))
  if pid is not None:
    return State("running", f"pid {pid} is still training it")
  changed = config_drift(run, run_dir)
  if changed:
    return State("mismatch", "its config.json differs from what the arm's "
                 "config resolves to now (a config file changed since it "
                 f"was trained): {'; '.join(changed)}")
  if read_report(run_dir) is not None:
    return State("done")
  ckpt = os.path.join(run_dir, "checkpoints")
  steps = [int(d) for d in (os.listdir(ckpt) if os.path.isdir(ckpt) else ())
           if d.isdigit()]
  return State("resume", f"resumes from step {max(steps)}" if steps else "")


# ---------------------------------------------------------------- the plan

def select_arms(preset: Mapping[str, Any], methods: Sequence[str],
                chosen: Sequence[str] | None = None, arms=None
                ) -> dict[str, tuple[str, ...]]:
  """{method: arms to run}: ``chosen`` ("method/arm" items, or "all" for
  every arm) where given, else the preset's ``arms`` (every arm of a method
  it does not name). Raises CompareError naming an unknown arm."""
  arms = ARMS if arms is None else arms
  if chosen is None:
    default = preset.get("arms") or {}
    return {m: tuple(default.get(m, arms[m])) for m in methods}
  if "all" in chosen:
    return {m: tuple(arms[m]) for m in methods}
  picked: dict[str, list[str]] = {m: [] for m in methods}
  for item in chosen:
    method, sep, arm = item.partition("/")
    if not sep or method not in picked or arm not in arms[method]:
      raise CompareError(
          f"--arms={item!r}: expected 'all' or method/arm with method one "
          f"of {', '.join(methods)}; arms: " + "; ".join(
              f"{m}: {', '.join(arms[m])}" for m in methods))
    if arm not in picked[method]:
      picked[method].append(arm)
  return {m: tuple(a) for m, a in picked.items() if a}


def plan_runs(preset: Mapping[str, Any], methods: Sequence[str],
              arms=None, folds=None, seeds=None,
              sets: Mapping[str, Any] | None = None,
              selected: Mapping[str, Sequence[str]] | None = None,
              batch_folds: bool = False) -> list[Run]:
  """Every run, fold-major: a compare stopped early holds complete pairs.
  ``selected``: {method: arms} to run (default: every arm in ``arms``);
  ``batch_folds``: each (method, arm, seed)'s folds in one process, which
  trains all ``num_folds`` of them."""
  arms = ARMS if arms is None else arms
  folds = tuple(preset["folds"] if folds is None else folds)
  # A preset's method_seeds give a method its own seeds; --seeds sets them
  # for every method.
  seeds_of = {m: tuple(preset.get("method_seeds", {}).get(m, preset["seeds"])
                       if seeds is None else seeds) for m in methods}
  seeds = sorted({s for m in methods for s in seeds_of[m]})
  num_folds = int(preset["num_folds"])
  bad = [f for f in folds if not 0 <= f < num_folds]
  if bad:
    raise CompareError(f"folds {bad} are outside 0..{num_folds - 1} "
                       f"(num_folds={num_folds})")
  if batch_folds and sorted(set(folds)) != list(range(num_folds)):
    raise CompareError(
        f"--batch_folds trains every fold of a method's arm in one program, "
        f"all {num_folds} (num_folds), and these folds are "
        f"{', '.join(map(str, folds))}: drop --folds, or drop --batch_folds")
  sets = dict(sets or {})
  _check_reserved(sets, "--set")
  preset_overrides = preset.get("overrides", {})
  for where, o in preset_overrides.items():
    _check_reserved(o, f"preset overrides for {where!r}")
  runs = []
  for seed in seeds:
    for fold in folds:
      for method in methods:
        if seed not in seeds_of[method]:
          continue
        for arm, spec in arms[method].items():
          if selected is not None and arm not in selected.get(method, ()):
            continue
          config, arm_overrides = split_arm(spec)
          merged = {**preset_overrides.get("*", {}),
                    **preset_overrides.get(method, {}), **arm_overrides,
                    **sets}
          runs.append(Run(method, arm, int(fold), int(seed), num_folds,
                          config, tuple(sorted(merged.items())),
                          batched=batch_folds))
  return runs


def run_env(parallel: int, xla_flags: str) -> dict[str, str]:
  """The runs' environment: with parallel > 1, XLA limited to one thread
  (--xla_flags=auto) and no GPU memory preallocation (the runs share it)."""
  env = dict(os.environ)
  if xla_flags == "auto":
    xla_flags = SINGLE_THREAD_XLA_FLAGS if parallel > 1 else ""
  if xla_flags:
    env["XLA_FLAGS"] = " ".join(
        f for f in (env.get("XLA_FLAGS", ""), xla_flags) if f)
  if parallel > 1:
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  return env


# ---------------------------------------------------------------- collecting

def _finite(x):
  """JSON has no inf or nan: they are written as null."""
  if isinstance(x, float) and not math.isfinite(x):
    return None
  if isinstance(x, dict):
    return {k: _finite(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_finite(v) for v in x]
  return x


def _extra(x, top: bool = True):
  """What a run entry copies of a report field beyond the standard ones: a
  number; of a block (a dict, nested), its numbers, strings and bools,
  e.g. label_noise's rate and kind. Lists (curves, matrices) are left out."""
  if isinstance(x, (int, float)) and not isinstance(x, bool):
    return x
  if isinstance(x, dict):
    kept = {k: v for k, v in ((k, _extra(v, False)) for k, v in x.items())
            if v is not None}
    return kept or None
  if not top and isinstance(x, (str, bool)):
    return x
  return None


def mean_class_accuracy(report: Mapping[str, Any]) -> float | None:
  """Mean of report["per_class_accuracy"] over the classes the test fold
  has (a class without test examples is null there)."""
  per_class = [v for v in (report.get("per_class_accuracy") or {}).values()
               if v is not None]
  return float(sum(per_class) / len(per_class)) if per_class else None


def wall_time(run_dir: str) -> float | None:
  """Seconds over every launch of the run (launches.jsonl)."""
  path = os.path.join(run_dir, "launches.jsonl")
  if not os.path.exists(path):
    return None
  total = 0.0
  with open(path) as f:
    for line in f:
      try:
        total += float(json.loads(line)["wall_s"])
      except (ValueError, KeyError, TypeError):
        continue
  return total


def _spec_commit(run_dir: str) -> str | None:
  try:
    with open(os.path.join(run_dir, "run_spec.json")) as f:
      return json.load(f).get("git_commit")
  except (OSError, ValueError, AttributeError):
    return None


def _sha256_file(path: str) -> str | None:
  if not os.path.exists(path):
    return None
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


def run_entry(run: Run, run_dir: str, workdir: str) -> dict[str, Any]:
  """A finished run's row of compare.json, from its report and config."""
  report = read_report(run_dir)
  entry = {
      "method": run.method, "arm": run.arm, "fold": run.fold,
      "seed": run.seed, "accuracy": report["accuracy"],
      "mean_class_accuracy": mean_class_accuracy(report),
      "macro_f1": report.get("macro_f1"),  # null in reports written before it
      "num_examples": report.get("num_examples"), "step": report.get("step"),
      # A batched run's is its process's, which trained all its folds.
      "wall_time_s": wall_time(process_dir(run, run_dir)),
      "config_hash": _sha256_file(os.path.join(run_dir, "config.json")),
      "workdir": os.path.relpath(run_dir, workdir),
      # The code its last launch ran (a resumed run may span commits).
      "git_commit": _spec_commit(run_dir),
  }
  extra = {k: n for k, n in ((k, _extra(v)) for k, v in report.items()
                             if k not in REPORT_FIELDS) if n is not None}
  if extra:
    entry["extra"] = extra
  if run.batched:
    entry["batched_folds"] = run.num_folds
  return entry


def metric_value(run: Mapping[str, Any], metric: str) -> float | None:
  """A run entry's number at ``metric``: 'accuracy' or a dotted path into
  its report's extra fields (None where the report lacks it)."""
  value: Any = run
  for key in metric.split("."):
    if not isinstance(value, Mapping) or key not in value:
      return None
    value = value[key]
  return None if isinstance(value, bool) else float(value)


def claim_entry(claim: Mapping[str, Any], runs: Sequence[Mapping[str, Any]]
                ) -> dict[str, Any]:
  """A claim's paired statistics over the (fold, seed) both arms finished,
  in accuracy percent (differences in percentage points).

  The fold is the unit: a fold's seeds share its test faces, so their
  differences are averaged into one per fold and the t interval is over
  folds (df = folds - 1); with one seed it is the plain paired interval.
  A claim's metric and reference_metric (default 'accuracy') may name
  other numbers of the runs' reports, even two of one arm's.
  """
  def by_pair(arm, metric):
    values = {(r["fold"], r["seed"]): metric_value(r, metric) for r in runs
              if r["method"] == claim["method"] and r["arm"] == arm}
    return {p: 100.0 * v for p, v in values.items() if v is not None}
  metric = claim.get("metric", "accuracy")
  reference_metric = claim.get("reference_metric", "accuracy")
  a = by_pair(claim["arm"], metric)
  b = by_pair(claim["reference"], reference_metric)
  pairs = sorted(set(a) & set(b))
  xa, xb = [a[p] for p in pairs], [b[p] for p in pairs]
  folds = [f for f, _ in pairs]
  n, diff, (lo, hi) = stats.paired_difference(xa, xb, groups=folds)
  _, fold_diffs = stats.group_means([x - y for x, y in zip(xa, xb)], folds)
  mean = lambda x: float(sum(x) / len(x)) if x else math.nan  # noqa: E731
  return {
      "method": claim["method"], "claim": claim["claim"],
      "arm": claim["arm"], "reference": claim["reference"],
      "metric": metric, "reference_metric": reference_metric,
      "informational": bool(claim.get("informational", False)),
      "num_pairs": len(pairs), "pairs": [list(p) for p in pairs],
      "num_folds": n, "fold_diffs": fold_diffs,
      "mean_diff": diff, "ci95": [lo, hi], "holds": bool(n and lo > 0),
      "arm_mean": mean(xa), "arm_std": stats.std(xa),
      "reference_mean": mean(xb), "reference_std": stats.std(xb),
  }


def arm_summary(runs: Sequence[Mapping[str, Any]], method: str, arm: str
                ) -> dict[str, Any]:
  """An arm's accuracy (percent) over its finished runs, t interval too."""
  mine = [r for r in runs if r["method"] == method and r["arm"] == arm]
  acc = [100.0 * r["accuracy"] for r in mine]
  mca = [100.0 * r["mean_class_accuracy"] for r in mine
         if r["mean_class_accuracy"] is not None]
  n, mean, (lo, hi) = stats.mean_interval(acc)
  return {"method": method, "arm": arm, "num_runs": n,
          "folds": sorted({r["fold"] for r in mine}),
          "seeds": sorted({r["seed"] for r in mine}),
          "accuracy_mean": mean, "accuracy_std": stats.std(acc),
          "accuracy_ci95": [lo, hi],
          "mean_class_accuracy_mean": (sum(mca) / len(mca) if mca
                                       else math.nan),
          "mean_class_accuracy_std": stats.std(mca)}


def git_commit(repo: Path = REPO) -> str | None:
  """HEAD, with "+dirty" where tracked files differ from it."""
  try:
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"],
                          capture_output=True, text=True, check=True,
                          timeout=30).stdout.strip()
    # --no-optional-locks: no index refresh, so no index.lock to collide
    # with git commands someone runs in the repository meanwhile.
    dirty = subprocess.run(
        ["git", "--no-optional-locks", "-C", str(repo), "status",
         "--porcelain", "--untracked-files=no"], capture_output=True,
        text=True, check=True, timeout=30).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return None
  return head + ("+dirty" if dirty else "")


def git_diff_hash(repo: Path = REPO) -> str | None:
  """sha256 of `git diff HEAD` (tracked changes), None when clean: tells
  apart two runs of the same "+dirty" commit that ran different code."""
  try:
    diff = subprocess.run(["git", "-C", str(repo), "diff", "HEAD"],
                          capture_output=True, check=True,
                          timeout=60).stdout
  except (OSError, subprocess.SubprocessError):
    return None
  return hashlib.sha256(diff).hexdigest() if diff else None


_PROVENANCE: list = [-math.inf, None]
_PROVENANCE_LOCK = threading.Lock()


def _provenance() -> tuple[str | None, str | None]:
  """(git_commit(), git_diff_hash()), asked of git at most once a minute."""
  with _PROVENANCE_LOCK:
    if time.time() - _PROVENANCE[0] > 60.0:
      _PROVENANCE[:] = [time.time(), (git_commit(), git_diff_hash())]
    return _PROVENANCE[1]


# ---------------------------------------------------------------- outputs

def _fmt(x: float | None, digits: int = 1) -> str:
  return "–" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _pm(mean, sd) -> str:
  if mean is None or not math.isfinite(mean):
    return "–"
  return _fmt(mean) + ("" if sd is None or not math.isfinite(sd)
                       else f" ± {_fmt(sd)}")


def _interval(lo, hi) -> str:
  if lo is None or not (math.isfinite(lo) and math.isfinite(hi)):
    return "–" if lo is None or math.isnan(lo) else "(−∞, ∞)"
  return f"[{_fmt(lo, 2)}, {_fmt(hi, 2)}]"


def _side(claim: Mapping[str, Any], arm: str, metric: str,
          short: bool = False) -> str:
  """A claim side's name: the arm, and the metric where it is not the
  run's accuracy ('cgan_wsc: classifier.noisy.accuracy'; ``short``, for
  the figure: 'classifier.noisy')."""
  m = claim.get(metric, "accuracy")
  if m == "accuracy":
    return claim[arm]
  m = m.removeprefix("extra.")
  if short:
    return m.removesuffix(".accuracy")
  return f"{claim[arm]}: {m}"


def markdown(result: Mapping[str, Any]) -> str:
  """compare.md: the claims, then each arm; every number from the runs."""
  lines = [f"# Method comparison (preset {result['preset']})", "",
           "Accuracy in percent, mean ± standard deviation over runs. "
           "Differences are arm minus reference in percentage points, paired "
           "over the (fold, seed) both arms finished and averaged over a "
           "fold's seeds (they share its test faces); the interval is "
           "Student's t at 95% over folds; a claim holds when its lower end "
           "is above 0.",
           "",
           "| method | claim | arm | reference | folds (pairs) | mean diff "
           "| 95% CI "
           "| holds |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
  for c in result["claims"]:
    holds = "yes" if c["holds"] else "no"
    if c["informational"]:
      holds += " (informational)"
    lines.append(
        f"| {c['method']} | {c['claim']} "
        f"| {_side(c, 'arm', 'metric')} {_pm(c['arm_mean'], c['arm_std'])} "
        f"| {_side(c, 'reference', 'reference_metric')} "
        f"{_pm(c['reference_mean'], c['reference_std'])} "
        f"| {c['num_folds']} ({c['num_pairs']}) "
        f"| {_fmt(c['mean_diff'], 2)} "
        f"| {_interval(*c['ci95'])} | {holds} |")
  lines += ["", "| method | arm | folds × seeds | accuracy | mean class "
            "accuracy |", "| --- | --- | --- | --- | --- |"]
  planned = result["planned"]
  for a in result["arms"]:
    shape = f"{len(a['folds'])} × {len(a['seeds'])}"
    total = planned.get(f"{a['method']}/{a['arm']}", 0)
    if a["num_runs"] != total:
      shape += f" ({a['num_runs']} of {total} runs)"
    lines.append(
        f"| {a['method']} | {a['arm']} | {shape} "
        f"| {_pm(a['accuracy_mean'], a['accuracy_std'])} "
        f"| {_pm(a['mean_class_accuracy_mean'], a['mean_class_accuracy_std'])}"
        " |")
  done, total = len(result["runs"]), sum(planned.values())
  status = f"{done} of {total} runs finished"
  if result["failures"]:
    status += f", {len(result['failures'])} failed (see compare.json)"
  command = (shlex.join(result["command"]) if result["command"]
             else "(fer_jax.compare.compare from Python)")
  lines += ["", f"{status}. Produced by `{command}` at commit "
            f"`{result['git_commit']}`.", ""]
  return "\n".join(lines)


def plot(result: Mapping[str, Any], path: str) -> None:
  """compare.png: per method, each arm's mean accuracy with its 95% t
  interval (top), and each claim's paired difference interval (bottom)."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  methods = list(dict.fromkeys(a["method"] for a in result["arms"]))
  if not methods:
    methods = ["(none)"]
  fig, axes = plt.subplots(2, len(methods), squeeze=False,
                           figsize=(4.8 * len(methods), 6.4))

  def bars(ax, labels, means, intervals, colours):
    ys = list(range(len(labels)))[::-1]
    for y, m, (lo, hi), colour in zip(ys, means, intervals, colours):
      if m is None or not math.isfinite(m):
        continue
      if lo is not None and math.isfinite(lo) and math.isfinite(hi):
        ax.errorbar([m], [y], xerr=[[m - lo], [hi - m]], fmt="o",
                    color=colour, capsize=4)
      else:  # one run: no interval
        ax.plot([m], [y], "o", mfc="none", color=colour)
    ax.set_yticks(ys, labels)
    ax.set_ylim(-0.7, len(labels) - 0.3)

  for col, method in enumerate(methods):
    top, bottom = axes[0, col], axes[1, col]
    arms = [a for a in result["arms"] if a["method"] == method]
    bars(top, [f"{a['arm']} (n={a['num_runs']})" for a in arms],
         [a["accuracy_mean"] for a in arms],
         [a["accuracy_ci95"] for a in arms], ["tab:blue"] * len(arms))
    top.set_title(method)
    top.set_xlabel("test accuracy (%), mean and 95% t interval")
    claims = [c for c in result["claims"] if c["method"] == method]
    bars(bottom, [f"{_side(c, 'arm', 'metric', True)}\n− "
                  f"{_side(c, 'reference', 'reference_metric', True)} "
                  f"(folds={c['num_folds']})"
                  + ("\ninformational" if c["informational"] else "")
                  for c in claims],
         [c["mean_diff"] for c in claims], [c["ci95"] for c in claims],
         ["tab:green" if c["holds"] else "tab:red" for c in claims])
    bottom.axvline(0.0, color="grey", lw=1, ls="--")
    bottom.set_xlabel("paired difference (points), 95% t")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _write_json(path: str, obj: Any) -> None:
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(_finite(obj), f, indent=2, allow_nan=False)
  os.replace(tmp, path)


def collect(runs: Sequence[Run], workdir: str, *, preset: str, claims,
            failures: Mapping[Run, Mapping[str, Any]], command, commit
            ) -> dict[str, Any]:
  """compare.json's content from what the run directories hold now."""
  done, pending = [], []
  for run in runs:
    run_dir = os.path.join(workdir, run.rel_dir)
    if run in failures:
      continue
    if run_state(run, run_dir).status == "done":
      done.append(run_entry(run, run_dir, workdir))
    else:
      pending.append({"method": run.method, "arm": run.arm,
                      "fold": run.fold, "seed": run.seed,
                      "workdir": run.rel_dir})
  arm_names = list(dict.fromkeys((r.method, r.arm) for r in runs))
  planned: dict[str, int] = {}
  for r in runs:
    planned[f"{r.method}/{r.arm}"] = planned.get(f"{r.method}/{r.arm}", 0) + 1
  return {
      "preset": preset, "git_commit": commit, "command": command,
      "units": "runs: accuracy as a fraction, as in report.json; claims and "
               "arms: percent, differences in percentage points",
      "runs": done,
      # A claim whose two arms this compare plans (an arm left out by the
      # preset or --arms has no row, rather than an empty one).
      "claims": [claim_entry(c, done) for c in claims
                 if (c["method"], c["arm"]) in arm_names
                 and (c["method"], c["reference"]) in arm_names],
      "arms": [arm_summary(done, m, a) for m, a in arm_names],
      "failures": [dict(f) for f in failures.values()],
      "pending": pending, "planned": planned,
  }


def write_outputs(result: Mapping[str, Any], workdir: str,
                  figure: bool = True) -> None:
  _write_json(os.path.join(workdir, "compare.json"), result)
  md = os.path.join(workdir, "compare.md")
  with open(md + ".tmp", "w") as f:
    f.write(markdown(result))
  os.replace(md + ".tmp", md)
  if not figure:
    return
  try:
    plot(result, os.path.join(workdir, "compare.png"))
  except Exception as e:  # pylint: disable=broad-except
    # A figure is no reason to lose hours of runs.
    print(f"compare: warning: compare.png not written: {e}", file=sys.stderr)


def log_tail(path: str, lines: int = LOG_TAIL_LINES) -> str:
  if not os.path.exists(path):
    return ""
  with open(path, "rb") as f:
    f.seek(0, os.SEEK_END)
    f.seek(max(0, f.tell() - 200 * lines))
    text = f.read().decode(errors="replace")
  return "\n".join(text.splitlines()[-lines:])


# ---------------------------------------------------------------- data

def prebuild_data(runs: Sequence[Run]) -> None:
  """Builds each synthetic face set the runs read, once, before parallel
  runs start (two runs building the same set at once would race). A config
  that does not parse is left to its run to report."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel
  from fer_jax.data import frames  # pylint: disable=import-outside-toplevel
  seen = set()
  for run in runs:
    argv = run.argv("/unused")
    argv = ["compare", argv[3]] + [a for a in argv[5:]
                                   if a.startswith("--config.")]
    fv = flags.FlagValues()
    # sys_argv: the overrides are found there, not in what fv parses.
    config_flags.DEFINE_config_file("config", None, "", flag_values=fv,
                                    sys_argv=argv)
    try:
      fv(argv)
      data = fv.config.data
    except Exception:  # pylint: disable=broad-except
      continue
    if "fer_synth" not in data.name.split("+"):
      continue
    data = data.copy_and_resolve_references()
    data.name = "fer_synth"
    key = (frames.data_dir_of(data), json.dumps(dict(data.synth),
                                                sort_keys=True))
    if key in seen:
      continue
    seen.add(key)
    try:
      frames.get_builder(data)
    except Exception as e:  # pylint: disable=broad-except
      print(f"compare: warning: building the synthetic set for {run.name} "
            f"failed ({e}); its runs will build it", file=sys.stderr)


# ---------------------------------------------------------------- compare

def make_jobs(runs: Sequence[Run], workdir: str, env: Mapping[str, str]
              ) -> list[Job]:
  """One process per run, or per batched group (its folds, in fold order),
  in the runs' order."""
  groups: dict[str, list[Run]] = {}
  for r in runs:
    groups.setdefault(r.group_dir, []).append(r)
  jobs = []
  for rel, members in groups.items():
    members.sort(key=lambda r: r.fold)
    run_dir = os.path.join(workdir, rel)
    jobs.append(Job(members[0], run_dir, members[0].argv(run_dir), dict(env),
                    os.path.join(run_dir, "log.txt"), tuple(members)))
  return jobs


def _execute(job: Job, launcher: Launcher, out=print) -> dict[str, Any]:
  """Writes the spec, launches, records the launch; never raises Exception
  (a failure is returned), only BaseException (the compare is stopping)."""
  what = (job.run.name if len(job.runs) == 1 else
          f"{job.run.method}/{job.run.arm} folds "
          f"{','.join(str(r.fold) for r in job.runs)} seed {job.run.seed}, "
          "batched")
  out(f"compare: start {what} (log: {job.log_path})")
  t0 = time.time()

  def record(rc, error):
    wall = time.time() - t0
    try:
      with open(os.path.join(job.run_dir, "launches.jsonl"), "a") as f:
        f.write(json.dumps({"started": t0, "wall_s": wall, "returncode": rc,
                            "error": error}) + "\n")
    except OSError:
      pass
    return {"returncode": rc, "error": error, "wall_s": wall}

  try:
    os.makedirs(job.run_dir, exist_ok=True)
    spec = job.run.spec()
    # Provenance of this launch, outside the hash (a resume may follow a
    # code change: the spec is the command, not the code).
    commit, diff = _provenance()
    spec.update(argv=job.argv, git_commit=commit, git_diff_sha256=diff,
                written=datetime.datetime.now().isoformat(timespec="seconds"))
    _write_json(os.path.join(job.run_dir, "run_spec.json"), spec)
    # A batched process's folds: each directory names the process's spec
    # (run_state reads it there).
    for run in job.runs:
      if run.batched:
        fold_dir = os.path.join(job.run_dir, f"fold_{run.fold}")
        os.makedirs(fold_dir, exist_ok=True)
        _write_json(os.path.join(fold_dir, "run_spec.json"), spec)
    rc = launcher(job)
  except Exception as e:  # pylint: disable=broad-except
    return record(None, f"{type(e).__name__}: {e}")
  except BaseException:
    # Stopped (Ctrl-C, SIGTERM): the time trained so far still counts.
    record(None, "interrupted")
    raise
  return record(rc, None)


def compare(preset: str, workdir: str, *, methods: Sequence[str] | None = None,
            folds: Sequence[int] | None = None,
            seeds: Sequence[int] | None = None,
            sets: Mapping[str, Any] | None = None, parallel: int = 1,
            dry_run: bool = False, restart: bool = False,
            xla_flags: str = "auto", launcher: Launcher | None = None,
            command: Sequence[str] | None = None, arms=None, claims=None,
            presets=None, chosen_arms: Sequence[str] | None = None,
            batch_folds: bool | None = None, out=print) -> int:
  """Runs what is missing and writes the outputs; returns the exit status
  (0 all runs finished, 1 some failed, 2 refused to start). ``batch_folds``
  (default: the preset's, else False): each arm's folds of one seed in one
  process, one vmapped program (``fer_jax.batched_folds``)."""
  arms = ARMS if arms is None else arms
  claims = CLAIMS if claims is None else claims
  presets = PRESETS if presets is None else presets

  def err(msg):
    print(f"compare: error: {msg}", file=sys.stderr)

  try:
    if files.is_remote(workdir):
      raise CompareError(
          f"--workdir={workdir} is remote: compare launches its runs as "
          "local processes and follows them through local files (pids, "
          "logs, run specs), so it needs a local --workdir; copy the "
          "results up afterwards (gsutil -m cp -r WORKDIR gs://...), or "
          "train single runs on gs:// with python -m fer_jax.main")
    check_tables(arms, claims)
    if preset not in presets:
      raise CompareError(f"no preset {preset!r}; presets: "
                         f"{', '.join(presets)}")
    chosen = presets[preset]
    methods = list(methods or chosen.get("methods") or arms)
    unknown = [m for m in methods if m not in arms]
    if unknown:
      raise CompareError(f"methods {unknown} have no arms; methods: "
                         f"{', '.join(arms)}")
    if parallel < 1:
      raise CompareError(f"--parallel={parallel} must be >= 1")
    selected = select_arms(chosen, methods, chosen_arms, arms)
    if batch_folds is None:
      batch_folds = bool(chosen.get("batch_folds", False))
    runs = plan_runs(chosen, methods, arms, folds, seeds, sets, selected,
                     batch_folds)
  except CompareError as e:
    err(e)
    return 2
  workdir = os.path.abspath(os.path.expanduser(workdir))
  states = {r: run_state(r, os.path.join(workdir, r.rel_dir)) for r in runs}
  refused = [r for r in runs if states[r].status == "mismatch"]
  running = [r for r in runs if states[r].status == "running"]

  # A batched process trains every fold of its group, done or not.
  launch = {r.group_dir for r in runs if states[r].status != "done"}

  if dry_run:
    counts: dict[str, int] = {}
    shown = set()
    for r in runs:
      s = states[r]
      counts[s.status] = counts.get(s.status, 0) + 1
      what = {"done": "done", "new": "launch", "resume": "launch (resume)",
              "mismatch": "restart" if restart else "REFUSED (spec)",
              "running": "REFUSED (running)"}[s.status]
      if s.status == "done" and r.group_dir in launch:
        what = "done (retrained)"  # its batch-mates are not done
      out(f"{what:<16} {r.name:<34} {r.rel_dir}"
          + (f"  [{s.detail}]" if s.detail else ""))
      if r.group_dir in launch and r.group_dir not in shown and (
          s.status in ("new", "resume", "done")
          or (s.status == "mismatch" and restart)):
        shown.add(r.group_dir)
        out("    " + shlex.join(r.argv(os.path.join(workdir, r.group_dir))))
    out("compare: dry run, nothing launched: " + ", ".join(
        f"{n} {k}" for k, n in counts.items()))

  for r in running:
    err(f"{os.path.join(workdir, r.rel_dir)}: {states[r].detail} (left from "
        "a stopped compare?); wait for it or end that process first")
  if refused and not restart:
    for r in refused:
      err(f"{os.path.join(workdir, r.rel_dir)} holds a different run: "
          f"{states[r].detail}")
    err("not reusing those: use another --workdir, delete them, or pass "
        "--restart to retrain them")
  if running or (refused and not restart):
    return 2
  if dry_run:
    return 0
  for r in refused:
    # A batched run's process directory goes whole: its folds restart
    # together.
    run_dir = os.path.join(workdir, r.group_dir)
    if os.path.isdir(run_dir):
      out(f"compare: --restart: deleting {run_dir}")
      shutil.rmtree(run_dir)
    states[r] = State("new")

  os.makedirs(workdir, exist_ok=True)
  commit = git_commit()
  failures: dict[Run, dict[str, Any]] = {}
  command = list(command) if command is not None else None

  last_figure = [-math.inf]

  def refresh(final=False):
    # The figure takes ~1 s: redrawn at most every FIGURE_EVERY_S (runs
    # take minutes, so in practice after each) and at the end.
    figure = final or time.time() - last_figure[0] >= FIGURE_EVERY_S
    write_outputs(collect(runs, workdir, preset=preset, claims=claims,
                          failures=failures, command=command, commit=commit),
                  workdir, figure)
    if figure:
      last_figure[0] = time.time()

  todo = [r for r in runs if r.group_dir in launch]
  out(f"compare: {len(runs) - len(todo)} of {len(runs)} runs done, "
      f"{len(todo)} to train in {workdir}"
      + (f" (each arm's {chosen['num_folds']} folds of a seed batched in "
         "one process)" if batch_folds else ""))
  refresh()
  env = run_env(parallel, xla_flags)
  if launcher is None:
    launcher = subprocess_launcher
    if parallel > 1 and len({r.group_dir for r in todo}) > 1:
      prebuild_data(todo)
  jobs = make_jobs(todo, workdir, env)
  finished = len(runs) - len(todo)
  pool = concurrent.futures.ThreadPoolExecutor(max_workers=parallel)
  try:
    futures = {pool.submit(_execute, job, launcher, out): job
               for job in jobs}
    for fut in concurrent.futures.as_completed(futures):
      job = futures[fut]
      res = fut.result()
      for r in job.runs:
        run_dir = os.path.join(workdir, r.rel_dir)
        ok = res["returncode"] == 0 and read_report(run_dir) is not None
        finished += 1
        if ok:
          entry = run_entry(r, run_dir, workdir)
          out(f"compare: [{finished}/{len(runs)}] {r.name}: "
              f"{100 * entry['accuracy']:.1f}% ({res['wall_s']:.0f} s"
              + (f" for {len(job.runs)} folds" if len(job.runs) > 1 else "")
              + ")")
          continue
        why = res["error"] or (
            f"exit status {res['returncode']}" if res["returncode"] else
            "exit status 0 but no eval/report.json")
        tail = log_tail(job.log_path)
        failures[r] = {"method": r.method, "arm": r.arm, "fold": r.fold,
                       "seed": r.seed, "workdir": r.rel_dir,
                       "returncode": res["returncode"], "error": why,
                       "log": os.path.relpath(job.log_path, workdir),
                       "log_tail": tail}
        print(f"compare: [{finished}/{len(runs)}] {r.name} FAILED ({why}); "
              f"last lines of {job.log_path}:\n{tail}", file=sys.stderr)
      refresh()
  except BaseException:
    pool.shutdown(wait=False, cancel_futures=True)
    _stop_live_runs()
    print("compare: stopped; rerun the same command to resume",
          file=sys.stderr)
    raise
  finally:
    pool.shutdown(wait=True, cancel_futures=True)
    refresh(final=True)
  if failures:
    err(f"{len(failures)} of {len(runs)} runs failed: "
        + ", ".join(r.name for r in failures)
        + f"; rerun the same command to retry them. Results: "
        f"{os.path.join(workdir, 'compare.md')}")
    return 1
  out(f"compare: all {len(runs)} runs finished: "
      f"{os.path.join(workdir, 'compare.md')}")
  return 0


# ---------------------------------------------------------------- the CLI

def _parse_set(items: Sequence[str]) -> dict[str, Any]:
  """--set field=value pairs; values stay strings (fer_jax.main parses them
  with the field's type)."""
  out = {}
  for item in items:
    key, sep, value = item.partition("=")
    key = key.strip().removeprefix("--").removeprefix("config.")
    if not sep or not key:
      raise CompareError(f"--set={item!r}: expected field=value, e.g. "
                         "--set=train.num_steps=300")
    out[key] = value
  return out


def define_flags():
  """Defined only when run as a program (importing the module for its
  functions defines no flag, so it cannot clash with fer_jax.main's)."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  flags.DEFINE_enum("preset", None, list(PRESETS),
                    "cpu: folds 0..3 of 4, seed 0, methods "
                    f"{','.join(PRESETS['cpu']['methods'])} (claims and "
                    "oracle, no ablation; GNDL over seeds 0, 1 and 2); "
                    "cpu_gan: the same for "
                    f"{','.join(PRESETS['cpu_gan']['methods'])} (GroupGAN "
                    "over seeds 0 and 1); cpu_wsc: cgan_wsc; cpu_all: the "
                    "three as one table; gpu: folds 0..9 of 10, seeds 0 "
                    "and 1, every method and arm.")
  flags.DEFINE_string("workdir", None,
                      "Compare directory: runs/, compare.json, compare.md, "
                      "compare.png. Rerunning the same command resumes.")
  flags.DEFINE_list("methods", None,
                    f"Methods to run (default: the preset's); known: "
                    f"{','.join(ARMS)}.")
  flags.DEFINE_list("arms", None,
                    "Arms to run instead of the preset's: method/arm items "
                    "(e.g. gndl/gndl,gndl/baseline), or 'all' for every arm "
                    "of the chosen methods. The cpu preset leaves out the "
                    "ablations gndl/gndl_paper and ifgan/generated_only.")
  flags.DEFINE_list("folds", None, "Folds to run instead of the preset's "
                    "(num_folds stays the preset's).")
  flags.DEFINE_list("seeds", None, "Seeds to run instead of the preset's.")
  flags.DEFINE_multi_string(
      "set", [], "field=value for every run (part of its spec, so changing "
      "it later refuses the old runs), e.g. --set=train.num_steps=300 "
      "--set=model.dtype=bfloat16.")
  flags.DEFINE_integer("parallel", 1, "Runs trained at once (with "
                       "--batch_folds: processes, each training k folds).")
  flags.DEFINE_bool(
      "batch_folds", None,
      "Train each arm's folds of a seed in one fer_jax.main process, as one "
      "vmapped program (config.train.batch_folds: one compile, k folds per "
      "step; meant for small steps on a GPU: on a 2-core CPU it was 1.5-1.7x "
      "slower than separate runs). Its runs live in runs/<method>/"
      "<arm>/seed<s>_batched/fold_<k>, apart from separate runs'. Needs "
      "every fold of the preset (no --folds), and configs whose folds share "
      "one program (fixed step counts); fer_jax.main names what to change "
      "where they do not. Default: the preset's (none sets it).")
  flags.DEFINE_string(
      "xla_flags", "auto",
      "XLA_FLAGS added to each run's environment. auto: with --parallel > 1, "
      f"'{SINGLE_THREAD_XLA_FLAGS}' (one thread per run); '' adds none.")
  flags.DEFINE_bool("dry_run", False, "List the runs, done or to launch "
                    "(with their commands), and launch nothing.")
  flags.DEFINE_bool("restart", False, "Delete and retrain run directories "
                    "that hold a different spec instead of refusing.")
  flags.mark_flags_as_required(["preset", "workdir"])
  return flags


def main(argv):
  from absl import app, flags  # pylint: disable=import-outside-toplevel
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  f = flags.FLAGS
  try:
    folds = None if f.folds is None else [int(x) for x in f.folds]
    seeds = None if f.seeds is None else [int(x) for x in f.seeds]
    sets = _parse_set(f.set)
  except (ValueError, CompareError) as e:
    print(f"compare: error: {e}", file=sys.stderr)
    sys.exit(2)
  import signal  # pylint: disable=import-outside-toplevel

  def on_term(signum, frame):
    del frame
    raise SystemExit(128 + signum)  # stops the runs (see compare)
  signal.signal(signal.SIGTERM, on_term)
  sys.exit(compare(f.preset, f.workdir, methods=f.methods, folds=folds,
                   seeds=seeds, sets=sets, parallel=f.parallel,
                   chosen_arms=f.arms, batch_folds=f.batch_folds,
                   dry_run=f.dry_run, restart=f.restart,
                   xla_flags=f.xla_flags,
                   command=["python", "-m", "fer_jax.compare",
                            *sys.argv[1:]]))


if __name__ == "__main__":
  from absl import app as _app  # pylint: disable=ungrouped-imports
  define_flags()
  _app.run(main)
