"""The Colab notebooks run top to bottom on CPU with their TINY parameters:
the quickstart trains IF-GAN on the synthetic set, evaluate.ipynb restores
that run and reproduces its report, real_dataset.ipynb builds CK+ from a
fake archive in the owners' layout and trains the GNDL :ckplus preset.

Their setup cell (colab/sync_notebooks.py writes it, with the repository's
URL from pyproject.toml) runs in a fresh virtual environment with the
checkout's path as REPO_URL: it installs fer_jax there, checks the
backend, and mounts Drive or authenticates (a fake google.colab) where the
notebook's paths need it."""

import json
import os
import subprocess
import sys

import pytest
from package_sources import copy_package_sources

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLAB = os.path.join(ROOT, "colab")
NOTEBOOKS = ("quickstart", "evaluate", "real_dataset")
sys.path.insert(0, COLAB)
import sync_notebooks  # noqa: E402  pylint: disable=wrong-import-position
sys.path.pop(0)


def _cells(name):
  with open(os.path.join(COLAB, f"{name}.ipynb")) as f:
    cells = json.load(f)["cells"]
  tagged = lambda tag: [  # noqa: E731
      "".join(c["source"]) for c in cells
      if tag in c["metadata"].get("tags", [])]
  return tagged("parameters"), tagged("setup")


# -------------------------------------- the URL, the badges, the setup cell

def test_notebooks_and_badges_carry_the_one_repository_url():
  url = sync_notebooks.repo_url()
  assert url == "https://github.com/OWNER/fer_jax"  # until the owner sets it
  assert sync_notebooks.sync(check=True) == []  # nothing stale
  readme = open(os.path.join(ROOT, "README.md")).read()
  for name in NOTEBOOKS:
    (params,), (setup,) = _cells(name)
    assert f'REPO_URL = "{url}"' in params
    assert "REINSTALL = False" in params
    assert setup == sync_notebooks.SETUP_CELL.rstrip("\n")
    badge = ("https://colab.research.google.com/github/OWNER/fer_jax/blob/"
             f"main/colab/{name}.ipynb")
    assert sync_notebooks.colab_url(url, name) == badge
    assert f"({badge})" in readme
  assert readme.splitlines()[2].startswith("[![Open In Colab]")


def test_sync_writes_a_new_url_everywhere():
  url = "https://github.com/someone/fer-jax.git"
  with open(os.path.join(COLAB, "evaluate.ipynb")) as f:
    nb = sync_notebooks.synced_notebook(json.load(f), url)
  params = "".join(next(c["source"] for c in nb["cells"] if "parameters" in
                        c["metadata"].get("tags", [])))
  assert params.startswith(f'REPO_URL = "{url}"  # set from pyproject.toml')
  assert params.count("REPO_URL =") == 1 and params.count("REINSTALL =") == 1
  readme = sync_notebooks.synced_readme(
      open(os.path.join(ROOT, "README.md")).read(), url)
  assert readme.count("https://colab.research.google.com/github/someone/"
                      "fer-jax/blob/main/colab/") == 4
  assert "github/OWNER/" not in readme
  with pytest.raises(ValueError, match="github.com/OWNER/REPO URLs only"):
    sync_notebooks.colab_url("https://gitlab.com/a/b", "evaluate")


def test_the_placeholder_url_is_not_installed():
  (params,), (setup,) = _cells("quickstart")
  scope = {}
  exec(params, scope)  # pylint: disable=exec-used
  scope["REINSTALL"] = True
  with pytest.raises(RuntimeError, match=r"REPO_URL is 'https://github.com/"
                     r"OWNER/fer_jax', not the repository: its owner sets it "
                     r"in pyproject.toml"):
    exec(setup, scope)  # pylint: disable=exec-used


FAKE_COLAB = {  # google.colab's drive and auth, recording their calls
    "__init__.py": "",
    "drive.py": ("import os\n"
                 "def mount(path):\n"
                 "  open(os.environ['FAKE_COLAB_LOG'], 'a').write("
                 "f'mount {path}\\n')\n"),
    "auth.py": ("import os\n"
                "def authenticate_user():\n"
                "  open(os.environ['FAKE_COLAB_LOG'], 'a').write("
                "'authenticate\\n')\n"),
}


@pytest.fixture(scope="module")
def source_copy(tmp_path_factory):
  """What ``pip install REPO_URL`` installs, copied (the build's build/ and
  egg-info stay out of the checkout)."""
  return copy_package_sources(tmp_path_factory.mktemp("repo") / "fer_jax")


