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
          yield ev.name, ev.duration_ns, _hlo_op(ev)
    return
  for plane in space.planes:
    for line in plane.lines:
      if "XLA Ops" not in line.name and "tf_XLA" not in line.name and \
          not line.name.startswith("tf_"):
        continue
      for ev in line.events:
        if ev.name.startswith("ThunkExecutor"):
          continue  # the CPU runtime's wrapper around the ops
        yield ev.name, ev.duration_ns, ev.name


def _hlo_op(ev) -> str:
  """The HLO instruction a kernel event ran (GPU traces name it in an
  'hlo_op' stat; 'tf_op' there holds only 'XlaModule:')."""
  stats = {key: str(value) for key, value in ev.stats}
  for key in ("hlo_op", "long_name", "tf_op"):
    if stats.get(key) and stats[key] != "XlaModule:":
      return stats[key]
  return ""


def source_of(hlo_text: str, op: str) -> str:
  """The jax op path and source line XLA recorded for instruction ``op`` in
  the optimised HLO text (a fusion: its root's), or ''."""
  m = re.search(r"%" + re.escape(op) + r" = [^\n]*", hlo_text)
  if not m:
    return ""
  line = m.group(0)
  called = re.search(r"calls=%([\w.\-]+)", line)
  if called and "metadata" not in line:
    body = re.search(r"%" + re.escape(called.group(1)) +
                     r" [^{]*\{(.*?)\n\}", hlo_text, re.S)
    if body:
      roots = [l for l in body.group(1).splitlines() if "ROOT" in l]
      line = roots[0] if roots else line
  name = re.search(r'op_name="([^"]*)"', line)
  src = re.search(r'source_file="([^"]*)" source_line=(\d+)', line)
  where = f" @ {os.path.basename(src.group(1))}:{src.group(2)}" if src else ""
  return (name.group(1)[-110:] if name else "") + where


def summarize(trace_dir: str, steps: int = 1, top: int = 15,
              hlo_text: str | None = None) -> dict:
  """{'total_ms_per_step', 'by_kind': {kind: ms/step}, 'top': [(name,
  ms/step, calls/step, hlo op, its jax source)]} over the newest trace in
  ``trace_dir``; ``hlo_text`` (the compiled program's ``as_text()``) maps
  kernels back to the jax code that made them."""
  files = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"),
                           recursive=True), key=os.path.getmtime)
  if not files:
    raise FileNotFoundError(f"no *.xplane.pb under {trace_dir}")
  space = jax.profiler.ProfileData.from_file(files[-1])
  by_name = collections.defaultdict(lambda: [0.0, 0, ""])
  for name, ns, op in _events(space):
    key = (name, op)
    by_name[key][0] += ns / 1e6
    by_name[key][1] += 1
  by_kind = collections.defaultdict(float)
  for (name, op), (ms, _, _) in by_name.items():
    by_kind[kind_of(name + " " + op)] += ms
  total = sum(by_kind.values())
  ranked = sorted(by_name.items(), key=lambda kv: -kv[1][0])[:top]
  return {
      "total_ms_per_step": total / steps,
      "by_kind": {k: v / steps for k, v in
                  sorted(by_kind.items(), key=lambda kv: -kv[1])},
      "top": [(n[:90], ms / steps, c / steps, op,
               source_of(hlo_text, op) if hlo_text and op else "")
              for (n, op), (ms, c, _) in ranked],
  }


def format_summary(s: dict) -> str:
  lines = [f"device time per step: {s['total_ms_per_step']:.2f} ms"]
  lines += [f"  {k:16s} {v:8.2f} ms ({100 * v / max(s['total_ms_per_step'], 1e-9):.0f}%)"
            for k, v in s["by_kind"].items()]
  lines += ["  top kernels (ms/step, calls/step):"]
  for n, ms, c, op, src in s["top"]:
    lines.append(f"    {ms:8.3f} {c:5.1f}  {n}  [{op}] {src}")
  return "\n".join(lines)


if __name__ == "__main__":
  args = [a for a in sys.argv[1:] if not a.startswith("--steps=")]
  n = next((int(a.split("=")[1]) for a in sys.argv[1:]
            if a.startswith("--steps=")), 1)
  print(format_summary(summarize(args[0], n)))
