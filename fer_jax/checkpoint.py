"""Orbax checkpoints of a whole run: state, position and data-iterator state.

A checkpoint holds the loop state (every network's variables and optimizer
state, the global step, the non-finite guard) and a JSON record of where the
run stands (method, phase, step in phase, Grain iterator state). Restoring it
and rerunning the same command continues exactly where the run was killed.
Orbax writes each step to a temporary directory and renames it when complete,
so a kill mid-save leaves the previous checkpoint intact.

A finished step can still be damaged later (a disk error, a copy cut short,
a file deleted by hand). Such a step is ``CorruptCheckpoint``: a resume
skips it for the newest step that restores and says so, an evaluation names
the file and an older step to evaluate. A step whose arrays have other
shapes than the config builds is not corrupt but another run's
(``CheckpointError``): it is never skipped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
import tqdm
from etils import epath


class CheckpointError(ValueError):
  """A checkpoint cannot serve this run; the message says why."""


class CorruptCheckpoint(CheckpointError):
  """A step's files cannot be read back (cut short, deleted, garbled)."""

  def __init__(self, step: int, reason: str):
    super().__init__(reason)
    self.step, self.reason = step, reason


# Where steps a resume went back past are moved (never deleted silently).
SET_ASIDE = "checkpoints_set_aside"
# The best state by validation accuracy (config.train.select_by='val').
BEST = "best"


def _first_line(e: BaseException, limit: int = 300) -> str:
  """The most specific message in ``e``'s chain, one line: TensorStore's
  outer error names only the array index, its cause the file and fault."""
  chain = [e]
  while chain[-1].__cause__ is not None and len(chain) < 5:
    chain.append(chain[-1].__cause__)
  text = str(chain[-1]) or type(chain[-1]).__name__
  line = " ".join(text.split())
  return line[:limit] + ("..." if len(line) > limit else "")


def _echo_of_a_failed_read(unraisable) -> bool:
  """Whether an unraisable exception is a leftover of a restore that
  failed on an unreadable array: Orbax stops at the first bad read, and
  the other reads' coroutines and callbacks then fail on its closed event
  loop, each printing a traceback as they are collected."""
  exc = unraisable.exc_value
  if isinstance(exc, RuntimeError) and "Event loop is closed" in str(exc):
    return True
  code = getattr(unraisable.object, "cr_code", None)
  return ("Encountered error while reading array" in str(exc)
          or getattr(code, "co_name", "") == "_read_array_index_and_device_put")


def _quiet_failed_reads() -> None:
  """Drops the tracebacks a failed restore leaves behind (the failure
  itself is reported once, in a CorruptCheckpoint); others pass through."""
  previous = sys.unraisablehook
  if getattr(previous, "fer_jax_quiet", False):
    return

  def hook(unraisable):
    if not _echo_of_a_failed_read(unraisable):
      previous(unraisable)

  hook.fer_jax_quiet = True
  sys.unraisablehook = hook
  # ... and asyncio logs the gathered reads' exception as never retrieved.
  logging.getLogger("asyncio").addFilter(
      lambda record: "Encountered error while reading array"
      not in record.getMessage())


