"""Finding and reading files in the layouts the owners distribute (and the
variants seen in the wild), with errors that name the path looked for."""

from __future__ import annotations

import dataclasses
import os
import shlex
import warnings
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, ImageFile

from fer_jax.data_builders.common.build_log import BuildLog


class LayoutError(FileNotFoundError):
  """The manual directory lacks a file or folder the data set must have."""


# Archive endings and the command that unpacks one where it lies.
_UNPACK = (
    ((".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar"), "tar -xf {name}"),
    ((".zip",), "unzip {name}"),
    ((".rar",), "unrar x {name}  (or: 7z x {name})"),
    ((".7z",), "7z x {name}"),
)
_SHOWN_ARCHIVES = 5


def _unpack_command(name: str) -> tuple[str, str] | None:
  """(matched ending, command template) for an archive's file name."""
  low = name.lower()
  for endings, command in _UNPACK:
    for ending in endings:
      if low.endswith(ending):
        return ending, command
  return None


def packed_archives(folder, depth: int = 2) -> list[str]:
  """Archive files (.zip, .tar(.gz), .rar, .7z) in ``folder`` and its
  sub-folders down to ``depth``, sorted: copies still packed."""
  found = []
  folder = os.fspath(folder)
  if not os.path.isdir(folder):
    return found
  for d in candidate_dirs(folder, depth):
    try:
      names = os.listdir(d)
    except OSError:
      continue
    found += sorted(os.path.join(d, n) for n in names
                    if not n.startswith(".") and _unpack_command(n)
                    and os.path.isfile(os.path.join(d, n)))
  return found


def unpack_hint(archives: Sequence[str]) -> str:
  """'. Archives still packed: A, B (+N more); unpack them ...: cd DIR &&
  COMMAND', or '' when there is none."""
  if not archives:
    return ""
  shown = ", ".join(archives[:_SHOWN_ARCHIVES])
  more = (f" (+{len(archives) - _SHOWN_ARCHIVES} more)"
          if len(archives) > _SHOWN_ARCHIVES else "")
  groups: dict[tuple[str, str, str], list[str]] = {}
  for path in archives:
    ending, command = _unpack_command(os.path.basename(path))
    groups.setdefault((os.path.dirname(path), ending, command), []).append(
        os.path.basename(path))
  commands = []
  for (folder, ending, command), names in groups.items():
    cd = f"cd {shlex.quote(folder)} &&"
    if len(names) == 1:
      commands.append(f"{cd} {command.format(name=shlex.quote(names[0]))}")
    else:
      each = command.split("  ")[0].format(name='"$f"')
      commands.append(f"{cd} for f in *{ending}; do {each}; done")
  return (f". Archives still packed: {shown}{more}; unpack them where they "
          f"lie, then build again: {' ; '.join(commands)}")


def _error(text: str, layout: str, where) -> LayoutError:
  """A LayoutError: ``text``, then what is still packed under ``where``,
  then the expected layout."""
  return LayoutError(f"{text}{unpack_hint(packed_archives(where))}. "
                     f"Expected layout:\n{layout}")


def candidate_dirs(root: str, depth: int = 2):
  """root, then its sub-folders breadth-first to ``depth`` (archives often
  extract into one or two top folders, e.g. ``CK+/`` or ``basic/``)."""
  level = [root]
  for _ in range(depth + 1):
    nxt = []
    for d in level:
      yield d
      try:
        nxt += sorted(os.path.join(d, e) for e in os.listdir(d)
                      if os.path.isdir(os.path.join(d, e))
                      and not e.startswith(".") and e != "__MACOSX")
      except OSError:
        pass
    level = nxt


def find_root(manual_dir, markers: Sequence[str], dataset: str,
              layout: str, depth: int = 2) -> tuple[str, str]:
  """(root, marker) of the first folder under ``manual_dir`` holding one of
  ``markers`` (relative paths, variants in order of preference)."""
  manual_dir = check_manual_dir(manual_dir, markers[0], dataset, layout)
  for root in candidate_dirs(manual_dir, depth):
    for m in markers:
      if os.path.exists(os.path.join(root, m)):
        return root, m
  raise _error(
      f"{dataset}: found none of {', '.join(markers)} under {manual_dir} "
      f"(looked for {os.path.join(manual_dir, markers[0])} and up to {depth} "
      f"folders down)", layout, manual_dir)


@dataclasses.dataclass(frozen=True)
class Part:
  """One folder a layout must hold: ``variants`` are paths relative to the
  layout's root, preferred first, each component matched case-insensitively
  (copies differ: ``Emotion_labels`` / ``Emotion_Labels``); ``holds``, if
  given, checks the folder's content (``holds_what`` names it in errors),
  so an outer folder of a nested copy is never taken for the inner one."""
  name: str
  variants: tuple[str, ...]
  holds: Callable[[str], bool] | None = None
  holds_what: str = ""


def resolve(root: str, rel: str) -> str | None:
  """root/rel with every component matched case-insensitively, or None."""
  path = root
  for part in rel.replace("\\", "/").split("/"):
    path = child(path, part)
    if path is None:
      return None
  return path


def _find_part(root: str, part: Part) -> tuple[str | None, str, bool]:
  """(folder, '', False), or (None, why not, whether a folder of the
  part's name was there but held the wrong content) for one part."""
  rejected = None
  for v in part.variants:
    path = resolve(root, v)
    if path is None or not os.path.isdir(path):
      continue
    if part.holds is None or part.holds(path):
      return path, "", False
    rejected = rejected or path
  if rejected:
    return None, f"{rejected} holds no {part.holds_what}", True
  return None, "no " + " or ".join(os.path.join(root, v)
                                    for v in part.variants), False


