"""The generic training loop: mesh, sharded jitted steps, checkpoints, logs.

It knows a method only through ``fer_jax.methods.base.Method``. For each phase
it builds a Grain iterator of that phase's examples and runs the phase's step,
jitted once with the batch sharded over the mesh's ``data`` axis, the state
replicated and donated. The host syncs with the device only every
``log_every`` steps (to log) and at checkpoints; a non-finite loss is caught
inside the step, so the last good state is never overwritten.
"""

from __future__ import annotations

import collections
import contextlib
import os
import time
from typing import Any

import jax
import numpy as np
import tqdm

from fer_jax import batched_folds
from fer_jax import checkpoint as ckpt_lib
from fer_jax import config_lib
from fer_jax import evaluate as eval_lib
from fer_jax import files
from fer_jax import metrics as metrics_lib
from fer_jax import sharding
from fer_jax.data import pipeline, protocols, resident
from fer_jax.data.run_data import LoadData, RunData, prepare_data
from fer_jax.methods import base
from fer_jax.registry import method_class
from fer_jax.steps import dispatch_groups, dispatch_step, init_loop_state


class NonFiniteLossError(FloatingPointError):
  """A step produced a non-finite loss and config.train.nonfinite='stop'."""


def build_method(config, data: RunData) -> base.Method:
  return method_class(config.method)(config, num_classes=len(data.classes),
                                     count_examples=data.count)


# ---------------------------------------------------------------- the loop