def _flat_shapes(tree) -> dict[str, tuple]:
  """{'model.params.head.kernel': (shape, dtype)} for every array leaf;
  key paths spelled as Orbax stores them (tuple index and namedtuple
  field as a path part)."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    parts = []
    for k in path:
      for attr in ("key", "idx", "name"):
        if hasattr(k, attr):
          parts.append(str(getattr(k, attr)))
          break
    out[".".join(parts)] = (tuple(leaf.shape), str(leaf.dtype))
  return out


class Checkpointer:
  """Saves and restores ``(loop_state, meta)`` under ``workdir/checkpoints``
  (``subdir``: another series, e.g. the best-by-validation state)."""

  def __init__(self, workdir: str, max_to_keep: int = 3,
               async_save: bool = True, subdir: str = "checkpoints"):
    if "://" not in workdir:  # gs:// and other remote paths stay as given
      workdir = os.path.abspath(workdir)
    self.workdir = workdir
    self.directory = os.path.join(workdir, subdir)
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True,
            enable_async_checkpointing=async_save))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, loop_state: Any, meta: dict[str, Any]) -> None:
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(loop_state),
        meta=ocp.args.JsonSave(meta)))

  def read_meta(self, step: int | None = None) -> tuple[int, dict[str, Any]]:
    step = self._resolve(step)
    path = epath.Path(self.directory) / str(step) / "meta" / "metadata"
    try:
      meta = json.loads(path.read_text())
    except FileNotFoundError:
      raise CorruptCheckpoint(step, f"{path} is missing") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
      raise CorruptCheckpoint(
          step, f"{path} is not valid JSON ({_first_line(e)})") from None
    if not isinstance(meta, dict) or "global_step" not in meta:
      raise CorruptCheckpoint(step, f"{path} holds no 'global_step'")
    return step, meta

  def saved_shapes(self, step: int) -> Any:
    """The state tree as saved (shape and dtype per array), from the step's
    own metadata; CorruptCheckpoint naming the file that cannot be read."""
    state = epath.Path(self.directory) / str(step) / "state"
    if not (state / "_METADATA").exists():
      raise CorruptCheckpoint(step, f"{state / '_METADATA'} is missing")
    for path in [state / "_METADATA", *(state / "array_metadatas").glob(
        "process_*")]:
      try:
        json.loads(path.read_text())
      except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CorruptCheckpoint(
            step, f"{path} is not valid JSON ({_first_line(e)})") from None
    if list(state.glob("ocdbt.process_*")) and not (
        state / "manifest.ocdbt").exists():
      raise CorruptCheckpoint(step, f"{state / 'manifest.ocdbt'} is missing")
    try:
      saved = ocp.StandardCheckpointHandler().metadata(state)
    except Exception as e:  # pylint: disable=broad-except
      raise CorruptCheckpoint(step, f"{state}'s metadata cannot be read "
                              f"({_first_line(e)})") from None
    return saved.tree if hasattr(saved, "tree") else saved

  def _check_shapes(self, step: int, saved: Any, abstract: Any) -> list[str]:
    """Raises CheckpointError (not corrupt: another config's checkpoint)
    when an array's shape or dtype differs; returns the paths one side
    lacks (a restore that then fails is another config's too)."""
    have, want = _flat_shapes(saved), _flat_shapes(abstract)
    differ = [f"{k}: saved {have[k][0]} {have[k][1]}, this config builds "
              f"{want[k][0]} {want[k][1]}"
              for k in sorted(have.keys() & want.keys()) if have[k] != want[k]]
    if differ:
      raise CheckpointError(
          f"checkpoint {self.directory}/{step} does not match the state this "
          f"config builds (was the model or data config changed since it was "
          f"written?): {len(differ)} arrays differ, e.g. "
          f"{'; '.join(differ[:3])}")
    return sorted(have.keys() ^ want.keys())

  def _restore_step(self, step: int, abstract: Any | None, sharding: Any,
                    method: str | None) -> tuple[Any, dict[str, Any]]:
    _, meta = self.read_meta(step)
    if method is not None and meta.get("method") != method:
      raise CheckpointError(
          f"checkpoint {self.directory}/{step} was written by method "
          f"{meta.get('method')!r}, not {method!r}: use another --workdir or "
          f"--config")
    saved = self.saved_shapes(step)
    if abstract is None:  # as saved: shapes and dtypes from its metadata
      if not jax.tree.leaves(saved):
        raise CorruptCheckpoint(step, f"{self.directory}/{step}/state holds "
                                "no arrays")
      abstract = jax.tree.map(
          lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype,
                                         sharding=sharding), saved)
      unmatched = []
    else:
      unmatched = self._check_shapes(step, saved, abstract)
    # Before the restore: the other reads of a failed one fail on their own
    # threads while the first failure is still on its way here.
    _quiet_failed_reads()
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract)))
    except Exception as e:  # pylint: disable=broad-except
      if unmatched:
        raise CheckpointError(
            f"checkpoint {self.directory}/{step} does not match the state "
            f"this config builds (was the model or data config changed "
            f"since it was written?): {len(unmatched)} arrays are on one "
            f"side only, e.g. {', '.join(unmatched[:3])}") from None
      raise CorruptCheckpoint(step, f"{self.directory}/{step}/state cannot "
                              f"be read ({_first_line(e)})") from None
    return restored["state"], meta

  def _candidates(self, step: int | None, fallback: bool) -> list[int]:
    if step is not None:
      return [self._resolve(step)]
    steps = sorted(self.all_steps(), reverse=True)
    if not steps:
      raise CheckpointError(f"no checkpoint under {self.directory}")
    return steps if fallback else steps[:1]

  def _restore(self, abstract, step, method, fallback, sharding=None,
               hint: str = "--checkpoint_step"):
    candidates = self._candidates(step, fallback)
    skipped = []
    for s in candidates:
      try:
        state, meta = self._restore_step(s, abstract, sharding, method)
      except CorruptCheckpoint as e:
        skipped.append(e)
        if fallback and step is None and s != candidates[-1]:
          say(f"fer_jax: checkpoint {self.directory}/{s} cannot be "
              f"restored, skipping it: {e.reason}")
        continue
      return state, meta
    older = [s for s in self.all_steps() if s < skipped[0].step]
    if len(skipped) > 1:
      raise CheckpointError(
          f"no checkpoint under {self.directory} restores ("
          + "; ".join(f"step {e.step}: {e.reason}" for e in skipped)
          + f"): move {self.directory} away to start over")
    e = skipped[0]
    tip = (f"; {hint}={max(older)} uses the newest older step"
           if older else "; no older step is kept")
    raise CorruptCheckpoint(
        e.step, f"checkpoint {self.directory}/{e.step} cannot be restored: "
        f"{e.reason}{tip}")

  def restore(self, abstract_state: Any, step: int | None = None,
              method: str | None = None, fallback: bool = False
              ) -> tuple[Any, dict[str, Any]]:
    """Restores into the shapes/shardings of ``abstract_state``: ``step``,
    or the newest; with ``fallback`` (a resume) the newest that restores,
    each step skipped said in one line. A corrupt step otherwise raises
    CorruptCheckpoint naming the file and an older step to use; another
    config's checkpoint (other shapes) always raises CheckpointError."""
    return self._restore(abstract_state, step, method, fallback)

  def restore_as_saved(self, sharding: Any, step: int | None = None,
                       hint: str = "--checkpoint_step"
                       ) -> tuple[Any, dict[str, Any]]:
    """Restores a checkpoint as the tree it was saved as (shapes and dtypes
    from its own metadata), every array placed with ``sharding``: no model
    or data is needed to build the target, and the device count may differ
    from the run's."""
    return self._restore(None, step, None, False, sharding, hint)

  def set_aside(self, after: int) -> list[str]:
    """Moves every step newer than ``after`` to ``workdir/
    checkpoints_set_aside/`` (a resume from an older step would otherwise
    not save over them: Orbax skips a step at or below its latest);
    returns where they went. Nothing is deleted."""
    newer = [s for s in self.all_steps() if s > after]
    if not newer:
      return []
    self.wait()
    dest_root = epath.Path(self.workdir) / SET_ASIDE
    moved = []
    if jax.process_index() == 0:
      dest_root.mkdir(parents=True, exist_ok=True)
      stamp = time.strftime("%Y%m%d-%H%M%S")
      for s in newer:
        dest = dest_root / f"{os.path.basename(self.directory)}_{s}_{stamp}"
        (epath.Path(self.directory) / str(s)).rename(dest)
        moved.append(os.fspath(dest))
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
      multihost_utils.sync_global_devices("fer_jax_set_aside")
    self._manager.reload()
    return moved

  def _resolve(self, step: int | None) -> int:
    steps = self.all_steps()
    if not steps:
      raise CheckpointError(f"no checkpoint under {self.directory}")
    if step is None:
      return max(steps)
    if step not in steps:
      raise CheckpointError(f"no checkpoint for step {step} under "
                            f"{self.directory}; available: {sorted(steps)}")
    return step

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def say(line: str) -> None:
  """One line to the console (process 0). A progress bar on the terminal
  is cleared first and drawn again under the line (tqdm's external write
  mode), so the line never lands on the bar's."""
  if jax.process_index() == 0:
    with tqdm.tqdm.external_write_mode(file=sys.stdout):
      print(line, flush=True)


def has_checkpoint(workdir: str, subdir: str = "checkpoints") -> bool:
  """Whether ``workdir/checkpoints`` (or ``subdir``) holds a finished step
  (a directory named by its step number; Orbax renames it so only when
  complete)."""
  d = epath.Path(workdir) / subdir
  return d.is_dir() and any(p.name.isdigit() for p in d.iterdir())


def state_digest(tree: Any) -> str:
  """SHA-256 over every leaf (path, dtype, shape, bytes): equal iff identical."""
  h = hashlib.sha256()
  leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]
  for path, leaf in leaves:
    arr = np.asarray(leaf)
    h.update(jax.tree_util.keystr(path).encode())
    h.update(f"{arr.dtype}{arr.shape}".encode())
    h.update(np.ascontiguousarray(arr).tobytes())
  return h.hexdigest()[:16]
