"""Train-step throughput of a method: images/s, step ms, compile s, FLOP use.

  python benchmarks/throughput.py --config=configs/gndl.py:ckplus \
      --config.model.dtype=bfloat16 --batch_size=128 --steps=50

The step is the trainer's own (``fer_jax.step_lib.dispatch_step``: the method's
phase step inside the non-finite guard, optionally a ``lax.scan`` of
``--group`` steps and a gather from device-resident frames), jitted with
donated state, on random uint8 batches already on the device, so the figure
is the accelerator's, not the input pipeline's.

FLOPs are counted from the step's jaxpr (``flop_count``: convolutions and
dots by their valid taps, elementwise work as XLA's HLO cost analysis counts
it), so every backend and jax version reports the same figure. They are the
model's math: counted with ``fast_layers`` off, whose rewrites multiply some
zero taps (GNDL's stem: +1.5%). The count agrees with the lowered,
unoptimised HLO's ``cost_analysis()`` (``hlo_flops``; jax 0.11.2 on GPU gives
none, and the compiled program's analysis leaves out cuDNN convolutions)
within 0.05% on every suite step; the benchmark does not lower the step a
second time to report both. Utilisation is achieved FLOP/s over the device's
dense peak for the compute dtype (PEAK_TFLOPS, datasheet).
"""

from __future__ import annotations

import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

import flop_count
from fer_jax import batched_folds, sharding
from fer_jax import steps as step_lib
from fer_jax.data import protocols
from fer_jax.data.classes import resolve_class_set
from fer_jax.methods import method_class

# Dense datasheet peaks (TFLOP/s): bf16 tensor cores, and TF32 for float32
# (XLA's default precision lets cuDNN/cuBLAS use TF32 for fp32 on Hopper).
PEAK_TFLOPS = {
    "H100": {"bfloat16": 989.0, "float32": 494.7},
    "H200": {"bfloat16": 989.0, "float32": 494.7},
    "A100": {"bfloat16": 312.0, "float32": 156.0},
}

def peak_tflops(device, dtype: str) -> float | None:
  for name, peaks in PEAK_TFLOPS.items():
    if name in device.device_kind:
      return peaks[dtype]
  return None


def hlo_flops(fn, *args) -> float | None:
  """FLOPs of ``fn(*args)`` from the lowered, unoptimised HLO, or None where
  the backend reports none (jax 0.11.2 on GPU)."""
  cost = jax.jit(fn).lower(*args).cost_analysis() or {}
  return float(cost["flops"]) if cost.get("flops") else None


def _setup(config, batch_size=None, phase_name=None):
  """(method, phase, image_shape, num_classes) for a config, as the trainer
  would build them, with ``prepare`` stood in by random data."""
  if batch_size:
    config.train.batch_size = batch_size
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
  return method, phase, image_shape, num_classes


def one_step(config, batch_size=None, phase_name=None):
  """(the trainer's one-step dispatch function, abstract loop state, host
  batch) for a phase: what its FLOPs are counted on, from shapes alone."""
  method, phase, image_shape, num_classes = _setup(config, batch_size,
                                                   phase_name)
  host = random_batch(phase, image_shape, num_classes)
  loop = jax.eval_shape(lambda: step_lib.init_loop_state(method, 0, host))
  return step_lib.dispatch_step(phase.step, True, 1, False), loop, host


def plain(config):
  """``config`` with ``model.fast_layers`` off: the model's own math, whose
  FLOPs are counted (the rewrites multiply some zero taps)."""
  config = config.copy_and_resolve_references()
  config.model.fast_layers = False
  return config


def step_flops(config, batch_size=None, phase_name=None) -> float:
  """One training step's FLOPs from shapes alone (its jaxpr: nothing
  lowered, compiled or run), with the plain layers."""
  one, loop, host = one_step(plain(config), batch_size, phase_name)
  return flop_count.count(one, loop, host, None).flops


def _random_images(rng, n, image_shape):
  return rng.integers(0, 256, (n,) + image_shape, dtype=np.uint8)


