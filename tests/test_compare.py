"""fer_jax.stats against hand computations and scipy; fer_jax.compare with a
fake launcher: claims from run reports, resume after a kill, refused specs,
failures, outputs; the real launcher and CLI on tiny commands."""

import dataclasses
import json
import math
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest
from scipy import stats as sp

from fer_jax import compare as cmp
from fer_jax import stats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRESETS = {"t": dict(folds=(0, 1, 2), num_folds=3, seeds=(0,),
                     methods=("gndl", "ifgan"), overrides={})}
# A fixed table, so the counts below do not follow the shipping one.
ARMS = {
    "gndl": {"gndl": "configs/gndl.py", "baseline": "configs/gndl.py:baseline",
             "oracle": "configs/gndl.py:oracle"},
    "ifgan": {"ifgan": "configs/ifgan.py",
              "baseline": "configs/ifgan.py:baseline"},
}
CLAIMS = [
    dict(method="gndl", claim="GNDL beats its ResNet-18 baseline",
         arm="gndl", reference="baseline"),
    dict(method="gndl", claim="the oracle beats the ResNet-18 baseline",
         arm="oracle", reference="baseline", informational=True),
    dict(method="ifgan", claim="IF-GAN beats its ResNet + island-loss "
         "baseline", arm="ifgan", reference="baseline"),
]
ALL_RUNS = {(m, a, f, 0) for m, arms in ARMS.items() for a in arms
            for f in range(3)}


# ---------------------------------------------------------------- stats

def test_paired_difference_by_hand():
  a, b = [50.0, 52.0, 55.0, 47.0], [48.0, 50.0, 50.0, 46.0]
  # d = 2, 2, 5, 1: mean 2.5, sample sd sqrt(9 / 3) = sqrt(3); t(0.975, 3)
  # = 3.18245 from a printed table: half width 3.18245 * sqrt(3) / 2.
  n, diff, (lo, hi) = stats.paired_difference(a, b)
  assert n == 4 and diff == pytest.approx(2.5)
  assert (lo, hi) == pytest.approx((2.5 - 2.756079, 2.5 + 2.756079),
                                   abs=2e-5)


@pytest.mark.parametrize("n", [2, 3, 5, 10, 31, 200])
def test_paired_difference_matches_scipy(n):
  rng = np.random.default_rng(n)
  a = rng.normal(50, 3, n)
  b = a - rng.normal(1, 2, n)
  got_n, diff, (lo, hi) = stats.paired_difference(a, b)
  d = a - b
  want = sp.t.interval(0.95, n - 1, loc=d.mean(), scale=sp.sem(d))
  assert got_n == n and diff == pytest.approx(d.mean(), rel=1e-12)
  assert (lo, hi) == pytest.approx(want, rel=1e-10, abs=1e-10)


def test_paired_difference_over_groups_by_hand():
  """Pairs of one group (a fold's seeds) are averaged first; the interval
  is over groups, df = groups - 1."""
  a, b = [5.0, 7.0, 1.0, 4.0, 6.0], [1.0, 1.0, 0.0, 0.0, 0.0]
  groups = [2, 2, 0, 1, 1]
  assert stats.group_means([4.0, 6.0, 1.0, 4.0, 6.0], groups) == (
      [0, 1, 2], [1.0, 5.0, 5.0])
  n, diff, (lo, hi) = stats.paired_difference(a, b, groups=groups)
  d = [1.0, 5.0, 5.0]
  half = sp.t.ppf(0.975, 2) * np.std(d, ddof=1) / math.sqrt(3)
  assert n == 3 and diff == pytest.approx(11 / 3)
  assert (lo, hi) == pytest.approx((11 / 3 - half, 11 / 3 + half))
  with pytest.raises(ValueError, match="5 values but 4 group labels"):
    stats.paired_difference(a, b, groups=groups[:4])


def test_paired_difference_edge_cases():
  assert stats.paired_difference([3.0], [1.0]) == (1, 2.0, (-math.inf,
                                                           math.inf))
  n, diff, (lo, hi) = stats.paired_difference([40.0, 45.0, 50.0],
                                              [40.0, 45.0, 50.0])
  assert (n, diff, lo, hi) == (3, 0.0, 0.0, 0.0)
  n, diff, (lo, hi) = stats.paired_difference([], [])
  assert n == 0 and math.isnan(diff) and math.isnan(lo)
  with pytest.raises(ValueError, match="length"):
    stats.paired_difference([1.0, 2.0], [1.0])


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 7, 10, 19, 29, 30, 31, 60,
                                120, 1000, 0.5, 2.5, 5e4, 2e5, 1e8])
def test_t_quantile_matches_scipy(df):
  for p in (0.501, 0.6, 0.75, 0.9, 0.95, 0.975, 0.99, 0.995, 0.9995,
            1 - 1e-9, 0.025, 1e-6):
    assert stats.t_ppf(p, df) == pytest.approx(sp.t.ppf(p, df), rel=1e-9)


