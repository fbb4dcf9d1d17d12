"""Writes the installed versions of fer_jax's dependencies (with CI's extras),
as pip constraints: the versions the test suite last passed with.

  python .ci/freeze.py > .ci/constraints.txt

Like `pip freeze`, but only the packages fer_jax[test,torch] needs
(pyproject.toml's requirements, followed through every package's own
metadata), plus setuptools (tests/test_packaging.py builds a wheel with it).
"""

import importlib.metadata as md
import os
import platform
import sys
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

EXTRAS = ("test", "torch")  # what .ci/run installs
ALSO = ("setuptools",)


def main() -> None:
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  with open(os.path.join(root, "pyproject.toml"), "rb") as f:
    project = tomllib.load(f)["project"]
  todo = [Requirement(r) for r in project["dependencies"]]
  for extra in EXTRAS:
    todo += [Requirement(r) for r in project["optional-dependencies"][extra]]
  todo += [Requirement(r) for r in ALSO]
  pins, seen = {}, set()
  while todo:
    req = todo.pop()
    key = (canonicalize_name(req.name), tuple(sorted(req.extras)))
    if key in seen:
      continue
    seen.add(key)
    try:
      dist = md.distribution(req.name)
    except md.PackageNotFoundError:
      sys.exit(f"freeze: {req.name} is not installed (install fer_jax"
               f"[{','.join(EXTRAS)}] first)")
    pins[canonicalize_name(req.name)] = dist.version
    for text in dist.requires or ():
      dep = Requirement(text)
      for extra in ("",) + tuple(req.extras):
        if dep.marker is None or dep.marker.evaluate({"extra": extra}):
          todo.append(dep)
          break
  print(f"# The versions the test suite passed with (Python "
        f"{platform.python_version()}, {platform.system()} "
        f"{platform.machine()}), written by `python .ci/freeze.py`.\n"
        "# Use: pip install -e '.[test,torch]' -c .ci/constraints.txt "
        "(README, \"Install\").")
  for name in sorted(pins):
    print(f"{name}=={pins[name]}")


if __name__ == "__main__":
  main()
