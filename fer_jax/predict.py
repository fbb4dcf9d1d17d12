"""From photos to expressions: detect, align and classify every face.

  python -m fer_jax.predict --workdir=workdirs/gndl photo.jpg holiday/
  python -m fer_jax.predict --workdir=exported/gndl photo.jpg  # an export

--workdir is a trained run (its latest checkpoint, or --checkpoint_step) or
a folder ``python -m fer_jax.export`` wrote. Each face is found and aligned
by fer_jax.faces as the run's data set aligned its faces, then classified.
Prints one table row per face (file, face box, whether its eyes were found,
class, probability) and writes, to --out_dir (default WORKDIR/predictions):
  <photo>.png        the photo, each face boxed and labelled
  <photo>_faces.png  the aligned faces the model saw, with their classes
  predictions.json   every row, with every class's probability

From Python:
  from fer_jax import evaluate, predict
  model = evaluate.load("workdirs/gndl")
  for photo in predict.predict_photos(model, ["photo.jpg"], out_dir="out"):
    for face in photo.faces:
      print(photo.file, face.box, face.label, face.probability)
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from fer_jax import console
from fer_jax import faces as faces_lib
from fer_jax import files
from fer_jax import viz
from fer_jax.data import align


@dataclasses.dataclass(frozen=True)
class FacePrediction:
  """One face: its box (x, y, w, h) in the photo, whether the eye cascade
  found its eyes (else they were placed from the box), the most probable
  class and its probability, and every class's probability."""
  box: tuple[int, int, int, int]
  eyes_found: bool
  label: str
  probability: float
  probabilities: dict[str, float]


@dataclasses.dataclass(frozen=True)
class PhotoPrediction:
  """One photo's faces (left to right) and the pictures written for it."""
  file: str
  faces: list[FacePrediction]
  crops: np.ndarray  # uint8 (F, S, S, 3): what the model saw
  pictures: tuple[str, ...] = ()


def alignment_of(model) -> align.AlignSpec:
  """The crop a model expects: an export's recorded alignment, or the run's
  data set's (fer_jax.faces.training_alignment)."""
  recorded = getattr(model, "alignment", None)
  if recorded is not None:
    return align.AlignSpec(image_size=int(recorded["image_size"]),
                           eye_distance=float(recorded["eye_distance"]),
                           eye_height=float(recorded["eye_height"]))
  return faces_lib.training_alignment(model.config.data)


def load_model(workdir: str, step: int | None = None):
  """A run's workdir (fer_jax.evaluate.load) or an export folder
  (fer_jax.exported.load); ValueError where it cannot classify a face."""
  from fer_jax import exported  # pylint: disable=import-outside-toplevel
  if exported.is_export_dir(workdir):
    if step is not None:
      raise ValueError(f"--checkpoint_step: {workdir} is an exported model "
                       "(one step); drop the flag or pass the run's workdir")
    return exported.load(workdir)
  from fer_jax import evaluate  # pylint: disable=import-outside-toplevel
  model = evaluate.load(workdir, step)
  model.require_classifier()
  return model


def predict_photos(model, photos: Sequence[Any], *,
                   out_dir: str | None = None,
                   spec: align.AlignSpec | None = None, min_face: int = 32,
                   max_faces: int | None = None) -> list[PhotoPrediction]:
  """Every face of every photo, classified by ``model`` (a loaded run or an
  export: anything with ``classes`` and ``probabilities``). ``photos``:
  image paths, uint8 arrays, or (name, array) pairs. ``spec``: the crop
  (default: ``alignment_of(model)``). With ``out_dir``, writes each photo's
  labelled picture and aligned faces, and predictions.json. ValueError for
  a run whose method cannot classify one face (cGAN+WSC, GNDL's oracle)."""
  if hasattr(model, "require_classifier"):
    model.require_classifier()
  spec = spec or alignment_of(model)
  classes = list(model.classes)
  results, names = [], set()
  for i, photo in enumerate(photos):
    if isinstance(photo, (str, os.PathLike)):
      name, image = os.fspath(photo), faces_lib.read_image(photo)
    elif isinstance(photo, tuple):
      name, image = photo
    else:
      name, image = f"image_{i}", photo
    image = faces_lib.as_rgb(image)
    found = faces_lib.find_faces(image, spec, min_face, max_faces)
    crops = np.stack([f.crop for f in found]) if found else np.zeros(
        (0, spec.image_size, spec.image_size, 3), np.uint8)
    probs = (np.asarray(model.probabilities(crops)) if found
             else np.zeros((0, len(classes))))
    rows = [FacePrediction(
        box=f.box, eyes_found=f.eyes_found, label=classes[int(p.argmax())],
        probability=float(p.max()),
        probabilities={c: float(v) for c, v in zip(classes, p)})
            for f, p in zip(found, probs)]
    pictures = ()
    if out_dir:
      stem = _unique_stem(name, names)
      pictures = _write_pictures(out_dir, stem, name, image, rows, crops)
    results.append(PhotoPrediction(name, rows, crops, pictures))
  if out_dir:
    files.write_json_atomic(files.join(out_dir, "predictions.json"),
                            {"classes": classes,
                             "photos": [_as_json(r) for r in results]})
  return results


