"""Every method's state digest after a fixed few-step run: a refactor that
claims to change no behaviour must leave these equal.

  python benchmarks/state_digests.py            # print {method: digest}
  python benchmarks/state_digests.py --check    # compare with state_digests.json

Each method trains its ``:tiny`` preset (a few steps per phase, narrow nets) on
one in-memory table (tests/conftest.build_table, landmarks included) and the
digest is eval/report.json's state_digest. CPU, counter-based keys as in the
tests (tests/conftest.py), so the numbers are the suite's.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_DEFAULT_PRNG_IMPL", "rbg")
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    os.path.join(tempfile.gettempdir(), "fer_jax_test_xla_cache"))

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RECORD = os.path.join(HERE, "state_digests.json")
METHODS = ("baseline", "gndl", "ifgan", "groupgan", "cgan_wsc", "sna")


def tiny_config(method: str):
  """The method's ``:tiny`` preset (its tests' run). The record was taken
  with these fields set here by hand, before the presets existed."""
  from fer_jax import config_lib  # pylint: disable=import-outside-toplevel
  return config_lib.load_config_module(
      os.path.join(ROOT, "configs", f"{method}.py")).get_config("tiny")


def digest(method: str, workdir: str) -> str:
  sys.path.insert(0, os.path.join(ROOT, "tests"))
  from conftest import build_table  # pylint: disable=import-outside-toplevel
  from fer_jax import train  # pylint: disable=import-outside-toplevel
  from fer_jax.data import run_data  # pylint: disable=import-outside-toplevel
  table = build_table(num_subjects=6, num_frames=8, image_size=32,
                      with_landmarks=True)
  config = tiny_config(method)
  report = train.Trainer(config, workdir,
                         run_data.from_table(config, table)).train()
  with open(os.path.join(workdir, "eval", "report.json")) as f:
    assert json.load(f)["state_digest"] == report["state_digest"]
  return report["state_digest"]


def main(argv) -> int:
  methods = [a for a in argv if not a.startswith("--")] or METHODS
  got = {}
  for m in methods:
    with tempfile.TemporaryDirectory() as wd:
      got[m] = digest(m, wd)
    print(f"{m}: {got[m]}", flush=True)
  if "--check" not in argv:
    print(json.dumps(got, indent=2))
    return 0
  with open(RECORD) as f:
    want = json.load(f)
  bad = {m: (want.get(m), d) for m, d in got.items() if want.get(m) != d}
  print("state digests " + ("DIFFER: " + json.dumps(bad) if bad else
                            "match the record"))
  return 1 if bad else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
