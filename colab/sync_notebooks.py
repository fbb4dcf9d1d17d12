"""Writes the repository's URL and the shared setup cell into the Colab
notebooks, and the Open-in-Colab badges into the README.

The URL lives in one place, pyproject.toml's ``[project.urls] Repository``
(a placeholder until the repository's owner sets it). A notebook opened in
Colab from GitHub is a lone file that cannot read the repository, so the
URL is copied into each notebook's parameters cell and the badges are
built from it; this script does that, and ``--check`` (run by
tests/test_notebooks.py) fails while anything is out of date.

  python colab/sync_notebooks.py          # after changing the URL or SETUP_CELL
  python colab/sync_notebooks.py --check  # exit 1 naming what is stale
"""

from __future__ import annotations

import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = ("quickstart", "evaluate", "real_dataset")
BRANCH = "main"  # the branch the badges open
PLACEHOLDER_OWNER = "OWNER"  # in the URL until the owner sets it

# The first code cell after the parameters in every notebook.
SETUP_CELL = '''\
# Setup (the same cell in every notebook; colab/sync_notebooks.py writes it).
# Installs fer_jax from REPO_URL with the jax for this runtime's accelerator,
# checks that jax runs on it, and mounts Google Drive or authenticates for
# gs:// where the parameters above name such paths.
import glob, importlib, importlib.util, os, pathlib, shutil, subprocess, sys
IN_COLAB = importlib.util.find_spec("google.colab") is not None
if (glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*")
    or os.environ.get("COLAB_TPU_ADDR") or os.environ.get("TPU_NAME")):
  ACCELERATOR = "tpu"
elif shutil.which("nvidia-smi") and subprocess.run(
    ["nvidia-smi", "-L"], capture_output=True).returncode == 0:
  ACCELERATOR = "gpu"
else:
  ACCELERATOR = "cpu"
if REINSTALL or importlib.util.find_spec("fer_jax") is None:
  if "/OWNER/" in REPO_URL or not REPO_URL:
    raise RuntimeError(
        f"REPO_URL is {REPO_URL!r}, not the repository: its owner sets it in "
        "pyproject.toml ([project.urls] Repository) and runs python "
        "colab/sync_notebooks.py; or set REPO_URL in the first cell")
  extra = {"tpu": "[tpu]", "gpu": "[cuda]", "cpu": ""}[ACCELERATOR]
  spec = (f"{REPO_URL}{extra}" if os.path.isdir(REPO_URL)  # a checkout
          else f"fer_jax{extra} @ git+{REPO_URL}")
  print(f"installing {spec} (accelerator: {ACCELERATOR})", flush=True)
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", spec]
                 + (["--force-reinstall", "--no-deps"] if REINSTALL else []),
                 check=True)
  importlib.invalidate_caches()
import jax
BACKEND = jax.default_backend()
print(f"backend: {BACKEND}, {jax.device_count()} devices:", jax.devices())
if (ACCELERATOR != "cpu" and BACKEND != ACCELERATOR
    and not os.environ.get("JAX_PLATFORMS")):
  raise RuntimeError(
      f"this runtime has a {ACCELERATOR.upper()} but jax runs on {BACKEND}: "
      "restart the session (Runtime > Restart session) and run all again, so "
      "the jax installed above is the one imported")
if ACCELERATOR == "cpu":
  print("no accelerator: running on the CPU (Colab: Runtime > Change "
        "runtime type > TPU or GPU)")
PATHS = [str(v) for k, v in list(globals().items())
         if k.isupper() and isinstance(v, (str, pathlib.Path))]
if any(p.startswith("/content/drive") for p in PATHS):
  if IN_COLAB:
    from google.colab import drive
    drive.mount("/content/drive")
  else:
    print("not on Colab: /content/drive paths must exist on this machine")
if any(p.startswith("gs://") for p in PATHS):
  if IN_COLAB:
    from google.colab import auth
    auth.authenticate_user()  # for gs:// reads and writes (epath, Orbax)
  else:
    print("gs:// paths use this machine's credentials (gcloud auth "
          "application-default login) and gcsfs or TensorFlow "
          "(pip install 'fer_jax[gcs]')")
import fer_jax
from fer_jax import config_lib
CONFIGS = pathlib.Path(config_lib.configs_dir())  # the method configs, <name>.py
print("fer_jax from", os.path.dirname(fer_jax.__file__))
'''

REPO_LINE = re.compile(r'^REPO_URL = .*$', re.M)
BADGE = re.compile(r"https://colab\.research\.google\.com/github/[^)\s]*?"
                   r"/colab/(\w+)\.ipynb")


def repo_url() -> str:
  """pyproject.toml's [project.urls] Repository."""
  import tomllib  # pylint: disable=import-outside-toplevel
  with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
    return tomllib.load(f)["project"]["urls"]["Repository"]


def colab_url(url: str, notebook: str) -> str:
  """The Open-in-Colab link of colab/<notebook>.ipynb in GitHub repo ``url``."""
  m = re.fullmatch(r"https://github\.com/([^/]+)/([^/]+?)(\.git)?/?", url)
  if not m:
    raise ValueError(f"{url}: Colab opens notebooks from "
                     "https://github.com/OWNER/REPO URLs only")
  return (f"https://colab.research.google.com/github/{m[1]}/{m[2]}/blob/"
          f"{BRANCH}/colab/{notebook}.ipynb")


def _lines(text: str) -> list[str]:
  return text.splitlines(keepends=True)


def synced_notebook(nb: dict, url: str) -> dict:
  """``nb`` with REPO_URL = ``url`` in its parameters cell and SETUP_CELL
  as its setup cell (tagged 'setup')."""
  cells = nb["cells"]
  params = next(c for c in cells
                if "parameters" in c["metadata"].get("tags", []))
  text = "".join(params["source"])
  line = (f"REPO_URL = {json.dumps(url)}  # set from pyproject.toml by "
          "colab/sync_notebooks.py; a local checkout's path works too")
  text = REPO_LINE.sub(lambda _: line, text, count=1)
  if "REINSTALL =" not in text:
    text += ("\nREINSTALL = False  # True: pip install REPO_URL even where "
             "fer_jax imports already")
  params["source"] = _lines(text)
  setup = next(c for c in cells if "setup" in c["metadata"].get("tags", []))
  setup["source"] = _lines(SETUP_CELL.rstrip("\n"))
  return nb


def synced_readme(text: str, url: str) -> str:
  return BADGE.sub(lambda m: colab_url(url, m[1]), text)


def _dump(nb: dict) -> str:
  return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def sync(check: bool) -> list[str]:
  """Paths that were (``check``: would be) rewritten."""
  url = repo_url()
  stale = []
  for name in NOTEBOOKS:
    path = os.path.join(ROOT, "colab", f"{name}.ipynb")
    with open(path) as f:
      before = f.read()
    after = _dump(synced_notebook(json.loads(before), url))
    if after != before:
      stale.append(path)
      if not check:
        with open(path, "w") as f:
          f.write(after)
  path = os.path.join(ROOT, "README.md")
  with open(path) as f:
    before = f.read()
  after = synced_readme(before, url)
  if after != before:
    stale.append(path)
    if not check:
      with open(path, "w") as f:
        f.write(after)
  return stale


def main(argv: list[str]) -> int:
  check = "--check" in argv[1:]
  stale = sync(check)
  for path in stale:
    print(f"{'stale' if check else 'wrote'}: {os.path.relpath(path, ROOT)}")
  if check and stale:
    print("run python colab/sync_notebooks.py", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