def random_batch(phase, image_shape, num_classes, seed=0):
  """One host batch of the phase's slots: random frames, labels, landmarks."""
  rng = np.random.default_rng(seed)
  b = phase.batch_size
  batch = {s: _random_images(rng, b, image_shape)
           for s in protocols.EXAMPLE_KINDS[phase.example_kind]}
  if phase.with_landmarks:
    for s in protocols.EXAMPLE_KINDS[phase.example_kind]:
      batch[f"{s}_landmarks"] = rng.uniform(
          0.2, 0.8, (b, 68, 2)).astype(np.float32) * image_shape[0]
  batch["label"] = rng.integers(0, num_classes, (b,), dtype=np.int32)
  return batch


def random_resident(phase, image_shape, num_classes, mesh, frames=None,
                    seed=0):
  """Device-resident stand-in for a training split: ``frames`` random
  frames (default 4 batches' worth) and every slot reading a random row."""
  rng = np.random.default_rng(seed)
  slots = protocols.EXAMPLE_KINDS[phase.example_kind]
  n = frames or 4 * phase.batch_size * len(slots)
  host = {"images": _random_images(rng, n, image_shape),
          "rows": {s: rng.integers(0, n, (n,), dtype=np.int32)
                   for s in slots},
          "label": rng.integers(0, num_classes, (n,), dtype=np.int32)}
  if phase.with_landmarks:
    host["landmarks"] = (rng.uniform(0.2, 0.8, (n, 68, 2)) *
                         image_shape[0]).astype(np.float32)
  return jax.device_put(host, sharding.replicated(mesh)), n


def _timed(fn, loop, batches, data, dispatches):
  t = time.perf_counter()
  for i in range(dispatches):
    loop, m = fn(loop, batches[i % len(batches)], data)
  jax.block_until_ready((loop, m))
  return loop, time.perf_counter() - t


