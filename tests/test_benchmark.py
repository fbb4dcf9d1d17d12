"""The throughput benchmark runs and counts FLOPs from the lowered HLO."""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import flop_count  # noqa: E402
import throughput  # noqa: E402

from fer_jax.config_lib import load_config_module  # noqa: E402


def test_benchmark_reports_images_per_second_and_flops():
  cfg = load_config_module(os.path.join(ROOT, "configs", "gndl.py")
                           ).get_config()
  cfg.data.synth.image_size = cfg.data.resize = cfg.data.crop = 32
  cfg.model.base_width = 8
  r = throughput.benchmark(cfg, batch_size=4, steps=2, warmup=1)
  assert r["images_per_step"] == 8  # 4 pairs
  assert r["images_per_sec"] > 0 and r["step_ms"] > 0
  # ResNet-18 at width 8 on 32x32: forward ~1/64 of 224x224 width 64's
  # 3.6 GFLOP scaled by (32/224)^2; training ~3x forward, for 8 images.
  per_image_fwd = 3.6e9 / 64 * (32 / 224) ** 2
  expected = 3 * 8 * per_image_fwd
  assert 0.3 * expected < r["gflops_per_step"] * 1e9 < 3 * expected
  # The jaxpr count agrees with the CPU's lowered-HLO count of the step.
  one, loop, host = throughput.one_step(throughput.plain(cfg), batch_size=4)
  hlo = throughput.hlo_flops(one, loop, host, None)
  assert abs(r["gflops_per_step"] * 1e9 / hlo - 1) < 0.01
  assert 0.7 * r["gflops_per_step"] < r["matmul_gflops_per_step"] <= (
      r["gflops_per_step"])
  import suite  # pylint: disable=import-outside-toplevel
  row = suite.table([r]).splitlines()[-1]
  assert row.startswith("| gndl | gndl | 4 |"), row
  assert f"| {r['gflops_per_step']:.1f} |" in row


def test_scanned_resident_variant_and_profile_summary(tmp_path):
  cfg = load_config_module(os.path.join(ROOT, "configs", "gndl.py")
                           ).get_config()
  cfg.data.synth.image_size = cfg.data.resize = cfg.data.crop = 32
  cfg.model.base_width = 8
  plain = throughput.benchmark(cfg, batch_size=4, steps=2, warmup=1)
  r = throughput.benchmark(cfg, batch_size=4, steps=4, warmup=1, group=2,
                           on_device_data=True,
                           profile_dir=str(tmp_path / "trace"))
  assert r["group"] == 2 and r["resident"]
  # FLOPs are one step's either way (the gather adds next to nothing).
  assert abs(r["gflops_per_step"] - plain["gflops_per_step"]) < (
      0.01 * plain["gflops_per_step"])
  prof = r["profile"]
  assert prof["total_ms_per_step"] > 0
  assert prof["by_kind"].get("convolution", 0) > 0, prof["by_kind"]


def test_every_suite_entry_names_a_real_phase():
  """Cheap guard for a device lease: each entry's config loads and its
  phase exists (no compile)."""
  import suite  # pylint: disable=import-outside-toplevel
  from fer_jax.data.classes import resolve_class_set
  from fer_jax.methods import method_class
  for entry in suite.ENTRIES:
    cfg = suite.config_for(entry, "bfloat16")
    method = method_class(cfg.method)(
        cfg, num_classes=len(resolve_class_set(cfg.data.classes)),
        count_examples=lambda k, r: 10_000)
    names = [p.name for p in method.phases()]
    assert entry.phase is None or entry.phase in names, (entry, names)


def test_hlo_flops_of_a_matmul():
  import jax.numpy as jnp
  a = jnp.ones((32, 64), jnp.float32)
  b = jnp.ones((64, 16), jnp.float32)
  flops = throughput.hlo_flops(lambda x, y: x @ y, a, b)
  assert flops == 2 * 32 * 64 * 16


def _conv(x, w, **kw):
  import jax  # pylint: disable=import-outside-toplevel
  return jax.lax.conv_general_dilated(
      x, w, dimension_numbers=("NHWC", "HWIO", "NHWC"), **kw)


