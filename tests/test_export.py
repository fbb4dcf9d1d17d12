"""fer_jax.export: a trained run as jax.export StableHLO that
fer_jax.exported reloads, with jax and numpy only, and that predicts what the
run predicts."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from fer_jax import evaluate, export, exported, faces, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _scrambled(model):
  """``model`` with noise added to its weights: a 4-step run gives every
  face the same class, and a test of "the same classes" needs several."""
  rng = np.random.default_rng(0)

  def scramble(path, leaf):
    keys = [getattr(k, "key", None) for k in path]
    if "params" not in keys or not np.issubdtype(leaf.dtype, np.floating):
      return leaf
    noise = rng.normal(0, 0.5 * float(np.std(leaf)) + 0.05, leaf.shape)
    return leaf + noise.astype(leaf.dtype)

  state = jax.tree_util.tree_map_with_path(
      scramble, jax.device_get(model.loop["model"]))
  model.loop = dict(model.loop, model=state)
  return model


def _faces(n, size, seed=0):
  """Random faces, and a constant one: classes differ between them."""
  rng = np.random.default_rng(seed)
  x = rng.integers(0, 256, (n, size, size, 3), np.uint8)
  x[0] = 128
  return x


def test_the_export_records_what_a_consumer_needs(baseline_run, tmp_path):
  model = evaluate.load(baseline_run)
  meta = export.export_model(model, str(tmp_path))
  assert sorted(os.listdir(tmp_path)) == ["model.jax_export", "model.json"]
  assert json.loads((tmp_path / "model.json").read_text()) == meta
  spec = faces.training_alignment(model.config.data)
  assert meta["classes"] == list(model.classes)
  assert meta["input"]["shape"] == [None, spec.image_size, spec.image_size, 3]
  assert meta["output"]["shape"] == [None, len(model.classes)]
  assert meta["alignment"]["eye_distance"] == spec.eye_distance
  assert meta["alignment"]["eye_height"] == spec.eye_height
  assert meta["platforms"] == ["cpu", "cuda", "tpu"]
  assert (meta["method"], meta["step"]) == ("baseline", model.step)
  assert meta["state_digest"] == json.loads(
      open(os.path.join(baseline_run, "eval", "report.json")).read()
  )["state_digest"]
  # The artefact: one symbolic batch dimension, uint8 in, float32 out; the
  # StableHLO text carries the weights (no arguments but the faces).
  e = jax.export.deserialize(
      bytearray((tmp_path / "model.jax_export").read_bytes()))
  (arg,) = e.in_avals
  assert arg.dtype == np.uint8 and arg.shape[1:] == (spec.image_size,) * 2 + (
      3,)
  assert not isinstance(arg.shape[0], int)
  assert e.out_avals[0].dtype == np.float32
  assert "stablehlo.convolution" in e.mlir_module()


def test_the_reloaded_model_predicts_the_runs_classes(baseline_run, tmp_path):
  model = _scrambled(evaluate.load(baseline_run))
  export.export_model(model, str(tmp_path), platforms=("cpu",))
  loaded = exported.load(str(tmp_path))
  size = loaded.image_size
  x = _faces(11, size)
  want = model.logits(x)
  assert len(set(want.argmax(-1))) > 1  # a test that can tell classes apart
  for batch in (x, x[:1], x[3]):  # any batch size, or one face
    got = loaded.logits(batch)
    np.testing.assert_allclose(got, want[:len(got)] if batch.ndim == 4
                               else want[3:4], rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
  np.testing.assert_allclose(loaded.probabilities(x),
                             model.probabilities(x), rtol=1e-5, atol=1e-6)
  assert loaded.classes == tuple(model.classes)
  with pytest.raises(ValueError, match=f"uint8 RGB faces \\(N, {size}"):
    loaded.logits(x[:, :8, :8])
  with pytest.raises(FileNotFoundError, match="python -m fer_jax.export"):
    exported.load(str(tmp_path / "nothing"))


# Imports the standalone reloader must not need: they fail in its process.
BLOCKED = ("flax", "optax", "orbax", "grain", "tensorflow_datasets",
           "ml_collections", "cv2", "torch", "tensorflow", "PIL")
_RELOAD = """
import importlib.abc, json, sys
BLOCKED = {blocked!r}
class Block(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] in BLOCKED or (
        name.startswith("fer_jax.") and name != "fer_jax.exported"):
      raise ImportError("blocked by the test: " + name)