@pytest.mark.parametrize("name,params,colab_calls", [
    ("quickstart", {}, []),
    ("evaluate", {"WORKDIR": "gs://bucket/run"}, ["authenticate"]),
    ("real_dataset", {}, ["mount /content/drive"]),  # MANUAL_DIR on Drive
])
def test_setup_cell_installs_in_a_fresh_venv(name, params, colab_calls,
                                             source_copy, tmp_path):
  """A venv seeing this environment's packages (the machine is offline)
  but not fer_jax's checkout; the setup cell, run as Colab would, with
  the source copy as REPO_URL, must install fer_jax into the venv and
  import it from there."""
  venv = tmp_path / "venv"
  subprocess.run([sys.executable, "-m", "venv", "--system-site-packages",
                  "--without-pip", str(venv)], check=True, timeout=300)
  colab = tmp_path / "fake_colab" / "google" / "colab"
  colab.mkdir(parents=True)
  for fname, text in FAKE_COLAB.items():
    (colab / fname).write_text(text)
  (param_src,), (setup,) = _cells(name)
  overrides = {"REPO_URL": str(source_copy), "REINSTALL": True, **params}
  script = "\n".join([param_src] + [f"{k} = {v!r}" for k, v in
                                     overrides.items()] + [setup])
  (tmp_path / "setup.py").write_text(script)
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  env.update(PYTHONPATH=str(tmp_path / "fake_colab"), JAX_PLATFORMS="cpu",
             FAKE_COLAB_LOG=str(tmp_path / "colab.log"), PIP_NO_INDEX="1",
             PIP_NO_BUILD_ISOLATION="0",  # pip's inverted flag: no isolation
             PIP_DISABLE_PIP_VERSION_CHECK="1")
  out = subprocess.run([str(venv / "bin" / "python"), "setup.py"],
                       cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=900)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  assert f"installing {source_copy} (accelerator: cpu)" in out.stdout
  assert "backend: cpu, 1 devices" in out.stdout
  installed = out.stdout.split("fer_jax from ")[-1].strip()
  assert installed.startswith(str(venv)), installed
  assert os.path.isfile(os.path.join(installed, "configs", "gndl.py"))
  log = tmp_path / "colab.log"
  assert (log.read_text().splitlines() if log.exists() else []) == (
      colab_calls)


# ------------------------------------------------ the notebooks, executed


def run_notebook(name, cwd, **params):
  """Executes colab/<name>.ipynb with ``params`` assigned in a cell after
  its 'parameters' cell (as papermill injects them); returns the text of
  every output."""
  nbformat = pytest.importorskip("nbformat")
  nbclient = pytest.importorskip("nbclient")
  pytest.importorskip("ipykernel")
  nb = nbformat.read(os.path.join(COLAB, f"{name}.ipynb"), as_version=4)
  at = next(i for i, c in enumerate(nb.cells)
            if "parameters" in c.metadata.get("tags", []))
  source = "\n".join(f"{k} = {v!r}" for k, v in params.items())
  nb.cells.insert(at + 1, nbformat.v4.new_code_cell(source))
  nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                          resources={"metadata": {"path": str(cwd)}}).execute()
  texts, images = [], 0
  for cell in nb.cells:
    for out in cell.get("outputs", []):
      texts.append(out.get("text", ""))
      images += "image/png" in out.get("data", {})
  return "".join(texts), images


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
  """The kernels inherit the environment: a fresh data dir, CPU."""
  tmp = tmp_path_factory.mktemp("notebooks")
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv("FER_JAX_DATA_DIR", str(tmp / "tfds"))
    mp.setenv("JAX_PLATFORMS", "cpu")
    yield tmp


@pytest.fixture(scope="module")
def quickstart(kernel_env):
  """The quickstart's tiny run: (workdir, printed text, image count)."""
  wd = kernel_env / "ifgan"
  text, images = run_notebook("quickstart", kernel_env, TINY=True,
                              WORKDIR=str(wd))
  return wd, text, images


def test_quickstart_trains_ifgan(quickstart):
  wd, text, images = quickstart
  report = json.loads((wd / "eval" / "report.json").read_text())
  assert report["method"] == "ifgan" and report["step"] == 4
  assert report["dataset"].startswith("fer_synth")
  assert f"test accuracy {report['accuracy']:.3f}" in text
  assert "backend: cpu" in text
  assert images == 2  # generated faces, confusion matrix


def test_evaluate_restores_the_quickstart_run(quickstart, kernel_env):
  wd, _, _ = quickstart
  report = json.loads((wd / "eval" / "report.json").read_text())
  out = kernel_env / "eval_nb"
  text, images = run_notebook("evaluate", kernel_env, WORKDIR=str(wd),
                              OUT_DIR=str(out))
  again = json.loads((out / "report.json").read_text())
  for k in ("accuracy", "confusion_matrix", "state_digest", "step"):
    assert again[k] == report[k], k
  assert "per-class accuracy" in text and "predicted" in text
  # attention, confusion matrix, generated faces, then the predicted faces
  assert images == 4


def test_real_dataset_builds_ckplus_and_trains_a_preset(kernel_env):
  tmp = kernel_env / "real"
  sys.path.insert(0, os.path.join(ROOT, "tests", "data_builders"))
  try:
    import face_trees  # pylint: disable=import-outside-toplevel
  finally:
    sys.path.pop(0)
  face_trees.write_ckplus(tmp / "manual")
  wd = tmp / "gndl_ck"
  text, _ = run_notebook("real_dataset", tmp, TINY=True,
                         MANUAL_DIR=str(tmp / "manual"),
                         DATA_DIR=str(tmp / "tfds_ck"), WORKDIR=str(wd))
  assert (tmp / "tfds_ck" / "ckplus").is_dir()
  report = json.loads((wd / "eval" / "report.json").read_text())
  assert report["method"] == "gndl"
  assert report["dataset"].startswith("ckplus")
  assert report["classes"] == ["anger", "contempt", "disgust", "fear",
                               "happiness", "sadness", "surprise"]
  assert f"test accuracy {report['accuracy']:.3f}" in text
