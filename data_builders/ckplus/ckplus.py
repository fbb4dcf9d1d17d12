"""TFDS builder for CK+: the 327 labelled sequences, eye-aligned by their
AAM landmarks, every frame labelled with its sequence's emotion (the Emotion
file belongs to the last frame; frame 0 is the neutral onset).

  python -m fer_jax.data.build ckplus --manual_dir=/data/CK+ --data_dir=...

Layout source and what was checked against the archive as shipped: the
zips as the owners distribute them (``S005_001_00000011_emotion.txt`` for the
last frame, codes 0-7 with 0 neutral and 2 contempt, 68-point AAM landmark
files per frame), compared (issue 23) with public code of others reading
the same zips: label order, 0-based codes, file names and extensions agree.
The zips (extended-cohn-kanade-images, Emotion_labels, Landmarks) are
unpacked in several ways in the wild: all into one folder, each into a
folder named after its zip (``extended-cohn-kanade-images/cohn-kanade-images``,
``Emotion_labels/Emotion``, ``Landmarks/Landmarks``), with the case of
``Emotion_Labels`` changed. The builder takes the first level (down to three
folders) holding all three, each matched case-insensitively and required to
hold the S### subject folders; the tests build every such unpacking and
check it gives the canonical layout's examples.
"""

from __future__ import annotations

import dataclasses
import os
import re

import numpy as np
import tensorflow_datasets as tfds

from fer_jax.data_builders import common
from fer_jax.data import align
from fer_jax.data.classes import dataset_label

_LAYOUT = """\
  cohn-kanade-images/S005/001/S005_001_00000001.png ... (one folder per sequence;
      also extended-cohn-kanade-images/cohn-kanade-images/)
  Emotion/S005/001/S005_001_00000011_emotion.txt      (also Emotion_labels/Emotion/)
  Landmarks/S005/001/S005_001_00000001_landmarks.txt  (also Landmarks/Landmarks/)
  (folder names in any case; the three side by side, up to 3 folders down)"""

_SUBJECT = re.compile(r"^S(\d+)$")


def _holds_subjects(folder: str) -> bool:
  return any(_SUBJECT.match(e) and os.path.isdir(os.path.join(folder, e))
             for e in os.listdir(folder))


# The three zips, extracted into one folder or each into its own; every
# folder must hold the S### subject folders (so the outer Emotion_labels/
# of a nested copy is never taken for the labels).
_PARTS = (
    common.Part("images", ("cohn-kanade-images",
                           "extended-cohn-kanade-images/cohn-kanade-images"),
                _holds_subjects, "S### subject folders"),
    common.Part("labels", ("Emotion", "Emotion_labels/Emotion",
                           "Emotion_labels"),
                _holds_subjects, "S### subject folders"),
    common.Part("landmarks", ("Landmarks", "Landmarks/Landmarks"),
                _holds_subjects, "S### subject folders"),
)


@dataclasses.dataclass(eq=False)
class CkplusConfig(common.FaceConfig):
  """frames: 'all' frames of each labelled sequence, or 'paper': its first
  (neutral) frame and last ``peak_frames`` frames (frame_index and
  num_frames stay those of the whole sequence, so protocol roles hold)."""
  frames: str = "all"
  peak_frames: int = 3

  def __post_init__(self):
    super().__post_init__()
    if self.frames not in ("all", "paper"):
      raise ValueError(f"frames={self.frames!r}: 'all' or 'paper'")