sys.meta_path.insert(0, Block())
import numpy as np
from fer_jax import exported
model = exported.load({directory!r})
x = np.load({faces!r})
np.save({out!r}, model.logits(x))
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED
                or m.startswith("fer_jax."))
print(json.dumps({{"classes": model.classes, "loaded": loaded}}))
"""


def test_reloading_needs_neither_flax_nor_fer_jax_training_code(baseline_run,
                                                                tmp_path):
  model = _scrambled(evaluate.load(baseline_run))
  out_dir = tmp_path / "export"
  export.export_model(model, str(out_dir))
  x = _faces(6, faces.training_alignment(model.config.data).image_size, 1)
  np.save(tmp_path / "faces.npy", x)
  code = _RELOAD.format(blocked=BLOCKED, directory=str(out_dir),
                        faces=str(tmp_path / "faces.npy"),
                        out=str(tmp_path / "logits.npy"))
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  res = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=300,
                       check=False)
  assert res.returncode == 0, res.stderr[-3000:]
  info = json.loads(res.stdout.strip().splitlines()[-1])
  assert info["loaded"] == ["fer_jax.exported"]
  assert info["classes"] == list(model.classes)
  logits = np.load(tmp_path / "logits.npy")
  np.testing.assert_allclose(logits, model.logits(x), rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(logits.argmax(-1), model.predict(x))
  assert len(set(logits.argmax(-1))) > 1

  # The blocker works: the same process cannot import the training code.
  res = subprocess.run(
      [sys.executable, "-c", code.replace(
          "from fer_jax import exported", "from fer_jax import evaluate")],
      env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
      check=False)
  assert res.returncode != 0 and "blocked by the test" in res.stderr


def test_the_command_exports_and_names_what_is_wrong(baseline_run, tmp_path):
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  run = lambda *a: subprocess.run(  # noqa: E731
      [sys.executable, "-m", "fer_jax.export", *a], env=env, cwd=ROOT,
      capture_output=True, text=True, timeout=600, check=False)
  res = run(f"--workdir={baseline_run}", "--platforms=cpu")
  assert res.returncode == 0, res.stderr[-3000:]
  out_dir = os.path.join(baseline_run, "export")
  assert f"artefact: {out_dir}/model.jax_export" in res.stdout
  assert json.loads(res.stdout.strip().splitlines()[-1])["platforms"] == [
      "cpu"]
  assert exported.is_export_dir(out_dir)
  res = run(f"--workdir={tmp_path / 'nothing'}")
  assert res.returncode == 2 and "Traceback" not in res.stderr
  assert res.stderr.strip().splitlines()[-1].startswith(
      "fer_jax: error: ") and "config.json does not exist" in res.stderr


@pytest.mark.parametrize("method", ["gndl", "groupgan_cnn"])
def test_other_methods_export_their_classifier(method, tmp_path, make_table,
                                               load_table):
  """GNDL (its generated neutral inside the artefact) and GroupGAN (which
  classifies the 'weak' slot) export and reload to the same logits."""
  import test_evaluate_api  # pylint: disable=import-outside-toplevel
  cfg, size = test_evaluate_api._tiny(method)  # pylint: disable=protected-access
  wd = tmp_path / "run"
  train.train_and_evaluate(cfg, str(wd), load_table(make_table(
      num_subjects=6, num_frames=8, image_size=size)))
  model = _scrambled(evaluate.load(str(wd)))
  meta = export.export_model(model, str(tmp_path / "export"),
                             platforms=("cpu",))
  assert meta["method"] == method.split("_")[0]  # groupgan_cnn: groupgan
  loaded = exported.load(str(tmp_path / "export"))
  x = _faces(5, loaded.image_size, 2)
  np.testing.assert_allclose(loaded.logits(x), model.logits(x), rtol=1e-5,
                             atol=1e-5)
