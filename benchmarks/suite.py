"""Every benchmark entry in one process, as a markdown table for RESULTS.md.

  python benchmarks/suite.py [--only=gndl,ifgan] [--dtypes=float32,bfloat16]

Entries are the throughput issue's settings (paper batch and image size per
method). One process keeps a device lease short: run it once per machine.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import throughput  # noqa: E402  pylint: disable=wrong-import-position

from fer_jax.config_lib import load_config_module  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# (name, config file, preset, batch)
ENTRIES = (
    ("gndl", "gndl.py", "ckplus", 128),
    ("ifgan", "ifgan.py", "ckplus", 50),
    # GroupGAN's 2V2 loop (D, D', G, E, C) at 128x128: the paper's batch 4
    # (launch-bound) and 64.
    ("groupgan", "groupgan.py", "ckplus_oulu", 4),
    ("groupgan", "groupgan.py", "ckplus_oulu", 64),
)

_ONLY = flags.DEFINE_list("only", None, "Entry names to run (default all).")
_DTYPES = flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "Dtypes.")
_STEPS = flags.DEFINE_integer("suite_steps", 20, "Timed steps per entry.")
_OUT = flags.DEFINE_string("out", None, "Append JSON lines here too.")


def main(argv):
  del argv
  rows = []
  for name, path, preset, batch in ENTRIES:
    if _ONLY.value and name not in _ONLY.value:
      continue
    for dtype in _DTYPES.value:
      cfg = load_config_module(os.path.join(ROOT, "configs", path)
                               ).get_config(preset)
      cfg.model.dtype = dtype
      r = throughput.benchmark(cfg, batch, steps=_STEPS.value)
      rows.append(r)
      print(json.dumps(r), flush=True)
      if _OUT.value:
        with open(_OUT.value, "a") as f:
          f.write(json.dumps(r) + "\n")
  print("\n| method | phase | batch | size | dtype | device | step ms | "
        "images/s | compile s | HLO GFLOP/step | TFLOP/s | peak GB |")
  print("| --- " * 12 + "|")
  for r in rows:
    print(f"| {r['method']} | {r['phase']} | {r['batch']} | "
          f"{r['image_size']} | {r['dtype']} | {r['device']} | "
          f"{r['step_ms']:.1f} | {r['images_per_sec']:.0f} | "
          f"{r['compile_s']:.1f} | {r['hlo_gflops_per_step']:.1f} | "
          f"{r['achieved_tflops']:.2f} | {r['peak_mem_gb']:.1f} |")


if __name__ == "__main__":
  app.run(main)
