"""Every document the code and the docs cite is in the repository."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A cited document: a repository path to an .md file (docs/methods.md,
# benchmarks/RESULTS.md: its first folder is one of the repository's) or a
# bare upper-case name (METHODS.md, DESIGN.md: beside the citing file, or at
# the top). Lower-case bare names (compare.md, table1.md) are outputs.
CITED = re.compile(r"(?<![\w/.$-])((?:[\w.-]+/)*[\w.-]+\.md)\b")
SKIP = ("docs/results",)  # run logs and outputs, not prose


def _cited(name: str) -> bool:
  if "/" in name:
    return os.path.isdir(os.path.join(ROOT, name.split("/")[0]))
  return name[:-3].isupper()


def _sources():
  for d, dirs, files in os.walk(ROOT):
    dirs[:] = [x for x in dirs if not x.startswith((".", "__"))
               and x not in ("build", "dist", "workdirs")]
    rel = os.path.relpath(d, ROOT)
    if rel.startswith(SKIP):
      continue
    for f in files:
      if f.endswith((".py", ".md", ".ipynb", ".toml")):
        yield os.path.join(d, f)


def test_every_cited_document_exists():
  missing = []
  for path in _sources():
    if path == os.path.abspath(__file__):
      continue
    with open(path, encoding="utf-8") as f:
      text = f.read()
    for name in set(filter(_cited, CITED.findall(text))):
      here = os.path.join(os.path.dirname(path), name)
      if not (os.path.exists(os.path.join(ROOT, name))
              or os.path.exists(here)):
        missing.append(f"{os.path.relpath(path, ROOT)}: {name}")
  assert not missing, "\n".join(sorted(missing))


def test_methods_doc_has_the_cited_sections():
  with open(os.path.join(ROOT, "docs", "methods.md")) as f:
    headings = re.findall(r"^## (\d)\. ", f.read(), re.M)
  assert headings == ["1", "2", "3", "4", "5"]
