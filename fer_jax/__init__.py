"""fer_jax: facial-expression-recognition methods in JAX/Flax.

The method configs and the TFDS data builders live in the repository's
top-level ``configs/`` and ``data_builders/`` folders; an installed package
(``pip install .``, a wheel) holds them as ``fer_jax.configs`` and
``fer_jax.data_builders`` (pyproject.toml's ``package-dir``). From a source
checkout on ``sys.path`` (``PYTHONPATH=repo``), the finder below gives the
top-level folders those same names, so the code imports one name
everywhere and never a top-level ``data_builders``.
"""

import importlib.util as _importlib_util
import os as _os
import sys as _sys

_SUBPACKAGES = ("configs", "data_builders")


class _SourceTreeFinder:
  """Finds ``fer_jax.<name>`` in the checkout's top-level ``<name>/``.

  Only installed when this package's folder has no ``<name>/`` of its own
  (a source checkout, or an editable install): an installed wheel's own
  copies are found by Python's path finder first.
  """

  def __init__(self, folders: dict):
    self.folders = folders

  def find_spec(self, fullname, path=None, target=None):  # noqa: ARG002
    folder = self.folders.get(fullname)
    if folder is None:
      return None
    return _importlib_util.spec_from_file_location(
        fullname, _os.path.join(folder, "__init__.py"),
        submodule_search_locations=[folder])


def _install_source_tree_finder() -> None:
  here = _os.path.dirname(_os.path.abspath(__file__))
  root = _os.path.dirname(here)
  folders = {f"{__name__}.{name}": _os.path.join(root, name)
             for name in _SUBPACKAGES
             if not _os.path.isdir(_os.path.join(here, name))
             and _os.path.isfile(_os.path.join(root, name, "__init__.py"))}
  if folders and not any(isinstance(f, _SourceTreeFinder)
                         and f.folders == folders for f in _sys.meta_path):
    _sys.meta_path.append(_SourceTreeFinder(folders))


_install_source_tree_finder()
