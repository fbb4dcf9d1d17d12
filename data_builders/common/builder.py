"""The shared TFDS builder of the face data sets: one feature schema, one
aligned example, one build log per split.

Every real data set yields the fer_synth columns (image, label, subject_id,
sequence_id, frame_index, num_frames, intensity; landmarks where the set has
them) plus ``transform`` (the 2x3 affine from the source image to the stored
one) and ``source_path`` (relative to the manual dir), so every protocol and
method in fer_jax reads every set the same way.
"""

from __future__ import annotations

import dataclasses
import io
import os

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from fer_jax.data_builders.common.build_log import BuildLog
from fer_jax.data_builders.common.reading import LayoutError
from fer_jax.data import align
from fer_jax.data.classes import CANONICAL_CLASSES


@dataclasses.dataclass(eq=False)
class FaceConfig(tfds.core.BuilderConfig):
  """Output geometry (see fer_jax.data.align.AlignSpec)."""
  image_size: int = 256
  eye_distance: float = 0.36
  eye_height: float = 0.40
  margin: float = 0.0

  def __post_init__(self):
    _ = self.align_spec  # validates the fields

  @property
  def align_spec(self) -> align.AlignSpec:
    return align.AlignSpec(image_size=self.image_size,
                           eye_distance=self.eye_distance,
                           eye_height=self.eye_height, margin=self.margin)


def kept_frames(num_frames: int, frames: str, peak_frames: int) -> list[int]:
  """Frame positions a sequence builder keeps: 'all', or 'paper' = the first
  (neutral) plus the last ``peak_frames`` (the papers' CK+/Oulu selection)."""
  if frames == "all" or num_frames == 0:
    return list(range(num_frames))
  if frames != "paper":
    raise ValueError(f"frames={frames!r}: 'all' or 'paper'")
  return sorted({0, *range(max(0, num_frames - peak_frames), num_frames)})


def _int(doc: str) -> tfds.features.Scalar:
  return tfds.features.Scalar(np.int32, doc=doc)


class FaceBuilder(tfds.core.GeneratorBasedBuilder):
  """Abstract: subclasses set the class attributes and write
  ``_split_generators`` / ``_generate_examples`` with :meth:`example`."""

  HAS_LANDMARKS = False
  IMAGE_FORMAT = "png"  # "jpeg" for photo sets (a quarter of the bytes)
  DESCRIPTION = ""
  HOMEPAGE = ""
  CITATION = ""
  LAYOUT = ""  # the expected manual-dir layout, quoted in every error

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.image_size
    features = {
        "image": tfds.features.Image(shape=(size, size, 3),
                                     encoding_format=self.IMAGE_FORMAT),
        "label": tfds.features.ClassLabel(names=CANONICAL_CLASSES),
        "subject_id": _int("subject (the set's own number where it has "
                           "one); -1 where the set does not record it"),
        "sequence_id": _int("sequence (stills: the image), unique in the set"),
        "frame_index": _int("0 = first (neutral) frame; stills: 0"),
        "num_frames": _int("frames of the sequence kept; stills: 1"),
        "intensity": tfds.features.Scalar(
            np.float32, doc="expression intensity in [0, 1] (1 for stills)"),
        "transform": tfds.features.Tensor(
            shape=(2, 3), dtype=np.float32,
            doc="affine: source pixel (x, y, 1) -> stored image pixel"),
        "source_path": tfds.features.Text(
            doc="file relative to the manual dir (#frame=N for video)"),
    }
    if self.HAS_LANDMARKS:
      features["landmarks"] = tfds.features.Tensor(
          shape=(68, 2), dtype=np.float32,
          doc="iBUG-68 landmarks in the stored image, pixel (x, y)")
    return tfds.core.DatasetInfo(
        builder=self, description=self.DESCRIPTION,
        features=tfds.features.FeaturesDict(features),
        supervised_keys=("image", "label"), homepage=self.HOMEPAGE,
        citation=self.CITATION, metadata=tfds.core.MetadataDict())

  def manual_dir(self, dl_manager) -> str:
    """dl_manager.manual_dir, with TFDS's assertion turned into an error
    that names the layout."""
    try:
      return os.fspath(dl_manager.manual_dir)
    except AssertionError:
      where = getattr(dl_manager, "_manual_dir", None)
      raise LayoutError(
          f"{self.name}: manual dir {where} does not exist or is empty; pass "
          f"--manual_dir=WHERE/YOU/EXTRACTED/IT. Expected layout:\n"
          f"{self.LAYOUT}") from None

  def new_log(self, split: str) -> BuildLog:
    return BuildLog(self.name, split)

  def finish(self, log: BuildLog) -> None:
    """Logs the split's counts and keeps them in the data set's metadata."""
    counts = log.finish()
    self.info.metadata[f"skipped_{log.split}"] = counts
    if log.written == 0:
      raise LayoutError(
          f"{self.name}: no usable example for split {log.split!r} "
          f"(skipped {log.skipped}: {counts}). Expected layout:\n"
          f"{self.LAYOUT}")

  def example(self, log: BuildLog, image: Image.Image, affine: np.ndarray, *,
              label: int, subject_id: int, sequence_id: int,
              source_path: str, frame_index: int = 0, num_frames: int = 1,
              intensity: float = 1.0,
              landmarks: np.ndarray | None = None) -> dict:
    """One record: the image warped through ``affine`` to the output square,
    landmarks mapped into it."""
    size = self.builder_config.image_size
    out = align.warp(image, affine, size)
    buf = io.BytesIO()
    if self.IMAGE_FORMAT == "png":
      out.save(buf, format="PNG", compress_level=1)
    else:
      out.save(buf, format="JPEG", quality=95)
    ex = {
        "image": buf.getvalue(), "label": int(label),
        "subject_id": int(subject_id), "sequence_id": int(sequence_id),
        "frame_index": int(frame_index), "num_frames": int(num_frames),
        "intensity": np.float32(intensity),
        "transform": np.asarray(affine, np.float32),
        "source_path": source_path,
    }
    if self.HAS_LANDMARKS:
      if landmarks is None:
        raise ValueError(f"{self.name}: {source_path} has no landmarks")
      ex["landmarks"] = align.apply_affine(affine, landmarks).astype(
          np.float32)
    log.written += 1
    return ex
