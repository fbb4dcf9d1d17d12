"""Counts the files a build skipped, so a few broken images in a large
archive never crash a build but are never silently lost either."""

from __future__ import annotations

import collections
import logging

logger = logging.getLogger("fer_jax.data_builders")
_SHOWN = 5  # files named one by one before only counting


class BuildLog:
  """Per split: ``skip(path, reason)`` while generating, ``finish()`` at the
  end logs the totals (and returns them, for the data set's metadata)."""

  def __init__(self, dataset: str, split: str):
    self.dataset, self.split = dataset, split
    self.counts: collections.Counter = collections.Counter()
    self.examples: dict[str, str] = {}
    self.written = 0

  def skip(self, path, reason: str, detail: str = "") -> None:
    self.counts[reason] += 1
    self.examples.setdefault(reason, str(path))
    if sum(self.counts.values()) <= _SHOWN:
      logger.warning("%s/%s: skipped %s (%s%s)", self.dataset, self.split,
                     path, reason, f": {detail}" if detail else "")

  @property
  def skipped(self) -> int:
    return sum(self.counts.values())

  def finish(self) -> dict[str, int]:
    """Logs 'wrote N, skipped M (reason: count, ...)' and returns the counts."""
    detail = ", ".join(f"{r}: {n} (e.g. {self.examples[r]})"
                       for r, n in sorted(self.counts.items()))
    logger.warning("%s/%s: wrote %d examples, skipped %d%s", self.dataset,
                   self.split, self.written, self.skipped,
                   f" ({detail})" if detail else "")
    return dict(self.counts)
