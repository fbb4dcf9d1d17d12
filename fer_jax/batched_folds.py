"""Folds batched in one program (``config.train.batch_folds`` with
``config.data.all_folds``): the k folds' loop states stacked on a new
leading axis, trained by one ``jax.vmap`` of the trainer's dispatch per step.

Why: a small step (GroupGAN's paper batch of 4) leaves a large device idle
and k separate runs pay the launch and host overhead k times; one program
over k folds does k folds' work per launch. Each fold keeps what a separate
run has: its own training split and batch order (its own Grain iterator,
seeded as a separate run's), PRNG stream (the loop's key and step), non-
finite guard, checkpoints, metrics.jsonl, evaluations and report in
fold_<k>/. Only the frames are shared: one device-resident array holds
every example of the k folds' training splits (frames stored once) and each
fold's indices are offset into it, so ``data`` is an unbatched argument of
the vmap, not copied k times. The batch axis is sharded over the mesh's
``data`` axis as in the single-fold path; the fold axis is replicated.

A fold's numbers equal its separate run's to float reordering (vmap turns
a convolution with per-fold weights into a grouped one) when JAX's PRNG
is threefry (the default); with ``rbg`` keys XLA's bit generator draws
different (equally random) bits under vmap.

Refused, before any step, where the folds cannot share one program: phases
that differ between folds (step counts, batch sizes: epochs of unequal
folds), steps that trace to different programs (a schedule counted in each
fold's epochs, per-fold constants), frames that are not device-resident.
A resume restores every fold at the newest step all folds have (newer
steps are set aside, as a resume from an older step does).
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from fer_jax import checkpoint as ckpt_lib
from fer_jax import sharding
from fer_jax.data import pipeline, protocols, resident
from fer_jax.steps import dispatch_groups, dispatch_step

FIELD = "config.train.batch_folds"


def shared_examples(fold_examples: Sequence[protocols.Examples]
                    ) -> tuple[protocols.Examples, tuple[int, ...]]:
  """The folds' training examples concatenated (over the first fold's
  table) and where each fold's start in it: fold k's example i is row
  ``offsets[k] + i``."""
  first = fold_examples[0]
  clean = [e.clean_label for e in fold_examples]
  combined = protocols.Examples(
      table=first.table,
      slots={s: np.concatenate([e.slots[s] for e in fold_examples])
             for s in first.slots},
      label=np.concatenate([e.label for e in fold_examples]),
      clean_label=(None if clean[0] is None else np.concatenate(clean)))
  offsets = np.cumsum([0] + [len(e) for e in fold_examples[:-1]])
  return combined, tuple(int(o) for o in offsets)


def batched_dispatch(step_fn, stop_on_nonfinite: bool, group: int,
                     offsets: Sequence[int], mesh):
  """``(stacked loop, [fold batch of indices] * k, shared data) ->
  (stacked loop, [fold metrics] * k)``: ``steps.dispatch_step`` vmapped
  over the folds, each fold's indices moved to its part of ``data``."""
  one = dispatch_step(step_fn, stop_on_nonfinite, group, on_device_data=True)
  over_folds = jax.vmap(one, in_axes=(0, 0, None))
  spec = P(None, sharding.DATA_AXIS) if group == 1 else P(
      None, None, sharding.DATA_AXIS)

  def fn(loop, batches, data):
    index = jnp.stack([b["index"] + o for b, o in zip(batches, offsets)])
    index = jax.lax.with_sharding_constraint(index, NamedSharding(mesh, spec))
    loop, metrics = over_folds(loop, {"index": index}, data)
    return loop, [jax.tree.map(lambda x, k=k: x[k], metrics)
                  for k in range(len(offsets))]

  return fn


def _stack(trees):
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _unstack(tree, k: int):
  return [jax.tree.map(lambda x, i=i: x[i], tree) for i in range(k)]


class _Folds:
  """The stacked loop after one dispatch, unstacked (one program) on the
  first fold that asks: only saves, evaluations and guard reads ask."""

  def __init__(self, loop, unstack):
    self._loop, self._unstack, self._folds = loop, unstack, None

  def fold(self, k: int):
    if self._folds is None:
      self._folds = self._unstack(self._loop)
    return self._folds[k]


# ------------------------------------------------------------ the checks

