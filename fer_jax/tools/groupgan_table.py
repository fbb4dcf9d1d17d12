r"""GroupGAN's Table 1: accuracy of each BaseNet x {CNN, DCGAN, 1V2, 2V2}.

  python -m fer_jax.tools.groupgan_table --config=configs/groupgan.py \
      --workdir=/tmp/table1 --basenets=vgg13_bn,resnet18
  # fold-averaged (mean +- std over the 5 folds):
  ... --config.data.all_folds=True
  # only collect finished runs into the table:
  ... --collect_only

Each cell is one run in WORKDIR/<basenet>/<variant> (an ordinary fer_jax
workdir: rerunning resumes it, a finished run is not repeated). Writes
WORKDIR/table1.md and prints it.
"""

from __future__ import annotations

import sys
import time

from absl import app, flags

from fer_jax import files

VARIANTS = ("cnn", "dcgan", "1v2", "2v2")
HEADERS = {"cnn": "CNN", "dcgan": "DCGAN", "1v2": "GroupGAN (1v2)",
           "2v2": "GroupGAN (2v2)"}

def cell_config(config, basenet: str, variant: str):
  c = config.copy_and_resolve_references()
  c.basenet = basenet
  c.model.arch = basenet
  c.groupgan.variant = variant
  return c


def read_result(run_dir: str):
  """(mean, std or None) accuracy of a finished run, or None."""
  cv = files.join(run_dir, "cv_report.json")
  if files.exists(cv):
    r = files.read_json(cv, "the run's cross-validation report")
    return r["mean_accuracy"], r["std_accuracy"]
  one = files.join(run_dir, "eval", "report.json")
  if files.exists(one):
    return files.read_json(one, "the run's report")["accuracy"], None
  return None


def read_wall_time(run_dir: str):
  """Seconds the tool spent training and evaluating ``run_dir``, or None."""
  path = files.join(run_dir, "wall_time.json")
  if not files.exists(path):
    return None
  return files.read_json(path, "the run's wall time")["wall_s"]


def wall_time_markdown(times, basenets, variants) -> str:
  """Each run's wall time (s) in Table 1's layout ('-' where not timed)."""
  lines = ["Wall time per run (s, training and evaluation, this process):", "",
           "| BaseNet | " + " | ".join(HEADERS[v] for v in variants) + " |",
           "| --- |" + " --- |" * len(variants)]
  for b in basenets:
    cells = [("-" if times.get((b, v)) is None else f"{times[(b, v)]:.0f}")
             for v in variants]
    lines.append(f"| {b} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def markdown(results, basenets, variants, caption: str) -> str:
  lines = [caption, "",
           "| BaseNet | " + " | ".join(HEADERS[v] for v in variants) + " |",
           "| --- |" + " --- |" * len(variants)]
  for b in basenets:
    cells = []
    for v in variants:
      r = results.get((b, v))
      if r is None:
        cells.append("-")
      elif r[1] is None:
        cells.append(f"{100 * r[0]:.2f}")
      else:
        cells.append(f"{100 * r[0]:.2f} ± {100 * r[1]:.2f}")
    lines.append(f"| {b} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def define_flags():
  """The tool's flags, beside fer_jax.main's --config, --workdir and
  --compilation_cache (defined on import of fer_jax.main, so only when run
  as a program: importing this module for its functions defines nothing)."""
  from fer_jax import main as cli  # pylint: disable=import-outside-toplevel
  flags.DEFINE_list("basenets", ["vgg13_bn", "resnet18"],
                    "Table rows (config.basenet values).")
  flags.DEFINE_list("variants", list(VARIANTS), "Table columns.")
  flags.DEFINE_bool("collect_only", False,
                    "Do not train: tabulate the runs that exist.")
  return cli


def main(argv):
  from fer_jax import main as cli  # pylint: disable=import-outside-toplevel
  basenets, variants, collect = (flags.FLAGS.basenets, flags.FLAGS.variants,
                                 flags.FLAGS.collect_only)
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  from fer_jax import train  # pylint: disable=import-outside-toplevel
  bad = [v for v in variants if v not in VARIANTS]
  if bad:
    print(f"fer_jax: error: --variants {bad}: choose from {VARIANTS}",
          file=sys.stderr)
    sys.exit(2)
  config = cli._CONFIG.value
  cli.setup_jax()
  results, times = {}, {}
  for b in basenets:
    for v in variants:
      run_dir = files.join(cli._WORKDIR.value, b, v)
      if not collect and read_result(run_dir) is None:
        print(f"fer_jax: {b} x {v} -> {run_dir}", flush=True)
        t0, c0 = time.perf_counter(), time.process_time()
        try:
          train.train_and_evaluate(cell_config(config, b, v), run_dir)
        except ValueError as e:
          print(f"fer_jax: error: {e}", file=sys.stderr)
          sys.exit(2)
        # A resumed run's time is only this process's part of it. cpu_s
        # (all threads) tells a run slowed by other jobs on the cores from
        # a slow one.
        files.write_json_atomic(files.join(run_dir, "wall_time.json"),
                                {"wall_s": time.perf_counter() - t0,
                                 "cpu_s": time.process_time() - c0})
      results[(b, v)] = read_result(run_dir)
      times[(b, v)] = read_wall_time(run_dir)
  d = config.data
  scope = (f"mean ± std over {d.num_folds} folds" if d.all_folds
           else f"fold {d.fold} of {d.num_folds}")
  caption = (f"Accuracy (%) on the weak frames of {d.name}, {scope} "
             f"(folds by {d.fold_by}).")
  table = (markdown(results, basenets, variants, caption) + "\n"
           + wall_time_markdown(times, basenets, variants))
  files.write_text_atomic(files.join(cli._WORKDIR.value, "table1.md"), table)
  print(table)


if __name__ == "__main__":
  app.run(main, flags_parser=define_flags().parse_flags)
