"""A fake Cloud Storage for tests: ``gs://bucket/key`` is the local file
``<root>/bucket/key``, reached the ways a run reaches a bucket.

- etils' epath (every file ``fer_jax.files`` writes): without TensorFlow it
  opens gs:// with fsspec's "gcs"/"gs" filesystem; ``FakeGCS`` is registered
  as that filesystem (a local one with the bucket mapped to ``root``, and
  folders made on write, as an object store needs none).
- Orbax: its paths go through epath too; its arrays go through
  TensorStore's own gcs driver, pointed here at the same folder with the
  file driver, and its bucket-layout query (google-cloud-storage) answers
  "flat namespace". Orbax against a real bucket is not exercised.
"""

from __future__ import annotations

import contextlib
import importlib
import os

import fsspec
from fsspec.implementations.local import LocalFileSystem

PREFIXES = ("gs://", "gcs://")


class FakeGCS(LocalFileSystem):
  """LocalFileSystem with ``gs://`` mapped under ``FakeGCS.root``."""

  root = ""
  protocol = ("gs", "gcs")

  def __init__(self, *args, **kwargs):
    kwargs.pop("finalize_on_close", None)  # gcsfs's option (epath passes it)
    kwargs["auto_mkdir"] = True
    super().__init__(*args, **kwargs)

  @classmethod
  def _strip_protocol(cls, path):
    path = fsspec.utils.stringify_path(path)
    if isinstance(path, (list, tuple)):
      return [cls._strip_protocol(p) for p in path]
    for prefix in PREFIXES:
      if path.startswith(prefix):
        return os.path.join(cls.root, path[len(prefix):]).rstrip("/")
    return super()._strip_protocol(path)

  def glob(self, path, **kwargs):  # epath prefixes its results with gs://
    return [os.path.relpath(p, self.root)
            for p in super().glob(path, **kwargs)]


def local_path(root: str, url: str) -> str:
  """Where ``gs://...`` ``url`` lies under ``root``."""
  assert url.startswith("gs://"), url
  return os.path.join(root, url[len("gs://"):])


@contextlib.contextmanager
def fake_gcs(root: str):
  """Routes gs:// (epath, fsspec, Orbax's TensorStore) to ``root``."""
  from etils.epath import backend
  from orbax.checkpoint._src.path import gcs_utils
  # ``fsspec.registry`` the attribute is a read-only view of the module's
  # _registry, where register_implementation puts classes.
  registry = importlib.import_module("fsspec.registry")
  saved = {p: registry._registry.get(p) for p in ("gs", "gcs")}  # pylint: disable=protected-access
  bucket_fs = type("FakeGCS", (FakeGCS,), {"root": root})  # one per root
  for p in ("gs", "gcs"):
    fsspec.register_implementation(p, bucket_fs, clobber=True)
  backend.fsspec_backend._get_filesystem.cache_clear()  # pylint: disable=protected-access
  kvstore, hns = (gcs_utils.get_kvstore_for_gcs,
                  gcs_utils.is_hierarchical_namespace_enabled)
  gcs_utils.get_kvstore_for_gcs = lambda path: {
      "driver": "file", "path": local_path(root, path)}
  gcs_utils.is_hierarchical_namespace_enabled = lambda path: False
  try:
    yield root
  finally:
    gcs_utils.get_kvstore_for_gcs = kvstore
    gcs_utils.is_hierarchical_namespace_enabled = hns
    for p, cls in saved.items():  # gcsfs again, where it is installed
      if cls is None:
        registry._registry.pop(p, None)  # pylint: disable=protected-access
      else:
        fsspec.register_implementation(p, cls, clobber=True)
    backend.fsspec_backend._get_filesystem.cache_clear()  # pylint: disable=protected-access
