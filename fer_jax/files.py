"""Workdir files that survive a kill: atomic writes, tolerant reads, and the
workdir lock.

A run can be killed at any instruction. A file rewritten in place is then
empty or half written, and the next run (or ``evaluate.load``) fails on it;
written to a temporary file and renamed, it is either the old or the new
one. Two runs in one workdir overwrite each other's checkpoints, config and
logs, so a run holds ``workdir/.fer_jax.lock`` (an OS lock: a killed run's
lock goes with its process).
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any

LOCK_NAME = ".fer_jax.lock"


class FileError(ValueError):
  """A workdir file cannot be read or is held; the message names it."""


def write_text_atomic(path: str, text: str) -> None:
  """Writes ``text`` to ``path`` through a temporary file and a rename, so a
  reader (or a kill) never sees half of it."""
  tmp = f"{path}.tmp.{os.getpid()}"
  with open(tmp, "w") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def write_json_atomic(path: str, obj: Any) -> None:
  write_text_atomic(path, json.dumps(obj, indent=2))


def read_json(path: str, what: str = "file") -> Any:
  """``path``'s JSON, or FileError naming the file and what is wrong."""
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise FileError(f"{path} ({what}) is not valid JSON ({e}): it was cut "
                    "short or edited; restore it, or delete it to start "
                    "over") from None
  except OSError as e:
    raise FileError(f"{path} ({what}) cannot be read: "
                    f"{e.strerror or e}") from None


class WorkdirLock:
  """Holds ``workdir/.fer_jax.lock`` (fcntl.flock) for a run's lifetime.

  A second process is refused at once with the holder's pid, host and start
  time. The OS drops the lock when its process dies, so a killed run never
  leaves the workdir locked; the file's text is only a note of the holder.
  Remote workdirs (gs://) have no such lock and are not locked.
  """

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, LOCK_NAME)
    self._fd = None

  def acquire(self) -> "WorkdirLock":
    import fcntl  # pylint: disable=import-outside-toplevel
    if "://" in self.path:
      return self
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.read(fd, 1000).decode(errors="replace").strip()
      os.close(fd)
      holder = holder or "a process that is starting"
      raise FileError(
          f"the workdir is in use by another run ({holder}; lock "
          f"{self.path}): wait for it to end, stop it, or use another "
          "--workdir") from None
    os.ftruncate(fd, 0)
    os.write(fd, (f"pid {os.getpid()} on host {socket.gethostname()}, "
                  f"since {time.strftime('%Y-%m-%d %H:%M:%S')}").encode())
    self._fd = fd
    return self

  def release(self) -> None:
    if self._fd is not None:
      os.ftruncate(self._fd, 0)
      os.close(self._fd)  # closing the descriptor drops the flock
      self._fd = None

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()
