"""Every file a run writes or reads back, local or remote (gs://), through
one path layer: atomic writes, tolerant reads, and the workdir lock.

A run can be killed at any instruction. A file rewritten in place is then
empty or half written, and the next run (or ``evaluate.load``) fails on it;
written to a temporary file and renamed, it is either the old or the new
one. Two runs in one workdir overwrite each other's checkpoints, config and
logs, so a run holds ``workdir/.fer_jax.lock`` (an OS lock: a killed run's
lock goes with its process).

A path with a scheme (``gs://bucket/run``, as a Cloud TPU run keeps its
workdir in a bucket) goes through etils' ``epath`` (TensorFlow's gfile where
TensorFlow is installed, as on Colab, else fsspec: gcsfs for gs://); any
other path is a local one and uses ``os`` (``~`` is the shell's to expand,
as for the checkpoints). Plain ``open``/``os.makedirs`` on
``gs://bucket/run`` would make a local folder ``./gs:/bucket/run`` instead
(#17). On gs:// an object is written whole by
one upload, so a reader sees the old object or the new one: a single write
is already atomic and needs no temporary name. An append is a read and a
whole rewrite there (``append_text``), so frequent appenders (metrics.jsonl)
buffer and rewrite now and then (``metrics.MetricWriter``). Remote workdirs
have no lock (an object store has no flock): ``WorkdirLock`` says so.
"""

from __future__ import annotations

import io
import json
import os
import socket
import time
from typing import Any, IO

from etils import epath

LOCK_NAME = ".fer_jax.lock"


class FileError(ValueError):
  """A workdir file cannot be read or is held; the message names it."""


def is_remote(path: str) -> bool:
  """Whether ``path`` names an object store (gs://, s3://, ...): a scheme."""
  return "://" in os.fspath(path)


def as_path(path: str) -> epath.Path:
  """``path`` as an epath.Path (which picks the backend by its scheme)."""
  return epath.Path(path)


def join(path: str, *names: str) -> str:
  """``path/name/...`` as a string (a gs:// prefix kept intact)."""
  return os.path.join(os.fspath(path), *names)


def exists(path: str) -> bool:
  return as_path(path).exists() if is_remote(path) else os.path.exists(path)


def isdir(path: str) -> bool:
  """A directory, or on an object store a prefix that holds objects."""
  return as_path(path).is_dir() if is_remote(path) else os.path.isdir(path)


def listdir(path: str) -> list[str]:
  """The names in ``path``, sorted ([] when it does not exist)."""
  if not isdir(path):
    return []
  if is_remote(path):
    return sorted(p.name for p in as_path(path).iterdir())
  return sorted(os.listdir(path))


def makedirs(path: str) -> None:
  """``mkdir -p`` of a local folder. An object store has no folders (a
  prefix exists once an object is under it, and asking gcsfs for one may
  create a bucket): nothing to do there."""
  if not is_remote(path):
    os.makedirs(path, exist_ok=True)


def remove(path: str) -> None:
  """Deletes the file ``path`` (missing is fine)."""
  if is_remote(path):
    as_path(path).unlink(missing_ok=True)
  elif os.path.exists(path):
    os.remove(path)


def open_file(path: str, mode: str = "r") -> IO:
  """``path`` opened for reading or writing ('r', 'rb', 'w', 'wb', 'a')."""
  if is_remote(path):
    return as_path(path).open(mode)
  return open(path, mode)  # noqa: SIM115


def read_bytes(path: str) -> bytes:
  with open_file(path, "rb") as f:
    return f.read()


def read_text(path: str) -> str:
  with open_file(path, "r") as f:
    return f.read()


def write_bytes_atomic(path: str, data: bytes) -> None:
  """Writes ``data`` to ``path`` so a reader (or a kill) never sees half of
  it: locally through a temporary file, fsync and a rename; remotely as one
  object upload (atomic by itself). Creates a local parent folder."""
  if is_remote(path):
    as_path(path).write_bytes(data)
    return
  makedirs(os.path.dirname(path) or ".")
  tmp = f"{path}.tmp.{os.getpid()}"
  with open(tmp, "wb") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def write_text_atomic(path: str, text: str) -> None:
  """``write_bytes_atomic`` of ``text`` as UTF-8."""
  write_bytes_atomic(path, text.encode())


def write_json_atomic(path: str, obj: Any, indent: int = 2) -> None:
  write_text_atomic(path, json.dumps(obj, indent=indent))


def append_text(path: str, text: str) -> None:
  """Appends ``text`` to ``path``: locally an O_APPEND write; on an object
  store (objects cannot grow) a read and a whole rewrite, which costs the
  file's size per call: batch the appends."""
  if is_remote(path):
    old = read_text(path) if exists(path) else ""
    write_text_atomic(path, old + text)
    return
  with open(path, "a") as f:
    f.write(text)


def copy_to(local_path: str, path: str) -> None:
  """Copies a local file to ``path`` (local or remote) atomically."""
  with open(local_path, "rb") as f:
    write_bytes_atomic(path, f.read())


def save_png(path: str, write) -> None:
  """A PNG written by ``write(file_object)`` (matplotlib's ``savefig``,
  PIL's ``save``) to ``path`` atomically, local or remote."""
  buf = io.BytesIO()
  write(buf)
  write_bytes_atomic(path, buf.getvalue())


def read_json(path: str, what: str = "file") -> Any:
  """``path``'s JSON, or FileError naming the file and what is wrong."""
  try:
    return json.loads(read_text(path))
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
  A remote workdir (gs://) cannot be locked (an object store has no
  flock): the run says so once and goes on unlocked.
  """

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.path = join(workdir, LOCK_NAME)
    self._fd = None

  def acquire(self) -> "WorkdirLock":
    import fcntl  # pylint: disable=import-outside-toplevel
    if is_remote(self.workdir):
      print(f"fer_jax: note: {self.workdir} is remote: it has no workdir "
            "lock, so make sure no other run uses it (two runs would "
            "overwrite each other's checkpoints and logs)", flush=True)
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
