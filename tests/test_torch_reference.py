"""The PyTorch twins of fer_jax's training steps (benchmarks/torch_reference)
are the same work: equal parameters per network and equal convolution and
matmul FLOPs per step; and the side-by-side script's table and its
benchmarks/RESULTS.md section.

FLOPs: fer_jax's side is benchmarks/flop_count.py's ``matmul_flops`` of the
plain step's jaxpr (convolutions and dots; the elementwise work is left
out because torch's FlopCounterMode counts only matmuls and convolutions).
torch's side is FlopCounterMode over one whole twin step (forward, every
backward, the optimizer), with its convolution formulas replaced by
real-tap ones (torch_reference/flops.py: torch counts the taps on padding
too, flop_count does not). The two are sums of the same integers, so the
tolerance is float rounding (1e-9 relative): a missing or extra pass (a
weight gradient of a frozen network, an unused head) moves it by far more.
"""

from __future__ import annotations

import ast
import json
import os
import sys

import pytest

torch = pytest.importorskip("torch")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from fer_jax.config_lib import load_config_module  # noqa: E402

from torch_reference import parity  # noqa: E402
from torch_reference import steps as twin_steps  # noqa: E402


def _tiny(name):
  return load_config_module(os.path.join(ROOT, "configs", name)).get_config(
      "tiny")


# (config file, phase, what the twin trains): each suite step, tiny.
CASES = [
    ("gndl.py", None),
    ("ifgan.py", None),
    ("cgan_wsc.py", "cgan"),
    ("sna.py", "fer_sna"),
    ("sna.py", "ae_refine"),
    ("groupgan.py", None),
]


@pytest.mark.parametrize("config_file,phase", CASES,
                         ids=[f"{c[:-3]}:{p or 'last'}" for c, p in CASES])
def test_twin_has_fer_jax_params_and_flops(config_file, phase):
  cfg = _tiny(config_file)
  p = parity.check(cfg, phase=phase)
  assert p.torch_params == p.jax_params
  assert all(n > 0 for n in p.jax_params.values())
  assert p.jax_matmul_flops > 0
  assert parity.relative_gap(p.torch_flops, p.jax_matmul_flops) < 1e-9, (
      p.torch_flops, p.jax_matmul_flops)
  # torch's own formula also counts the taps on padding: strictly more.
  assert p.torch_flops_all_taps > p.torch_flops


def test_frozen_networks_get_no_weight_gradient_pass():
  """The count sees a wrong gradient routing: cGAN's generator step with
  D's weights left trainable runs D's weight-gradient convolutions too."""
  cfg = _tiny("cgan_wsc.py")
  p = parity.check(cfg, phase="cgan")
  torch.manual_seed(0)
  twin = twin_steps.build(cfg, 6, "cpu", "cgan")
  original = twin_steps.frozen
  try:
    twin_steps.frozen = lambda *m: __import__("contextlib").nullcontext()
    from torch_reference import flops  # pylint: disable=import-outside-toplevel
    leaky, _ = flops.count(twin.step, twin.make_batch(0))
  finally:
    twin_steps.frozen = original
  assert leaky > p.jax_matmul_flops * (1 + 1e-3)


def test_twin_steps_train_in_fp32_and_amp():
  """A step changes every trained network's parameters and returns a
  finite loss, in float32 and in bf16 autocast with channels_last."""
  cfg = _tiny("gndl.py")
  for mode in ("fp32", "amp"):
    torch.manual_seed(0)
    twin = twin_steps.build(cfg, 7, "cpu")
    twin.set_mode(mode)
    before = [p.detach().clone() for p in twin.nets["net"].parameters()]
    loss = twin.step(twin.make_batch(0))
    assert torch.isfinite(loss)
    after = list(twin.nets["net"].parameters())
    moved = sum(not torch.equal(a, b) for a, b in zip(before, after))
    assert moved == len(before), (mode, moved, len(before))


def test_fer_jax_does_not_import_the_twins_and_torch_stays_optional():
  """torch is benchmark- and test-only: fer_jax never imports the twins,
  and only the ImageNet weight import touches torch."""
  allowed = {os.path.join("fer_jax", "models", "torch_import.py"),
             os.path.join("fer_jax", "tools", "import_weights.py")}
  for d, _, files in os.walk(os.path.join(ROOT, "fer_jax")):
    for f in files:
      if not f.endswith(".py"):
        continue
      path = os.path.join(d, f)
      names = set()
      for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
          names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
          names.add(node.module.split(".")[0])
      assert "torch_reference" not in names, path
      if "torch" in names:
        assert os.path.relpath(path, ROOT) in allowed, path


