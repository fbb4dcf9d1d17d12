"""The throughput benchmark runs and counts FLOPs from the lowered HLO."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

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
  assert 0.3 * expected < r["hlo_gflops_per_step"] * 1e9 < 3 * expected


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
  assert abs(r["hlo_gflops_per_step"] - plain["hlo_gflops_per_step"]) < (
      0.01 * plain["hlo_gflops_per_step"])
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


def test_hlo_flops_of_a_matmul_and_its_cpu_fallback():
  import jax.numpy as jnp
  a = jnp.ones((32, 64), jnp.float32)
  b = jnp.ones((64, 16), jnp.float32)
  flops = throughput.hlo_flops(lambda x, y: x @ y, a, b)
  assert flops == 2 * 32 * 64 * 16
