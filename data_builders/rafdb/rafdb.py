"""TFDS builder for RAF-DB basic: 15,339 in-the-wild faces, seven classes,
the official train (12,271) and test (3,068) splits.

The set ships its faces aligned (100x100, Image/aligned/); they are only
scaled to ``image_size``. Subjects are not recorded (subject_id -1), so the
official split is the protocol, not subject folds.

Layout source and what was checked against the archive as shipped: the
``basic/`` folder of the distributed set, its label list
``EmoLabel/list_patition_label.txt`` (misspelt as shipped; the corrected
spelling is accepted too) with 1-based codes (1 surprise 2 fear 3 disgust
4 happiness 5 sadness 6 anger 7 neutral) and the aligned faces
``Image/aligned/train_00001_aligned.jpg``. Compared (issue 23) with public
code of others reading it: the label order, the 1-based codes, the split
from the name prefix, the ``_aligned`` file names and the ``.jpg``
extension agree.
"""

from __future__ import annotations

import os

import tensorflow_datasets as tfds

from fer_jax.data_builders import common
from fer_jax.data import align
from fer_jax.data.classes import dataset_label

_LAYOUT = """\
  basic/EmoLabel/list_patition_label.txt   lines 'train_00001.jpg 5'
      (sic; also list_partition_label.txt; codes 1 surprise 2 fear
       3 disgust 4 happiness 5 sadness 6 anger 7 neutral)
  basic/Image/aligned/train_00001_aligned.jpg   (100x100 aligned faces)"""

_LABEL_FILES = ("EmoLabel/list_patition_label.txt",
                "EmoLabel/list_partition_label.txt")
SPLITS = ("train", "test")


def read_label_file(path: str) -> list[tuple[str, int, int]]:
  """(image name, code, line number) per line; a malformed line is an error
  naming the file and line (the label file is the data set's truth)."""
  rows = []
  with open(path, encoding="utf-8-sig") as f:  # -sig: a BOM is no name
    for n, line in enumerate(f, 1):
      parts = line.split()
      if not parts:
        continue
      if len(parts) != 2 or not parts[1].isdigit():
        raise ValueError(f"{path}:{n}: expected 'NAME.jpg CODE', got "
                         f"{line.strip()!r}")
      rows.append((parts[0], int(parts[1]), n))
  return rows


class Rafdb(common.FaceBuilder):
  """RAF-DB basic, official split."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}  # noqa: RUF012 (TFDS API)
  IMAGE_FORMAT = "jpeg"
  LAYOUT = _LAYOUT
  HOMEPAGE = "http://www.whdeng.cn/RAF/model1.html"
  DESCRIPTION = (
      "RAF-DB basic: real-world faces labelled by ~40 annotators each with "
      "one of seven classes (six basic + neutral); official train/test split "
      "from the file names; the set's aligned faces.")
  CITATION = """@inproceedings{li2017rafdb,
  title={Reliable crowdsourcing and deep locality-preserving learning for
         expression recognition in the wild},
  author={Li, Shan and Deng, Weihong and Du, JunPing},
  booktitle={CVPR}, year={2017}}"""
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Request RAF-DB from Shan Li and Weihong Deng, Beijing University of Posts and
Telecommunications (http://www.whdeng.cn/RAF/model1.html; e-mail the signed
agreement for the password), extract basic.zip (and its Image/aligned.zip)
and pass the folder holding basic/ (or basic/ itself) as --manual_dir.
Layout:
{_LAYOUT}"""
  BUILDER_CONFIGS = [  # noqa: RUF012 (TFDS API)
      common.FaceConfig(name="default", description="aligned faces, 256 px"),
      common.FaceConfig(name="small", image_size=64,
                        description="aligned faces, 64 px"),
  ]

  def _split_generators(self, dl_manager):
    manual = self.manual_dir(dl_manager)
    root, marker = common.find_root(manual, _LABEL_FILES, self.name, _LAYOUT)
    images = common.find_dir(root, ["Image/aligned", "aligned"], self.name,
                             _LAYOUT)
    rows = read_label_file(os.path.join(root, marker))
    by_split = {s: [r for r in rows if r[0].startswith(s + "_")]
                for s in SPLITS}
    odd = [r[0] for r in rows if not r[0].startswith(("train_", "test_"))]
    if odd:
      raise ValueError(f"{os.path.join(root, marker)}: names must start "
                       f"with train_ or test_, got {odd[:3]}")
    return {s: self._generate_examples(manual, images, s, by_split[s])
            for s in SPLITS}

  def _generate_examples(self, manual, images, split, rows):
    log = self.new_log(split)
    spec = self.builder_config.align_spec
    for name, code, _ in rows:
      stem = os.path.splitext(name)[0]
      path = next((p for p in (os.path.join(images, stem + "_aligned.jpg"),
                               os.path.join(images, name)) if os.path.isfile(p)),
                  None)
      if path is None:
        log.skip(os.path.join(images, stem + "_aligned.jpg"), "missing image")
        continue
      label = dataset_label("rafdb", code)
      if label is None:
        log.skip(path, f"unknown label code {code}")
        continue
      image = common.open_image(path, log)
      if image is None:
        continue
      number = int("".join(c for c in stem if c.isdigit()) or 0)
      yield name, self.example(
          log, image, align.box_affine(0, 0, *image.size, spec),
          label=label, subject_id=-1,
          sequence_id=(0 if split == "train" else 100_000) + number,
          source_path=os.path.relpath(path, manual))
    self.finish(log)
