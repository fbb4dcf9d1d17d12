"""Train or evaluate a method.

  python -m fer_jax.main --config=configs/gndl.py --workdir=/tmp/gndl
  python -m fer_jax.main --config=configs/gndl.py:ckplus --config.data.fold=3 --workdir=...
  python -m fer_jax.main --config=configs/gndl.py --workdir=/tmp/gndl --mode=eval
  python -m fer_jax.main --config=ifgan.py:tiny --workdir=/tmp/t  # by name

--config takes a file path or a packaged config's name (gndl, gndl.py:ckplus,
configs/gndl.py: the installed fer_jax.configs when no such file is here).

Rerunning a training command resumes from the workdir's newest checkpoint
that restores (a corrupt one is skipped, named in a line), or from
--checkpoint_step=N; --mode=eval with config.train.select_by=val scores the
best validation state (best/).
Outputs: checkpoints/, metrics.jsonl, tensorboard/, eval/report.json and
eval/confusion_matrix.png (cv_report.json with --config.data.all_folds).
"""

from __future__ import annotations

import json
import sys

from absl import app, flags
from ml_collections import config_flags

from fer_jax import console

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Method config file, e.g. configs/gndl.py or "
    "configs/gndl.py:ckplus, or a packaged config by name (gndl, "
    "gndl.py:ckplus); override fields with --config.FIELD=VALUE.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints, logs and reports; rerunning "
    "with the same workdir resumes.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval"],
                          "train (resumes if the workdir has a checkpoint) or "
                          "eval (restore a checkpoint and report, no training).")
_STEP = flags.DEFINE_integer(
    "checkpoint_step", None, "The checkpoint step to restore. --mode=eval: "
    "the step to evaluate (default: the latest). --mode=train: the step to "
    "resume from (default: the newest that restores); newer steps are moved "
    "to WORKDIR/checkpoints_set_aside/, not deleted, and trained again.")
_SPLIT = flags.DEFINE_enum("split", "test", ["test", "val", "train"],
                           "With --mode=eval: the split to evaluate.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Multi-host run: call jax.distributed.initialize() "
    "first (on Cloud TPU pods and SLURM it finds its peers itself).")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "With --distributed, where the cluster has "
    "no auto-detection (not Cloud TPU, SLURM, Open MPI, Kubernetes): "
    "host:port of process 0's coordinator.")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "With --coordinator_address: how many processes.")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "With --coordinator_address: this process's index.")
_CACHE = flags.DEFINE_string(
    "compilation_cache", "~/.cache/fer_jax/xla",
    "Persistent XLA compilation cache directory ('' to disable): a rerun or "
    "a resume skips recompiling its steps.")
flags.mark_flags_as_required(["config", "workdir"])


# Benign TFDS warnings every run would print: fer_synth's per-size builder
# configs are "custom", and images decode with PIL when OpenCV is absent.
_BENIGN = ("Using custom data configuration", "has no dataset_info.json",
           "OpenCV is not installed")


def _quiet_known_warnings(record) -> bool:
  return not any(b in record.getMessage() for b in _BENIGN)


def setup_jax() -> None:
  import jax  # pylint: disable=import-outside-toplevel
  from absl import logging  # pylint: disable=import-outside-toplevel
  # The progress bar, warnings and errors, not Orbax's and TFDS's INFO
  # lines (--verbosity=0 brings them back, and the benign warnings too).
  if console.quiet_info_logs():
    logging.get_absl_logger().addFilter(_quiet_known_warnings)
  if _DISTRIBUTED.value:
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value,
                               _PROCESS_ID.value)
  if _CACHE.value:
    import os  # pylint: disable=import-outside-toplevel
    jax.config.update("jax_compilation_cache_dir",
                      os.path.expanduser(_CACHE.value))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  # Imported here so --help answers without importing JAX.
  from fer_jax import train  # pylint: disable=import-outside-toplevel
  from fer_jax.checkpoint import CheckpointError  # pylint: disable=import-outside-toplevel
  from fer_jax.data.frames import DataError  # pylint: disable=import-outside-toplevel
  config = _CONFIG.value
  setup_jax()
  try:
    if _MODE.value == "train":
      result = train.train_and_evaluate(config, _WORKDIR.value,
                                        checkpoint_step=_STEP.value)
    else:
      result = train.evaluate_checkpoint(config, _WORKDIR.value, _STEP.value,
                                         _SPLIT.value)
  except (ValueError, DataError, CheckpointError,
          train.NonFiniteLossError) as e:
    print(f"fer_jax: error: {e}", file=sys.stderr)
    sys.exit(2)
  summary = {k: result[k] for k in ("method", "dataset", "fold", "split",
                                    "accuracy", "mean_accuracy",
                                    "std_accuracy", "state_digest",
                                    "selected_step")
             if k in result}
  print(closing_lines(result, _WORKDIR.value))
  print(json.dumps(summary))  # last line: for scripts


