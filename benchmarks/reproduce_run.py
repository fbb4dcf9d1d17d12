"""Retrain a committed run from its run_spec.json and say whether today's
code reproduces it, to the bit (the state digest) and in accuracy.

  python benchmarks/reproduce_run.py docs/results/runs/sna/sna/fold2_seed0
  python benchmarks/reproduce_run.py RUN_DIR [RUN_DIR ...] --keep=/tmp/repro

Why: docs/results holds runs trained at several commits; a change that
moves training's rounding leaves them behind silently (docs/results/
README.md, 294ecd2). tests/test_state_digests.py catches such a change on
the tiny runs when it lands; this checks a committed full-length run.

Each run's command is its run_spec.json's ``module`` and ``args`` (the
arguments the compare gave it, config paths relative to the repository),
run from the repository root with a fresh workdir (deleted afterwards
unless --keep names where to leave it). Exit status 1 if any run differs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def read_json(path: str) -> dict:
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise SystemExit(f"reproduce_run: {path}: {e}") from None


def retrain(run_dir: str, workdir: str) -> dict:
  """Train ``run_dir``'s spec into ``workdir`` (which must not exist: an
  old run there would be resumed, not retrained); {run, trained_at,
  digest, accuracy, seconds}, digest and accuracy as (committed, now)."""
  if os.path.exists(workdir):
    raise SystemExit(f"reproduce_run: {workdir} exists; a retrain needs a "
                     "fresh workdir (give --keep an empty or new folder)")
  spec = read_json(os.path.join(run_dir, "run_spec.json"))
  committed = read_json(os.path.join(run_dir, "eval", "report.json"))
  if spec.get("module") != "fer_jax.main" or "args" not in spec:
    raise SystemExit(f"reproduce_run: {run_dir}/run_spec.json: expected "
                     "module 'fer_jax.main' and its args")
  cmd = [sys.executable, "-m", spec["module"], f"--workdir={workdir}",
         *spec["args"]]
  start = time.time()
  with open(workdir + ".log", "w", encoding="utf-8") as log:
    proc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                          check=False)
  if proc.returncode:
    raise SystemExit(f"reproduce_run: {' '.join(cmd)} exited "
                     f"{proc.returncode} (log: {workdir}.log)")
  now = read_json(os.path.join(workdir, "eval", "report.json"))
  return {"run": run_dir, "trained_at": spec.get("git_commit"),
          "digest": (committed["state_digest"], now["state_digest"]),
          "accuracy": (committed["accuracy"], now["accuracy"]),
          "seconds": round(time.time() - start, 1)}


def main(argv) -> int:
  keep = next((a.split("=", 1)[1] for a in argv if a.startswith("--keep=")),
              None)
  runs = [a for a in argv if not a.startswith("--")]
  if not runs:
    print(__doc__)
    return 2
  differ = 0
  with tempfile.TemporaryDirectory() as scratch:
    base = keep or scratch
    os.makedirs(base, exist_ok=True)
    for i, run_dir in enumerate(runs):
      out = retrain(os.path.abspath(run_dir),
                    os.path.join(base, f"run{i}"))
      same = out["digest"][0] == out["digest"][1]
      differ += not same
      print(json.dumps({**out, "reproduced": same}), flush=True)
  return 1 if differ else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