def _unique_stem(name: str, used: set[str]) -> str:
  stem = os.path.splitext(os.path.basename(name))[0] or "image"
  out, k = stem, 2
  while out in used:
    out, k = f"{stem}_{k}", k + 1
  used.add(out)
  return out


def _caption(face: FacePrediction) -> str:
  return f"{face.label} {100 * face.probability:.0f}%"


def _write_pictures(out_dir: str, stem: str, name: str, image: np.ndarray,
                    rows: list[FacePrediction], crops: np.ndarray
                    ) -> tuple[str, ...]:
  from PIL import Image  # pylint: disable=import-outside-toplevel
  files.makedirs(out_dir)
  labelled = viz.label_boxes(
      image, [r.box for r in rows],
      [f"{i + 1}: {_caption(r)}" for i, r in enumerate(rows)])
  photo_path = files.join(out_dir, f"{stem}.png")
  files.save_png(photo_path, lambda f: Image.fromarray(labelled).save(f, "PNG"))
  if not rows:
    return (photo_path,)
  faces_path = files.join(out_dir, f"{stem}_faces.png")
  viz.save_grid(
      faces_path, [crops], row_labels=["aligned\nface"],
      title=f"{os.path.basename(name)}: the aligned faces the model saw",
      col_labels=[f"face {i + 1}{'' if r.eyes_found else ' *'}\n"
                  f"{_caption(r)}" for i, r in enumerate(rows)],
      legend="eyes found by the eye cascade" if all(
          r.eyes_found for r in rows) else
      "* eyes not found: placed from the face box (no roll correction)")
  return (photo_path, faces_path)


def _as_json(photo: PhotoPrediction) -> dict[str, Any]:
  return {"file": photo.file, "pictures": list(photo.pictures),
          "faces": [dataclasses.asdict(f) | {"box": list(f.box)}
                    for f in photo.faces]}


def format_table(results: Sequence[PhotoPrediction]) -> str:
  """One row per face (a photo without faces: one row saying so)."""
  head = ("file", "face", "box (x,y,w,h)", "eyes", "class", "probability")
  rows = []
  for r in results:
    if not r.faces:
      rows.append((r.file, "-", "-", "-", "no face found", "-"))
    for i, f in enumerate(r.faces):
      rows.append((r.file, str(i + 1), ",".join(map(str, f.box)),
                   "found" if f.eyes_found else "from box", f.label,
                   f"{f.probability:.3f}"))
  widths = [max(len(x) for x in col) for col in zip(head, *rows)]
  fmt = lambda cells: "  ".join(c.ljust(w) for c, w in  # noqa: E731
                                zip(cells, widths)).rstrip()
  return "\n".join([fmt(head), fmt(["-" * w for w in widths])]
                   + [fmt(r) for r in rows])


# ------------------------------------------------------------------ command

def run():
  """The command line (flags defined here, so importing the API defines no
  absl flags: fer_jax.main and fer_jax.export define --workdir too)."""
  from absl import app, flags  # pylint: disable=import-outside-toplevel
  workdir = flags.DEFINE_string(
      "workdir", None, "A trained run's workdir, or a folder written by "
      "python -m fer_jax.export.")
  out_dir_flag = flags.DEFINE_string(
      "out_dir", None, "Where to write the labelled pictures and "
      "predictions.json (default: WORKDIR/predictions).")
  step = flags.DEFINE_integer("checkpoint_step", None, "The run's "
                              "checkpoint to use (default: the latest).")
  min_face = flags.DEFINE_integer("min_face", 32, "Smallest face side the "
                                  "detector looks for, in pixels.")
  max_faces = flags.DEFINE_integer("max_faces", None, "Classify only the "
                                   "largest N faces of each photo.")
  flags.mark_flags_as_required(["workdir"])

  def main(argv):
    inputs = argv[1:]
    if not inputs:
      raise app.UsageError("name at least one IMAGE_OR_FOLDER, e.g. "
                           "python -m fer_jax.predict --workdir=DIR a.jpg")
    console.quiet_info_logs()
    from fer_jax.checkpoint import CheckpointError  # pylint: disable=import-outside-toplevel
    out_dir = out_dir_flag.value or files.join(workdir.value,
                                                 "predictions")
    try:
      paths = faces_lib.image_files(inputs)
      model = load_model(workdir.value, step.value)
      results = predict_photos(model, paths, out_dir=out_dir,
                               min_face=min_face.value,
                               max_faces=max_faces.value)
    except (ValueError, FileNotFoundError, ImportError, CheckpointError) as e:
      print(f"fer_jax: error: {e}", file=sys.stderr)
      sys.exit(2)
    print(format_table(results))
    n = sum(len(r.faces) for r in results)
    print(f"fer_jax: done: {n} face{'s' * (n != 1)} in {len(results)} "
          f"image{'s' * (len(results) != 1)}\n"
          f"  pictures:    {out_dir}/*.png\n"
          f"  predictions: {files.join(out_dir, 'predictions.json')}")

  app.run(main)




if __name__ == "__main__":
  run()