# ------------------------------------------------ the side-by-side script
def _records():
  def t(entry, pass_no, runner, *times):
    return [dict(kind="timing", entry=entry, pass_no=pass_no, runner=runner,
                 rep=i, step_s=s) for i, s in enumerate(times)]
  rec = [dict(kind="versions", entry="gndl:last:b128", pass_no=1,
              jax="0.11.2", torch="2.11.0", jax_device="NVIDIA H100",
              torch_device="NVIDIA H100 80GB HBM3", cuda="13.0",
              cudnn="91000"),
         dict(kind="flops", entry="gndl:last:b128", pass_no=1,
              matmul_flops=2.0e12),
         dict(kind="setup", entry="gndl:last:b128", pass_no=1,
              runner="fer_jax", compile_s=12.0, batch=128)]
  rec += t("gndl:last:b128", 1, "fer_jax", 0.010, 0.011, 0.012)
  rec += t("gndl:last:b128", 1, "fp32", 0.050, 0.051, 0.052)
  rec += t("gndl:last:b128", 1, "amp", 0.020, 0.021, 0.019)
  # Pass 2 (compile) is the comparison: fer_jax 0.012, best torch 0.015.
  rec += t("gndl:last:b128", 2, "compile", 0.015, 0.016, 0.015)
  rec += t("gndl:last:b128", 2, "fer_jax", 0.012, 0.012, 0.013)
  rec += t("gndl:last:b128", 2, "amp", 0.020, 0.020, 0.020)
  rec += [dict(kind="child", entry="gndl:last:b128", pass_no=2,
               status="ok"),
          dict(kind="child", entry="ifgan:last:b50", pass_no=1,
               status="timeout")]
  return rec


def test_summary_takes_the_ratio_from_one_pass():
  import side_by_side  # pylint: disable=import-outside-toplevel
  rows = side_by_side.summarise(_records())
  gndl, ifgan = rows
  assert gndl["jax_s"] == pytest.approx(0.012)
  assert gndl["best"] == (pytest.approx(0.015), "compile")
  assert gndl["ratio"] == pytest.approx(1.25)
  assert gndl["median"]["fp32"] == pytest.approx(0.051)
  assert ifgan["ratio"] is None and ifgan["status"] == {1: "timeout"}
  text = side_by_side.section(rows, dry_run=False, command="x")
  assert "DRY RUN" not in text
  line = next(l for l in text.splitlines() if l.startswith("| gndl"))
  # 128 / 0.012 s; 2e12 / 0.012 s / 989e12 (H100 bf16 peak) = 16.9%.
  assert "| 10667 | 1.25x | no | 2000.0 | 16.9% |" in line, line
  assert "compile 13.5%" in line, line
  bad = next(l for l in text.splitlines() if l.startswith("| ifgan"))
  assert "pass 1: timeout" in bad and "compile skipped" in bad


def test_section_is_rewritten_in_place_and_labels_a_dry_run(tmp_path):
  import side_by_side  # pylint: disable=import-outside-toplevel
  path = tmp_path / "results_copy.md"
  path.write_text("# Throughput results\n\nhand-written\n")
  rows = side_by_side.summarise(_records())
  side_by_side.write_section(str(path), side_by_side.section(rows, True, "a"))
  side_by_side.write_section(str(path), side_by_side.section(rows, False,
                                                             "b"))
  text = path.read_text()
  assert text.startswith("# Throughput results\n\nhand-written\n")
  assert text.count(side_by_side.BEGIN) == 1 and text.count(
      side_by_side.END) == 1
  assert "DRY RUN" not in text and "```bash\nb\n```" in text
  side_by_side.write_section(str(path), side_by_side.section(rows, True, "c"))
  assert "DRY RUN on the CPU" in path.read_text()
  json.dumps(rows)  # the rows are plain data


@pytest.mark.slow
def test_dry_run_end_to_end(tmp_path):
  """The one-call script on the CPU at tiny sizes, GNDL only: both passes,
  the table written with the dry-run label (minutes on 2 shared cores)."""
  import subprocess  # pylint: disable=import-outside-toplevel
  results = tmp_path / "results_copy.md"
  proc = subprocess.run(
      [sys.executable, os.path.join(ROOT, "benchmarks", "side_by_side.py"),
       "--dry_run", "--only=gndl", "--reps=2", "--steps=2", "--warmup=1",
       f"--jsonl={tmp_path / 'r.jsonl'}", f"--results={results}",
       f"--jax_cache={tmp_path / 'xla'}", "--entry_budget_s=600",
       "--compile_budget_s=300", "--budget_s=1200"],
      capture_output=True, text=True, timeout=1500, check=False,
      env=dict(os.environ, PYTHONPATH=ROOT))
  assert proc.returncode == 0, proc.stdout + proc.stderr
  text = results.read_text()
  assert "DRY RUN on the CPU" in text
  line = next(l for l in text.splitlines() if l.startswith("| gndl"))
  assert "fp32 skipped" not in line and "amp skipped" not in line, line