def benchmark(config, batch_size=None, phase_name=None, steps=20, warmup=3,
              group=1, on_device_data=False, profile_dir=None, folds=1):
  """One phase's step timed on random data. ``folds`` > 1: that many
  folds' models trained by one vmapped step (``train.batch_folds``,
  frames device-resident); the rates then count every fold's examples."""
  mesh = sharding.make_mesh()
  on_device_data = on_device_data or folds > 1
  method, phase, image_shape, num_classes = _setup(config, batch_size,
                                                   phase_name)
  s = image_shape[0]
  host = random_batch(phase, image_shape, num_classes)
  loop = jax.jit(lambda: step_lib.init_loop_state(method, 0, host),
                 out_shardings=sharding.replicated(mesh))()
  if folds > 1:  # each fold from its own seed, as different folds differ
    loop = jax.jit(lambda: jax.tree.map(
        lambda *xs: jnp.stack(xs),
        *[step_lib.init_loop_state(method, k, host) for k in range(folds)]),
                   out_shardings=sharding.replicated(mesh))()
  data = None
  rng = np.random.default_rng(1)
  if on_device_data:
    data, n = random_resident(phase, image_shape, num_classes, mesh)
    make = lambda: {"index": rng.integers(0, n, (phase.batch_size,),
                                          dtype=np.int32)}
  else:
    make = lambda: random_batch(phase, image_shape, num_classes,
                                seed=int(rng.integers(1 << 30)))
  # Several different batches (groups), cycled, so no cache sees one input.
  def one_dispatch():
    if group == 1:
      return sharding.to_global(make(), mesh)
    many = [make() for _ in range(group)]
    return sharding.to_global(
        {k: np.stack([b[k] for b in many]) for k in many[0]}, mesh,
        stacked=True)

  batches = [one_dispatch() if folds == 1
             else [one_dispatch() for _ in range(folds)] for _ in range(2)]

  stop = config.train.nonfinite == "stop"
  # Counted on the same step built with the plain layers (same state).
  plain_phase = _setup(plain(config), batch_size, phase_name)[1]
  one = step_lib.dispatch_step(plain_phase.step, stop, 1, on_device_data)
  first = (sharding.to_global(make(), mesh))
  one_loop = loop if folds == 1 else jax.tree.map(lambda x: x[0], loop)
  counted = flop_count.count(one, one_loop, first, data)
  flops = counted.flops * folds
  if folds == 1:
    fn = jax.jit(step_lib.dispatch_step(phase.step, stop, group,
                                        on_device_data), donate_argnums=0)
  else:  # every fold indexes the one random split
    fn = jax.jit(batched_folds.batched_dispatch(
        phase.step, stop, group, [0] * folds, mesh), donate_argnums=0)
  t0 = time.perf_counter()
  compiled = fn.lower(loop, batches[0], data).compile()
  compile_s = time.perf_counter() - t0

  loop, _ = _timed(compiled, loop, batches, data, warmup)
  # Median over repeats of a run of dispatches (no sync between them, as in
  # the trainer), per optimizer step.
  dispatches = max(1, steps // group)
  per_step = []
  for _ in range(5):
    loop, dt = _timed(compiled, loop, batches, data, dispatches)
    per_step.append(dt / (dispatches * group))
  med = statistics.median(per_step)
  profile = None
  if profile_dir:
    from profile_summary import summarize  # pylint: disable=import-outside-toplevel
    with jax.profiler.trace(profile_dir):
      loop, _ = _timed(compiled, loop, batches, data, max(1, 5 // group))
    profile = summarize(profile_dir, steps=max(1, 5 // group) * group,
                        top=25, hlo_text=compiled.as_text())

  slots = len(protocols.EXAMPLE_KINDS[phase.example_kind])
  images = phase.batch_size * slots * folds
  dev = jax.devices()[0]
  mem = dev.memory_stats() or {}
  peak = peak_tflops(dev, config.model.dtype)
  achieved = flops / med / 1e12
  return {
      "method": config.method, "phase": phase.name,
      "batch": phase.batch_size, "images_per_step": images,
      "folds": folds,
      "examples_per_sec": folds * phase.batch_size / med,
      "image_size": s, "dtype": config.model.dtype, "group": group,
      "resident": bool(on_device_data),
      "device": f"{jax.device_count()}x {dev.device_kind}",
      "step_ms": 1e3 * med, "images_per_sec": images / med,
      "compile_s": compile_s, "gflops_per_step": flops / 1e9,
      "matmul_gflops_per_step": folds * counted.matmul_flops / 1e9,
      "achieved_tflops": achieved,
      "utilisation": achieved / peak if peak else None,
      "peak_mem_gb": mem.get("peak_bytes_in_use", 0) / 2**30,
      "jax": jax.__version__, "profile": profile,
  }


def _main(argv):
  """Command line (flags defined here, not at import: other scripts import
  this module and define their own)."""
  del argv
  f = flags.FLAGS
  result = benchmark(f.config, f.batch_size, f.phase, f.steps, f.warmup,
                     f.group, f.resident, f.profile_dir, f.folds)
  print(json.dumps(result, indent=2))
  if f.json_out:
    with open(f.json_out, "a") as out:
      out.write(json.dumps(result) + "\n")


if __name__ == "__main__":
  import sys  # pylint: disable=import-outside-toplevel
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  config_flags.DEFINE_config_file("config", None, "Method config.")
  flags.DEFINE_integer("batch_size", None, "Global batch (default: the "
                       "config's).")
  flags.DEFINE_string("phase", None, "Phase to time (default: last).")
  flags.DEFINE_integer("steps", 20, "Timed steps after warm-up.")
  flags.DEFINE_integer("warmup", 3, "Untimed dispatches after compiling.")
  flags.DEFINE_integer("group", 1, "Steps per dispatch (lax.scan).")
  flags.DEFINE_integer("folds", 1, "Folds trained at once by one vmapped "
                       "step (train.batch_folds; implies --resident).")
  flags.DEFINE_bool("resident", False, "Gather the batch inside the step "
                    "from device-resident frames.")
  flags.DEFINE_string("profile_dir", None, "Also trace a few steps here and "
                      "print the top device kernels.")
  flags.DEFINE_string("json_out", None, "Append the result as JSON here.")
  flags.mark_flags_as_required(["config"])
  app.run(_main)
