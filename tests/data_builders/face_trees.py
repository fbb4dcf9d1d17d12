"""Tiny copies of the face archives, in their owners' layouts, for the
builder tests: a few subjects, 32-64 px images, real file names and label
formats, one corrupt image each. Every writer returns what a correct build
must contain."""

from __future__ import annotations

import os

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from fer_jax.data import protocols
from fer_jax.data.classes import canonical_index


def face_points(cx: float, cy: float, iod: float, angle: float,
                rng: np.random.Generator) -> np.ndarray:
  """68 iBUG points with the eye contours (36-41, 42-47) centred ``iod``
  apart at angle ``angle`` (radians) around (cx, cy); the rest scattered."""
  pts = rng.uniform(-0.8, 0.8, (68, 2)) * iod + [cx, cy + 0.4 * iod]
  u = np.array([np.cos(angle), np.sin(angle)])
  left, right = np.array([cx, cy]) - u * iod / 2, np.array([cx, cy]) + u * iod / 2
  ring = 0.12 * iod * np.stack([np.cos(np.arange(6) * np.pi / 3),
                                np.sin(np.arange(6) * np.pi / 3)], 1)
  pts[36:42] = left + ring
  pts[42:48] = right + ring
  return pts


def face_image(w: int, h: int, rng: np.random.Generator, grey=False,
               eyes=None) -> Image.Image:
  """Noise with bright 3x3 dots at the eye centres, if given."""
  arr = rng.integers(0, 60, (h, w, 3), np.uint8)
  for x, y in eyes or ():
    xi, yi = round(float(x)), round(float(y))
    arr[max(0, yi - 1):yi + 2, max(0, xi - 1):xi + 2] = 255
  im = Image.fromarray(arr)
  return im.convert("L") if grey else im


def save(im: Image.Image, path: str) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fmt = {".jpeg": "JPEG", ".jpg": "JPEG", ".tiff": "TIFF", ".tif": "TIFF",
         ".bmp": "BMP", ".png": "PNG"}[os.path.splitext(path)[1].lower()]
  im.save(path, format=fmt)
  return path


