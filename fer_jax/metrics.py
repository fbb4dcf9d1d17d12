"""One writer for scalars: TensorBoard event files + ``metrics.jsonl``.

TensorBoard reads ``workdir/tensorboard``; ``metrics.jsonl`` holds one JSON
object per logged step for scripts. On resume the JSON log is cut back to the
restored step so a resumed run's log equals an uninterrupted one's. A run
killed mid-write leaves a torn last line: readers drop it (and any other
line that is not JSON) with a warning, and the cut is written to a
temporary file and renamed over the log, so a kill during it loses nothing.
"""

from __future__ import annotations

import json
import math
import os
from typing import Mapping

import jax
import numpy as np

from fer_jax import files


class MetricWriter:

  def __init__(self, workdir: str, resume_step: int = 0):
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._truncate_after(resume_step)
    self._tb = None
    if jax.process_index() == 0:
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"),
                               purge_step=resume_step or None)

  def _truncate_after(self, step: int) -> None:
    if jax.process_index() or not os.path.exists(self.path):
      return
    with open(self.path) as f:
      text = f.read()
    kept = "".join(json.dumps(r) + "\n" for r in _parse(text, self.path)
                   if r["step"] <= step)
    if kept != text:  # rewritten only when something is cut
      files.write_text_atomic(self.path, kept)

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if jax.process_index():
      return
    clean = {k: (float(v) if math.isfinite(float(v)) else str(float(v)))
             for k, v in scalars.items()}
    with open(self.path, "a") as f:
      f.write(json.dumps({"step": int(step), **clean}) + "\n")
    for k, v in scalars.items():
      self._tb.add_scalar(k, float(v), int(step))
    self._tb.flush()

  def write_pictures(self, step: int, directory: str, prefix: str) -> None:
    """Every PNG in ``directory`` (an evaluation's confusion matrix and the
    method's pictures) as a TensorBoard image ``prefix/<file name>``."""
    if self._tb is None or not os.path.isdir(directory):
      return
    from PIL import Image  # pylint: disable=import-outside-toplevel
    for name in sorted(os.listdir(directory)):
      if name.endswith(".png"):
        with Image.open(os.path.join(directory, name)) as im:
          pixels = np.asarray(im.convert("RGB"))
        self._tb.add_image(f"{prefix}/{name[:-4]}", pixels, int(step),
                           dataformats="HWC")
    self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


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
  path = os.path.join(workdir, "metrics.jsonl")
  with open(path) as f:
    return _parse(f.read(), path)
