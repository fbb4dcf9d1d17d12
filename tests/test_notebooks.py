"""The Colab notebooks run top to bottom on CPU with their TINY parameters:
the quickstart trains IF-GAN on the synthetic set, evaluate.ipynb restores
that run and reproduces its report, real_dataset.ipynb builds CK+ from a
fake archive in the owners' layout and trains the GNDL :ckplus preset."""

import json
import os
import sys

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLAB = os.path.join(ROOT, "colab")


def run_notebook(name, cwd, **params):
  """Executes colab/<name>.ipynb with ``params`` assigned in a cell after
  its 'parameters' cell (as papermill injects them); returns the text of
  every output."""
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
