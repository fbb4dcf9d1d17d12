"""Host input pipeline throughput: examples/s per host core.

  python benchmarks/input_pipeline.py --config=configs/gndl.py [--batches=200]

Times ``pipeline.TrainIterator`` over the config's real training split
(built on first use): the streaming path (the host gathers each batch's
decoded uint8 frames) with 1 and 2 reader threads, and the device-resident
path's index batches. Per core = examples/s over the process's CPU time
share, measured with ``time.process_time``.
"""

from __future__ import annotations

import json
import os
import sys
import time

from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

_CONFIG = config_flags.DEFINE_config_file("config", None, "Method config.")
_BATCHES = flags.DEFINE_integer("batches", 200, "Batches timed per setting.")


def measure(examples, batch, threads, indices_only, batches, with_landmarks):
  from fer_jax.data import pipeline  # pylint: disable=import-outside-toplevel
  it = pipeline.TrainIterator(examples, batch, seed=0,
                              with_landmarks=with_landmarks,
                              num_threads=threads, indices_only=indices_only)
  for _ in range(5):
    next(it)
  wall, cpu = time.perf_counter(), time.process_time()
  for _ in range(batches):
    next(it)
  wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
  n = batches * batch
  return {"mode": "indices (device-resident)" if indices_only else
          "streaming frames", "threads": threads,
          "examples_per_sec": n / wall,
          "cpu_cores_used": cpu / wall,
          "examples_per_sec_per_core": n / cpu,
          "ms_per_batch": 1e3 * wall / batches}


def main(argv):
  del argv
  from fer_jax import train  # pylint: disable=import-outside-toplevel
  from fer_jax.data import run_data  # pylint: disable=import-outside-toplevel
  cfg = _CONFIG.value
  data = run_data.prepare_data(cfg)
  method = train.build_method(cfg, data)
  phase = method.phases()[-1]
  ex = data.examples("train", phase.example_kind, phase.role)
  rows = [measure(ex, phase.batch_size, t, False, _BATCHES.value,
                  phase.with_landmarks) for t in (1, 2)]
  rows.append(measure(ex, phase.batch_size, 1, True, _BATCHES.value,
                      phase.with_landmarks))
  shape = data.table.image_shape
  print(f"{cfg.method} phase {phase.name!r}: batch {phase.batch_size} of "
        f"{phase.example_kind} examples, frames {shape}, {len(ex)} examples")
  print("| mode | threads | examples/s | CPU cores used | examples/s per "
        "core | ms/batch |")
  print("| --- | --- | --- | --- | --- | --- |")
  for r in rows:
    print(f"| {r['mode']} | {r['threads']} | {r['examples_per_sec']:.0f} | "
          f"{r['cpu_cores_used']:.2f} | {r['examples_per_sec_per_core']:.0f} "
          f"| {r['ms_per_batch']:.2f} |")
  print(json.dumps(rows))


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