def test_t_quantile_table_and_round_trip():
  # t(0.975, df) and t(0.995, df) from a printed table (6 digits).
  table = {1: (12.7062, 63.6567), 2: (4.30265, 9.92484),
           10: (2.22814, 3.16927), 30: (2.04227, 2.74999)}
  for df, (t975, t995) in table.items():
    assert stats.t_ppf(0.975, df) == pytest.approx(t975, rel=5e-6)
    assert stats.t_ppf(0.995, df) == pytest.approx(t995, rel=5e-6)
  # Near the median, where scipy's ppf (and for df=1 its cdf) lose digits:
  # closed forms for df 1 and 2, and scipy's cdf of the quantile.
  for p in (0.5 + 1e-7, 0.5 - 1e-4, 0.8, 0.999):
    assert stats.t_ppf(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)),
                                              rel=1e-12)
    assert stats.t_ppf(p, 2) == pytest.approx(
        (2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-12)
  for df in (4, 9, 100):
    for p in (0.5 + 1e-7, 0.5 - 1e-4):
      assert sp.t.cdf(stats.t_ppf(p, df), df) - 0.5 == pytest.approx(
          p - 0.5, rel=1e-8)
  assert stats.t_ppf(0.5, 3) == 0.0
  assert stats.t_sf(2.0, 7) == pytest.approx(sp.t.sf(2.0, 7), rel=1e-12)


# ---------------------------------------------------------------- fakes

def fake_accuracy(method, arm, fold, seed):
  """GNDL above its baseline by 2-4 points; IF-GAN about equal to its own."""
  base = 0.40 + 0.03 * fold + 0.01 * seed
  return base + {"gndl": 0.03 + 0.01 * (fold % 2), "oracle": 0.10,
                 "ifgan": 0.01 * (-1) ** fold}.get(arm, 0.0)


def write_fake_run(run_dir, method, arm, fold, seed):
  """What fer_jax.main leaves in a workdir, with a made-up accuracy."""
  acc = fake_accuracy(method, arm, fold, seed)
  os.makedirs(os.path.join(run_dir, "eval"), exist_ok=True)
  with open(os.path.join(run_dir, "config.json"), "w") as f:
    json.dump({"fake_run": {"method": method, "arm": arm, "seed": seed}}, f)
  report = {"method": method, "dataset": "fer_synth", "fold": fold,
            "split": "test", "accuracy": acc,
            "per_class_accuracy": {"anger": acc + 0.1, "fear": acc - 0.1,
                                   "contempt": None},
            "confusion_matrix": [[1]], "classes": ["anger"],
            "num_examples": 100, "step": 3, "state_digest": "ab",
            "nonfinite_steps": 0,
            "label_noise": {"rate": 0.3, "kind": "symmetric", "seed": seed,
                            "flipped_train_fraction": 0.28, "rows": [1, 2]},
            "curve": [1, 2], "note": "text"}
  if method == "cgan_wsc":  # its claims read these (the re-annotated
    # classifier 5 points up on folds 0-2, 3 on fold 3)
    report["noisy_label_accuracy"] = 0.7
    noisy = 0.2 + 0.01 * fold
    report["classifier"] = {
        "noisy": {"accuracy": noisy},
        "reannotated": {"accuracy": noisy + 0.05 - 0.02 * (fold == 3)}}
  with open(os.path.join(run_dir, "eval", "report.json"), "w") as f:
    json.dump(report, f)


class FakeLauncher:
  """Records each launch and writes a finished run; 'dies' (like the
  compare being killed) on the launch numbered die_at and every later one,
  after leaving a checkpoint behind as a killed training would."""

  def __init__(self, die_at=None, fail=()):
    self.calls, self.die_at, self.fail = [], die_at, set(fail)

  def __call__(self, job):
    r = job.run
    key = (r.method, r.arm, r.fold, r.seed)
    self.calls.append(key)
    assert os.path.exists(os.path.join(job.run_dir, "run_spec.json"))
    assert job.argv[:3] == [sys.executable, "-m", "fer_jax.main"]
    assert f"--workdir={job.run_dir}" in job.argv
    if self.die_at is not None and len(self.calls) >= self.die_at:
      os.makedirs(os.path.join(job.run_dir, "checkpoints", "250"))
      raise KeyboardInterrupt
    if key in self.fail:
      with open(job.log_path, "a") as f:
        f.write("step 1\nfer_jax: error: config.method: 'x' is not one\n")
      return 2
    write_fake_run(job.run_dir, *key)
    return 0


def run_compare(workdir, launcher, **kw):
  kw.setdefault("out", lambda *_: None)
  kw.setdefault("arms", ARMS)
  kw.setdefault("claims", CLAIMS)
  return cmp.compare("t", str(workdir), launcher=launcher, presets=PRESETS,
                     command=["python", "-m", "fer_jax.compare", "--x"],
                     **kw)


def read_json(path):
  with open(path) as f:
    return json.load(f)


# ---------------------------------------------------------------- compare

def test_tables_are_consistent():
  cmp.check_tables()
  with pytest.raises(cmp.CompareError, match="'nope' is not an arm"):
    cmp.check_tables(cmp.ARMS, [dict(method="gndl", claim="x", arm="nope",
                                     reference="baseline")])
  with pytest.raises(cmp.CompareError, match="sets data.fold"):
    cmp.check_tables({"m": {"a": ("configs/gndl.py", {"data.fold": 2})}},
                     [])
  with pytest.raises(cmp.CompareError, match="letters, digits"):
    cmp.check_tables({"m": {"a/b": "configs/gndl.py"}}, [])
  with pytest.raises(cmp.CompareError, match="not a config spec"):
    cmp.check_tables({"m": {"a": 3}}, [])


def test_run_args_and_spec():
  run = cmp.Run("gndl", "baseline", 2, 1, 4, "configs/gndl.py:baseline",
                (("train.num_steps", 3), ("data.flip", False),
                 ("data.weak_frames", (6, 8))))
  argv = run.argv("/w/runs/x")
  assert argv[:5] == [sys.executable, "-m", "fer_jax.main",
                      f"--config={ROOT}/configs/gndl.py:baseline",
                      "--workdir=/w/runs/x"]
  assert argv[5:] == ["--config.data.fold=2", "--config.data.num_folds=4",
                      "--config.seed=1", "--config.train.progress_bar=False",
                      "--config.train.num_steps=3", "--config.data.flip=False",
                      "--config.data.weak_frames=(6, 8)"]
  assert run.rel_dir == "runs/gndl/baseline/fold2_seed1"
  # The hash covers the portable arguments only: not where things live.
  assert run.spec()["spec_hash"] == cmp.spec_hash(run.args())
  assert "/w/runs" not in json.dumps(run.spec())


def test_claims_from_fake_reports():
  runs = [dict(method="gndl", arm=arm, fold=f, seed=0,
               accuracy=fake_accuracy("gndl", arm, f, 0))
          for arm in ("gndl", "baseline") for f in range(4)]
  runs = [r for r in runs if (r["arm"], r["fold"]) != ("baseline", 3)]
  claim = dict(method="gndl", claim="c", arm="gndl", reference="baseline")
  c = cmp.claim_entry(claim, runs)
  d = [3.0, 4.0, 3.0]  # folds 0-2 paired; fold 3 has no baseline
  half = 4.302652729749464 * np.std(d, ddof=1) / math.sqrt(3)
  assert c["num_pairs"] == 3 and c["pairs"] == [[0, 0], [1, 0], [2, 0]]
  assert c["mean_diff"] == pytest.approx(np.mean(d))
  assert c["ci95"] == pytest.approx([np.mean(d) - half, np.mean(d) + half])
  assert c["holds"] is True
  assert c["arm_mean"] - c["reference_mean"] == pytest.approx(c["mean_diff"])
  assert c["reference_std"] == pytest.approx(np.std([40, 43, 46], ddof=1))
  # One pair: no interval, so it does not hold.
  one = cmp.claim_entry(claim, [r for r in runs if r["fold"] == 0])
  assert one["num_pairs"] == 1 and not one["holds"]
  assert one["ci95"] == [-math.inf, math.inf]


def test_claim_over_two_seeds_is_over_folds():
  """Two seeds per fold: each fold's differences are averaged, and the
  interval has folds - 1 degrees of freedom, not pairs - 1."""
  diffs = {(0, 0): -0.5, (0, 1): 4.5, (1, 0): 10.5, (1, 1): 3.5,
           (2, 0): 2.0, (2, 1): 4.0, (3, 0): 6.0, (3, 1): 6.5}
  runs = [dict(method="groupgan", arm=arm, fold=f, seed=s,
               accuracy=(40.0 + f + (d if arm == "groupgan" else 0.0)) / 100)
          for (f, s), d in diffs.items() for arm in ("groupgan", "cnn")]
  c = cmp.claim_entry(dict(method="groupgan", claim="c", arm="groupgan",
                           reference="cnn"), runs)
  per_fold = [2.0, 7.0, 3.0, 6.25]
  half = sp.t.ppf(0.975, 3) * np.std(per_fold, ddof=1) / 2.0
  assert c["num_pairs"] == 8 and c["num_folds"] == 4
  assert c["fold_diffs"] == pytest.approx(per_fold)
  assert c["mean_diff"] == pytest.approx(np.mean(per_fold))
  assert c["ci95"] == pytest.approx([np.mean(per_fold) - half,
                                     np.mean(per_fold) + half])
  # 8 pairs taken as independent would give a narrower interval.
  assert stats.paired_difference(list(diffs.values()), [0.0] * 8)[2][0] > (
      c["ci95"][0])


def test_method_seeds_give_one_method_more_seeds():
  preset = dict(PRESETS["t"], method_seeds={"ifgan": (0, 1)})
  runs = cmp.plan_runs(preset, ["gndl", "ifgan"], ARMS)
  seeds = {(r.method, r.seed) for r in runs}
  assert seeds == {("gndl", 0), ("ifgan", 0), ("ifgan", 1)}
  assert len(runs) == 3 * 3 + 2 * 3 * 2
  # --seeds sets every method's seeds.
  runs = cmp.plan_runs(preset, ["gndl", "ifgan"], ARMS, seeds=(2,))
  assert {r.seed for r in runs} == {2} and len(runs) == 3 * 3 + 2 * 3
  # The shipping presets: GroupGAN's claim over two seeds, GNDL's over
  # three, in cpu_all.
  shipped = cmp.plan_runs(cmp.PRESETS["cpu_all"],
                          cmp.PRESETS["cpu_all"]["methods"])
  seeds_of = {m: {r.seed for r in shipped if r.method == m}
              for m in cmp.PRESETS["cpu_all"]["methods"]}
  assert seeds_of == {"gndl": {0, 1, 2}, "ifgan": {0}, "groupgan": {0, 1},
                      "sna": {0}, "cgan_wsc": {0}}


def test_compare_writes_runs_claims_and_outputs(tmp_path):
  launcher = FakeLauncher()
  assert run_compare(tmp_path, launcher) == 0
  assert set(launcher.calls) == ALL_RUNS
  out = read_json(tmp_path / "compare.json")
  assert out["preset"] == "t"
  assert out["command"] == ["python", "-m", "fer_jax.compare", "--x"]
  assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", out["git_commit"])
  assert len(out["runs"]) == len(ALL_RUNS) and not out["failures"]
  run = next(r for r in out["runs"] if (r["method"], r["arm"], r["fold"])
             == ("gndl", "gndl", 1))
  acc = fake_accuracy("gndl", "gndl", 1, 0)
  assert run["accuracy"] == pytest.approx(acc)
  assert run["mean_class_accuracy"] == pytest.approx(acc)  # null skipped
  assert run["workdir"] == "runs/gndl/gndl/fold1_seed0"
  assert run["extra"] == {"nonfinite_steps": 0, "label_noise": {
      "rate": 0.3, "kind": "symmetric", "seed": 0,
      "flipped_train_fraction": 0.28}}
  assert run["wall_time_s"] >= 0
  assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", run["git_commit"])
  with open(tmp_path / run["workdir"] / "config.json", "rb") as f:
    import hashlib
    assert run["config_hash"] == hashlib.sha256(f.read()).hexdigest()
  claims = {(c["method"], c["arm"]): c for c in out["claims"]}
  assert set(claims) == {("gndl", "gndl"), ("gndl", "oracle"),
                         ("ifgan", "ifgan")}
  assert claims[("gndl", "gndl")]["holds"]
  assert claims[("gndl", "oracle")]["informational"]
  ifgan = claims[("ifgan", "ifgan")]  # +1, -1, +1 points: not shown
  assert ifgan["num_pairs"] == 3 and not ifgan["holds"]
  assert ifgan["mean_diff"] == pytest.approx(1 / 3)
  md = (tmp_path / "compare.md").read_text()
  g = claims[("gndl", "gndl")]
  assert (f"| gndl | GNDL beats its ResNet-18 baseline | gndl "
          f"{g['arm_mean']:.1f} ± {g['arm_std']:.1f} | baseline "
          f"{g['reference_mean']:.1f} ± {g['reference_std']:.1f} | 3 (3) | "
          f"{g['mean_diff']:.2f} | [{g['ci95'][0]:.2f}, {g['ci95'][1]:.2f}]"
          " | yes |") in md
  assert "| ifgan | baseline | 3 × 1 |" in md
  assert f"{len(ALL_RUNS)} of {len(ALL_RUNS)} runs finished" in md
  assert "`python -m fer_jax.compare --x`" in md and out["git_commit"] in md
  png = tmp_path / "compare.png"
  assert png.stat().st_size > 5000 and png.read_bytes()[:4] == b"\x89PNG"
  # A rerun finds everything done and launches nothing.
  again = FakeLauncher()
  assert run_compare(tmp_path, again) == 0 and again.calls == []


def test_resume_after_kill_launches_only_missing_runs(tmp_path):
  first = FakeLauncher(die_at=6)
  with pytest.raises(KeyboardInterrupt):
    run_compare(tmp_path, first)
  finished = set(first.calls[:5])
  partial = read_json(tmp_path / "compare.json")  # written as runs finished
  assert {(r["method"], r["arm"], r["fold"], r["seed"])
          for r in partial["runs"]} == finished
  assert len(partial["pending"]) == 10
  # Fold-major order: the first folds' pairs complete first.
  assert {k[2] for k in finished} == {0}
  second = FakeLauncher()
  assert run_compare(tmp_path, second) == 0
  assert set(second.calls) == ALL_RUNS - finished
  assert len(second.calls) == len(ALL_RUNS - finished)
  out = read_json(tmp_path / "compare.json")
  assert {(r["method"], r["arm"], r["fold"], r["seed"])
          for r in out["runs"]} == ALL_RUNS
  assert not out["pending"] and not out["failures"]
  # The killed run's time is recorded per launch.
  launches = (tmp_path / "runs/gndl/gndl/fold1_seed0/launches.jsonl")
  assert len(launches.read_text().splitlines()) == 2


def test_parallel_runs_all_finish(tmp_path):
  launcher = FakeLauncher()
  assert run_compare(tmp_path, launcher, parallel=3) == 0
  assert sorted(launcher.calls) == sorted(ALL_RUNS)
  assert len(read_json(tmp_path / "compare.json")["runs"]) == 15


def test_failed_run_is_reported_and_others_finish(tmp_path, capsys):
  bad = ("ifgan", "baseline", 1, 0)
  launcher = FakeLauncher(fail=[bad])
  assert run_compare(tmp_path, launcher) == 1
  assert set(launcher.calls) == ALL_RUNS
  err = capsys.readouterr().err
  assert "ifgan/baseline fold 1 seed 0 FAILED (exit status 2)" in err
  assert "config.method: 'x' is not one" in err
  out = read_json(tmp_path / "compare.json")
  assert len(out["runs"]) == 14
  [failure] = out["failures"]
  assert failure["returncode"] == 2
  assert failure["workdir"] == "runs/ifgan/baseline/fold1_seed0"
  assert "is not one" in failure["log_tail"]
  ifgan = next(c for c in out["claims"] if c["method"] == "ifgan")
  assert ifgan["num_pairs"] == 2
  assert "1 failed" in (tmp_path / "compare.md").read_text()
  # The rerun retries only the failed run.
  retry = FakeLauncher()
  assert run_compare(tmp_path, retry) == 0 and retry.calls == [bad]


def test_different_spec_is_refused_naming_the_directory(tmp_path, capsys):
  assert run_compare(tmp_path, FakeLauncher(), methods=["ifgan"]) == 0
  changed = FakeLauncher()
  assert run_compare(tmp_path, changed, methods=["ifgan"],
                     sets={"train.num_steps": "10"}) == 2
  assert changed.calls == []
  err = capsys.readouterr().err
  run_dir = tmp_path / "runs/ifgan/ifgan/fold0_seed0"
  assert f"{run_dir} holds a different run" in err
  assert "--config.train.num_steps=10" in err and "--restart" in err
  # A dry run says the same and also refuses.
  assert run_compare(tmp_path, changed, methods=["ifgan"], dry_run=True,
                     sets={"train.num_steps": "10"}) == 2
  # Foreign files without a spec are refused too.
  foreign = tmp_path / "runs/ifgan/ifgan/fold0_seed0"
  (foreign / "run_spec.json").unlink()
  assert run_compare(tmp_path, changed, methods=["ifgan"]) == 2
  assert "no run_spec.json" in capsys.readouterr().err
  # --restart retrains the refused runs (all six here).
  assert run_compare(tmp_path, changed, methods=["ifgan"], restart=True,
                     sets={"train.num_steps": "10"}) == 0
  assert len(changed.calls) == 6
  spec = read_json(foreign / "run_spec.json")
  assert "--config.train.num_steps=10" in spec["args"]
  assert spec["spec_hash"] == cmp.spec_hash(spec["args"])


def test_dry_run_launches_nothing(tmp_path):
  assert run_compare(tmp_path, FakeLauncher(), methods=["gndl"],
                     folds=[0]) == 0
  lines = []
  launcher = FakeLauncher()
  assert run_compare(tmp_path, launcher, dry_run=True,
                     out=lines.append) == 0
  assert launcher.calls == []
  text = "\n".join(lines)
  assert text.count("\ndone ") + text.startswith("done ") == 3
  assert text.count("launch ") == 12
  assert "--config=" + ROOT + "/configs/ifgan.py:baseline" in text
  assert "12 new" in text and "3 done" in text


def test_arm_selection_by_preset_and_flag(tmp_path, capsys):
  """A preset's arms (others of a method it names are left out), --arms
  method/arm and 'all'; a claim appears only when both its arms run."""
  presets = {"t": dict(PRESETS["t"], folds=(0,),
                       arms={"gndl": ("gndl", "baseline")})}

  def go(**kw):
    launcher = FakeLauncher()
    wd = tmp_path / str(len(os.listdir(tmp_path)))
    assert cmp.compare("t", str(wd), launcher=launcher, presets=presets,
                       arms=ARMS, claims=CLAIMS, out=lambda *_: None,
                       **kw) == 0
    result = read_json(wd / "compare.json")
    return ({(m, a) for m, a, *_ in launcher.calls},
            [c["arm"] for c in result["claims"]])

  # gndl as the preset says (no oracle), ifgan unnamed: every arm.
  assert go() == ({("gndl", "gndl"), ("gndl", "baseline"),
                   ("ifgan", "ifgan"), ("ifgan", "baseline")},
                  ["gndl", "ifgan"])
  assert go(chosen_arms=["all"], methods=["gndl"]) == (
      {("gndl", a) for a in ARMS["gndl"]}, ["gndl", "oracle"])
  assert go(chosen_arms=["gndl/oracle", "gndl/baseline"]) == (
      {("gndl", "oracle"), ("gndl", "baseline")}, ["oracle"])
  assert cmp.compare("t", str(tmp_path / "x"), launcher=FakeLauncher(),
                     presets=presets, arms=ARMS, claims=CLAIMS,
                     chosen_arms=["gndl/nope"]) == 2
  assert "--arms='gndl/nope'" in capsys.readouterr().err


def test_subprocess_launcher_logs_and_returns_status(tmp_path):
  run = cmp.Run("m", "a", 0, 0, 2, "configs/gndl.py")
  job = cmp.Job(run, str(tmp_path), [sys.executable, "-c",
                                     "import os, sys; print('hello', "
                                     "os.environ['XLA_FLAGS']); "
                                     "print('bad', file=sys.stderr); "
                                     "sys.exit(3)"],
                cmp.run_env(2, "auto"), str(tmp_path / "log.txt"))
  assert cmp.subprocess_launcher(job) == 3
  log = (tmp_path / "log.txt").read_text()
  assert "=== fer_jax.compare" in log and "bad" in log
  assert f"hello {cmp.SINGLE_THREAD_XLA_FLAGS}" in log
  assert not (tmp_path / "running.json").exists()
  assert cmp.run_env(1, "auto").get("XLA_FLAGS") == os.environ.get(
      "XLA_FLAGS")


def test_cli_help_and_dry_run(tmp_path):
  env = dict(os.environ)
  out = subprocess.run([sys.executable, "-m", "fer_jax.compare", "--help"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env=env)
  assert "--preset" in out.stdout, out.stderr  # absl's --help exits 1
  assert "--parallel" in out.stdout and "--dry_run" in out.stdout
  out = subprocess.run([sys.executable, "-m", "fer_jax.compare",
                        "--preset=cpu", f"--workdir={tmp_path}", "--dry_run",
                        "--methods=ifgan", "--folds=0,1",
                        "--set=train.num_steps=3"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env=env)
  assert out.returncode == 0, out.stderr
  new = 2 * len(cmp.PRESETS["cpu"]["arms"]["ifgan"])  # folds 0 and 1
  assert f"{new} new" in out.stdout
  assert "--config.train.num_steps=3" in out.stdout
  assert not os.listdir(tmp_path)
  out = subprocess.run([sys.executable, "-m", "fer_jax.compare",
                        "--preset=cpu", f"--workdir={tmp_path}",
                        "--methods=nope", "--dry_run"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120, env=env)
  assert out.returncode == 2 and "['nope'] have no arms" in out.stderr


# ---------------------------------------------------------------- end to end

TINY = {"data.synth.num_subjects": 6, "data.synth.num_frames": 8,
        "data.synth.image_size": 32, "data.resize": 32, "data.crop": 28,
        "model.base_width": 8, "train.batch_size": 8,
        "train.eval_batch_size": 16, "train.num_steps": 3,
        "train.log_every": 3, "train.checkpoint_every": 3,
        "train.eval_every": 0}


def toy_tables():
  """(arms, presets, compare's keywords) of a toy method: two arms of the
  baseline config at TINY sizes over 2 folds. Arm b differs by a field
  outside the step (one compile serves both)."""
  arms = {"toy": {"a": "configs/baseline.py",
                  "b": ("configs/baseline.py", {"train.max_to_keep": 2})}}
  claims = [dict(method="toy", claim="a beats b", arm="a", reference="b")]
  presets = {"tiny": dict(folds=(0, 1), num_folds=2, seeds=(0,),
                          methods=None, overrides={"*": TINY})}
  return arms, presets, dict(arms=arms, claims=claims, presets=presets,
                             out=print)


@pytest.mark.slow
def test_end_to_end_tiny_runs(tmp_path, monkeypatch):
  """Four real fer_jax.main subprocesses (2 folds x 2 arms, 3 steps at
  32 px), two at a time on a data set the compare built first, then a rerun
  that finds them all done."""
  monkeypatch.setenv("FER_JAX_DATA_DIR", str(tmp_path / "tfds"))
  _, _, kw = toy_tables()
  wd = tmp_path / "cmp"
  assert cmp.compare("tiny", str(wd), parallel=2, **kw) == 0
  out = read_json(wd / "compare.json")
  assert len(out["runs"]) == 4
  for r in out["runs"]:
    report = read_json(wd / r["workdir"] / "eval" / "report.json")
    assert report["step"] == 3 and report["fold"] == r["fold"]
    assert r["accuracy"] == report["accuracy"] and r["config_hash"]
    config = read_json(wd / r["workdir"] / "config.json")
    assert config["data"]["num_folds"] == 2
    assert config["train"]["max_to_keep"] == (2 if r["arm"] == "b" else 3)
    log = (wd / r["workdir"] / "log.txt").read_text()
    assert "building the synthetic set" not in log  # prebuild_data did
  [claim] = out["claims"]
  assert claim["num_pairs"] == 2
  assert (wd / "compare.png").exists() and (wd / "compare.md").exists()
  # Rerun: nothing to train.
  launched = []
  assert cmp.compare("tiny", str(wd), launcher=launched.append, **kw) == 0
  assert launched == []


def test_running_run_is_refused_and_stopped_runs_end(tmp_path, capsys):
  """A run still training (left by a killed compare) is not started twice;
  stopping the compare terminates the runs it started."""
  import threading
  presets = {"one": dict(folds=(0,), num_folds=2, seeds=(0,),
                         methods=("ifgan",), overrides={})}
  runs = cmp.plan_runs(presets["one"], ["ifgan"])
  run_dir = tmp_path / runs[0].rel_dir
  run_dir.mkdir(parents=True)
  (run_dir / "run_spec.json").write_text(json.dumps(runs[0].spec()))
  # A stand-in training: its command line names fer_jax.main and the dir.
  job = cmp.Job(runs[0], str(run_dir),
                [sys.executable, "-c", "import time; time.sleep(120)",
                 "fer_jax.main", f"--workdir={run_dir}"],
                dict(os.environ), str(run_dir / "log.txt"))
  result = []
  thread = threading.Thread(
      target=lambda: result.append(cmp.subprocess_launcher(job)))
  thread.start()
  for _ in range(200):
    if (run_dir / "running.json").exists():
      break
    time.sleep(0.05)
  assert cmp.run_state(runs[0], str(run_dir)).status == "running"
  launcher = FakeLauncher()
  assert cmp.compare("one", str(tmp_path), presets=presets,
                     launcher=launcher, out=lambda *_: None) == 2
  assert launcher.calls == []
  assert "is still training it" in capsys.readouterr().err
  cmp._stop_live_runs()  # what an interrupted compare does
  thread.join(timeout=60)
  assert result and result[0] != 0
  assert not (run_dir / "running.json").exists()
  assert cmp.run_state(runs[0], str(run_dir)).status == "resume"


def test_run_trained_under_an_edited_config_is_refused(tmp_path):
  """A finished run whose saved config.json no longer matches what its arm
  resolves to (here: the oracle preset's lam changed since) is a mismatch
  naming the field, not a done run; the unchanged one is done."""
  run = cmp.Run("gndl", "oracle", 0, 0, 4, "configs/gndl.py:oracle")
  resolved = cmp.resolved_config(run)
  assert resolved["gndl"]["neutral_source"] == "real"
  assert resolved["data"]["num_folds"] == 4
  run_dir = tmp_path / "r"
  write_fake_run(str(run_dir), "gndl", "oracle", 0, 0)
  with open(run_dir / "run_spec.json", "w") as f:
    json.dump(run.spec(), f)
  with open(run_dir / "config.json", "w") as f:
    json.dump(resolved, f)
  assert cmp.run_state(run, str(run_dir)).status == "done"
  old = json.loads(json.dumps(resolved))
  old["gndl"]["lam"] = 5.0
  del old["model"]["fast_layers"]  # a field added since: not drift
  with open(run_dir / "config.json", "w") as f:
    json.dump(old, f)
  state = cmp.run_state(run, str(run_dir))
  assert state.status == "mismatch"
  assert "gndl.lam: 5.0 -> 0.0" in state.detail
  assert "fast_layers" not in state.detail


def test_cpu_all_plans_exactly_the_runs_of_cpu_cpu_gan_and_cpu_wsc():
  """docs/results is one workdir holding the three presets' runs: cpu_all
  must ask for the same run specs, so it finds them finished."""
  def planned(name):
    preset = cmp.PRESETS[name]
    methods = preset["methods"]
    return {(r.method, r.arm, r.fold, r.seed, r.num_folds, r.config,
             r.overrides)
            for r in cmp.plan_runs(preset, methods,
                                   selected=cmp.select_arms(preset, methods))}
  every = planned("cpu") | planned("cpu_gan") | planned("cpu_wsc")
  assert planned("cpu_all") == every
  # 4 folds: gndl 3 arms over 3 seeds, ifgan 2, groupgan 2 over 2 seeds,
  # sna 3, cgan_wsc 1.
  assert len(every) == 4 * (3 * 3 + 2 + 2 * 2 + 3 + 1)


def test_wsc_claim_arms_and_preset(tmp_path):
  """Issue 21's `wsc` claim pairs two numbers of one cgan_wsc run (the
  classifier on re-annotated vs on noisy labels), and the cpu_wsc preset
  runs that one arm to a claim row."""
  cmp.check_tables()
  claim = [c for c in cmp.CLAIMS if c["claim"].startswith("wsc:")]
  assert len(claim) == 1 and not claim[0].get("informational")
  claim = claim[0]
  assert claim["arm"] == claim["reference"] == "cgan_wsc"
  assert cmp.ARMS["cgan_wsc"] == {"cgan_wsc": "configs/cgan_wsc.py"}
  preset = cmp.PRESETS["cpu_wsc"]
  assert preset["methods"] == ("cgan_wsc",)
  presets = {"w": dict(preset, folds=(0, 1, 2, 3))}
  launcher = FakeLauncher()
  assert cmp.compare("w", str(tmp_path), launcher=launcher, presets=presets,
                     arms=cmp.ARMS, claims=cmp.CLAIMS,
                     out=lambda *_: None) == 0
  # One run per fold, not one per side of the claim.
  assert sorted(launcher.calls) == [("cgan_wsc", "cgan_wsc", f, 0)
                                    for f in range(4)]
  result = read_json(tmp_path / "compare.json")
  c, informational = result["claims"]
  assert c["metric"] == "extra.classifier.reannotated.accuracy"
  assert c["num_pairs"] == 4
  assert c["mean_diff"] == pytest.approx(4.5)
  assert c["reference_mean"] == pytest.approx(21.5)
  assert c["holds"] is True
  # Re-annotation (the run's accuracy) against the noisy labels' 0.7.
  assert informational["informational"]
  assert informational["mean_diff"] == pytest.approx(
      100 * np.mean([fake_accuracy("cgan_wsc", "cgan_wsc", f, 0)
                     for f in range(4)]) - 70.0)
  md = (tmp_path / "compare.md").read_text()
  assert "| cgan_wsc: classifier.reannotated.accuracy 26.0 ± " in md
  assert "| cgan_wsc: classifier.noisy.accuracy 21.5 ± " in md


def test_claim_metric_must_name_a_report_number():
  bad = [dict(method="gndl", claim="c", arm="gndl", reference="baseline",
              metric="classifier.accuracy")]
  with pytest.raises(cmp.CompareError, match="metric 'classifier.accuracy'"):
    cmp.check_tables(ARMS, bad)
  # A run whose report lacks the metric is left out of the pairs.
  runs = [dict(method="gndl", arm=a, fold=f, seed=0, accuracy=0.5,
               extra={"x": 0.6} if f else {})
          for a in ("gndl", "baseline") for f in range(3)]
  c = cmp.claim_entry(dict(method="gndl", claim="c", arm="gndl",
                           metric="extra.x", reference="baseline"), runs)
  assert c["pairs"] == [[1, 0], [2, 0]]
  assert c["mean_diff"] == pytest.approx(10.0)


# ---------------------------------------------------------------- batched folds

class BatchedFakeLauncher:
  """fer_jax.main with config.train.batch_folds: one process per (method,
  arm, seed) writes each fold's run in its fold_<k>/. ``fail``: (method,
  arm) whose process exits 1 after writing fold 0's report."""

  def __init__(self, fail=()):
    self.calls, self.fail = [], set(fail)

  def __call__(self, job):
    r = job.run
    self.calls.append((r.method, r.arm, r.seed,
                       tuple(x.fold for x in job.runs)))
    assert "--config.data.all_folds=True" in job.argv
    assert "--config.train.batch_folds=True" in job.argv
    assert not any(a.startswith("--config.data.fold=") for a in job.argv)
    assert f"--workdir={job.run_dir}" in job.argv
    assert job.log_path == os.path.join(job.run_dir, "log.txt")
    for x in job.runs:
      fold_dir = os.path.join(job.run_dir, f"fold_{x.fold}")
      assert read_json(os.path.join(fold_dir, "run_spec.json"))[
          "spec_hash"] == cmp.spec_hash(x.args())
      if x.fold and (r.method, r.arm) in self.fail:
        return 1
      write_fake_run(fold_dir, r.method, r.arm, x.fold, r.seed)
    return 0


def test_batched_run_args_dirs_and_config():
  run = cmp.Run("gndl", "baseline", 2, 1, 4, "configs/gndl.py:baseline",
                (("train.num_steps", 3),), batched=True)
  assert run.rel_dir == "runs/gndl/baseline/seed1_batched/fold_2"
  assert run.group_dir == "runs/gndl/baseline/seed1_batched"
  assert run.args() == [
      "--config=configs/gndl.py:baseline", "--config.data.all_folds=True",
      "--config.train.batch_folds=True", "--config.data.num_folds=4",
      "--config.seed=1", "--config.train.progress_bar=False",
      "--config.train.num_steps=3"]
  # Its config.json is its fold's alone (config_lib.with_fold): what the
  # separate run of that fold resolves to.
  separate = cmp.Run("gndl", "baseline", 2, 1, 4, "configs/gndl.py:baseline",
                     (("train.num_steps", 3),))
  assert run.fold_args() == separate.args()
  resolved = cmp.resolved_config(run)
  assert resolved["data"]["fold"] == 2 and not resolved["data"]["all_folds"]
  assert not resolved["train"]["batch_folds"]
  with pytest.raises(cmp.CompareError, match="sets data.fold"):
    cmp.check_tables({"m": {"a": ("configs/gndl.py",
                                  {"train.batch_folds": True})}}, [])


def test_batched_compare_one_process_per_arm_and_seed(tmp_path, capsys):
  launcher = BatchedFakeLauncher()
  assert run_compare(tmp_path, launcher, batch_folds=True) == 0
  arms = [(m, a) for m, arms in ARMS.items() for a in arms]
  assert sorted(launcher.calls) == sorted((m, a, 0, (0, 1, 2))
                                          for m, a in arms)
  out = read_json(tmp_path / "compare.json")
  assert len(out["runs"]) == len(ALL_RUNS) and not out["failures"]
  run = next(r for r in out["runs"] if (r["method"], r["arm"], r["fold"])
             == ("gndl", "gndl", 1))
  assert run["workdir"] == "runs/gndl/gndl/seed0_batched/fold_1"
  assert run["accuracy"] == pytest.approx(fake_accuracy("gndl", "gndl", 1, 0))
  assert run["batched_folds"] == 3 and run["wall_time_s"] >= 0
  # The same claims as separate runs give.
  separate = tmp_path / "separate"
  assert run_compare(separate, FakeLauncher()) == 0
  claims = lambda d: [(c["arm"], c["mean_diff"], c["ci95"], c["holds"])  # noqa: E731
                      for c in read_json(d / "compare.json")["claims"]]
  assert claims(tmp_path) == claims(separate)
  # A rerun launches nothing; a fold without its report relaunches its
  # arm's process, every fold of it.
  again = BatchedFakeLauncher()
  assert run_compare(tmp_path, again, batch_folds=True) == 0
  assert again.calls == []
  os.remove(tmp_path / "runs/ifgan/baseline/seed0_batched/fold_2/eval/"
            "report.json")
  lines = []
  assert run_compare(tmp_path, again, batch_folds=True, dry_run=True,
                     out=lines.append) == 0
  text = "\n".join(lines)
  assert text.count("--config.train.batch_folds=True") == 1
  assert text.count("done (retrained)") == 2
  assert run_compare(tmp_path, again, batch_folds=True) == 0
  assert again.calls == [("ifgan", "baseline", 0, (0, 1, 2))]
  # A subset of the folds cannot be batched.
  assert run_compare(tmp_path, again, batch_folds=True, folds=[0, 1]) == 2
  assert "--batch_folds trains every fold" in capsys.readouterr().err


def test_batched_process_that_dies_fails_its_missing_folds(tmp_path, capsys):
  launcher = BatchedFakeLauncher(fail=[("gndl", "oracle")])
  assert run_compare(tmp_path, launcher, batch_folds=True,
                     methods=["gndl"]) == 1
  out = read_json(tmp_path / "compare.json")
  # The process failed: none of its folds counts, though fold 0 wrote its
  # report (as a separate run that exits non-zero does not count).
  assert sorted((f["arm"], f["fold"]) for f in out["failures"]) == [
      ("oracle", 0), ("oracle", 1), ("oracle", 2)]
  assert out["failures"][0]["log"] == "runs/gndl/oracle/seed0_batched/log.txt"
  assert len(out["runs"]) == 6
  # --restart is not needed: the rerun resumes the process.
  assert run_compare(tmp_path, BatchedFakeLauncher(), batch_folds=True,
                     methods=["gndl"]) == 0
  assert "FAILED" in capsys.readouterr().err


def test_running_batched_process_is_refused(tmp_path, capsys):
  """A batched process still training (its running.json in the folds'
  common directory) refuses a second compare on any of its folds."""
  runs = cmp.plan_runs(PRESETS["t"], ["ifgan"], ARMS,
                       selected={"ifgan": ("ifgan",)}, batch_folds=True)
  group = tmp_path / runs[0].group_dir
  group.mkdir(parents=True)
  proc = subprocess.Popen([sys.executable, "-c", "import time; "
                           "time.sleep(120)", "fer_jax.main",
                           f"--workdir={group}"])
  try:
    (group / "running.json").write_text(json.dumps({"pid": proc.pid}))
    cmdline = f"/proc/{proc.pid}/cmdline"
    for _ in range(400):  # until the child has exec'd its command line
      if not os.path.exists(cmdline) or b"fer_jax.main" in open(
          cmdline, "rb").read():
        break
      time.sleep(0.05)
    for r in runs:
      d = tmp_path / r.rel_dir
      d.mkdir()
      (d / "run_spec.json").write_text(json.dumps(r.spec()))
      assert cmp.run_state(r, str(d)).status == "running"
    launcher = BatchedFakeLauncher()
    assert run_compare(tmp_path, launcher, batch_folds=True,
                       methods=["ifgan"]) == 2
    assert launcher.calls == []
    assert "is still training it" in capsys.readouterr().err
  finally:
    proc.kill()
    proc.wait()


@pytest.mark.slow
def test_end_to_end_batched_folds_match_separate_runs(tmp_path, monkeypatch):
  """Real fer_jax.main subprocesses: each arm's 2 folds batched in one
  process give the separate runs' accuracies, and their fold directories'
  config.json is what a separate run of the fold resolves to (done, no
  drift). Threefry keys, as runs use (rbg's bits differ under vmap:
  tests/test_batched_folds.py)."""
  monkeypatch.setenv("FER_JAX_DATA_DIR", str(tmp_path / "tfds"))
  monkeypatch.setenv("JAX_DEFAULT_PRNG_IMPL", "threefry2x32")
  arms, presets, kw = toy_tables()
  wd = tmp_path / "cmp"
  assert cmp.compare("tiny", str(wd), batch_folds=True, **kw) == 0
  assert cmp.compare("tiny", str(wd), **kw) == 0
  assert len(read_json(wd / "compare.json")["runs"]) == 4
  for run in cmp.plan_runs(presets["tiny"], ["toy"], arms,
                           batch_folds=True):
    assert cmp.run_state(run, str(wd / run.rel_dir)).status == "done"
    report = read_json(wd / run.rel_dir / "eval" / "report.json")
    separate = read_json(wd / dataclasses.replace(run, batched=False).rel_dir
                         / "eval" / "report.json")
    assert report["fold"] == run.fold and report["step"] == 3
    assert report["accuracy"] == separate["accuracy"]
  launched = []
  assert cmp.compare("tiny", str(wd), batch_folds=True,
                     launcher=launched.append, **kw) == 0
  assert launched == []

