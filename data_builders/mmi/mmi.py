"""TFDS builder for MMI: the emotion-labelled video sessions, decoded to
frames (PyAV, the optional ``video`` extra: ``pip install fer_jax[video]``).

Layout source and what was checked against the archive as shipped: the
sessions' layout is the one the MMI web site's download gives
(``Sessions/<n>/``). It was compared (issue 23) with two independent public
loaders of the distributed archive, which read the Emotion metatag
from the per-video XML named after the video (``S001-001.xml`` beside
``S001-001.avi``), not from ``session.xml``. The builder reads it there,
and from ``session.xml`` only where a copy has no per-video XML (or none
with the tag). The codes 1-6 (anger disgust fear happiness sadness
surprise) and the ``S###-`` subject prefix agree with those loaders.

``session.xml``'s ``<track view="N">`` gives the camera: 0 frontal, 2 a
dual-view recording (frontal and profile side by side in one frame). For
view 2 the public loaders keep one half of the frame; the builder crops the
centred square of the ``dual_view_half`` half ('left' by default, the
frontal one in the loaders' reading; not verified on a real frame here, so
it is a config field) and never the centre of the whole frame, which would
cut across both faces. The test tree measures it on a frame whose halves
differ. Other views (profile only) are skipped and counted.

MMI sequences run neutral -> onset -> apex -> offset -> neutral, so the peak
is in the middle. The builder keeps the first half through the three middle
frames, re-indexed 0..K-1: frame 0 is neutral and the last three are the
apex, which is what the protocols' neutral and peak roles read (IF-GAN's
"three peak frames in the middle"). ``max_frames`` subsamples the onset
evenly; ``frames='paper'`` keeps only the first frame and the three peaks.
No landmarks ship with the videos and the frontal face fills the centre (of
its half, for view 2), so frames are cropped to that centred square grown
by ``margin``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import xml.etree.ElementTree as ET

import numpy as np
import tensorflow_datasets as tfds

from fer_jax.data_builders import common
from fer_jax.data import align
from fer_jax.data.classes import dataset_label

_LAYOUT = """\
  Sessions/<id>/S001-001.avi with, beside it,
    S001-001.xml   <Metatag Name="Emotion" Value="N"/> (1 anger 2 disgust
                   3 fear 4 happiness 5 sadness 6 surprise; read from
                   session.xml where a copy has no per-video XML)
    session.xml    <subject id="N"/> (else the video's S###- prefix) and
                   <track view="0|2"> (0 frontal; 2 frontal and profile
                   side by side: the frontal half is kept)"""

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
  dual_view_half: str = "left"

  def __post_init__(self):
    super().__post_init__()
    if self.dual_view_half not in ("left", "right"):
      raise ValueError(f"dual_view_half={self.dual_view_half!r}: 'left' or "
                       "'right'")
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


def _read_xml(path: str, what: str):
  try:
    return ET.parse(path).getroot()
  except ET.ParseError as e:
    raise ValueError(f"{path}: not a readable {what} ({e})") from None


def _emotion(root) -> int | str | None:
  """The Value of the first <Metatag Name="Emotion"> under ``root`` (an int
  where it is one, else the raw text), None where there is no such tag."""
  for el in root.iter():
    name = el.attrib.get("Name", el.attrib.get("name", ""))
    if el.tag.lower() == "metatag" and name.lower() == "emotion":
      value = el.attrib.get("Value", el.attrib.get("value", "")).strip()
      return int(value) if value.isdigit() else value
  return None


def parse_video_xml(path: str) -> int | str | None:
  """The Emotion metatag of a per-video XML (``S001-001.xml`` beside
  ``S001-001.avi``, where the distributed archive keeps it), or None."""
  return _emotion(_read_xml(path, "per-video XML"))


def parse_session(path: str) -> dict:
  """emotion code (or None: older copies keep it here, the archive as
  shipped in the per-video XML), subject id (or None), media file and the
  first track's view (0 frontal, 2 frontal and profile side by side; None
  when not recorded) of a session.xml; raises ValueError naming the file if
  it is not XML."""
  root = _read_xml(path, "session.xml")
  out = {"emotion": _emotion(root), "subject": None, "view": None,
         "media": root.attrib.get("mediaFile")}
  for el in root.iter():
    tag = el.tag.lower()
    if tag == "subject" and el.attrib.get("id", "").isdigit():
      out["subject"] = int(el.attrib["id"])
    elif (tag == "track" and out["view"] is None
          and el.attrib.get("view", "").strip().isdigit()):
      out["view"] = int(el.attrib["view"])
  return out


def frame_affine(width: int, height: int, view: int, half: str,
                 spec: align.AlignSpec) -> np.ndarray:
  """view 0: the centred square of the frame; view 2 (a dual-view frame,
  frontal and profile side by side): the centred square of the frontal
  ``half`` ('left' or 'right'), both grown by the spec's margin."""
  if view != 2:
    return align.centre_affine(width, height, spec)
  half_w = width / 2
  side = min(half_w, height)
  x0 = 0.0 if half == "left" else half_w
  return align.box_affine(x0 + (half_w - side) / 2, (height - side) / 2,
                          side, side, spec)


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
      "neutral start to the middle (apex) frames; centre-cropped (the "
      "frontal half of dual-view frames).")
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
      meta = self._session(folder, log)
      if meta is None:
        continue
      label = dataset_label("mmi", meta["emotion"])
      path = meta["path"]
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
        affine = frame_affine(*image.size, meta["view"], cfg.dual_view_half,
                              cfg.align_spec)
        yield f"{sid}/{f}", self.example(
            log, image, affine,
            label=label, subject_id=meta["subject"], sequence_id=sequence_id,
            frame_index=pos, num_frames=len(kept),
            intensity=pos / max(1, len(kept) - 1),
            source_path=f"{os.path.relpath(path, manual)}#frame={f}")
    self.finish(log)

  def _session(self, folder: str, log) -> dict | None:
    """The video, emotion code, subject and view of one session folder, or
    None (counted) where it cannot be used. The emotion comes from the
    per-video XML named after the video, then from session.xml."""
    entries = os.listdir(folder)
    xml = common.child(folder, "session.xml")
    meta = (parse_session(xml) if xml and os.path.isfile(xml) else
            {"emotion": None, "subject": None, "view": None, "media": None})
    videos = sorted(f for f in entries if f.lower().endswith(_VIDEO_EXT)
                    and not f.startswith("."))
    if meta["media"] in videos:
      videos = [meta["media"]]
    if not videos:
      log.skip(folder, "no video (still-image session)")
      return None
    video = videos[0]
    stem = os.path.splitext(video)[0].lower()
    per_video = next((e for e in sorted(entries)
                      if e.lower() == stem + ".xml"), None)
    emotion = (parse_video_xml(os.path.join(folder, per_video))
               if per_video else None)
    if emotion is None:
      emotion = meta["emotion"]
    if emotion is None:
      log.skip(folder, "no Emotion metatag (AU-only session)",
               f"looked in {per_video or stem + '.xml'} and session.xml")
      return None
    if not isinstance(emotion, int) or dataset_label("mmi", emotion) is None:
      log.skip(folder, "unknown emotion code", f"Value={emotion}")
      return None
    view = 0 if meta["view"] is None else meta["view"]
    if view not in (0, 2):
      log.skip(folder, "not a frontal view (track view is not 0 or 2)",
               f"view={view}")
      return None
    subject = meta["subject"]
    if subject is None:
      m = _SUBJECT_IN_NAME.match(video)
      subject = int(m.group(1)) if m else None
    if subject is None:
      log.skip(folder, "no subject in session.xml or the video's name")
      return None
    return {"path": os.path.join(folder, video), "emotion": emotion,
            "subject": subject, "view": view}
