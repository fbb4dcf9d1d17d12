"""TFDS builder for AffectNet's manually annotated images, 7 or 8 classes.

The official validation set (500 per class) is the ``test`` split, as the
papers use it; ``validation`` is carved from the training list by a stable
hash of the file path (``val_fraction``), so it never changes between builds.
Faces are eye-aligned from the 68 landmarks in the CSV. The archive holds
broken and duplicated files: they are skipped and counted, never fatal.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import zlib

import numpy as np
import tensorflow_datasets as tfds

from data_builders import common
from fer_jax.data import align
from fer_jax.data.classes import dataset_label

_LAYOUT = """\
  Manually_Annotated_file_lists/training.csv, validation.csv   columns
      subDirectory_filePath, face_x, face_y, face_width, face_height,
      facial_landmarks ('x;y;...' 68 points), expression, valence, arousal
      (expression 0 neutral 1 happy 2 sad 3 surprise 4 fear 5 disgust
       6 anger 7 contempt; 8-10 none/uncertain/non-face are dropped)
  Manually_Annotated_Images/<subdir>/<file>.jpg"""

COLUMNS = ("subDirectory_filePath", "face_x", "face_y", "face_width",
           "face_height", "facial_landmarks", "expression", "valence",
           "arousal")
TEST_ID_BASE = 1_000_000  # sequence ids: training.csv row, or this + row


@dataclasses.dataclass(eq=False)
class AffectnetConfig(common.FaceConfig):
  """num_classes 8 (with contempt) or 7; val_fraction of train carved off;
  align 'eyes' (from the landmarks) or 'box' (the CSV's face box grown by
  ``margin``, no rotation)."""
  num_classes: int = 8
  val_fraction: float = 0.05
  align: str = "eyes"

  def __post_init__(self):
    super().__post_init__()
    if self.num_classes not in (7, 8):
      raise ValueError(f"num_classes={self.num_classes}: 7 or 8")
    if not 0 <= self.val_fraction < 1:
      raise ValueError(f"val_fraction={self.val_fraction} must be in [0, 1)")
    if self.align not in ("eyes", "box"):
      raise ValueError(f"align={self.align!r}: 'eyes' or 'box'")


def read_csv(path: str) -> list[dict[str, str]]:
  """Rows as dicts; a header row is optional (some copies drop it)."""
  with open(path, newline="", encoding="utf-8-sig") as f:  # BOM: header
    rows = list(csv.reader(f))
  if not rows:
    raise ValueError(f"{path} is empty; expected columns {', '.join(COLUMNS)}")
  header = [h.strip() for h in rows[0]]
  if header[0] == COLUMNS[0]:
    missing = [c for c in COLUMNS[:7] if c not in header]
    if missing:
      raise ValueError(f"{path}: header lacks {missing}; expected columns "
                       f"{', '.join(COLUMNS)}")
    rows = rows[1:]
  else:
    header = list(COLUMNS)
  return [dict(zip(header, r)) for r in rows if r]


def in_validation(path: str, fraction: float) -> bool:
  return zlib.crc32(path.encode()) / 2**32 < fraction


def parse_landmarks(text: str) -> np.ndarray | None:
  try:
    v = np.array([float(t) for t in text.replace(",", ";").split(";")
                  if t.strip()])
  except ValueError:
    return None
  return v.reshape(68, 2) if v.size == 136 and np.all(np.isfinite(v)) else None


class Affectnet(common.FaceBuilder):
  """AffectNet manually annotated, 8 or 7 classes."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}  # noqa: RUF012 (TFDS API)
  HAS_LANDMARKS = True
  IMAGE_FORMAT = "jpeg"
  LAYOUT = _LAYOUT
  HOMEPAGE = "http://mohammadmahoor.com/affectnet/"
  DESCRIPTION = (
      "AffectNet: ~290k manually annotated in-the-wild faces (eight "
      "expressions kept: the six basic, neutral and contempt), eye-aligned "
      "from their 68 landmarks. test = the official validation set.")
  CITATION = """@article{mollahosseini2017affectnet,
  title={AffectNet: A database for facial expression, valence, and arousal
         computing in the wild},
  author={Mollahosseini, Ali and Hasani, Behzad and Mahoor, Mohammad H},
  journal={IEEE Transactions on Affective Computing}, year={2017}}"""
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Request AffectNet from Mohammad Mahoor, University of Denver
(http://mohammadmahoor.com/affectnet/, academic licence agreement), extract
Manually_Annotated_file_lists.zip and Manually_Annotated.tar(.gz) into one
folder and pass it as --manual_dir. Layout:
{_LAYOUT}"""
  BUILDER_CONFIGS = [  # noqa: RUF012 (TFDS API)
      AffectnetConfig(name="default", description="8 classes, 256 px"),
      AffectnetConfig(name="7class", num_classes=7,
                      description="7 classes (no contempt), 256 px"),
      AffectnetConfig(name="box", align="box", margin=0.1,
                      description="8 classes, face box + 10% margin, 256 px"),
      AffectnetConfig(name="small", image_size=64,
                      description="8 classes, 64 px"),
      # SNA's input size: ~290k faces at 112 px are 11 GB (256 px: 57 GB),
      # small enough for device-resident training, and decode ~5x faster.
      AffectnetConfig(name="px112", image_size=112,
                      description="8 classes, 112 px (SNA's input size)"),
  ]

  def _split_generators(self, dl_manager):
    manual = self.manual_dir(dl_manager)
    root, marker = common.find_root(
        manual, ["Manually_Annotated_file_lists/training.csv",
                 "training.csv"], self.name, _LAYOUT)
    lists = os.path.dirname(os.path.join(root, marker))
    val_csv = common.require_file(os.path.join(lists, "validation.csv"),
                                  self.name, _LAYOUT)
    images = common.find_dir(
        root, ["Manually_Annotated_Images",
               "Manually_Annotated/Manually_Annotated_Images",
               "Manually_Annotated"], self.name, _LAYOUT)
    train = list(enumerate(read_csv(os.path.join(root, marker))))
    test = [(TEST_ID_BASE + i, r) for i, r in enumerate(read_csv(val_csv))]
    frac = self.builder_config.val_fraction
    val = [(i, r) for i, r in train if in_validation(r[COLUMNS[0]], frac)]
    splits = {"train": [(i, r) for i, r in train
                        if not in_validation(r[COLUMNS[0]], frac)],
              "validation": val, "test": test}
    return {k: self._generate_examples(manual, images, k, v)
            for k, v in splits.items() if v}

  def _generate_examples(self, manual, images, split, rows):
    log = self.new_log(split)
    cfg = self.builder_config
    seen = set()
    for sequence_id, row in rows:
      rel = row.get(COLUMNS[0], "").strip()
      try:
        code = int(row["expression"])
      except (KeyError, ValueError):
        log.skip(rel, "malformed CSV row")
        continue
      label = dataset_label("affectnet", code)
      if label is None or code >= cfg.num_classes:
        continue  # none / uncertain / non-face (and contempt for 7)
      if rel in seen:
        log.skip(rel, "duplicate row")
        continue
      seen.add(rel)
      path = os.path.join(images, rel)
      if not os.path.isfile(path):
        log.skip(path, "missing image")
        continue
      pts = parse_landmarks(row.get("facial_landmarks", ""))
      if pts is None:
        log.skip(path, "malformed landmarks")
        continue
      image = common.open_image(path, log)
      if image is None:
        continue
      try:
        if cfg.align == "box":
          affine = align.box_affine(*(float(row[c]) for c in COLUMNS[1:5]),
                                    cfg.align_spec)
        else:
          affine = align.landmark_affine(pts, cfg.align_spec)
      except (KeyError, ValueError) as e:
        log.skip(path, f"degenerate {'box' if cfg.align == 'box' else 'landmarks'}",
                 str(e))
        continue
      yield rel, self.example(
          log, image, affine, label=label, subject_id=-1,
          sequence_id=sequence_id,
          landmarks=pts, source_path=os.path.relpath(path, manual))
    self.finish(log)