def test_jaxpr_flops_of_convolutions_by_hand_and_against_the_hlo():
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  x, w = jnp.ones((2, 16, 12, 5)), jnp.ones((3, 3, 5, 7))
  same = lambda x, w: _conv(x, w, window_strides=(1, 1), padding="SAME")
  # Valid 3-tap windows per dimension: 16 rows -> 3*16 - 2 taps on the
  # zero border; 12 columns -> 3*12 - 2.
  hand = 2 * 2 * 7 * 5 * (3 * 16 - 2) * (3 * 12 - 2)
  assert flop_count.count(same, x, w).flops == hand
  cases = [same,
           lambda x, w: _conv(x, w, window_strides=(2, 2),
                              padding=((1, 1), (1, 1))),
           # A transposed convolution: taps on the dilation holes are free.
           lambda x, w: _conv(x, w, window_strides=(1, 1),
                              padding=((2, 2), (2, 2)), lhs_dilation=(2, 2)),
           lambda x, w: _conv(x, w, window_strides=(1, 1), padding="VALID",
                              rhs_dilation=(2, 2))]
  for f in cases:
    grad = jax.grad(lambda x, w, f=f: f(x, w).sum(), argnums=(0, 1))
    for fn in (f, grad):
      counted = flop_count.count(fn, x, w)
      assert counted.matmul_flops == counted.flops
      assert counted.flops == throughput.hlo_flops(fn, x, w)
  # Forward + input grad + kernel grad, the unused primal sum dropped.
  grad = jax.grad(lambda x, w: same(x, w).sum(), argnums=(0, 1))
  assert flop_count.count(grad, x, w).flops == 2 * hand
  assert flop_count.count(lambda x, w: (same(x, w), grad(x, w)), x, w
                          ).matmul_flops == 3 * hand


def test_jaxpr_flops_of_dots_scans_conds_and_elementwise_work():
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  a, b = jnp.ones((3, 4, 5)), jnp.ones((3, 5, 6))
  bmm = lambda a, b: jnp.einsum("bij,bjk->bik", a, b)
  assert flop_count.count(bmm, a, b).flops == 2 * 3 * 4 * 5 * 6
  m = jnp.ones((8, 8))
  def scanned(m):
    return jax.lax.scan(lambda c, _: (c @ m + 1.0, None), m, None,
                        length=7)[0]
  c = flop_count.count(scanned, m)
  assert c.matmul_flops == 7 * 2 * 8 ** 3 and c.flops == c.matmul_flops + (
      7 * 64)
  # Dead code is not counted, as jit's lowering drops it: a scan's unused
  # outputs (against the HLO of the unrolled scan) and a call's dead input.
  def dead_ys(m):
    body = lambda c, _: (c @ m, (c @ m) @ m)
    return jax.lax.scan(body, m, None, length=5, unroll=True)[0]
  assert flop_count.count(dead_ys, m).flops == 5 * 2 * 8 ** 3
  assert throughput.hlo_flops(dead_ys, m) == 5 * 2 * 8 ** 3
  dead_arg = lambda m: jax.jit(lambda x, y: x @ x)(m, (m @ m) @ m)
  assert flop_count.count(dead_arg, m).flops == 2 * 8 ** 3
  cube = lambda m: m ** 3  # two multiplies an element
  assert flop_count.count(cube, m).flops == throughput.hlo_flops(cube, m)
  branchy = lambda p, m: jax.lax.cond(p, lambda: m @ m, lambda: m + m)
  # The costlier branch, and the predicate's conversion to an index.
  assert flop_count.count(branchy, True, m).flops == 2 * 8 ** 3 + 1
  assert throughput.hlo_flops(branchy, True, m) == 2 * 8 ** 3 + 1
  # exp is a transcendental (apart, as XLA counts it); the sum folds 63.
  c = flop_count.count(lambda m: jnp.exp(m * 2.0).sum(), m)
  assert (c.flops, c.transcendentals) == (64 + 63, 64)


def test_batched_folds_benchmark_counts_every_folds_work():
  """--folds=2: one vmapped step of two folds' models (train.batch_folds);
  its FLOPs, images and examples count both folds."""
  cfg = load_config_module(os.path.join(ROOT, "configs", "gndl.py")
                           ).get_config()
  cfg.data.synth.image_size = cfg.data.resize = cfg.data.crop = 32
  cfg.model.base_width = 8
  r = throughput.benchmark(cfg, batch_size=4, steps=2, warmup=1, folds=2)
  assert r["folds"] == 2 and r["resident"]
  assert r["images_per_step"] == 2 * 8  # 2 folds x 4 pairs
  one = throughput.step_flops(cfg, batch_size=4)
  # Twice one fold's step (the resident gather adds next to nothing).
  assert abs(r["gflops_per_step"] * 1e9 / (2 * one) - 1) < 0.01
  assert r["examples_per_sec"] == pytest.approx(8 / (r["step_ms"] / 1e3))
  import suite  # pylint: disable=import-outside-toplevel
  row = suite.table([r]).splitlines()[-1]
  assert row.startswith("| gndl | gndl | 4 | 1 | 2 |"), row