class Trainer:
  """Trains one fold of one method in ``workdir``; resumes if it can.

  ``data`` is the fold's data (``fer_jax.data.run_data``), built by the
  caller: the trainer reads no data set itself.
  """

  def __init__(self, config, workdir: str, data: RunData, mesh=None):
    self.config = config
    self.workdir = workdir
    self.mesh = mesh or sharding.make_mesh()
    self.data = data
    # Here, not at the first evaluation (after training): every
    # evaluation's batches split over the mesh.
    sharding.check_batch_size(config.train.eval_batch_size, self.mesh,
                              "config.train.eval_batch_size")
    self.method = build_method(config, self.data)
    self.method.prepare(self.data, workdir)
    self.phases = self.method.phases()
    for p in self.phases:
      sharding.check_batch_size(p.batch_size, self.mesh,
                                f"batch size of phase {p.name!r}")
    self.replicated = sharding.replicated(self.mesh)
    self.ckpt = ckpt_lib.Checkpointer(workdir, config.train.max_to_keep,
                                      async_save=config.train.async_checkpoint)
    self.select_by_val = config.train.get("select_by", "last") == "val"
    if self.select_by_val and data.eval_split != "val":
      raise ValueError(
          "config.train.select_by='val' needs a validation split, and this "
          "fold has none: set config.data.val_folds=1 (protocol 'folds') or "
          "config.data.val_fraction > 0 (protocol 'official')")
    # The best state by validation accuracy: its own series (one step),
    # apart from checkpoints/, so rotation never drops it and a resume
    # never starts from it.
    self.best = (ckpt_lib.Checkpointer(workdir, max_to_keep=1,
                                       async_save=False, subdir=ckpt_lib.BEST)
                 if self.select_by_val else None)
    self._best_accuracy = -1.0
    self._predict = jax.jit(self.method.predict)
    self._compile_cache_hits = _CompileCacheHits()

  # -- state
  def _first_batch(self):
    p = self.phases[0]
    ex = self.data.examples("train", p.example_kind, p.role)
    return pipeline.gather(ex, np.arange(min(2, len(ex))))

  def init_state(self):
    batch = self._first_batch()
    init = jax.jit(lambda: init_loop_state(self.method, self.config.seed,
                                           batch),
                   out_shardings=self.replicated)
    self._compile_cache_hits.start()
    loop = init()
    self._compile_cache_hits.report("initial state")
    loop["model"] = jax.device_put(self.method.load_pretrained(loop["model"]),
                                   self.replicated)
    return loop

  def abstract_state(self):
    batch = self._first_batch()
    shapes = jax.eval_shape(
        lambda: init_loop_state(self.method, self.config.seed, batch))
    return jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype,
                                       sharding=self.replicated), shapes)

  def restore(self, step: int | None = None, fallback: bool = False):
    """The checkpoint at ``step`` (default: the newest; with ``fallback``,
    the newest that restores, see ``Checkpointer.restore``)."""
    loop, meta = self.ckpt.restore(self.abstract_state(), step,
                                   method=self.method.name,
                                   fallback=fallback)
    fold = self.config.data.fold
    if "fold" in meta and int(meta["fold"]) != fold:
      raise ckpt_lib.CheckpointError(
          f"checkpoint {self.ckpt.directory}/{meta['global_step']} was "
          f"trained on config.data.fold={meta['fold']}, this run's config "
          f"says {fold}: drop the fold override or use another --workdir")
    return loop, meta

  def restore_best(self):
    """(loop, meta) of the best-by-validation state (``best/``); its meta
    holds ``global_step`` and ``val_accuracy``."""
    best = self.best or ckpt_lib.Checkpointer(
        self.workdir, max_to_keep=1, async_save=False, subdir=ckpt_lib.BEST)
    try:
      return best.restore(self.abstract_state(), method=self.method.name)
    finally:
      if best is not self.best:
        best.close()

  def selection(self, meta, last_step: int) -> dict[str, Any]:
    """The report fields that say which state it scores and why."""
    return {"selected_by": "val", "selected_step": int(meta["global_step"]),
            "selected_val_accuracy": float(meta["val_accuracy"]),
            "last_step": int(last_step)}

  def close(self) -> None:
    self.ckpt.close()
    if self.best is not None:
      self.best.close()

  def digest(self, loop) -> str:
    return ckpt_lib.state_digest(self.method.params_for_digest(loop["model"]))

  # -- evaluation
  def evaluate(self, loop, split: str, step: int,
               out_dir: str | None = None,
               selection: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run's report of ``split`` (written to ``out_dir`` if given)."""
    return eval_lib.build_report(
        self.method, loop, self.data, split, step=step,
        batch_size=self.config.train.eval_batch_size, mesh=self.mesh,
        predict_fn=self._predict, out_dir=out_dir, selection=selection)

  # -- training
  def _check_guard(self, loop, last_saved: int | None, log=None) -> None:
    """Raises NonFiniteLossError when the guard halted the run, or (with
    'skip') when ``log`` saw too many of its recent steps skipped."""
    guard = jax.device_get(loop["guard"])
    where = (f"the last good checkpoint, step {last_saved}, holds finite "
             f"values and is intact in {self.ckpt.directory}" if last_saved
             else "no checkpoint had been written yet")
    if guard["halted"]:
      raise NonFiniteLossError(
          f"non-finite loss or state (parameters, optimizer state) at step "
          f"{int(guard['first_bad_step'])}; training stopped and {where}. "
          f"Lower config.optim.lr, or set config.train.nonfinite='skip' to "
          f"skip such steps.")
    if log is not None and log.too_many_skipped:
      skipped, steps, last = log.too_many_skipped
      raise NonFiniteLossError(
          f"{skipped} of the {steps} steps up to step {last} were skipped as "
          f"non-finite (config.train.nonfinite='skip'), more than "
          f"config.train.max_skipped_fraction="
          f"{self.config.train.max_skipped_fraction}; training stopped and "
          f"{where}. Lower config.optim.lr.")

  def _resume(self, checkpoint_step: int | None):
    """(loop, meta) of the step to resume: ``checkpoint_step``, else the
    newest that restores (each corrupt one skipped in a line). Newer steps
    are set aside, never deleted, and the line says where they went."""
    loop, meta = self.restore(checkpoint_step,
                              fallback=checkpoint_step is None)
    start_step = int(meta["global_step"])
    moved = self.ckpt.set_aside(start_step)
    ckpt_lib.say(f"fer_jax: resuming from step {start_step} "
                 f"(phase {meta['phase_name']!r})")
    if moved:
      ckpt_lib.say(
          f"fer_jax: the {len(moved)} newer checkpoint(s) were moved, not "
          f"deleted, to {os.path.dirname(moved[0])} "
          f"({', '.join(os.path.basename(m) for m in moved)}); steps after "
          f"{start_step} are trained again. Delete them when not needed")
    return loop, meta

  def _start_best(self, start_step: int) -> None:
    """The best validation accuracy up to ``start_step`` (a resume keeps
    comparing against it). A best state from after it (the run went back
    to an older step) is set aside: its steps are trained again."""
    if self.best is None:
      return
    moved = self.best.set_aside(start_step)
    if moved:
      ckpt_lib.say(f"fer_jax: the best-by-validation state of a later step "
                   f"was moved to {moved[0]}; selection restarts from step "
                   f"{start_step}")
    self._best_accuracy = -1.0
    if self.best.all_steps():
      _, meta = self.best.read_meta()
      self._best_accuracy = float(meta["val_accuracy"])

  def _keep_if_best(self, loop, report, meta: dict[str, Any]) -> None:
    """Saves ``loop`` as best/ when its validation accuracy beats every
    earlier evaluation's (a tie keeps the earlier, shorter-trained state)."""
    if self.best is None or report["accuracy"] <= self._best_accuracy:
      return
    self._best_accuracy = float(report["accuracy"])
    self.best.save(meta["global_step"], loop, {
        **meta, "val_accuracy": self._best_accuracy,
        "split": report["split"]})

  def train(self, checkpoint_step: int | None = None) -> dict[str, Any]:
    """Trains to the end and reports the test split. Resumes from the
    newest checkpoint that restores, or from ``checkpoint_step``."""
    loop, meta, start_step = self.start(checkpoint_step)
    self._start_best(start_step)
    total = sum(p.num_steps for p in self.phases)
    writer, bar = self.open_logs(start_step, total)
    last_saved = start_step or None
    offset = 0
    try:
      for phase_idx, phase in enumerate(self.phases):
        phase_end = offset + phase.num_steps
        if start_step >= phase_end:
          offset = phase_end
          continue
        loop, last_saved = self._run_phase(
            phase_idx, phase, offset, loop, start_step, meta, writer, bar,
            last_saved)
        offset = phase_end
      report = self.finish(loop, total, writer)
    finally:
      bar.close()
      writer.close()
      self.close()
    return report

  def start(self, checkpoint_step: int | None = None):
    """(loop, meta, start_step): the checkpoint to resume (the newest that
    restores, or ``checkpoint_step``), else a fresh state (meta None)."""
    if self.ckpt.all_steps():
      loop, meta = self._resume(checkpoint_step)
      return loop, meta, int(meta["global_step"])
    if checkpoint_step is not None:
      raise ckpt_lib.CheckpointError(
          f"--checkpoint_step={checkpoint_step}: no checkpoint under "
          f"{self.ckpt.directory} to resume from")
    return self.init_state(), None, 0

  def open_logs(self, start_step: int, total: int, show_bar: bool = True):
    """(metric writer, progress bar) of a run that starts at ``start_step``."""
    writer = metrics_lib.MetricWriter(self.workdir, resume_step=start_step)
    bar = tqdm.tqdm(total=total, initial=start_step, unit="step",
                    dynamic_ncols=True, mininterval=1.0,
                    disable=(jax.process_index() != 0 or not show_bar
                             or not self.config.train.progress_bar))
    return writer, bar

  def finish(self, loop, total: int, writer) -> dict[str, Any]:
    """After the last step: the test report of the last state, or of the
    best by validation (train.select_by='val'), its metric and pictures."""
    self.ckpt.wait()
    step, selection = total, None
    if self.best is not None and not self.best.all_steps():
      ckpt_lib.say("fer_jax: no state was validated since "
                   "config.train.select_by='val' was set: testing the "
                   f"last step, {total}")
    elif self.best is not None:
      loop, best_meta = self.restore_best()
      selection = self.selection(best_meta, total)
      step = selection["selected_step"]
      ckpt_lib.say(
          f"fer_jax: testing the best validation state, step {step} "
          f"(val accuracy {100 * selection['selected_val_accuracy']:.1f}"
          f"%), not the last step {total} (config.train.select_by='val')")
    report = self.evaluate(loop, "test", step,
                           files.join(self.workdir, "eval"), selection)
    writer.write(total, {"test/accuracy": report["accuracy"]})
    writer.write_pictures(total, files.join(self.workdir, "eval"), "test")
    return report

  def _resident_data(self, examples, phase):
    """The phase's training split in device memory, or None (streaming)."""
    local = [d for d in self.mesh.devices.flat
             if d.process_index == jax.process_index()]
    on, why = resident.choose(self.config.data, examples,
                              phase.with_landmarks, local[0])
    ckpt_lib.say(f"fer_jax: phase {phase.name!r} reads its frames "
                 f"{'from device memory' if on else 'by streaming'} ({why})")
    return resident.put(examples, phase.with_landmarks, self.mesh) if on \
        else None

  def _evaluate_during_training(self, loop, step: int, step_meta,
                                writer) -> None:
    """Scores the eval split (val where the fold has one) and keeps the
    state as best/ when it is the best so far (train.select_by='val')."""
    split = self.data.eval_split
    out_dir = files.join(self.workdir, "eval", f"{split}_step_{step}")
    report = self.evaluate(loop, split, step, out_dir)
    self._keep_if_best(loop, report, step_meta)
    writer.write(step, {f"{split}/accuracy": report["accuracy"]})
    writer.write_pictures(step, out_dir, split)
    ckpt_lib.say(f"fer_jax: step {step}: {split} accuracy "
                 f"{100 * report['accuracy']:.1f}% ({out_dir})")

  def phase_iterator(self, phase_idx: int, phase: base.Phase, examples,
                     indices_only: bool, first: int, meta
                     ) -> pipeline.TrainIterator:
    """The phase's batches from its ``first`` step (restored to the
    checkpoint's position when ``meta`` is of this phase)."""
    it = pipeline.TrainIterator(examples, phase.batch_size,
                                seed=self.config.seed + 1000 * phase_idx,
                                with_landmarks=phase.with_landmarks,
                                num_threads=self.config.data.num_threads,
                                sampler=phase.sampler,
                                indices_only=indices_only)
    if first and meta is not None and meta.get("phase") == phase_idx:
      it.restore(meta["iterator"])
    return it

  def _run_phase(self, phase_idx, phase, offset, loop, start_step, meta,
                 writer, bar, last_saved):
    cfg = self.config.train
    examples = self.data.examples("train", phase.example_kind, phase.role)
    on_device = self._resident_data(examples, phase)
    first = max(start_step - offset, 0)
    it = self.phase_iterator(phase_idx, phase, examples,
                             on_device is not None, first, meta)
    if first == 0 and phase.enter is not None:
      enter = jax.jit(phase.enter, out_shardings=self.replicated,
                      donate_argnums=0)
      loop = {**loop, "model": enter(loop["model"])}
    groups = dispatch_groups(
        offset + first, offset + phase.num_steps,
        cfg.get("steps_per_dispatch", 1),
        [cfg.log_every, cfg.checkpoint_every, cfg.eval_every])
    step_fns = {
        n: jax.jit(dispatch_step(phase.step, cfg.nonfinite == "stop", n,
                                 on_device is not None), donate_argnums=0)
        for n in set(groups)}
    batches = pipeline.device_prefetch(it, self.mesh, groups)
    run = self.phase_run(phase_idx, phase, offset, first, writer, bar,
                         last_saved)
    for i, n in enumerate(groups):
      batch, it_state = next(batches)
      if i == 0:
        self._compile_cache_hits.start()
      loop, m = step_fns[n](loop, batch, on_device)
      if i == 0:
        self._compile_cache_hits.report(f"phase {phase.name!r}")
      run.after(n, m, it_state, lambda: loop)
    return loop, run.last_saved

  def phase_run(self, phase_idx, phase, offset, first, writer, bar,
                last_saved) -> "PhaseRun":
    return PhaseRun(self, phase_idx, phase, offset, first, writer, bar,
                    last_saved)


class PhaseRun:
  """One fold's bookkeeping through one phase, after each dispatch: logs
  (one interval late), the guard, checkpoints and evaluations at their
  steps. The batched-folds path (``fer_jax.batched_folds``) keeps one per
  fold around its one vmapped dispatch."""

  def __init__(self, trainer: Trainer, phase_idx: int, phase: base.Phase,
               offset: int, first: int, writer, bar,
               last_saved: int | None):
    cfg = trainer.config.train
    self.trainer, self.phase_idx, self.phase = trainer, phase_idx, phase
    self.offset, self.writer, self.bar = offset, writer, bar
    self.last_saved = last_saved
    self.step = offset + first
    images_per_step = phase.batch_size * len(
        protocols.EXAMPLE_KINDS[phase.example_kind])
    self.log = _LogWindows(writer, bar, phase.name, images_per_step,
                           cfg.get("skip_window", 100),
                           cfg.get("max_skipped_fraction", 0.2))
    self._pending, self._n_last = [], 0

  def after(self, n: int, m, it_state, loop_now) -> None:
    """The dispatch of ``n`` steps with metrics ``m`` ran; ``loop_now()``
    gives the fold's loop state (called only to save, evaluate or read the
    guard) and ``it_state`` its iterator's position after it."""
    t = self.trainer
    cfg = t.config.train
    phase, offset = self.phase, self.offset
    self._pending.append((n, m))
    self.step += n
    self._n_last += n
    step = self.step
    end = step == offset + phase.num_steps
    save = step % cfg.checkpoint_every == 0 or end
    # The run's last step is tested, not validated, unless selection by
    # validation needs its score too.
    last = end and self.phase_idx == len(t.phases) - 1
    evaluate = bool(cfg.eval_every) and (
        (step % cfg.eval_every == 0 and not last)
        or (last and t.select_by_val))
    if step % cfg.log_every == 0 or end:
      # Read last interval's metrics, long computed, while this one's
      # steps run: no pipeline drain at a log step.
      if self.log.close(step, self._pending, self._n_last):
        t._check_guard(loop_now(), self.last_saved, self.log)
      self._pending, self._n_last = [], 0
    if save or evaluate:  # the phase's end is a save too
      # These sync anyway; writing the open interval first means a run
      # killed after its checkpoint has logged every step up to it. The
      # guard is read before every save.
      if self.log.flush(final=end) or save:
        t._check_guard(loop_now(), self.last_saved, self.log)
    self.bar.update(n)
    step_meta = {"method": t.method.name, "phase": self.phase_idx,
                 "phase_name": phase.name, "phase_step": step - offset,
                 "global_step": step, "iterator": it_state,
                 "fold": t.config.data.fold}
    # Selecting by validation, a state is scored before its checkpoint:
    # a run killed after the checkpoint has scored every state up to it.
    # Otherwise the evaluation overlaps the asynchronous save.
    if evaluate and t.select_by_val:
      t._evaluate_during_training(loop_now(), step, step_meta, self.writer)
    if save:
      t.ckpt.save(step, loop_now(), step_meta)
      self.writer.flush()  # a remote workdir's logs reach its checkpoint
      self.last_saved = step
    if evaluate and not t.select_by_val:
      t._evaluate_during_training(loop_now(), step, step_meta, self.writer)


def _per_step(groups) -> list[dict[str, Any]]:
  """[(n, metrics)] from single steps (scalars) and scanned groups (arrays
  of n) -> one dict of scalars per step."""
  out = []
  for n, m in groups:
    if n == 1:
      out.append(m)
    else:
      out.extend({k: v[i] for k, v in m.items()} for i in range(n))
  return out


class _LogWindows:
  """Training metrics written one log interval late, without a sync.

  At a log step the interval's metrics start their copy to the host and the
  previous interval, whose steps finished long ago, is written. An interval
  is timed from the previous log step to its own, each taken once the
  interval before it has been read back: in steady state that is when the
  device finished it, so the rate is the device's where the device is the
  bottleneck and the host loop's where the host is, and checkpoint or
  evaluation work counts against the interval after it. The intervals'
  times add up to the phase's wall time.
  ``close`` and ``flush`` return True when a step in what they wrote was
  skipped by the non-finite guard (the only steps it acts on), so the
  caller reads the guard then, not at every log. Skipped steps are written
  as ``train/skipped_steps`` (the other metrics average the steps that were
  applied), and the phase's count so far shows in the progress bar
  (``skipped=N``); ``too_many_skipped`` is set, (skipped, steps, last
  step), once more than ``max_skipped`` of the last ``window`` steps (of
  the phase so far, at its end) were skipped.
  """

  def __init__(self, writer, bar, phase_name: str, images_per_step: int,
               window: int = 100, max_skipped: float = 0.2):
    self._writer, self._bar = writer, bar
    self._phase, self._images = phase_name, images_per_step
    self._open = None  # (step, [(n, metrics)], steps, seconds) unwritten
    self._mark = time.perf_counter()
    self._recent = collections.deque(maxlen=max(1, window))
    self._max_skipped = max_skipped
    self._skipped_total = 0
    self.too_many_skipped = None

  def close(self, step: int, pending, steps: int) -> bool:
    for _, metrics in pending:
      for x in jax.tree.leaves(metrics):
        x.copy_to_host_async()
    bad = self.flush()
    now = time.perf_counter()
    self._open = (step, pending, steps, now - self._mark)
    self._mark = now
    return bad

  def flush(self, final: bool = False) -> bool:
    if self._open is None:
      return False
    step, pending, steps, dt = self._open
    self._open = None
    values = _per_step(jax.device_get(pending))
    skipped = [float(row.pop("skipped", 0.0)) for row in values]
    bad = any(skipped) or not all(np.all(np.isfinite(v)) for row in values
                                  for v in row.values())
    scalars = {f"train/{k}": float(np.nanmean([v[k] for v in values]))
               for k in values[0]}
    scalars["train/skipped_steps"] = int(sum(skipped))
    scalars["train/steps_per_sec"] = steps / dt
    scalars["train/images_per_sec"] = steps * self._images / dt
    self._writer.write(step, scalars)
    self._skipped_total += int(sum(skipped))
    postfix = {"phase": self._phase,
               "loss": f"{scalars['train/loss']:.4f}",
               "img_s": f"{scalars['train/images_per_sec']:.0f}"}
    if self._skipped_total:  # the phase's steps the guard did not apply
      postfix["skipped"] = self._skipped_total
    self._bar.set_postfix(**postfix)
    self._recent.extend(skipped)
    self._check_skipped(final, step)
    return bad or self.too_many_skipped is not None

  def _check_skipped(self, final: bool, step: int) -> None:
    n, k = len(self._recent), sum(self._recent)
    if (n == self._recent.maxlen or final) and n and k > self._max_skipped * n:
      self.too_many_skipped = (int(k), n, step)


_CACHE_HITS = [0]  # persistent-compilation-cache hits in this process


def _count_cache_hit(event: str, **_) -> None:
  if event == "/jax/compilation_cache/cache_hits":
    _CACHE_HITS[0] += 1


jax.monitoring.register_event_listener(_count_cache_hit)


class _CompileCacheHits:
  """Says in the log whether a phase's first dispatch compiled its program
  or loaded it from JAX's persistent compilation cache (a rerun, a resume
  or a later fold of the same config)."""

  def __init__(self):
    self._t0 = 0.0
    self._before = 0

  def start(self) -> None:
    self._t0, self._before = time.perf_counter(), _CACHE_HITS[0]

  def report(self, what: str) -> None:
    if jax.process_index() != 0 or not jax.config.jax_compilation_cache_dir:
      return
    hits = _CACHE_HITS[0] - self._before
    ckpt_lib.say(
        f"fer_jax: {what}: program "
        f"{'loaded from the compilation cache' if hits else 'compiled'} "
        f"({time.perf_counter() - self._t0:.1f} s; "
        f"cache {jax.config.jax_compilation_cache_dir})")


def write_config(config, workdir: str) -> None:
  if jax.process_index() == 0:
    files.write_text_atomic(files.join(workdir, "config.json"),
                            config.to_json_best_effort(indent=2))


def check_config(config, workdir: str, mode: str) -> None:
  """Once ``workdir`` holds a checkpoint, its config.json is the run's
  identity: a resume (``mode='train'``) or an evaluation under a config
  that changes what the checkpoint means (method, data, fold, classes,
  model, optimizer, seed) is refused naming each field and both values;
  harmless changes (evaluation batch, logging, a longer run) are listed."""
  path = files.join(workdir, "config.json")
  if not files.exists(path) or not ckpt_lib.has_checkpoint(workdir):
    return
  saved = files.read_json(path, "the run's config")
  changes = config_lib.reconcile(saved, config, mode, path)
  if changes and jax.process_index() == 0:
    print(f"fer_jax: {path} with harmless changes: {'; '.join(changes)}",
          flush=True)


@contextlib.contextmanager
def workdir_lock(workdir: str):
  """Refuses a second run on ``workdir`` while this one holds it (process 0
  holds it for a multi-host run); see ``files.WorkdirLock``."""
  if jax.process_index():
    yield
    return
  with files.WorkdirLock(workdir):
    yield


def write_cv_report(reports, workdir: str) -> dict[str, Any]:
  summary = eval_lib.cv_summary(reports)
  if jax.process_index() == 0:
    files.write_json_atomic(files.join(workdir, "cv_report.json"), summary)
  return summary


def train_and_evaluate(config, workdir: str,
                       load_data: LoadData = prepare_data,
                       checkpoint_step: int | None = None) -> dict[str, Any]:
  """Trains the configured fold, or every fold with config.data.all_folds;
  ``load_data(fold_config)`` gives each fold's data. A rerun resumes from
  the newest checkpoint that restores, or from ``checkpoint_step``."""
  config_lib.validate(config)
  if checkpoint_step is not None and config.data.all_folds:
    raise ValueError(
        f"--checkpoint_step={checkpoint_step} with config.data.all_folds: "
        "resume one fold (--workdir=WORKDIR/fold_K --config.data.fold=K "
        "--config.data.all_folds=False)")
  config_lib.check_workdir(workdir)
  with workdir_lock(workdir):
    if not config.data.all_folds:
      return _train_one(config, workdir, load_data, checkpoint_step)
    if config.train.get("batch_folds", False):
      return write_cv_report(_train_batched(config, workdir, load_data),
                             workdir)
    reports = []
    for fold in range(config.data.num_folds):
      fold_cfg = config_lib.with_fold(config, fold)
      fold_dir = files.join(workdir, f"fold_{fold}")
      config_lib.check_workdir(fold_dir)
      print(f"fer_jax: fold {fold + 1}/{config.data.num_folds}", flush=True)
      reports.append(_train_one(fold_cfg, fold_dir, load_data))
    return write_cv_report(reports, workdir)


def _train_batched(config, workdir: str, load_data: LoadData
                   ) -> list[dict[str, Any]]:
  """Every fold at once (config.train.batch_folds): one Trainer per fold
  on one mesh, trained by ``batched_folds`` as one vmapped program."""
  mesh = sharding.make_mesh()
  trainers = []
  try:
    for fold in range(config.data.num_folds):
      fold_cfg = config_lib.with_fold(config, fold)
      fold_dir = files.join(workdir, f"fold_{fold}")
      config_lib.check_workdir(fold_dir)
      check_config(fold_cfg, fold_dir, "train")
      write_config(fold_cfg, fold_dir)
      trainers.append(Trainer(fold_cfg, fold_dir, load_data(fold_cfg), mesh))
  except BaseException:
    for t in trainers:
      t.close()
    raise
  return batched_folds.train(trainers)


def _train_one(config, workdir: str, load_data: LoadData,
               checkpoint_step: int | None = None) -> dict[str, Any]:
  check_config(config, workdir, "train")
  write_config(config, workdir)
  return Trainer(config, workdir, load_data(config)).train(checkpoint_step)


def evaluate_checkpoint(config, workdir: str, step: int | None = None,
                        split: str = "test",
                        load_data: LoadData = prepare_data
                        ) -> dict[str, Any]:
  """--mode=eval: restore a checkpoint and write the same report, no training.

  With config.data.all_folds, every fold_<k>/ is evaluated and
  cv_report.json rewritten.
  """
  config_lib.validate(config)
  if not files.isdir(workdir):
    raise ValueError(f"--workdir={workdir} does not exist: evaluate the "
                     "workdir of a training run")
  with workdir_lock(workdir):
    if config.data.all_folds:
      reports = [evaluate_checkpoint(config_lib.with_fold(config, k),
                                     files.join(workdir, f"fold_{k}"),
                                     step, split, load_data)
                 for k in range(config.data.num_folds)]
      return write_cv_report(reports, workdir)
    check_config(config, workdir, "eval")
    trainer = Trainer(config, workdir, load_data(config))
    try:
      selection = None
      if (step is None and trainer.select_by_val
          and ckpt_lib.has_checkpoint(workdir, ckpt_lib.BEST)):
        loop, meta = trainer.restore_best()
        selection = trainer.selection(meta, trainer.ckpt.latest_step() or 0)
        ckpt_lib.say(
            f"fer_jax: evaluating the best validation state, step "
            f"{selection['selected_step']} (val accuracy "
            f"{100 * selection['selected_val_accuracy']:.1f}%; "
            "config.train.select_by='val'; --checkpoint_step=N for another)")
      else:
        loop, meta = trainer.restore(step)
      report = trainer.evaluate(loop, split, int(meta["global_step"]),
                                files.join(workdir, "eval"), selection)
    finally:
      trainer.close()
    return report
