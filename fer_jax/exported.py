"""Predict with a model ``fer_jax.export`` wrote, using jax and numpy only.

  from fer_jax import exported
  model = exported.load("exported/gndl")   # model.jax_export + model.json
  model.predict(faces)        # uint8 (N, S, S, 3) aligned faces -> class ids
  model.probabilities(faces)  # (N, K), columns in model.classes

This module imports nothing but the standard library, numpy and jax (no
flax, optax, orbax or fer_jax's training code; tests/test_export.py checks
it in a process where those imports fail), so a serving environment needs
``pip install jax`` (and this one file, or the package) only. The faces
must be aligned as ``model.alignment`` says (``fer_jax.faces`` does it for
photos).
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np

ARTEFACT = "model.jax_export"
META = "model.json"


class ExportedModel:
  """A deserialised ``jax.export.Exported`` and its model.json."""

  def __init__(self, directory: str):
    meta_path = os.path.join(directory, META)
    if not _exists(meta_path):
      raise FileNotFoundError(f"{meta_path} does not exist: is {directory} "
                              "a folder written by python -m fer_jax.export?")
    self.meta = json.loads(_read_bytes(meta_path).decode("utf-8"))
    self.exported = jax.export.deserialize(bytearray(_read_bytes(
        os.path.join(directory, self.meta.get("artefact", ARTEFACT)))))
    self.directory = directory
    self.classes = tuple(self.meta["classes"])
    self.image_size = int(self.meta["input"]["shape"][1])
    # image_size, eye_distance, eye_height: the crop the model expects.
    self.alignment = dict(self.meta["alignment"])

  def logits(self, images) -> np.ndarray:
    """(N, K) float32 logits of uint8 faces (N, S, S, 3) or one (S, S, 3)."""
    x = np.asarray(images)
    if x.ndim == 3:
      x = x[None]
    s = self.image_size
    if x.dtype != np.uint8 or x.shape[1:] != (s, s, 3):
      raise ValueError(f"expected uint8 RGB faces (N, {s}, {s}, 3), got "
                       f"{x.dtype} {x.shape}")
    return np.asarray(self.exported.call(x), np.float32)

  def probabilities(self, images) -> np.ndarray:
    """(N, K) softmax of the logits; columns in ``self.classes`` order."""
    z = self.logits(images)
    z = np.exp(z - z.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)

  def predict(self, images) -> np.ndarray:
    """(N,) class ids, indices into ``self.classes``."""
    return np.argmax(self.logits(images), axis=-1)


def load(directory: str) -> ExportedModel:
  return ExportedModel(directory)


def is_export_dir(directory: str) -> bool:
  """Whether ``directory`` holds an exported model (its model.json)."""
  return _exists(os.path.join(directory, META))


# A local folder needs jax and numpy only; a gs:// (any scheme://) one is
# read through etils' epath, imported only then.
def _exists(path: str) -> bool:
  if "://" in path:
    from etils import epath  # pylint: disable=import-outside-toplevel
    return epath.Path(path).is_file()
  return os.path.isfile(path)


def _read_bytes(path: str) -> bytes:
  if "://" in path:
    from etils import epath  # pylint: disable=import-outside-toplevel
    return epath.Path(path).read_bytes()
  with open(path, "rb") as f:
    return f.read()
