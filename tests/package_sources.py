"""The checkout's package sources, copied for a wheel build or an install
(tests/test_packaging.py, tests/test_notebooks.py). A plain module, not
conftest: tests/data_builders has a conftest of its own, which shadows
``import conftest`` in a full run."""

import os
import shutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What a wheel or ``pip install REPO_URL`` is built from.
PACKAGE_SOURCES = ("pyproject.toml", "README.md", "fer_jax", "configs",
                   "data_builders")


def copy_package_sources(dst):
  """Copies the checkout's PACKAGE_SOURCES into ``dst`` (a pathlib.Path),
  without bytecode, so a build's build/ and egg-info never land in the
  checkout and parallel tests never share them; returns ``dst``."""
  dst.mkdir(parents=True, exist_ok=True)
  for name in PACKAGE_SOURCES:
    path = os.path.join(ROOT, name)
    if os.path.isdir(path):
      shutil.copytree(path, dst / name, ignore=shutil.ignore_patterns(
          "__pycache__", "*.pyc"))
    else:
      shutil.copy(path, dst / name)
  return dst
