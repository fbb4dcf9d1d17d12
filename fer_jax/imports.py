"""Lazy imports for registries: a method or builder is imported only when a
config names it, so one method's dependencies never load for another."""

from __future__ import annotations

import importlib
from typing import Any


def import_symbol(spec: str) -> Any:
  """``"package.module:Name"`` -> the object."""
  module, name = spec.split(":")
  return getattr(importlib.import_module(module), name)
