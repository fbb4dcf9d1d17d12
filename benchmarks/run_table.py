"""A markdown table of finished runs: config differences and test accuracy.

  python benchmarks/run_table.py RUN_DIR [RUN_DIR ...] > table.md

Each RUN_DIR is a fer_jax.main workdir. Columns: the run, its method, the
config fields that differ between the runs given (from each config.json),
steps, the test accuracy at every evaluation (metrics.jsonl) and the final
report's. For recording side runs (development on a held-out synthetic
population, ablations) with the figures their own files hold.
"""

from __future__ import annotations

import json
import os
import sys


def _flat(d, prefix=""):
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(_flat(v, key + "."))
    else:
      out[key] = v
  return out


def table(run_dirs) -> str:
  configs = {}
  for r in run_dirs:
    with open(os.path.join(r, "config.json")) as f:
      configs[r] = _flat(json.load(f))
  # A field's usual value: the most common among the runs that have it.
  usual = {}
  for k in set().union(*configs.values()):
    values = [json.dumps(c[k], sort_keys=True) for c in configs.values()
              if k in c]
    usual[k] = max(set(values), key=values.count)
  lines = ["| run | method | fields that differ from the other runs | steps "
           "| test accuracy by step | final |",
           "| --- | --- | --- | --- | --- | --- |"]
  for r in run_dirs:
    c = configs[r]
    diff = [f"{k}={json.dumps(v)}" for k, v in sorted(c.items())
            if json.dumps(v, sort_keys=True) != usual[k]
            and k not in ("method", "train.num_steps")]
    evals = []
    with open(os.path.join(r, "metrics.jsonl")) as f:
      for line in f:
        m = json.loads(line)
        if "test/accuracy" in m:
          evals.append(f"{m['step']}: {100 * m['test/accuracy']:.1f}")
    report = os.path.join(r, "eval", "report.json")
    final = "-"
    if os.path.exists(report):
      with open(report) as f:
        final = f"{100 * json.load(f)['accuracy']:.1f}%"
    lines.append("| " + " | ".join([
        os.path.basename(os.path.normpath(r)), str(c.get("method")),
        ", ".join(diff) or "-", str(c.get("train.num_steps")),
        "; ".join(evals), final]) + " |")
  return "\n".join(lines) + "\n"


if __name__ == "__main__":
  if len(sys.argv) < 2:
    sys.exit(__doc__)
  sys.stdout.write(table(sys.argv[1:]))