class Ckplus(common.FaceBuilder):
  """CK+ sequences, neutral to peak."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}  # noqa: RUF012 (TFDS API)
  HAS_LANDMARKS = True
  LAYOUT = _LAYOUT
  HOMEPAGE = "https://www.jeffcohn.net/Resources/"
  DESCRIPTION = (
      "CK+: 593 posed sequences of 123 subjects from neutral to peak; the 327 "
      "with an emotion label (anger, contempt, disgust, fear, happiness, "
      "sadness, surprise) are kept. Faces are eye-aligned from the AAM "
      "landmarks; every frame carries its sequence's label.")
  CITATION = """@inproceedings{lucey2010ckplus,
  title={The Extended Cohn-Kanade Dataset (CK+)},
  author={Lucey, Patrick and Cohn, Jeffrey F and Kanade, Takeo and Saragih,
          Jason and Ambadar, Zara and Matthews, Iain},
  booktitle={CVPR Workshops}, year={2010}}"""
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Request CK+ from its owners (Jeffrey Cohn, University of Pittsburgh:
https://www.jeffcohn.net/Resources/, licence agreement required), then
extract extended-cohn-kanade-images.zip, Emotion_labels.zip and
Landmarks.zip into one folder and pass it as --manual_dir. Layout:
{_LAYOUT}"""
  BUILDER_CONFIGS = [  # noqa: RUF012 (TFDS API)
      CkplusConfig(name="default", description="every frame, 256 px"),
      CkplusConfig(name="paper", frames="paper",
                   description="first + last 3 frames, 256 px"),
      CkplusConfig(name="small", image_size=64,
                   description="every frame, 64 px (CPU runs, tests)"),
  ]

  def _split_generators(self, dl_manager):
    manual = self.manual_dir(dl_manager)
    found = common.find_layout(manual, _PARTS, self.name, _LAYOUT)
    images, emotion, marks = (found[p.name] for p in _PARTS)
    if not any(_SUBJECT.match(d) and os.path.isdir(os.path.join(images, d))
               and os.path.isdir(os.path.join(emotion, d))
               for d in os.listdir(images)):
      raise common.LayoutError(
          f"{self.name}: {emotion} holds no S###/ label folder of a subject "
          f"in {images}. Expected layout:\n{_LAYOUT}")
    return {"train": self._generate_examples(manual, images, emotion, marks)}

  def _generate_examples(self, manual, images, emotion, marks):
    cfg = self.builder_config
    spec = cfg.align_spec
    log = self.new_log("train")
    for subject in sorted(os.listdir(images)):
      m = _SUBJECT.match(subject)
      if not m:
        continue
      for seq in sorted(os.listdir(os.path.join(images, subject))):
        seq_dir = os.path.join(images, subject, seq)
        if not os.path.isdir(seq_dir) or not seq.isdigit():
          continue
        label = self._label(os.path.join(emotion, subject, seq), log)
        if label is None:
          continue
        files = common.list_images(seq_dir)
        n = len(files)
        if n == 0:
          log.skip(seq_dir, "sequence folder without images")
          continue
        sequence_id = int(m.group(1)) * 1000 + int(seq)
        for i in common.kept_frames(n, cfg.frames, cfg.peak_frames):
          path = os.path.join(seq_dir, files[i])
          stem = os.path.splitext(files[i])[0]
          mark_file = os.path.join(marks, subject, seq,
                                   stem + "_landmarks.txt")
          if not os.path.isfile(mark_file):
            log.skip(mark_file, "missing landmark file")
            continue
          pts = common.read_floats(mark_file)  # not numbers: an error
          if pts.size != 136 or not np.all(np.isfinite(pts)):
            raise ValueError(f"{mark_file}: expected 68 lines of 'x y', got "
                             f"{pts.size} numbers (a damaged extraction?)")
          pts = pts.reshape(68, 2)
          image = common.open_image(path, log)
          if image is None:
            continue
          yield f"{subject}/{seq}/{i}", self.example(
              log, image, align.landmark_affine(pts, spec), label=label,
              subject_id=int(m.group(1)), sequence_id=sequence_id,
              frame_index=i, num_frames=n,
              intensity=i / max(1, n - 1), landmarks=pts,
              source_path=os.path.relpath(path, manual))
    self.finish(log)

  def _label(self, folder: str, log) -> int | None:
    """The sequence's canonical label, or None (counted) if unlabelled."""
    files = (sorted(f for f in os.listdir(folder) if f.endswith("_emotion.txt"))
             if os.path.isdir(folder) else [])
    if not files:
      log.skip(folder, "unlabelled sequence (no _emotion.txt)")
      return None
    values = common.read_floats(os.path.join(folder, files[-1]))
    code = round(float(values[0])) if values.size == 1 else None
    label = None if code is None else dataset_label("ckplus", code)
    if label is None:
      log.skip(os.path.join(folder, files[-1]), "unknown emotion code")
    return label
