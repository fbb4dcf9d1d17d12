"""TFDS builder for Oulu-CASIA NIR&VIS: one camera and lighting (the papers'
VL + Strong by default), six expression sequences per subject from neutral
(frame 000) to peak.

The archive ships neither landmarks nor face boxes, and its faces sit near
the centre of the 320x240 frames: each frame is cropped to the centred square
grown by ``margin`` (tightened by default) and scaled to ``image_size``.

Layout source and what was checked against the archive as shipped: the
folder tree of the distributed OriginalImg zip (camera, lighting, ``P###``
subject, expression folder, ``000.jpeg`` onwards), compared (issue 23) with
public code of others reading it: expression names, the 6-class order and
the file extensions agree. Copies unpack it as ``OriginalImg/``,
``B_OriginalImg/`` or nested (``B_OriginalImg/B_OriginalImg/OriginalImg/``,
seen in public code); the builder takes the first level holding an
(``B_``)``OriginalImg`` folder that itself holds the VL/NI camera folders,
names matched case-insensitively, and the tests build each unpacking and
check it gives the canonical layout's examples.
"""

from __future__ import annotations

import dataclasses
import os
import re

import tensorflow_datasets as tfds

from fer_jax.data_builders import common
from fer_jax.data import align
from fer_jax.data.classes import DATASET_CODES, dataset_label

_LAYOUT = """\
  OriginalImg/VL/Strong/P001/Anger/000.jpeg ... 017.jpeg
    (also B_OriginalImg/, or a nested copy such as
     B_OriginalImg/B_OriginalImg/OriginalImg/, up to 3 folders down; cameras
     VL, NI; lightings Strong, Weak, Dark; expressions Anger Disgust Fear
     Happiness Sadness Surprise; folder names in any case)"""

_SUBJECT = re.compile(r"^P(\d+)$", re.IGNORECASE)
_EXPRESSIONS = tuple(DATASET_CODES["oulu_casia"])  # lower-case folder names


def _holds_cameras(folder: str) -> bool:
  return any(common.child(folder, c) and os.path.isdir(common.child(folder, c))
             for c in ("VL", "NI"))


# The frames' top folder must hold the camera folders, so the outer
# B_OriginalImg of a nested copy (B_OriginalImg/B_OriginalImg/OriginalImg/
# VL/...) is passed over for the level that holds the layout.
_PARTS = (common.Part("frames", ("OriginalImg", "B_OriginalImg"),
                      _holds_cameras, "VL/ or NI/ camera folder"),)


@dataclasses.dataclass(eq=False)
class OuluCasiaConfig(common.FaceConfig):
  """camera VL | NI, lighting Strong | Weak | Dark; frames 'all' or 'paper'
  (first + last ``peak_frames``, indices kept)."""
  camera: str = "VL"
  lighting: str = "Strong"
  frames: str = "all"
  peak_frames: int = 3
  margin: float = -0.1

  def __post_init__(self):
    super().__post_init__()
    if self.camera not in ("VL", "NI"):
      raise ValueError(f"camera={self.camera!r}: 'VL' or 'NI'")
    if self.lighting not in ("Strong", "Weak", "Dark"):
      raise ValueError(f"lighting={self.lighting!r}: Strong, Weak or Dark")
    common.kept_frames(1, self.frames, self.peak_frames)  # validates


class OuluCasia(common.FaceBuilder):
  """Oulu-CASIA sequences of one camera and lighting."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}  # noqa: RUF012 (TFDS API)
  LAYOUT = _LAYOUT
  HOMEPAGE = "http://www.cse.oulu.fi/CMV/Downloads/Oulu-CASIA"
  DESCRIPTION = (
      "Oulu-CASIA NIR&VIS: 80 subjects x 6 expressions, sequences from "
      "neutral to peak, in visible light (VL) and near infrared (NI) under "
      "strong, weak and dark lighting. One camera and lighting per config; "
      "centre-cropped (no landmarks ship with the set).")
  CITATION = """@article{zhao2011oulucasia,
  title={Facial expression recognition from near-infrared videos},
  author={Zhao, Guoying and Huang, Xiaohua and Taini, Matti and Li, Stan Z
          and Pietik{\\"a}inen, Matti},
  journal={Image and Vision Computing}, volume={29}, number={9}, year={2011}}"""
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Request the Oulu-CASIA NIR&VIS facial expression database from the Center for
Machine Vision and Signal Analysis, University of Oulu (licence agreement
signed by a permanent researcher), extract OriginalImg.zip (or the
B_OriginalImg copy) and pass the folder holding it as --manual_dir. Layout:
{_LAYOUT}"""
  BUILDER_CONFIGS = [  # noqa: RUF012 (TFDS API)
      OuluCasiaConfig(name="default", description="VL Strong, every frame"),
      OuluCasiaConfig(name="paper", frames="paper",
                      description="VL Strong, first + last 3 frames"),
      OuluCasiaConfig(name="nir_strong", camera="NI",
                      description="NI Strong, every frame"),
      OuluCasiaConfig(name="small", image_size=64,
                      description="VL Strong, every frame, 64 px"),
  ]

  def _split_generators(self, dl_manager):
    manual = self.manual_dir(dl_manager)
    folder = common.find_layout(manual, _PARTS, self.name, _LAYOUT)["frames"]
    cfg = self.builder_config
    for part in (cfg.camera, cfg.lighting):
      nxt = common.child(folder, part)
      if nxt is None or not os.path.isdir(nxt):
        raise common.LayoutError(
            f"{self.name}: no {os.path.join(folder, part)} (config "
            f"{cfg.name!r} reads {cfg.camera}/{cfg.lighting}). Expected "
            f"layout:\n{_LAYOUT}")
      folder = nxt
    return {"train": self._generate_examples(manual, folder)}

  def _generate_examples(self, manual, folder):
    cfg = self.builder_config
    log = self.new_log("train")
    for subject in sorted(os.listdir(folder)):
      m = _SUBJECT.match(subject)
      if not m or not os.path.isdir(os.path.join(folder, subject)):
        continue
      sid = int(m.group(1))
      for expr in sorted(os.listdir(os.path.join(folder, subject))):
        seq_dir = os.path.join(folder, subject, expr)
        if not os.path.isdir(seq_dir):
          continue
        if expr.lower() not in _EXPRESSIONS:
          log.skip(seq_dir, "unknown expression folder")
          continue
        label = dataset_label("oulu_casia", expr.lower())
        files = common.list_images(seq_dir)
        files.sort(key=lambda f: (len(os.path.splitext(f)[0]), f))
        n = len(files)
        if n == 0:
          log.skip(seq_dir, "sequence folder without images")
          continue
        for i in common.kept_frames(n, cfg.frames, cfg.peak_frames):
          path = os.path.join(seq_dir, files[i])
          image = common.open_image(path, log)
          if image is None:
            continue
          affine = align.centre_affine(*image.size, cfg.align_spec)
          yield f"{sid}/{expr}/{i}", self.example(
              log, image, affine, label=label, subject_id=sid,
              sequence_id=sid * 10 + _EXPRESSIONS.index(expr.lower()),
              frame_index=i, num_frames=n, intensity=i / max(1, n - 1),
              source_path=os.path.relpath(path, manual))
    self.finish(log)
