"""Train-step throughput of a method: images/s, step ms, compile s, TFLOP/s.

  python benchmarks/throughput.py --config=configs/gndl.py:ckplus \
      --config.model.dtype=bfloat16 --batch_size=128 --steps=50

The step is the trainer's own (the method's phase step inside the non-finite
guard), jitted with donated state, on random uint8 batches already on the
device, so the figure is the accelerator's, not the input pipeline's. FLOPs
come from the lowered, unoptimised HLO (``jit(f).lower(...).cost_analysis()``):
on GPU the compiled program's cost analysis leaves out cuDNN convolutions.
"""

from __future__ import annotations

import json
import statistics
import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from fer_jax import sharding, train
from fer_jax.data import protocols
from fer_jax.data.classes import resolve_class_set
from fer_jax.methods import method_class

_CONFIG = config_flags.DEFINE_config_file("config", None, "Method config.")
_BATCH = flags.DEFINE_integer("batch_size", None, "Global batch (default: "
                              "the config's).")
_PHASE = flags.DEFINE_string("phase", None, "Phase to time (default: last).")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed steps after warm-up.")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps after compiling.")
_JSON = flags.DEFINE_string("json_out", None, "Append the result as JSON here.")


def random_batch(phase, image_shape, num_classes, mesh, seed=0):
  rng = np.random.default_rng(seed)
  b = phase.batch_size
  local = {s: rng.integers(0, 256, (b,) + image_shape, dtype=np.uint8)
           for s in protocols.EXAMPLE_KINDS[phase.example_kind]}
  local["label"] = rng.integers(0, num_classes, (b,), dtype=np.int32)
  return sharding.to_global(local, mesh)


def benchmark(config, batch_size=None, phase_name=None, steps=20, warmup=3):
  if batch_size:
    config.train.batch_size = batch_size
  mesh = sharding.make_mesh()
  num_classes = len(resolve_class_set(config.data.classes))
  method = method_class(config.method)(
      config, num_classes=num_classes, count_examples=lambda k, r: 10_000)
  phases = method.phases()
  phase = (phases[-1] if phase_name is None
           else next(p for p in phases if p.name == phase_name))
  # Frames arrive at the size the builder stored them; the step resizes.
  s = (config.data.synth.image_size if config.data.name == "fer_synth"
       else config.data.resize)
  image_shape = (s, s, 1 if config.data.grey else 3)
  method.prepare_for_benchmark(image_shape)
  batch = random_batch(phase, image_shape, num_classes, mesh)
  loop = jax.jit(lambda: train.init_loop_state(method, 0, batch),
                 out_shardings=sharding.replicated(mesh))()
  step = jax.jit(train.guarded_step(phase.step, True), donate_argnums=0)

  t0 = time.perf_counter()
  lowered = step.lower(loop, batch)
  cost = lowered.cost_analysis() or {}
  flops = float(cost.get("flops", 0.0))
  compiled = lowered.compile()
  compile_s = time.perf_counter() - t0

  for _ in range(warmup):
    loop, m = compiled(loop, batch)
  jax.block_until_ready(loop)
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    loop, m = compiled(loop, batch)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t)
  med = statistics.median(times)
  images = phase.batch_size * len(protocols.EXAMPLE_KINDS[phase.example_kind])
  dev = jax.devices()[0]
  mem = dev.memory_stats() or {}
  return {
      "method": config.method, "phase": phase.name,
      "batch": phase.batch_size, "images_per_step": images,
      "image_size": s, "dtype": config.model.dtype,
      "device": f"{jax.device_count()}x {dev.device_kind}",
      "step_ms": 1e3 * med, "images_per_sec": images / med,
      "compile_s": compile_s, "hlo_gflops_per_step": flops / 1e9,
      "achieved_tflops": flops / med / 1e12,
      "peak_mem_gb": mem.get("peak_bytes_in_use", 0) / 2**30,
      "jax": jax.__version__,
  }


def main(argv):
  del argv
  result = benchmark(_CONFIG.value, _BATCH.value, _PHASE.value, _STEPS.value,
                     _WARMUP.value)
  print(json.dumps(result, indent=2))
  if _JSON.value:
    with open(_JSON.value, "a") as f:
      f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
