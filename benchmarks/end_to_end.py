"""Training end to end (input pipeline, logging, checkpoints) against the
bare step, on the same config: how much the loop around the step costs.

  python benchmarks/end_to_end.py --config=configs/gndl.py \
      --config.train.num_steps=400 --workdir=/tmp/e2e

The trainer's own ``train/images_per_sec`` of its last log interval (the
first includes compiling) is compared with ``throughput.benchmark`` of the
same phase, batch, scan group and data mode.
"""

from __future__ import annotations

import json
import os
import sys
import time

from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import throughput  # noqa: E402  pylint: disable=wrong-import-position

_CONFIG = config_flags.DEFINE_config_file("config", None, "Method config.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Fresh directory for the run.")
_CACHE = flags.DEFINE_string("compilation_cache", "~/.cache/fer_jax/xla",
                             "As fer_jax.main's: run twice to see the second "
                             "start load its steps from the cache.")


def main(argv):
  del argv
  from absl import logging  # pylint: disable=import-outside-toplevel
  from fer_jax import train  # pylint: disable=import-outside-toplevel
  from fer_jax.data import resident as resident_lib  # pylint: disable=import-outside-toplevel
  from fer_jax.data.run_data import prepare_data  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
  if _CACHE.value:
    jax.config.update("jax_compilation_cache_dir",
                      os.path.expanduser(_CACHE.value))
  cfg = _CONFIG.value
  t = time.perf_counter()
  trainer = train.Trainer(cfg, _WORKDIR.value, prepare_data(cfg))
  phase = trainer.phases[-1]
  # The mode the trainer will choose (asked, not put on the device twice).
  resident, _ = resident_lib.choose(
      cfg.data, trainer.data.examples("train", phase.example_kind,
                                      phase.role),
      phase.with_landmarks, jax.local_devices()[0])
  trainer.train()
  wall = time.perf_counter() - t
  log = [json.loads(line) for line in
         open(os.path.join(_WORKDIR.value, "metrics.jsonl"))]
  rates = [r["train/images_per_sec"] for r in log
           if "train/images_per_sec" in r]
  bare = throughput.benchmark(cfg, steps=50,
                              group=cfg.train.steps_per_dispatch,
                              on_device_data=resident)
  result = {"trainer_images_per_sec": rates[-1],
            "bare_step_images_per_sec": bare["images_per_sec"],
            "ratio": rates[-1] / bare["images_per_sec"],
            "resident": resident, "group": cfg.train.steps_per_dispatch,
            "batch": bare["batch"], "dtype": cfg.model.dtype,
            "device": bare["device"], "wall_s": wall,
            "log_intervals": rates}
  print(json.dumps(result), flush=True)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
