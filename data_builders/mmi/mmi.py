"""TFDS builder for MMI: the emotion-labelled video sessions, decoded to
frames (PyAV, the optional ``video`` extra: ``pip install fer_jax[video]``).

MMI sequences run neutral -> onset -> apex -> offset -> neutral, so the peak
is in the middle. The builder keeps the first half through the three middle
frames, re-indexed 0..K-1: frame 0 is neutral and the last three are the
apex, which is what the protocols' neutral and peak roles read (IF-GAN's
"three peak frames in the middle"). ``max_frames`` subsamples the onset
evenly; ``frames='paper'`` keeps only the first frame and the three peaks.
No landmarks ship with the videos and the frontal face fills the centre, so
frames are cropped to the centred square grown by ``margin``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import xml.etree.ElementTree as ET

import numpy as np
import tensorflow_datasets as tfds

from data_builders import common
from fer_jax.data import align
from fer_jax.data.classes import dataset_label

_LAYOUT = """\
  Sessions/<id>/<name>.avi with Sessions/<id>/session.xml holding
      <Metatag Name="Emotion" Value="N"/> (1 anger 2 disgust 3 fear
      4 happiness 5 sadness 6 surprise) and the subject
      (<subject id="N"/>, or the S###- prefix of the video's name)"""

_SUBJECT_IN_NAME = re.compile(r"^S(\d+)[-_]", re.IGNORECASE)
_VIDEO_EXT = (".avi", ".mp4", ".mov", ".wmv", ".mpg", ".mpeg")
PEAK_FRAMES = 3


@dataclasses.dataclass(eq=False)
class MmiConfig(common.FaceConfig):
  """frames 'all' (onset through the middle peak, up to ``max_frames``;
  0 = no limit) or 'paper' (first frame + the three middle ones)."""
  frames: str = "all"
  max_frames: int = 0
  margin: float = -0.2

  def __post_init__(self):
    super().__post_init__()
    if self.frames not in ("all", "paper"):
      raise ValueError(f"frames={self.frames!r}: 'all' or 'paper'")
    if self.max_frames and self.max_frames < PEAK_FRAMES + 1:
      raise ValueError(f"max_frames={self.max_frames}: 0 or >= "
                       f"{PEAK_FRAMES + 1}")


def onset_to_apex(num_frames: int, frames: str, max_frames: int) -> list[int]:
  """Source frame numbers kept, in order: onset frames then the middle
  three (the apex of a neutral-apex-neutral video)."""
  mid = num_frames // 2
  peak = [f for f in range(mid - 1, mid + 2) if 0 <= f < num_frames]
  onset = list(range(peak[0]))
  if frames == "paper":
    onset = onset[:1]
  elif max_frames and len(onset) > max_frames - len(peak):
    keep = max_frames - len(peak)
    onset = sorted({onset[round(float(x))]
                    for x in np.linspace(0, len(onset) - 1, keep)})
  return onset + peak


def parse_session(path: str) -> dict:
  """emotion code (or None), subject id (or None) and media file of a
  session.xml; raises ValueError naming the file if it is not XML."""
  try:
    root = ET.parse(path).getroot()
  except ET.ParseError as e:
    raise ValueError(f"{path}: not a readable session.xml ({e})") from None
  out = {"emotion": None, "subject": None,
         "media": root.attrib.get("mediaFile")}
  for el in root.iter():
    tag = el.tag.lower()
    name = el.attrib.get("Name", el.attrib.get("name", ""))
    if tag == "metatag" and name.lower() == "emotion":
      value = el.attrib.get("Value", el.attrib.get("value", ""))
      out["emotion"] = int(value) if value.strip().isdigit() else None
    elif tag == "subject" and el.attrib.get("id", "").isdigit():
      out["subject"] = int(el.attrib["id"])
  return out


def decode_video(path: str):
  """Every frame as a PIL image (PyAV, imported here: only MMI needs it)."""
  try:
    import av  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise ImportError("building MMI decodes its videos with PyAV: pip "
                      "install 'fer_jax[video]' (or pip install av)") from None
  with av.open(path) as container:
    return [f.to_image() for f in container.decode(video=0)]


class Mmi(common.FaceBuilder):
  """MMI emotion sessions, onset to apex."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}  # noqa: RUF012 (TFDS API)
  LAYOUT = _LAYOUT
  HOMEPAGE = "https://mmifacedb.eu/"
  DESCRIPTION = (
      "MMI Facial Expression Database: posed videos, neutral-onset-apex-"
      "offset; the sessions with an Emotion tag, decoded, kept from the "
      "neutral start to the middle (apex) frames; centre-cropped.")
  CITATION = """@inproceedings{pantic2005mmi,
  title={Web-based database for facial expression analysis},
  author={Pantic, Maja and Valstar, Michel and Rademaker, Ron and
          Maat, Ludo},
  booktitle={IEEE ICME}, year={2005}}"""
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Register at the MMI Facial Expression Database (https://mmifacedb.eu/, Maja
Pantic's group; end-user licence agreement), select the sessions (the
papers use the ~205-213 frontal emotion-labelled ones), download and extract
them and pass the folder holding Sessions/ as --manual_dir. Decoding needs
PyAV: pip install 'fer_jax[video]'. Layout:
{_LAYOUT}"""
  BUILDER_CONFIGS = [  # noqa: RUF012 (TFDS API)
      MmiConfig(name="default", max_frames=32,
                description="onset to apex, up to 32 frames, 256 px"),
      MmiConfig(name="paper", frames="paper",
                description="first + three middle frames, 256 px"),
      MmiConfig(name="small", image_size=64, max_frames=16,
                description="onset to apex, up to 16 frames, 64 px"),
  ]

  def _split_generators(self, dl_manager):
    manual = self.manual_dir(dl_manager)
    root, _ = common.find_root(manual, ["Sessions"], self.name, _LAYOUT)
    sessions = os.path.join(root, "Sessions")
    return {"train": self._generate_examples(manual, sessions)}

  def _generate_examples(self, manual, sessions):
    cfg = self.builder_config
    log = self.new_log("train")
    names = sorted((d for d in os.listdir(sessions)
                    if os.path.isdir(os.path.join(sessions, d))),
                   key=lambda d: (not d.isdigit(), int(d) if d.isdigit() else 0,
                                  d))
    for index, sid in enumerate(names):
      folder = os.path.join(sessions, sid)
      xml = os.path.join(folder, "session.xml")
      if not os.path.isfile(xml):
        # One incomplete session should not stop the build; a tree where no
        # session has one ends in finish()'s "no usable example" error.
        log.skip(folder, "no session.xml")
        continue
      meta = parse_session(xml)
      label = (None if meta["emotion"] is None
               else dataset_label("mmi", meta["emotion"]))
      if label is None:
        log.skip(folder, "no Emotion metatag (AU-only session)"
                 if meta["emotion"] is None else "unknown emotion code",
                 f"Value={meta['emotion']}")
        continue
      videos = sorted(f for f in os.listdir(folder)
                      if f.lower().endswith(_VIDEO_EXT))
      if meta["media"] in videos:
        videos = [meta["media"]]
      if not videos:
        log.skip(folder, "no video (still-image session)")
        continue
      subject = meta["subject"]
      if subject is None:
        m = _SUBJECT_IN_NAME.match(videos[0])
        subject = int(m.group(1)) if m else None
      if subject is None:
        log.skip(folder, "no subject in session.xml or the video's name")
        continue
      path = os.path.join(folder, videos[0])
      try:
        images = decode_video(path)
      except ImportError:
        raise
      except Exception as e:  # noqa: BLE001 -- any decoder error: skip it
        log.skip(path, "unreadable video", f"{type(e).__name__}: {e}")
        continue
      if len(images) < PEAK_FRAMES + 1:
        log.skip(path, "video too short", f"{len(images)} frames")
        continue
      kept = onset_to_apex(len(images), cfg.frames, cfg.max_frames)
      sequence_id = int(sid) if sid.isdigit() else 1_000_000 + index
      for pos, f in enumerate(kept):
        image = images[f].convert("RGB")
        yield f"{sid}/{f}", self.example(
            log, image, align.centre_affine(*image.size, cfg.align_spec),
            label=label, subject_id=subject, sequence_id=sequence_id,
            frame_index=pos, num_frames=len(kept),
            intensity=pos / max(1, len(kept) - 1),
            source_path=f"{os.path.relpath(path, manual)}#frame={f}")
    self.finish(log)
