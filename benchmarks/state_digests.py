"""Every method's state digest after a fixed few-step run: the record of
what training computes, to the last bit, on one platform.

  python benchmarks/state_digests.py             # print {method: digest}
  python benchmarks/state_digests.py --check     # compare with the record
  python benchmarks/state_digests.py --record    # write the record anew

Each method trains its ``:tiny`` preset (a few steps per phase, narrow nets)
on one in-memory table (tests/conftest.build_table: 6 subjects, 16 px,
landmarks) and the digest is eval/report.json's ``state_digest``. CPU,
counter-based keys as in the tests (tests/conftest.py), so the numbers are
the suite's; tests/test_state_digests.py checks them in CI.

Why: a change that moves the step's floating-point results by one bit
(294ecd2's non-finite guard did, through XLA:CPU's fusion) makes every
committed run in docs/results irreproducible, since training grows that
bit into points of accuracy. Such a change must be made on purpose: its
commit re-records (``--record``) and says which committed runs it leaves
behind. The digests depend on the platform (XLA compiles for the host's
vector instructions), so the record names the one it was taken on
(``platform_key``) and is checked only there.
"""

from __future__ import annotations

import json
import os
import platform
import re
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
# The host's vector-instruction flags (/proc/cpuinfo): what XLA:CPU's code
# generation, and so the rounding, can depend on.
_ISA_FLAG = re.compile(r"^(sse\d.*|ssse3|avx.*|fma.*|amx.*|f16c)$")


def cpu_isa() -> list[str]:
  """The host CPU's vector-instruction flags, sorted ([] where the kernel
  does not list them, as on macOS)."""
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith(("flags", "Features")):
          return sorted(x for x in line.split(":", 1)[1].split()
                        if _ISA_FLAG.match(x))
  except OSError:
    pass
  return []


def platform_key() -> dict:
  """What the digests depend on besides the code: library versions (the
  constraints file pins them in CI), the architecture and its vector
  instructions, the key implementation."""
  import jax  # pylint: disable=import-outside-toplevel
  import jaxlib  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  return {"jax": jax.__version__, "jaxlib": jaxlib.__version__,
          "numpy": np.__version__, "backend": jax.default_backend(),
          "prng_impl": str(jax.config.jax_default_prng_impl),
          "machine": platform.machine(), "cpu_isa": cpu_isa()}


def tiny_config(method: str):
  """The method's ``:tiny`` preset (its tests' run)."""
  from fer_jax import config_lib  # pylint: disable=import-outside-toplevel
  return config_lib.load_config_module(
      os.path.join(ROOT, "configs", f"{method}.py")).get_config("tiny")


TABLE = dict(num_subjects=6, num_frames=8, image_size=16,
             with_landmarks=True)


def digest(method: str, workdir: str, build_table=None) -> str:
  """Train ``method``'s ``:tiny`` run in ``workdir`` on
  ``build_table(**TABLE)`` (tests/conftest.build_table by default; the
  tests pass their fixture's, since another conftest may own the module
  name there); its state digest."""
  if build_table is None:
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from conftest import build_table  # pylint: disable=import-outside-toplevel
  from fer_jax import train  # pylint: disable=import-outside-toplevel
  from fer_jax.data import run_data  # pylint: disable=import-outside-toplevel
  table = build_table(**TABLE)
  config = tiny_config(method)
  report = train.Trainer(config, workdir,
                         run_data.from_table(config, table)).train()
  with open(os.path.join(workdir, "eval", "report.json")) as f:
    assert json.load(f)["state_digest"] == report["state_digest"]
  return report["state_digest"]


def load_record(path: str = RECORD) -> dict:
  """``{"platform": platform_key() of the recording host, "digests":
  {method: digest}}``."""
  with open(path, encoding="utf-8") as f:
    record = json.load(f)
  if set(record) != {"platform", "digests"}:
    raise ValueError(f"{path}: expected keys 'platform' and 'digests', got "
                     f"{sorted(record)}; write it with --record")
  return record


def platform_difference(record: dict) -> dict:
  """``{field: (recorded, here)}`` where this host differs from the
  record's; empty where the record applies here."""
  here = platform_key()
  return {k: (record["platform"].get(k), v) for k, v in here.items()
          if record["platform"].get(k) != v}


def main(argv) -> int:
  methods = [a for a in argv if not a.startswith("--")] or list(METHODS)
  unknown = sorted(set(methods) - set(METHODS))
  if unknown:
    print(f"state_digests: unknown method(s) {unknown}; one of {METHODS}")
    return 2
  if "--check" in argv:
    record = load_record()
    other = platform_difference(record)
    if other:
      print("state_digests: the record was taken on another platform, "
            f"so it says nothing here: {json.dumps(other)}")
      return 2
  got = {}
  for m in methods:
    with tempfile.TemporaryDirectory() as wd:
      got[m] = digest(m, wd)
    print(f"{m}: {got[m]}", flush=True)
  if "--record" in argv:
    if set(methods) != set(METHODS):
      print("state_digests: --record takes every method")
      return 2
    with open(RECORD, "w", encoding="utf-8") as f:
      json.dump({"platform": platform_key(), "digests": got}, f, indent=2)
      f.write("\n")
    print(f"recorded in {RECORD}")
    return 0
  if "--check" not in argv:
    print(json.dumps(got, indent=2))
    return 0
  want = record["digests"]
  bad = {m: (want.get(m), d) for m, d in got.items() if want.get(m) != d}
  print("state digests " + ("DIFFER (recorded, now): " + json.dumps(bad)
                            if bad else "match the record"))
  return 1 if bad else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