def find_layout(manual_dir, parts: Sequence[Part], dataset: str,
                layout: str, depth: int = 3) -> dict[str, str]:
  """{part name: folder} at the first level under ``manual_dir`` (itself,
  then breadth-first down to ``depth``) that holds every part; a level
  holding only some (an outer folder of a nested copy, one zip unpacked
  beside the others) is passed over. None holding all: one error naming
  the level that held most and what it lacks."""
  manual_dir = check_manual_dir(manual_dir, parts[0].variants[0], dataset,
                                layout)
  best, rejected = None, None
  for root in candidate_dirs(manual_dir, depth):
    found, missing = {}, []
    for part in parts:
      path, why, wrong_content = _find_part(root, part)
      if path:
        found[part.name] = path
      else:
        missing.append(why)
        if rejected is None and wrong_content:
          rejected = why
    if not missing:
      return found
    if found and (best is None or len(found) > len(best[1])):
      best = (root, found, missing)
  if best is None:
    first = parts[0]
    why = (f"{rejected}, and no other folder down to {depth} levels holds "
           f"the layout" if rejected else
           f"found none of {', '.join(first.variants)} under {manual_dir} "
           f"(looked for {os.path.join(manual_dir, first.variants[0])} and "
           f"up to {depth} folders down)")
    raise _error(f"{dataset}: {why}", layout, manual_dir)
  root, found, missing = best
  raise _error(
      f"{dataset}: {root} holds {', '.join(sorted(found.values()))} but "
      f"{'; '.join(missing)} (no folder down to {depth} levels under "
      f"{manual_dir} holds all)", layout, manual_dir)


def check_manual_dir(manual_dir, looked_for: str, dataset: str,
                     layout: str) -> str:
  manual_dir = os.fspath(manual_dir)
  if not os.path.isdir(manual_dir) or not os.listdir(manual_dir):
    raise LayoutError(
        f"{dataset}: manual dir {manual_dir} does not exist or is empty; "
        f"looked for {os.path.join(manual_dir, looked_for)}. Expected "
        f"layout:\n{layout}")
  return manual_dir


def find_root_where(manual_dir, entry_test, looked_for: str, dataset: str,
                    layout: str, depth: int = 2) -> str:
  """The first folder under ``manual_dir`` (itself, then down to ``depth``)
  holding an entry whose name passes ``entry_test``; for layouts marked by
  file or folder name patterns."""
  manual_dir = check_manual_dir(manual_dir, looked_for, dataset, layout)
  for root in candidate_dirs(manual_dir, depth):
    try:
      names = os.listdir(root)
    except OSError:
      continue
    if any(entry_test(name) for name in names):
      return root
  raise _error(
      f"{dataset}: no folder under {manual_dir} (down to {depth} levels) "
      f"holds {looked_for}", layout, manual_dir)


def child(parent: str, name: str) -> str | None:
  """parent/name, matching the name case-insensitively (copies differ)."""
  exact = os.path.join(parent, name)
  if os.path.exists(exact):
    return exact
  try:
    for e in sorted(os.listdir(parent)):
      if e.lower() == name.lower():
        return os.path.join(parent, e)
  except OSError:
    pass
  return None


def find_dir(root: str, variants: Sequence[str], dataset: str,
             layout: str) -> str:
  """The first existing folder of ``variants`` under root, or an error
  naming all of them."""
  for v in variants:
    p = child(root, v) if os.sep not in v and "/" not in v else \
        os.path.join(root, v)
    if p and os.path.isdir(p):
      return p
  raise _error(
      f"{dataset}: no {' or '.join(os.path.join(root, v) for v in variants)}",
      layout, root)


def require_file(path: str, dataset: str, layout: str) -> str:
  if not os.path.isfile(path):
    raise _error(f"{dataset}: missing {path}", layout, os.path.dirname(path))
  return path


def open_image(path: str, log: BuildLog) -> Image.Image | None:
  """The image as RGB, fully decoded; None (and counted in ``log``) if it is
  unreadable or truncated (even where a library made PIL pad truncated
  files)."""
  lenient = ImageFile.LOAD_TRUNCATED_IMAGES
  ImageFile.LOAD_TRUNCATED_IMAGES = False
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("error", Image.DecompressionBombWarning)
      with Image.open(path) as im:
        im.load()
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
          im = Image.fromarray((np.asarray(im, np.float64) / 256).clip(0, 255)
                              .astype(np.uint8))
        rgb = im.convert("RGB")
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError,
          Image.DecompressionBombWarning) as e:
    log.skip(path, "unreadable image", f"{type(e).__name__}: {e}")
    return None
  finally:
    ImageFile.LOAD_TRUNCATED_IMAGES = lenient
  if min(rgb.size) < 2:
    log.skip(path, "unreadable image", "empty")
    return None
  return rgb


def read_floats(path: str) -> np.ndarray:
  """Every whitespace-separated number in a text file (CK+'s label and
  landmark files, '   3.0000000e+00' style)."""
  with open(path, encoding="utf-8", errors="replace") as f:
    text = f.read()
  try:
    return np.array([float(t) for t in text.split()], np.float64)
  except ValueError:
    raise ValueError(f"{path}: expected numbers only, got "
                     f"{text[:60]!r}") from None


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def list_images(folder: str) -> list[str]:
  """Image file names in ``folder``, sorted; hidden files (``._x`` copies
  from macOS archives) left out."""
  return sorted(f for f in os.listdir(folder)
                if f.lower().endswith(IMAGE_EXTENSIONS)
                and not f.startswith("."))