def _phase_key(p) -> tuple:
  return (p.name, p.num_steps, p.batch_size, p.example_kind, p.role,
          p.with_landmarks, p.sampler, p.enter is None)


def _program(fn, *args) -> tuple[str, list[np.ndarray]]:
  """``fn``'s jaxpr text and constants: equal for two folds exactly when
  their steps compute the same function of (state, batch, key)."""
  closed = jax.make_jaxpr(fn)(*args)
  return str(closed.jaxpr), [np.asarray(c) for c in closed.consts]


def _same_program(a, b) -> bool:
  return a[0] == b[0] and len(a[1]) == len(b[1]) and all(
      x.shape == y.shape and np.array_equal(x, y) for x, y in zip(a[1], b[1]))


def _abstract_batch(examples, phase):
  one = pipeline.gather(examples, np.arange(1), phase.with_landmarks)
  return {k: jax.ShapeDtypeStruct((phase.batch_size,) + v.shape[1:], v.dtype)
          for k, v in one.items()}


def check(trainers) -> None:
  """Raises ValueError naming the field to change when the folds of
  ``trainers`` cannot be trained as one program."""
  t0 = trainers[0]
  phases0 = [_phase_key(p) for p in t0.phases]
  for k, t in enumerate(trainers[1:], 1):
    if [_phase_key(p) for p in t.phases] != phases0:
      mine = ", ".join(f"{p.name!r} {p.num_steps} steps of {p.batch_size}"
                       for p in t.phases)
      first = ", ".join(f"{p.name!r} {p.num_steps} steps of {p.batch_size}"
                        for p in t0.phases)
      raise ValueError(
          f"{FIELD}: fold {k}'s phases ({mine}) differ from fold 0's "
          f"({first}); epochs of folds of unequal size are unequal step "
          "counts: set config.train.num_steps (and each phase's steps), or "
          f"{FIELD}=False")
    table, table0 = t.data.table, t0.data.table
    if table is not table0 and not (
        len(table) == len(table0) and table.image_shape == table0.image_shape
        and np.array_equal(table.label, table0.label)
        and np.array_equal(table.sequence_id, table0.sequence_id)):
      raise ValueError(f"{FIELD}: fold {k}'s data is another table than "
                       f"fold 0's; the folds must divide one data set, or "
                       f"set {FIELD}=False")
  device = [d for d in t0.mesh.devices.flat
            if d.process_index == jax.process_index()][0]
  key = jax.random.PRNGKey(0)
  models = [t.abstract_state()["model"] for t in trainers]
  for i, phase in enumerate(t0.phases):
    fold_ex = [t.data.examples("train", phase.example_kind, phase.role)
               for t in trainers]
    combined, _ = shared_examples(fold_ex)
    on, why = resident.choose(t0.config.data, combined, phase.with_landmarks,
                              device)
    if not on:
      raise ValueError(
          f"{FIELD}: the folds gather their batches from one device-"
          f"resident copy of their frames, and phase {phase.name!r}'s are "
          f"not on the device ({why}): set config.data.device_resident='on' "
          f"(or a larger config.data.device_memory_gb), or {FIELD}=False")
    batch = _abstract_batch(fold_ex[0], phase)
    ref = None
    for k, t in enumerate(trainers):
      p = t.phases[i]
      prog = _program(p.step, models[k], batch, key)
      if p.enter is not None:
        text, consts = _program(p.enter, models[k])
        prog = (prog[0] + "\n" + text, prog[1] + consts)
      if ref is None:
        ref = prog
      elif not _same_program(ref, prog):
        raise ValueError(
            f"{FIELD}: fold {k}'s step of phase {phase.name!r} is another "
            "program than fold 0's (a learning-rate schedule counted in "
            "each fold's epochs, or a constant computed from each fold's "
            "data): use config.optim.schedule='constant' or "
            f"'plateau', or {FIELD}=False")


# ------------------------------------------------------------ the run

