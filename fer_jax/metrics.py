"""One writer for scalars: TensorBoard event files + ``metrics.jsonl``.

TensorBoard reads ``workdir/tensorboard``; ``metrics.jsonl`` holds one JSON
object per logged step for scripts. On resume the JSON log is cut back to the
restored step so a resumed run's log equals an uninterrupted one's.
"""

from __future__ import annotations

import json
import math
import os
from typing import Mapping

import jax


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
      kept = [l for l in f if l.strip() and json.loads(l)["step"] <= step]
    with open(self.path, "w") as f:
      f.writelines(kept)

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

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def read_metrics(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(l) for l in f if l.strip()]
