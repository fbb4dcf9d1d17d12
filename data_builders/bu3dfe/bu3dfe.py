"""TFDS builder for BU-3DFE's 2D face textures: 100 subjects, each neutral
once and the six basic expressions at four intensities.

Stills (one image per sequence); ``intensity`` is the level / 4 (neutral 0).
The default keeps intensities 3-4 and the neutral faces (IF-GAN's
selection); config ``all`` keeps every level. No landmarks ship with the 2D
images and the face fills the centre, so each is cropped to the centred
square grown by ``margin``.

Layout source and what was checked against the archive as shipped: the
owners ship one RAR archive per subject (``F0001.rar`` ...); unpacked, each
gives the subject folder of 2D textures and 3D files named as in the
layout below. Compared (issue 23) with public code of others reading it:
the two-letter expression codes, the 01-04 intensities with NE00 neutral,
the ``_F2D`` suffix and the extension agree. The builder reads unpacked
folders only; a manual dir with subjects still packed (``.rar``, ``.zip``,
``.7z``) stops with an error naming the archives and the unpack command.
"""

from __future__ import annotations

import dataclasses
import os
import re

import tensorflow_datasets as tfds

from fer_jax.data_builders import common
from fer_jax.data import align
from fer_jax.data.classes import dataset_label

_LAYOUT = """\
  F0001/F0001_AN01WH_F2D.bmp ... M0044/M0044_SU04AE_F2D.bmp
    (subject _ expression(2) intensity(2: 01-04, NE00 neutral) race(2) _F2D;
     the 3D files beside them are ignored; the per-subject F0001.rar ...
     as shipped must be unpacked first: unrar x F0001.rar)"""

_SUBJECT = re.compile(r"^([FM])(\d{4})$")
_NAME = re.compile(r"^([FM])(\d{4})_([A-Z]{2})(\d{2})([A-Z]{2})_F2D\.(bmp|png|jpe?g)$",
                   re.IGNORECASE)


def subject_number(sex: str, number: str) -> int:
  """F0001 -> 1, M0001 -> 1001: ids that never collide."""
  return (1000 if sex.upper() == "M" else 0) + int(number)


@dataclasses.dataclass(eq=False)
class Bu3dfeConfig(common.FaceConfig):
  """intensities: expression levels kept (neutral always is)."""
  intensities: tuple[int, ...] = (3, 4)
  margin: float = -0.1

  def __post_init__(self):
    super().__post_init__()
    if not self.intensities or not set(self.intensities) <= {1, 2, 3, 4}:
      raise ValueError(f"intensities={self.intensities}: a subset of 1-4")


class Bu3dfe(common.FaceBuilder):
  """BU-3DFE 2D textures."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}  # noqa: RUF012 (TFDS API)
  LAYOUT = _LAYOUT
  HOMEPAGE = "https://www.cs.binghamton.edu/~lijun/Research/3DFE/3DFE_Analysis.html"
  DESCRIPTION = (
      "BU-3DFE: 100 subjects (56 female, 44 male), neutral and six basic "
      "expressions at four intensities; the 2D texture images, centre-cropped.")
  CITATION = """@inproceedings{yin2006bu3dfe,
  title={A 3D facial expression database for facial behavior research},
  author={Yin, Lijun and Wei, Xiaozhou and Sun, Yi and Wang, Jun and
          Rosato, Matthew J},
  booktitle={IEEE FG}, year={2006}}"""
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Request BU-3DFE from Lijun Yin, Binghamton University
(https://www.cs.binghamton.edu/~lijun/Research/3DFE/3DFE_Analysis.html,
licence agreement required), extract it and pass the folder holding the
subject folders (F0001 ... M0044) as --manual_dir. Layout:
{_LAYOUT}"""
  BUILDER_CONFIGS = [  # noqa: RUF012 (TFDS API)
      Bu3dfeConfig(name="default",
                   description="intensities 3-4 + neutral (IF-GAN), 256 px"),
      Bu3dfeConfig(name="all", intensities=(1, 2, 3, 4),
                   description="every intensity + neutral, 256 px"),
      Bu3dfeConfig(name="small", image_size=64,
                   description="intensities 3-4 + neutral, 64 px"),
  ]

  def _split_generators(self, dl_manager):
    manual = self.manual_dir(dl_manager)
    root = common.find_root_where(
        manual, _SUBJECT.match, "subject folders F0001 ... M0044", self.name,
        _LAYOUT)
    # Some subjects unpacked, others still F0001.rar: never a silent build
    # of part of the set.
    unpacked = {d.upper() for d in os.listdir(root)
                if _SUBJECT.match(d) and os.path.isdir(os.path.join(root, d))}
    packed = [a for a in common.packed_archives(manual)
              if _SUBJECT.match(os.path.basename(a).split(".")[0])
              and os.path.basename(a).split(".")[0].upper() not in unpacked]
    if packed:
      raise common.LayoutError(
          f"{self.name}: {len(packed)} subject(s) still packed, without "
          f"their folder in {root}{common.unpack_hint(packed)}. Expected "
          f"layout:\n"
          f"{_LAYOUT}")
    return {"train": self._generate_examples(manual, root)}

  def _generate_examples(self, manual, root):
    cfg = self.builder_config
    log = self.new_log("train")
    sequence_id = 0
    for subject in sorted(os.listdir(root)):
      sm = _SUBJECT.match(subject)
      folder = os.path.join(root, subject)
      if not sm or not os.path.isdir(folder):
        continue
      sid = subject_number(*sm.groups())
      for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name.startswith(".") or "_F2D" not in name.upper():
          continue  # 3D meshes, landmarks of the mesh, pose files
        m = _NAME.match(name)
        if not m or subject_number(m.group(1), m.group(2)) != sid:
          log.skip(path, "file name not SUBJECT_EXnnRR_F2D.bmp")
          continue
        code, level = m.group(3).upper(), int(m.group(4))
        label = dataset_label("bu3dfe", code)
        if label is None or (code == "NE") != (level == 0):
          log.skip(path, "unknown expression or intensity")
          continue
        if code != "NE" and level not in cfg.intensities:
          continue
        image = common.open_image(path, log)
        if image is None:
          continue
        sequence_id += 1
        yield name, self.example(
            log, image, align.centre_affine(*image.size, cfg.align_spec),
            label=label, subject_id=sid, sequence_id=sequence_id,
            intensity=level / 4, source_path=os.path.relpath(path, manual))
    self.finish(log)
