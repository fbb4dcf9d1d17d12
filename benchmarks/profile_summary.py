"""Where a traced step spends device time: kernels summed by name and by
kind (convolution, matmul, fusion, copy/transpose, reduction, ...).

  python benchmarks/profile_summary.py TRACE_DIR [--steps=5]

Reads the ``.xplane.pb`` that ``jax.profiler.trace`` writes, with
``jax.profiler.ProfileData`` (no TensorBoard needed). On a GPU the kernels
are the events of the ``/device:GPU:N`` planes; on a CPU (no device plane)
the XLA ops of the host threads are used instead.
"""

from __future__ import annotations

import collections
import glob
import os
import re
import sys

import jax

KINDS = (  # (kind, pattern on the kernel name), first match wins
    ("convolution", r"conv|cudnn|xmma|implicit|wgrad|dgrad|fprop|sm90_x"),
    ("matmul", r"gemm|cublas|matmul|dot|cutlass"),
    ("copy/transpose", r"copy|transpose|memcpy|memset"),
    ("reduction", r"reduce|reduction"),
    ("gather/scatter", r"gather|scatter|dynamic"),
    ("fusion", r"fusion|loop_|input_"),
)


def kind_of(name: str) -> str:
  low = name.lower()
  for kind, pattern in KINDS:
    if re.search(pattern, low):
      return kind
  return "other"


def _events(space):
  devices = [p for p in space.planes if p.name.startswith("/device:")]
  if devices:
    for plane in devices:
      for line in plane.lines:
        # Kernel (stream) lines; skip the per-op/step summary lines.
        if "XLA Ops" in line.name or "Steps" in line.name or \
            "Modules" in line.name:
          continue
        for ev in line.events:
          yield ev.name, ev.duration_ns
    return
  for plane in space.planes:
    for line in plane.lines:
      if "XLA Ops" not in line.name and "tf_XLA" not in line.name and \
          not line.name.startswith("tf_"):
        continue
      for ev in line.events:
        if ev.name.startswith("ThunkExecutor"):
          continue  # the CPU runtime's wrapper around the ops
        yield ev.name, ev.duration_ns


def summarize(trace_dir: str, steps: int = 1, top: int = 15) -> dict:
  """{'total_ms_per_step', 'by_kind': {kind: ms/step}, 'top': [(name,
  ms/step, calls/step)]} over the newest trace in ``trace_dir``."""
  files = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"),
                           recursive=True), key=os.path.getmtime)
  if not files:
    raise FileNotFoundError(f"no *.xplane.pb under {trace_dir}")
  space = jax.profiler.ProfileData.from_file(files[-1])
  by_name = collections.defaultdict(lambda: [0.0, 0])
  for name, ns in _events(space):
    by_name[name][0] += ns / 1e6
    by_name[name][1] += 1
  by_kind = collections.defaultdict(float)
  for name, (ms, _) in by_name.items():
    by_kind[kind_of(name)] += ms
  total = sum(by_kind.values())
  ranked = sorted(by_name.items(), key=lambda kv: -kv[1][0])[:top]
  return {
      "total_ms_per_step": total / steps,
      "by_kind": {k: v / steps for k, v in
                  sorted(by_kind.items(), key=lambda kv: -kv[1])},
      "top": [(n[:120], ms / steps, c / steps) for n, (ms, c) in ranked],
  }


def format_summary(s: dict) -> str:
  lines = [f"device time per step: {s['total_ms_per_step']:.2f} ms"]
  lines += [f"  {k:16s} {v:8.2f} ms ({100 * v / max(s['total_ms_per_step'], 1e-9):.0f}%)"
            for k, v in s["by_kind"].items()]
  lines += ["  top kernels (ms/step, calls/step):"]
  lines += [f"    {ms:8.3f} {c:5.1f}  {n}" for n, ms, c in s["top"]]
  return "\n".join(lines)


if __name__ == "__main__":
  args = [a for a in sys.argv[1:] if not a.startswith("--steps=")]
  n = next((int(a.split("=")[1]) for a in sys.argv[1:]
            if a.startswith("--steps=")), 1)
  print(format_summary(summarize(args[0], n)))
