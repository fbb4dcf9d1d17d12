"""TFDS builder for AffectNet's manually annotated images, 7 or 8 classes.

The official validation set (500 per class) is the ``test`` split, as the
papers use it; ``validation`` is carved from the training list by a stable
hash of the file path (``val_fraction``), so it never changes between builds.
Faces are eye-aligned from the 68 landmarks in the CSV. The archive holds
broken and duplicated files: they are skipped and counted, never fatal.

Two releases are read. The original one (configs ``default``, ``7class``,
``box``, ``small``, ``px112``): CSV lists and ``Manually_Annotated_Images``.
The newer 8-class release, which many users have alone (configs ``npy8``,
``npy8_small``, ``npy8_px112``; ``release='npy'``): ``train_set/`` and
``val_set/``, each with ``images/<id>.jpg`` (face crops) and
``annotations/<id>_exp.npy`` (the code, the same 0-7 as the CSV's),
``_val.npy``, ``_aro.npy`` and ``_lnd.npy`` (68 points as x1 y1 x2 y2 ...
in the crop). Both give the same canonical class names and landmarks;
``val_set`` is the test split as the CSV's validation list is.

Layout source and what was checked against the archive as shipped: the
column names and codes of the CSV lists and the folder and file names of
the 8-class release, compared (issue 23) with public code of others reading
them: the label order, 0-based codes, file names and extensions agree. The
``.npy`` files are read whatever their dtype (a number or its text, a 0-d
or 1-element array), as copies differ.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import zlib

import numpy as np
import tensorflow_datasets as tfds

from fer_jax.data_builders import common
from fer_jax.data import align
from fer_jax.data.classes import dataset_label

_LAYOUT = """\
  Manually_Annotated_file_lists/training.csv, validation.csv   columns
      subDirectory_filePath, face_x, face_y, face_width, face_height,
      facial_landmarks ('x;y;...' 68 points), expression, valence, arousal
      (expression 0 neutral 1 happy 2 sad 3 surprise 4 fear 5 disgust
       6 anger 7 contempt; 8-10 none/uncertain/non-face are dropped)
  Manually_Annotated_Images/<subdir>/<file>.jpg
  or, the 8-class release (--builder_config=npy8):
  train_set/images/<id>.jpg, train_set/annotations/<id>_exp.npy (code 0-7),
      <id>_val.npy, <id>_aro.npy, <id>_lnd.npy (68 points x1 y1 x2 y2 ...)
  val_set/images/, val_set/annotations/ (the test split)"""

COLUMNS = ("subDirectory_filePath", "face_x", "face_y", "face_width",
           "face_height", "facial_landmarks", "expression", "valence",
           "arousal")
TEST_ID_BASE = 1_000_000  # sequence ids: training.csv row, or this + row


@dataclasses.dataclass(eq=False)
class AffectnetConfig(common.FaceConfig):
  """num_classes 8 (with contempt) or 7; val_fraction of train carved off;
  align 'eyes' (from the landmarks) or 'box' (the CSV's face box grown by
  ``margin``, no rotation; the npy release's crops: the whole image);
  release 'csv' (the lists) or 'npy' (the 8-class release)."""
  num_classes: int = 8
  val_fraction: float = 0.05
  align: str = "eyes"
  release: str = "csv"

  def __post_init__(self):
    super().__post_init__()
    if self.release not in ("csv", "npy"):
      raise ValueError(f"release={self.release!r}: 'csv' (the CSV lists) or "
                       "'npy' (the 8-class release's annotations/*.npy)")
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


def _holds_annotated_images(folder: str) -> bool:
  images = common.child(folder, "images")
  notes = common.child(folder, "annotations")
  return bool(images and notes and os.path.isdir(images)
              and os.path.isdir(notes))


# The 8-class release: both sets, each with images/ and annotations/.
NPY_PARTS = (
    common.Part("train", ("train_set",), _holds_annotated_images,
                "images/ and annotations/ folders"),
    common.Part("test", ("val_set",), _holds_annotated_images,
                "images/ and annotations/ folders"),
)


def read_npy(path: str) -> np.ndarray:
  """The numbers of an annotation .npy (stored as numbers or as their text,
  0-d or not), flat float64; ValueError naming the file otherwise."""
  try:
    a = np.load(path, allow_pickle=False)
    return np.asarray(a, dtype=np.float64).ravel()
  except (OSError, ValueError, TypeError) as e:
    raise ValueError(f"{path}: not a numeric .npy ({e})") from None


def npy_rows(set_dir: str) -> list[tuple[str, dict[str, str]]]:
  """(id, {image, exp, lnd}) of one set of the 8-class release, ids in
  numeric order where they are numbers."""
  images = common.child(set_dir, "images")
  notes = common.child(set_dir, "annotations")
  ids = {os.path.splitext(f)[0]: f for f in common.list_images(images)}
  order = sorted(ids, key=lambda i: (not i.isdigit(),
                                     int(i) if i.isdigit() else 0, i))
  return [(i, {"image": os.path.join(images, ids[i]),
               "exp": os.path.join(notes, f"{i}_exp.npy"),
               "lnd": os.path.join(notes, f"{i}_lnd.npy")}) for i in order]


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
      AffectnetConfig(name="npy8", release="npy",
                      description="the 8-class release (train_set/, "
                      "val_set/ with annotations/*.npy), 256 px"),
      AffectnetConfig(name="npy8_small", release="npy", image_size=64,
                      description="the 8-class release, 64 px"),
      AffectnetConfig(name="npy8_px112", release="npy", image_size=112,
                      description="the 8-class release, 112 px"),
  ]

  def _split_generators(self, dl_manager):
    manual = self.manual_dir(dl_manager)
    if self.builder_config.release == "npy":
      return self._npy_splits(manual)
    try:
      root, marker = common.find_root(
          manual, ["Manually_Annotated_file_lists/training.csv",
                   "training.csv"], self.name, _LAYOUT)
    except common.LayoutError:
      self._point_to_npy_release(manual)
      raise
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

  def _point_to_npy_release(self, manual) -> None:
    """No CSV lists but the 8-class release is there: say which config
    reads it (a LayoutError), instead of a bare 'not found'."""
    try:
      found = common.find_layout(manual, NPY_PARTS, self.name, _LAYOUT)
    except common.LayoutError:
      return
    raise common.LayoutError(
        f"{self.name}: {manual} holds the 8-class release ({found['train']}"
        f", {found['test']} with annotations/*.npy), not the CSV lists "
        f"config {self.builder_config.name!r} reads; build it with "
        f"--builder_config=npy8 (or npy8_small, npy8_px112). Expected "
        f"layout:\n{_LAYOUT}")

  def _npy_splits(self, manual):
    found = common.find_layout(manual, NPY_PARTS, self.name, _LAYOUT)
    train = list(enumerate(npy_rows(found["train"])))
    test = [(TEST_ID_BASE + i, r) for i, r in
            enumerate(npy_rows(found["test"]))]
    frac = self.builder_config.val_fraction
    # the carve hashes the image's name: stable wherever the copy lies
    val = {i for i, (_, f) in train
           if in_validation(os.path.basename(f["image"]), frac)}
    splits = {"train": [(i, r) for i, r in train if i not in val],
              "validation": [(i, r) for i, r in train if i in val],
              "test": test}
    return {k: self._generate_npy(manual, k, v)
            for k, v in splits.items() if v}

  def _generate_npy(self, manual, split, rows):
    log = self.new_log(split)
    cfg = self.builder_config
    for sequence_id, (ident, files) in rows:
      path = files["image"]
      if not os.path.isfile(files["exp"]):
        log.skip(files["exp"], "missing annotation")
        continue
      try:
        code = read_npy(files["exp"])
      except ValueError as e:
        log.skip(files["exp"], "malformed annotation", str(e))
        continue
      if code.size != 1 or code[0] != round(code[0]):
        log.skip(files["exp"], "malformed annotation", f"{code[:3]}")
        continue
      code = int(code[0])
      label = dataset_label("affectnet", code)
      if label is None or code >= cfg.num_classes:
        continue  # contempt for 7 classes (and any code past 7)
      try:
        pts = (read_npy(files["lnd"]) if os.path.isfile(files["lnd"])
               else np.zeros(0))
      except ValueError:
        pts = np.zeros(0)
      if pts.size != 136 or not np.all(np.isfinite(pts)):
        log.skip(files["lnd"], "malformed landmarks", f"{pts.size} numbers")
        continue
      pts = pts.reshape(68, 2)
      image = common.open_image(path, log)
      if image is None:
        continue
      try:
        affine = (align.box_affine(0, 0, *image.size, cfg.align_spec)
                  if cfg.align == "box"
                  else align.landmark_affine(pts, cfg.align_spec))
      except ValueError as e:
        log.skip(path, "degenerate landmarks", str(e))
        continue
      yield os.path.relpath(path, manual), self.example(
          log, image, affine, label=label, subject_id=-1,
          sequence_id=sequence_id, landmarks=pts,
          source_path=os.path.relpath(path, manual))
    self.finish(log)

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