def closing_lines(result, workdir: str) -> str:
  """What the run ended at (and how many steps the non-finite guard
  skipped, if any) and where its report, pictures and TensorBoard logs
  are, so a user need not know the workdir's layout."""
  if "accuracy" in result:
    what = (f"{result['split']} accuracy {100 * result['accuracy']:.1f}% "
            f"({result['method']}, fold {result['fold']})")
    if "selected_step" in result:
      what += (f" at step {result['selected_step']}, the best validation "
               f"accuracy ({100 * result['selected_val_accuracy']:.1f}%) of "
               f"{result['last_step']} steps")
  else:
    what = (f"mean accuracy {100 * result['mean_accuracy']:.1f}% "
            f"+/- {100 * result['std_accuracy']:.1f} over "
            f"{len(result.get('folds', []))} folds ({result['method']})")
  from fer_jax import files  # pylint: disable=import-outside-toplevel
  lines = [f"fer_jax: done: {what}"]
  skipped = result.get("nonfinite_steps", 0)
  if skipped:  # config.train.nonfinite='skip' kept going past them
    lines.append(f"  warning:     {skipped} training step(s) were skipped "
                 "as non-finite (config.train.nonfinite='skip'; "
                 "train/skipped_steps in metrics.jsonl): lower "
                 "config.optim.lr")
  if files.exists(files.join(workdir, "cv_report.json")):
    lines.append(f"  report:      {files.join(workdir, 'cv_report.json')}"
                 f" (each fold's in {files.join(workdir, 'fold_*')})")
  eval_dir = files.join(workdir, "eval")
  report = files.join(eval_dir, "report.json")
  if files.exists(report):
    lines.append(f"  report:      {report}")
    pictures = [n for n in files.listdir(eval_dir) if n.endswith(".png")]
    if pictures:
      lines.append(f"  pictures:    {eval_dir}/{{{','.join(pictures)}}}")
  if files.isdir(files.join(workdir, "tensorboard")):
    lines.append("  TensorBoard: tensorboard --logdir "
                 f"{files.join(workdir, 'tensorboard')}")
  return "\n".join(lines)


def parse_flags(argv):
  """absl's parser, with config-override mistakes turned into one line; a
  config named by name (or by its repository path, from elsewhere) is
  found among the packaged configs first (config_lib.config_file)."""
  from fer_jax import config_lib  # pylint: disable=import-outside-toplevel
  try:
    argv = config_lib.resolve_config_flag(argv)
  except ValueError as e:
    print(f"fer_jax: error: {e}", file=sys.stderr)
    sys.exit(2)
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    print(f"fer_jax: error: {_flag_error(e)} (pass --help for usage)",
          file=sys.stderr)
    sys.exit(2)
  except (KeyError, AttributeError, TypeError, ValueError) as e:
    bad = [a for a in argv[1:] if a.startswith("--config.")]
    print(f"fer_jax: error: bad config override among {bad}: {e}. Fields "
          "must exist in the config file (see configs/ and "
          "fer_jax/config_lib.py) and values must have the field's type.",
          file=sys.stderr)
    sys.exit(2)


def _flag_error(e: Exception) -> str:
  """One line for a flag error. A config file's own error (an unknown
  preset, a bad ``:arg``) reaches here with its traceback in the text
  (ml_collections adds it): keep the file's message, its last line."""
  text = str(e)
  if "Error whilst parsing config file" in text:
    lines = [l for l in text.splitlines() if l.strip()]
    last = lines[-1].strip()
    kind, sep, message = last.partition(": ")
    flag = text.partition(": Error whilst")[0].removeprefix("flag ")
    return f"{flag}: {message if sep and kind.isidentifier() else last}"
  return " ".join(text.split())


def run():
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  run()