def corrupt(path: str) -> None:
  """Truncates an image file to half its bytes (header intact, data cut)."""
  with open(path, "rb") as f:
    data = f.read()
  head = data[:len(data) // 2]
  with open(path, "wb") as f:
    f.write(head)


def build(cls, manual_dir, data_dir, config=None):
  builder = cls(config=config, data_dir=os.fspath(data_dir))
  builder.download_and_prepare(
      file_format="array_record",
      download_config=tfds.download.DownloadConfig(
          manual_dir=os.fspath(manual_dir)))
  return builder


def records(builder, split="train") -> list[dict]:
  src = builder.as_data_source(split=split)
  return [src[i] for i in range(len(src))]


def text(x) -> str:
  return x.decode() if isinstance(x, bytes) else str(x)


def assert_no_subject_leakage(table, num_folds: int) -> None:
  """Every fold of the subject-independent protocol: test, val and train
  hold disjoint subjects, and every subject is tested exactly once."""
  tested = []
  for fold in range(num_folds):
    masks = protocols.fold_rows(table, num_folds, fold, val_folds=1, seed=0)
    sets = {k: set(table.subject_id[m].tolist()) for k, m in masks.items()}
    assert not sets["train"] & sets["test"]
    assert not sets["train"] & sets["val"]
    assert not sets["val"] & sets["test"]
    assert sets["test"]
    tested += sorted(sets["test"])
  assert sorted(tested) == sorted(set(table.subject_id.tolist()))


# ------------------------------------------------------------------ CK+

CK_SEQUENCES = [
    # (subject, sequence, frames, emotion code or None = unlabelled)
    (5, 1, 5, 1), (5, 2, 4, 5),
    (10, 1, 6, 7), (10, 3, 4, None),
    (11, 1, 4, 2),
    (22, 1, 5, 3), (22, 4, 4, 6),
    (37, 2, 4, 4),
]
CK_CORRUPT = (22, 1, 2)  # subject, sequence, frame position
CK_SIZE = (64, 48)


CK_LAYOUTS = {
    # name: (top folder, images, labels, landmarks, grey frames)
    "canonical": ("", "cohn-kanade-images", "Emotion", "Landmarks", False),
    "nested": ("CK+", "cohn-kanade-images", "Emotion_labels/Emotion",
               "Landmarks/Landmarks", True),
    "capital_labels": ("", "cohn-kanade-images", "Emotion_Labels/Emotion",
                       "Landmarks", False),
    "zip_per_folder": ("", "extended-cohn-kanade-images/cohn-kanade-images",
                       "Emotion", "Landmarks", False),
    "zip_per_folder_nested": (
        "CK+", "extended-cohn-kanade-images/cohn-kanade-images",
        "Emotion_labels/Emotion", "Landmarks/Landmarks", False),
}


def write_ckplus(root, variant: bool | str = False, seed: int = 0) -> dict:
  """CK+ as distributed; ``variant`` names an unpacking of CK_LAYOUTS (True:
  'nested', the Emotion_labels/Emotion and Landmarks/Landmarks of some
  copies under one top folder, grey frames)."""
  layout = {False: "canonical", True: "nested"}.get(variant, variant)
  top_name, images, labels, landmarks, grey = CK_LAYOUTS[layout]
  rng = np.random.default_rng(seed)
  top = os.path.join(os.fspath(root), top_name)
  emo_dir = os.path.join(top, *labels.split("/"))
  mark_dir = os.path.join(top, *landmarks.split("/"))
  image_dir = os.path.join(top, *images.split("/"))
  expected = {}
  codes = {0: "neutral", 1: "anger", 2: "contempt", 3: "disgust", 4: "fear",
           5: "happiness", 6: "sadness", 7: "surprise"}
  for s, q, n, code in CK_SEQUENCES:
    subj, seq = f"S{s:03d}", f"{q:03d}"
    angle = rng.uniform(-0.3, 0.3)
    for i in range(n):
      stem = f"{subj}_{seq}_{i + 1:08d}"
      pts = face_points(32 + i, 20, 18, angle, rng)
      eyes = [pts[36:42].mean(0), pts[42:48].mean(0)]
      im = face_image(*CK_SIZE, rng, grey=grey, eyes=eyes)
      path = save(im, os.path.join(image_dir, subj, seq, stem + ".png"))
      if (s, q, i) == CK_CORRUPT:
        corrupt(path)
      os.makedirs(os.path.join(mark_dir, subj, seq), exist_ok=True)
      np.savetxt(os.path.join(mark_dir, subj, seq, stem + "_landmarks.txt"),
                 pts, fmt="   %.7e")
      expected[(s, q, i)] = {
          "points": pts, "num_frames": n,
          "label": None if code is None else canonical_index(codes[code])}
    if code is not None:
      os.makedirs(os.path.join(emo_dir, subj, seq), exist_ok=True)
      with open(os.path.join(emo_dir, subj, seq,
                             f"{subj}_{seq}_{n:08d}_emotion.txt"), "w") as f:
        f.write(f"   {code:.7e}\n")
    # A FACS folder, as shipped, which the builder must ignore.
    os.makedirs(os.path.join(top, "FACS", subj, seq), exist_ok=True)
    with open(os.path.join(top, "FACS", subj, seq,
                           f"{subj}_{seq}_{n:08d}_facs.txt"), "w") as f:
      f.write("   1.0000000e+00   0.0000000e+00\n")
  return expected


# ------------------------------------------------------------------ Oulu-CASIA

OULU_EXPRESSIONS = ("Anger", "Disgust", "Fear", "Happiness", "Sadness",
                    "Surprise")
OULU_SUBJECTS = (1, 3, 12, 40)
OULU_CORRUPT = (12, "Fear", 1)
OULU_FRAMES = 5


def oulu_frames(subject: int, e: int) -> int:
  return OULU_FRAMES + (subject + e) % 3  # 5-7 frames


OULU_LAYOUTS = {
    # name: (folders above the camera folders, frame extension, case)
    "canonical": ("OriginalImg", ".jpeg", None),
    "b_copy": ("Oulu_CASIA_NIR_VIS/B_OriginalImg", ".jpg", "strong"),
    "nested_b": ("B_OriginalImg/B_OriginalImg/OriginalImg", ".jpeg", None),
    "lower_case": ("oulu-casia/originalimg", ".jpeg", "lower"),
}


def write_oulu(root, variant: bool | str = False, seed: int = 0) -> dict:
  """OriginalImg/{VL,NI}/{Strong,Weak}/P###/<Expression>/000.jpeg;
  ``variant`` names an unpacking of OULU_LAYOUTS (True: 'b_copy', the
  B_OriginalImg copy under a top folder, lower-case Strong folder, .jpg;
  'nested_b': B_OriginalImg/B_OriginalImg/OriginalImg/...; 'lower_case':
  every folder name in lower case)."""
  layout = {False: "canonical", True: "b_copy"}.get(variant, variant)
  above, ext, case = OULU_LAYOUTS[layout]
  rng = np.random.default_rng(seed)
  top = os.path.join(os.fspath(root), *above.split("/"))
  expected = {}
  for camera, lighting in (("VL", "Strong"), ("NI", "Strong"),
                           ("VL", "Weak")):
    folder = "strong" if case and lighting == "Strong" else lighting
    low = (lambda x: x.lower()) if case == "lower" else (lambda x: x)
    for s in OULU_SUBJECTS:
      for e, expr in enumerate(OULU_EXPRESSIONS):
        n = oulu_frames(s, e)
        for i in range(n):
          # Brightness rises with the frame number, so the test can check
          # frame order from the pixels.
          im = rng.integers(0, 20, (30, 40, 3)) + 30 * i
          path = save(Image.fromarray(im.astype(np.uint8)), os.path.join(
              top, low(camera), low(folder), low(f"P{s:03d}"), low(expr),
              f"{i:03d}{ext}"))
          if (camera, lighting) == ("VL", "Strong"):
            if (s, expr, i) == OULU_CORRUPT:
              corrupt(path)
            else:
              expected[(s, expr, i)] = n
  return expected


# ------------------------------------------------------------------ JAFFE

JAFFE_SUBJECTS = ("KA", "KL", "KM", "KR", "MK", "NA", "NM", "TM", "UY", "YM")
JAFFE_CODES = ("AN", "DI", "FE", "HA", "NE", "SA", "SU")


def write_jaffe(root, variant: bool = False, seed: int = 0) -> dict:
  """jaffedbase/KA.AN1.39.tiff (variant: jaffe/ inside a top folder, .tif),
  two repetitions of each expression for 5 subjects, plus a README, a
  macOS '._' copy and one corrupt image."""
  rng = np.random.default_rng(seed)
  folder = (os.path.join(os.fspath(root), "JAFFE", "jaffe") if variant
            else os.path.join(os.fspath(root), "jaffedbase"))
  ext = "tif" if variant else "tiff"
  expected = {}
  number = 0
  for subject in ("KA", "NA", "NM", "UY", "YM"):
    for code in JAFFE_CODES:
      for rep in (1, 2):
        number += 1
        name = f"{subject}.{code}{rep}.{number}.{ext}"
        path = save(face_image(32, 32, rng, grey=True),
                    os.path.join(folder, name))
        if name.startswith("NM.SA2."):
          corrupt(path)
        else:
          expected[name] = (subject, code)
  with open(os.path.join(folder, "README"), "w") as f:
    f.write("JAFFE\n")
  with open(os.path.join(folder, "._KA.AN1.1.tiff"), "wb") as f:
    f.write(b"\0\5\26\7 mac resource fork")
  return expected


# ------------------------------------------------------------------ BU-3DFE

BU_SUBJECTS = ("F0001", "F0002", "M0001", "M0007")
BU_CODES = ("AN", "DI", "FE", "HA", "SA", "SU")


def write_bu3dfe(root, variant: bool = False, seed: int = 0) -> dict:
  """F0001/F0001_AN01WH_F2D.bmp ... (variant: inside BU-3DFE/, .png) with
  the 3D files beside them; one corrupt image."""
  rng = np.random.default_rng(seed)
  top = os.path.join(os.fspath(root), "BU-3DFE") if variant else os.fspath(root)
  ext = "png" if variant else "bmp"
  expected = {}
  for k, subject in enumerate(BU_SUBJECTS):
    race = ("WH", "AE", "BL", "LA")[k]
    items = [("NE", 0)] + [(c, lv) for c in BU_CODES for lv in (1, 2, 3, 4)]
    for code, level in items:
      name = f"{subject}_{code}{level:02d}{race}_F2D.{ext}"
      path = save(face_image(48, 40, rng), os.path.join(top, subject, name))
      with open(os.path.join(top, subject, name.replace("F2D", "F3D")
                             .rsplit(".", 1)[0] + ".wrl"), "w") as f:
        f.write("#VRML V2.0 utf8\n")
      if (subject, code, level) == ("M0001", "HA", 4):
        corrupt(path)
      else:
        expected[name] = (subject, code, level)
  return expected


# ------------------------------------------------------------------ RAF-DB

RAF_CODES = (1, 2, 3, 4, 5, 6, 7)


def write_rafdb(root, variant: bool = False, seed: int = 0) -> dict:
  """basic/EmoLabel/list_patition_label.txt + basic/Image/aligned/*.jpg
  (variant: the corrected spelling list_partition_label.txt, no basic/
  folder); one corrupt image, one label line without an image."""
  rng = np.random.default_rng(seed)
  top = os.fspath(root) if variant else os.path.join(os.fspath(root), "basic")
  lines, expected = [], {}
  for split, count in (("train", 14), ("test", 7)):
    for i in range(1, count + 1):
      name = f"{split}_{i:05d}.jpg"
      code = RAF_CODES[(i * 3 + (split == "test")) % 7]
      lines.append(f"{name} {code}")
      if name == "train_00009.jpg":
        continue  # listed, image missing
      path = save(face_image(40, 40, rng), os.path.join(
          top, "Image", "aligned", f"{split}_{i:05d}_aligned.jpg"))
      save(face_image(60, 50, rng), os.path.join(top, "Image", "original",
                                                 name))
      if name == "test_00004.jpg":
        corrupt(path)
      else:
        expected[name] = (split, code)
  label_name = ("list_partition_label.txt" if variant
                else "list_patition_label.txt")
  os.makedirs(os.path.join(top, "EmoLabel"), exist_ok=True)
  with open(os.path.join(top, "EmoLabel", label_name), "w") as f:
    f.write("\n".join(lines) + "\n")
  return expected


# ------------------------------------------------------------------ AffectNet

AFFECT_HEADER = ("subDirectory_filePath,face_x,face_y,face_width,face_height,"
                 "facial_landmarks,expression,valence,arousal")


def write_affectnet(root, variant: bool = False, seed: int = 0) -> dict:
  """Manually_Annotated_file_lists/{training,validation}.csv and
  Manually_Annotated_Images/<subdir>/<hash>.jpg (variant: images under
  Manually_Annotated/Manually_Annotated_Images and CSVs without a header).
  Codes 0-10; a duplicate row, a corrupt image, a missing image."""
  rng = np.random.default_rng(seed)
  top = os.fspath(root)
  images = (os.path.join(top, "Manually_Annotated", "Manually_Annotated_Images")
            if variant else os.path.join(top, "Manually_Annotated_Images"))
  expected = {}
  for split, count in (("training", 33), ("validation", 11)):
    rows = [] if variant else [AFFECT_HEADER]
    for i in range(count):
      code = i % 11
      rel = f"{100 + i % 4}/{split[:3]}{i:04d}.jpg"
      w, h = 64 + 8 * (i % 3), 56
      pts = face_points(w / 2, h / 2 - 4, 16 + i % 5, rng.uniform(-0.4, 0.4),
                        rng).round(2)
      marks = ";".join(f"{v:.2f}" for v in pts.ravel())
      rows.append(f"{rel},{w // 4},{h // 4},{w // 2},{h // 2},"
                  f"{marks},{code},0.5,-0.25")
      if (split, i) == ("training", 5):
        continue  # listed, image missing
      path = save(face_image(w, h, rng, eyes=[pts[36:42].mean(0),
                                             pts[42:48].mean(0)]),
                  os.path.join(images, rel))
      if (split, i) == ("training", 6):
        corrupt(path)
        continue
      if code <= 7:
        expected[rel] = ("test" if split == "validation" else "train",
                         code, pts)
    if split == "training":
      rows.append(rows[-count])  # a duplicate row (code 0), as the archive has
    os.makedirs(os.path.join(top, "Manually_Annotated_file_lists"),
                exist_ok=True)
    with open(os.path.join(top, "Manually_Annotated_file_lists",
                           f"{split}.csv"), "w") as f:
      f.write("\n".join(rows) + "\n")
  return expected


# ------------------------------------------------------------------ MMI

MMI_SESSIONS = [
    # (session id, subject, emotion code or None, frames, kind, view)
    (101, 1, 1, 9, "video", 0), (102, 1, 4, 11, "video", 0),
    (140, 2, 6, 10, "video", 2), (141, 2, None, 9, "video", 0),  # AU-only
    (203, 5, 2, 9, "video", 0), (204, 5, 3, 9, "corrupt", 0),
    (250, 9, 5, 12, "video", 2), (251, 9, 4, 1, "image", 0),  # still session
]


def write_video(path: str, num_frames: int, rng, w: int = 48,
                h: int = 32, dual: bool = False) -> None:
  """An MPEG-4 AVI whose frame f has mean brightness ~20 + 20 f (``dual``:
  only its left half; the right half, the profile view of a dual-view
  recording, stays dark, ~5)."""
  import av  # only the MMI test writes videos
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with av.open(path, mode="w") as container:
    stream = container.add_stream("mpeg4", rate=10)
    stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
    for f in range(num_frames):
      arr = (rng.integers(0, 10, (h, w, 3)) + 20 + 20 * f).clip(0, 255)
      if dual:
        arr[:, w // 2:] = rng.integers(0, 10, (h, w - w // 2, 3))
      frame = av.VideoFrame.from_ndarray(arr.astype(np.uint8),
                                         format="rgb24")
      for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


def write_mmi(root, variant: bool = False, seed: int = 0) -> dict:
  """MMI as the archive ships it: Sessions/<id>/S###-###.avi, the Emotion
  metatag in the per-video S###-###.xml beside it, session.xml with the
  subject and <track view="0|2"> (2: frontal left, profile right in one
  frame) and the AU file. ``variant``: an older copy under MMI/ with the
  Emotion metatag in session.xml, no per-video XML and the subject only in
  the video's name. Returns {session: (subject, code, frames, view)}."""
  rng = np.random.default_rng(seed)
  top = os.path.join(os.fspath(root), "MMI") if variant else os.fspath(root)
  expected = {}
  for sid, subject, code, n, kind, view in MMI_SESSIONS:
    folder = os.path.join(top, "Sessions", str(sid))
    media = f"S{subject:03d}-{sid:03d}.avi"
    os.makedirs(folder, exist_ok=True)
    if kind == "image":
      media = media.replace(".avi", ".jpg")
      save(face_image(48, 32, rng), os.path.join(folder, media))
    else:
      write_video(os.path.join(folder, media), n, rng, dual=view == 2)
      if kind == "corrupt":
        corrupt(os.path.join(folder, media))
    stem = media.rsplit(".", 1)[0]
    emotion_el = ("" if code is None
                  else f'\n  <Metatag Name="Emotion" Value="{code}"/>')
    subject_el = "" if variant else f'\n  <subject id="{subject}"/>'
    with open(os.path.join(folder, "session.xml"), "w") as f:
      f.write(f'<?xml version="1.0" encoding="utf-8"?>\n'
              f'<session sessionId="{sid}" mediaFile="{media}">{subject_el}'
              f'\n  <track id="0" view="{view}" type="Video" enabled="1"/>'
              f'{emotion_el if variant else ""}\n</session>\n')
    if not variant:
      with open(os.path.join(folder, stem + ".xml"), "w") as f:
        f.write(f'<?xml version="1.0" encoding="utf-8"?>\n<Metatags>'
                f'\n  <Metatag Name="Gender" Value="Male"/>{emotion_el}'
                f'\n</Metatags>\n')
    with open(os.path.join(folder, stem + "-oao_aucs.xml"), "w") as f:
      f.write("<ActionUnits/>\n")
    if code is not None and kind == "video":
      expected[sid] = (subject, code, n, view)
  return expected


def write_affectnet_npy(root, variant: bool = False, seed: int = 0) -> dict:
  """AffectNet's 8-class release: {train_set,val_set}/images/<id>.jpg and
  annotations/<id>_exp.npy (the code as text, as the release stores it;
  ``variant``: as a number, under a top folder), _val, _aro, _lnd (136
  numbers x1 y1 ...). Codes 0-7; a corrupt image, an image without
  annotations, one with malformed landmarks. Returns {image file name:
  (split, code, points)}."""
  rng = np.random.default_rng(seed)
  top = (os.path.join(os.fspath(root), "AffectNet") if variant
         else os.fspath(root))
  expected = {}
  for split, count, first in (("train_set", 26, 0), ("val_set", 9, 5000)):
    for k in range(count):
      ident = str(first + 3 * k)
      code = k % 8
      w = h = 48 + 8 * (k % 2)
      pts = face_points(w / 2, h / 2 - 4, 14 + k % 5, rng.uniform(-0.4, 0.4),
                        rng).round(2)
      path = save(face_image(w, h, rng, eyes=[pts[36:42].mean(0),
                                             pts[42:48].mean(0)]),
                  os.path.join(top, split, "images", f"{ident}.jpg"))
      notes = os.path.join(top, split, "annotations")
      os.makedirs(notes, exist_ok=True)
      if (split, k) == ("train_set", 4):
        continue  # image without annotations
      np.save(os.path.join(notes, f"{ident}_exp.npy"),
              np.array(code) if variant else np.array(str(code)))
      np.save(os.path.join(notes, f"{ident}_val.npy"), np.array("0.5"))
      np.save(os.path.join(notes, f"{ident}_aro.npy"), np.array("-0.25"))
      marks = pts.ravel()
      if (split, k) == ("train_set", 9):
        marks = marks[:100]  # malformed landmarks
      np.save(os.path.join(notes, f"{ident}_lnd.npy"), marks)
      if (split, k) == ("train_set", 6):
        corrupt(path)
        continue
      if (split, k) != ("train_set", 9):
        expected[f"{ident}.jpg"] = ("test" if split == "val_set" else "train",
                                    code, pts)
  return expected
