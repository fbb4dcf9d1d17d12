"""Fixtures of the builder tests: the tree writers live in face_trees.py."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture
def data_dir(tmp_path):
  """A fresh TFDS data dir per test."""
  d = tmp_path / "tfds"
  d.mkdir()
  return d