def _start(trainers) -> tuple[list, list, int]:
  """Each fold's (loop, meta) at the newest step every fold can resume
  from (0: fresh states); a fold ahead of it goes back there, its newer
  steps set aside."""
  starts = [t.start() for t in trainers]
  common = min(s for _, _, s in starts)
  shared = set.intersection(*[set(t.ckpt.all_steps()) for t in trainers])
  if common and common not in shared:
    common = max([s for s in shared if s <= common], default=0)
  loops, metas = [], []
  for k, (t, (loop, meta, s)) in enumerate(zip(trainers, starts)):
    if s > common:
      ckpt_lib.say(f"fer_jax: fold {k} is at step {s}, and {common} is "
                   "the newest step every fold saved: batched folds go on "
                   f"together from step {common}")
      if common:
        loop, meta = t._resume(common)  # pylint: disable=protected-access
      else:
        moved = t.ckpt.set_aside(0)
        ckpt_lib.say(f"fer_jax: fold {k}'s {len(moved)} checkpoint(s) "
                     f"were moved, not deleted, to "
                     f"{moved[0].rsplit('/', 1)[0]}")
        loop, meta = t.init_state(), None
    loops.append(loop)
    metas.append(meta)
  return loops, metas, common


def train(trainers) -> list[dict[str, Any]]:
  """Trains the folds of ``trainers`` (``train.Trainer``, one per fold,
  sharing one mesh) as one program; returns each fold's test report."""
  logs = []
  try:
    return _train(trainers, logs)
  finally:
    for w, b in logs:
      b.close()
      w.close()
    for t in trainers:
      t.close()


def _train(trainers, logs: list) -> list[dict[str, Any]]:
  check(trainers)
  t0 = trainers[0]
  k = len(trainers)
  cfg = t0.config.train
  mesh, replicated = t0.mesh, t0.replicated
  loops, metas, start_step = _start(trainers)
  for t in trainers:
    t._start_best(start_step)  # pylint: disable=protected-access
  stack = jax.jit(_stack, out_shardings=replicated)
  unstack = jax.jit(functools.partial(_unstack, k=k),
                    out_shardings=replicated)
  loop = stack(loops)
  del loops
  total = sum(p.num_steps for p in t0.phases)
  logs.extend(t.open_logs(start_step, total, show_bar=i == 0)
              for i, t in enumerate(trainers))
  last_saved = [start_step or None] * k
  ckpt_lib.say(f"fer_jax: {k} folds batched in one program "
               f"({FIELD}=True), from step {start_step}")
  offset = 0
  for phase_idx, phase in enumerate(t0.phases):
    phase_end = offset + phase.num_steps
    if start_step >= phase_end:
      offset = phase_end
      continue
    first = max(start_step - offset, 0)
    fold_ex = [t.data.examples("train", phase.example_kind, phase.role)
               for t in trainers]
    combined, offsets = shared_examples(fold_ex)
    data = resident.put(combined, phase.with_landmarks, mesh)
    its = [t.phase_iterator(phase_idx, t.phases[phase_idx], ex, True,
                            first, meta)
           for t, ex, meta in zip(trainers, fold_ex, metas)]
    if first == 0 and phase.enter is not None:
      enter = jax.jit(jax.vmap(phase.enter), out_shardings=replicated,
                      donate_argnums=0)
      loop = {**loop, "model": enter(loop["model"])}
    groups = dispatch_groups(
        offset + first, phase_end, cfg.get("steps_per_dispatch", 1),
        [cfg.log_every, cfg.checkpoint_every, cfg.eval_every])
    step_fns = {n: jax.jit(batched_dispatch(
        phase.step, cfg.nonfinite == "stop", n, offsets, mesh),
                           donate_argnums=0) for n in set(groups)}
    feeds = [pipeline.device_prefetch(it, mesh, groups) for it in its]
    runs = [t.phase_run(phase_idx, t.phases[phase_idx], offset, first,
                        w, b, s)
            for t, (w, b), s in zip(trainers, logs, last_saved)]
    for i, n in enumerate(groups):
      got = [next(f) for f in feeds]
      if i == 0:
        t0._compile_cache_hits.start()  # pylint: disable=protected-access
      loop, metrics = step_fns[n](loop, [b for b, _ in got], data)
      if i == 0:
        t0._compile_cache_hits.report(  # pylint: disable=protected-access
            f"phase {phase.name!r}, {k} folds batched")
      folds = _Folds(loop, unstack)
      for j, run in enumerate(runs):
        run.after(n, metrics[j], got[j][1], functools.partial(folds.fold,
                                                               j))
    last_saved = [r.last_saved for r in runs]
    del data
    offset = phase_end
  final = unstack(loop)
  del loop
  reports = [t.finish(f, total, w)
             for t, f, (w, _) in zip(trainers, final, logs)]
  return reports
