"""TFDS builder for JAFFE: 213 posed stills of 10 Japanese women, labelled
by file name (subject . expression+repetition . image number . tiff).

Names are parsed by position: 'NA' is a subject and 'NE' an expression, so a
substring test would confuse them. No landmarks ship with the set; its
256x256 faces are centred, so each image is cropped to the centred square
grown by ``margin`` and scaled to ``image_size``.

Layout source and what was checked against the archive as shipped: the
``jaffedbase/`` folder of the distributed archive (also unpacked as
``jaffe/``), file names ``KA.AN1.39.tiff``, the ten subjects and seven
expression codes (AN DI FE HA NE SA SU). Compared (issue 23) with public
code of others reading it: the codes, the name fields and the ``.tiff``
extension agree. The README and macOS ``._`` copies beside the images are
ignored; an archive still packed is named in the layout error with its
unpack command.
"""

from __future__ import annotations

import os

import tensorflow_datasets as tfds

from fer_jax.data_builders import common
from fer_jax.data import align
from fer_jax.data.classes import DATASET_CODES, dataset_label

_LAYOUT = """\
  jaffedbase/KA.AN1.39.tiff ... (or jaffe/; 213 images:
    subject (KA KL KM KR MK NA NM TM UY YM) . expression (AN DI FE HA NE SA SU)
    + repetition digit . image number . tiff)"""

SUBJECTS = ("KA", "KL", "KM", "KR", "MK", "NA", "NM", "TM", "UY", "YM")
NUM_IMAGES = 213


def parse_name(name: str) -> tuple[str, str, int, int] | None:
  """(subject, expression code, repetition, image number) or None."""
  parts = name.split(".")
  if len(parts) != 4 or parts[3].lower() not in ("tiff", "tif"):
    return None
  subject, expr, number = parts[0], parts[1], parts[2]
  if (subject not in SUBJECTS or len(expr) != 3
      or expr[:2] not in DATASET_CODES["jaffe"] or not expr[2].isdigit()
      or not number.isdigit()):
    return None
  return subject, expr[:2], int(expr[2]), int(number)


class Jaffe(common.FaceBuilder):
  """JAFFE stills; the subject's NE images are its neutral faces."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}  # noqa: RUF012 (TFDS API)
  LAYOUT = _LAYOUT
  HOMEPAGE = "https://zenodo.org/record/3451524"
  DESCRIPTION = (
      "JAFFE: 213 greyscale images of 10 Japanese female subjects posing "
      "the six basic expressions and neutral; centre-cropped.")
  CITATION = """@inproceedings{lyons1998jaffe,
  title={Coding facial expressions with Gabor wavelets},
  author={Lyons, Michael and Akamatsu, Shigeru and Kamachi, Miyuki and
          Gyoba, Jiro},
  booktitle={IEEE FG}, year={1998}}"""
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Request JAFFE from Michael Lyons (https://zenodo.org/record/3451524, access
granted for non-commercial research after agreeing to its terms), extract the
archive and pass the folder holding jaffedbase/ (or jaffe/) as --manual_dir.
Layout:
{_LAYOUT}"""
  BUILDER_CONFIGS = [  # noqa: RUF012 (TFDS API)
      common.FaceConfig(name="default", margin=-0.1,
                        description="all 213 images, 256 px"),
      common.FaceConfig(name="small", image_size=64, margin=-0.1,
                        description="all 213 images, 64 px"),
  ]

  def _split_generators(self, dl_manager):
    manual = self.manual_dir(dl_manager)
    root = common.find_root_where(
        manual, parse_name, "JAFFE images named like KA.AN1.39.tiff",
        self.name, _LAYOUT)
    return {"train": self._generate_examples(manual, root)}

  def _generate_examples(self, manual, root):
    log = self.new_log("train")
    for sequence_id, name in enumerate(sorted(os.listdir(root))):
      path = os.path.join(root, name)
      if name.startswith(".") or not name.lower().endswith((".tiff", ".tif")):
        continue
      parsed = parse_name(name)
      if parsed is None:
        log.skip(path, "file name not SUBJECT.EXn.NUM.tiff")
        continue
      subject, code, _, _ = parsed
      image = common.open_image(path, log)
      if image is None:
        continue
      affine = align.centre_affine(*image.size, self.builder_config.align_spec)
      yield name, self.example(
          log, image, affine, label=dataset_label("jaffe", code),
          subject_id=SUBJECTS.index(subject), sequence_id=sequence_id,
          intensity=0.0 if code == "NE" else 1.0,
          source_path=os.path.relpath(path, manual))
    if log.written != NUM_IMAGES:
      common.logger.warning(
          "jaffe: %d images written; the papers' JAFFE has %d", log.written,
          NUM_IMAGES)
    self.finish(log)
