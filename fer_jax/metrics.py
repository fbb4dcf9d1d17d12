"""One writer for scalars: TensorBoard event files + ``metrics.jsonl``.

TensorBoard reads ``workdir/tensorboard``; ``metrics.jsonl`` holds one JSON
object per logged step for scripts. On resume the JSON log is cut back to the
restored step so a resumed run's log equals an uninterrupted one's. A run
killed mid-write leaves a torn last line: readers drop it (and any other
line that is not JSON) with a warning, and the cut is written to a
temporary file and renamed over the log, so a kill during it loses nothing.

Every file goes through ``fer_jax.files``. On a remote workdir (gs://) an
object cannot be appended to: the log is kept in memory and rewritten whole
(one atomic upload) at most every ``REMOTE_FLUSH_SECS``, at every
``flush`` (the trainer's checkpoints) and at ``close``; TensorBoard writes
its event files to a local folder that is copied up at the same times. A
run killed on a remote workdir loses at most the rows since its last flush,
and none up to its last checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
import uuid
from typing import Mapping

import jax
import numpy as np

from fer_jax import files

REMOTE_FLUSH_SECS = 30.0  # how stale a remote workdir's logs may get


class MetricWriter:

  def __init__(self, workdir: str, resume_step: int = 0):
    self.path = files.join(workdir, "metrics.jsonl")
    self.remote = files.is_remote(workdir)
    self._tb_dir = files.join(workdir, "tensorboard")
    self._pending = ""  # remote: the whole log, rewritten at each upload
    self._dirty = False
    self._uploaded_at = time.monotonic()
    self._copied: dict[str, int] = {}  # remote: event file -> size copied
    self._truncate_after(resume_step)
    self._tb = None
    self._tb_local = self._tb_dir
    if jax.process_index() == 0:
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
      suffix = ""
      if self.remote:  # written locally, copied up at each flush
        self._tb_local = tempfile.mkdtemp(prefix="fer_jax_tensorboard_")
        # Event files are named by the second and host: a unique tail keeps
        # a quick resume's file from replacing the one before it.
        suffix = f".{uuid.uuid4().hex[:8]}"
      self._tb = SummaryWriter(self._tb_local, purge_step=resume_step or None,
                               filename_suffix=suffix)

  def _truncate_after(self, step: int) -> None:
    if jax.process_index() or not files.exists(self.path):
      return
    text = files.read_text(self.path)
    kept = "".join(json.dumps(r) + "\n" for r in _parse(text, self.path)
                   if r["step"] <= step)
    self._pending = kept
    if kept != text:  # rewritten only when something is cut
      files.write_text_atomic(self.path, kept)

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if jax.process_index():
      return
    clean = {k: (float(v) if math.isfinite(float(v)) else str(float(v)))
             for k, v in scalars.items()}
    line = json.dumps({"step": int(step), **clean}) + "\n"
    for k, v in scalars.items():
      self._tb.add_scalar(k, float(v), int(step))
    self._tb.flush()
    if not self.remote:
      files.append_text(self.path, line)
      return
    self._pending += line
    self._dirty = True
    if time.monotonic() - self._uploaded_at >= REMOTE_FLUSH_SECS:
      self.flush()

  def flush(self) -> None:
    """On a remote workdir, uploads the log and TensorBoard's files now (a
    local workdir's are written as they come)."""
    if jax.process_index() or not self.remote:
      return
    self._tb.flush()
    self._upload()

  def _upload(self) -> None:
    if self._dirty:
      files.write_text_atomic(self.path, self._pending)
      self._dirty = False
    for name in os.listdir(self._tb_local):  # the event files that grew
      local = os.path.join(self._tb_local, name)
      size = os.path.getsize(local)
      if self._copied.get(name) != size:
        files.copy_to(local, files.join(self._tb_dir, name))
        self._copied[name] = size
    self._uploaded_at = time.monotonic()

  def write_pictures(self, step: int, directory: str, prefix: str) -> None:
    """Every PNG in ``directory`` (an evaluation's confusion matrix and the
    method's pictures) as a TensorBoard image ``prefix/<file name>``."""
    if self._tb is None:
      return
    import io  # pylint: disable=import-outside-toplevel
    from PIL import Image  # pylint: disable=import-outside-toplevel
    for name in files.listdir(directory):
      if name.endswith(".png"):
        data = files.read_bytes(files.join(directory, name))
        with Image.open(io.BytesIO(data)) as im:
          pixels = np.asarray(im.convert("RGB"))
        self._tb.add_image(f"{prefix}/{name[:-4]}", pixels, int(step),
                           dataformats="HWC")
    self._tb.flush()

  def close(self) -> None:
    if self._tb is None:
      return
    self._tb.close()
    if self.remote:
      self._upload()
      shutil.rmtree(self._tb_local, ignore_errors=True)


def _parse(text: str, path: str) -> list[dict]:
  """The rows of a metrics.jsonl text; lines that are not a JSON object
  with a step (torn by a kill mid-write) are dropped with a warning."""
  rows = []
  for n, line in enumerate(text.splitlines(), 1):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
      int(row["step"])
    except (ValueError, KeyError, TypeError):
      print(f"fer_jax: warning: {path} line {n} is not a complete JSON "
            f"row (a run killed while writing it?), dropped: {line[:80]!r}",
            flush=True)
      continue
    rows.append(row)
  return rows


def read_metrics(workdir: str) -> list[dict]:
  """metrics.jsonl's rows, torn lines dropped (see ``_parse``)."""
  path = files.join(workdir, "metrics.jsonl")
  return _parse(files.read_text(path), path)
