"""Orbax checkpoints of a whole run: state, position and data-iterator state.

A checkpoint holds the loop state (every network's variables and optimizer
state, the global step, the non-finite guard) and a JSON record of where the
run stands (method, phase, step in phase, Grain iterator state). Restoring it
and rerunning the same command continues exactly where the run was killed.
Orbax writes each step to a temporary directory and renames it when complete,
so a kill mid-save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath


class CheckpointError(ValueError):
  """A checkpoint cannot serve this run; the message says why."""


class Checkpointer:
  """Saves and restores ``(loop_state, meta)`` under ``workdir/checkpoints``."""

  def __init__(self, workdir: str, max_to_keep: int = 3,
               async_save: bool = True):
    if "://" not in workdir:  # gs:// and other remote paths stay as given
      workdir = os.path.abspath(workdir)
    self.directory = os.path.join(workdir, "checkpoints")
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
    restored = self._manager.restore(step, args=ocp.args.Composite(
        meta=ocp.args.JsonRestore()))
    return step, restored["meta"]

  def restore(self, abstract_state: Any, step: int | None = None,
              method: str | None = None) -> tuple[Any, dict[str, Any]]:
    """Restores into the shapes/shardings of ``abstract_state``."""
    step, meta = self.read_meta(step)
    if method is not None and meta.get("method") != method:
      raise CheckpointError(
          f"checkpoint {self.directory}/{step} was written by method "
          f"{meta.get('method')!r}, not {method!r}: use another --workdir or "
          f"--config")
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state)))
    except (ValueError, KeyError) as e:
      raise CheckpointError(
          f"checkpoint {self.directory}/{step} does not match the state this "
          f"config builds (was the model or data config changed since it was "
          f"written?): {str(e)[:400]}") from None
    return restored["state"], meta

  def restore_as_saved(self, sharding: Any, step: int | None = None
                       ) -> tuple[Any, dict[str, Any]]:
    """Restores a checkpoint as the tree it was saved as (shapes and dtypes
    from its own metadata), every array placed with ``sharding``: no model
    or data is needed to build the target, and the device count may differ
    from the run's."""
    step, meta = self.read_meta(step)
    # A manager that has not saved or restored 'state' yet knows no handler
    # for it, and its item_metadata is None (restoring with None would put
    # every array back on the saving run's devices): ask the handler.
    saved = ocp.StandardCheckpointHandler().metadata(
        epath.Path(self.directory) / str(step) / "state")
    tree = saved.tree if hasattr(saved, "tree") else saved
    if not jax.tree.leaves(tree):
      raise CheckpointError(f"checkpoint {self.directory}/{step} holds no "
                            "arrays under 'state'")
    abstract = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype,
                                       sharding=sharding), tree)
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract)))
    return restored["state"], meta

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


def has_checkpoint(workdir: str) -> bool:
  """Whether ``workdir/checkpoints`` holds a finished step (a directory
  named by its step number; Orbax renames it so only when complete)."""
  d = epath.Path(workdir) / "checkpoints"
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
