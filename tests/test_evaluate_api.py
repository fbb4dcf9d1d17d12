"""``fer_jax.evaluate.load``: a trained run restored from its workdir alone
predicts, and evaluating its test split reproduces the run's own report."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from fer_jax import evaluate, train
from fer_jax.data import pipeline


def _tiny(method):
  import test_groupgan  # pylint: disable=import-outside-toplevel
  import test_train  # pylint: disable=import-outside-toplevel
  if method == "groupgan_cnn":  # tests on weak frames: slot "weak"
    return test_groupgan.tiny_config("cnn"), 32
  return test_train.tiny_config(method), 16


@pytest.mark.parametrize("method", ["gndl", "groupgan_cnn"])
def test_load_reproduces_the_run_report(method, tmp_path, make_table,
                                        load_table):
  cfg, size = _tiny(method)
  load_data = load_table(make_table(num_subjects=6, num_frames=8,
                                    image_size=size))
  wd = tmp_path / "run"
  train.train_and_evaluate(cfg, str(wd), load_data)
  saved = json.loads((wd / "eval" / "report.json").read_text())

  model = evaluate.load(str(wd), load_data=load_data)
  assert model.step == saved["step"] > 0
  assert list(model.classes) == saved["classes"]
  report = model.evaluate("test", out_dir=str(tmp_path / "again"))
  for k in ("accuracy", "confusion_matrix", "per_class_accuracy",
            "num_examples", "state_digest", "step"):
    assert report[k] == saved[k], k
  assert (tmp_path / "again" / "confusion_matrix.png").exists()

  # predict() on the test split's images (its eval slot) gives the same
  # predictions the report counted.
  ex = model.examples("test")
  batch = pipeline.gather(ex, np.arange(len(ex)))
  assert model.slot == ("weak" if method == "groupgan_cnn" else "image")
  images = batch[model.slot]
  preds = model.predict(images)
  assert preds.shape == (len(ex),)
  cm = np.zeros_like(np.array(saved["confusion_matrix"]))
  np.add.at(cm, (ex.label, preds), 1)
  assert cm.tolist() == saved["confusion_matrix"]
  probs = model.probabilities(images[:3])
  np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
  np.testing.assert_array_equal(probs.argmax(-1), preds[:3])
  # One face without a batch axis; non-uint8 input is refused.
  assert model.predict(images[0]).tolist() == [preds[0]]
  with pytest.raises(ValueError, match="uint8"):
    model.predict(images.astype(np.float32))


def test_load_an_earlier_step_and_clear_errors(tmp_path, fake_data):
  import test_train  # pylint: disable=import-outside-toplevel
  wd = tmp_path / "run"
  train.train_and_evaluate(test_train.tiny_config("baseline"), str(wd),
                           fake_data)
  early, late = evaluate.load(str(wd), step=2), evaluate.load(str(wd))
  assert (early.step, late.step) == (2, 4)
  leaves = lambda m: jax.tree.leaves(jax.device_get(m.state["params"]))
  assert any(not np.array_equal(a, b)
             for a, b in zip(leaves(early), leaves(late)))
  with pytest.raises(Exception, match="no checkpoint for step 3"):
    evaluate.load(str(wd), step=3)
  with pytest.raises(FileNotFoundError, match="config.json does not exist"):
    evaluate.load(str(tmp_path / "nothing"))



TESTS = os.path.dirname(os.path.abspath(__file__))


def _run_on_four_devices(body: str) -> str:
  """Runs ``body`` in a Python process with 4 CPU devices and this folder's
  fake data (``t``) as the data set; returns its stdout."""
  code = (
      f"import json, sys; sys.path.insert(0, {TESTS!r})\n"
      "from conftest import build_table\n"
      "import jax; assert jax.device_count() == 4\n"
      "import numpy as np\n"
      "from fer_jax import train\n"
      "from conftest import table_data\n"
      "t = build_table(num_subjects=6, num_frames=8, image_size=16)\n"
      "load_data = table_data(t)\n"
      + body)
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=4")
  out = subprocess.run([sys.executable, "-c", code], env=env, cwd=TESTS,
                       capture_output=True, text=True, timeout=600,
                       check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  return out.stdout


def _four_device_run(tmp_path, make_table, load_table, eval_batch_size):
  """A tiny baseline run trained here (one device), and a function running
  Python in a process with 4 CPU devices that has the same fake data."""
  import test_train  # pylint: disable=import-outside-toplevel
  table = make_table(num_subjects=6, num_frames=8, image_size=16)
  wd = tmp_path / "run"
  cfg = test_train.tiny_config("baseline")
  cfg.train.eval_batch_size = eval_batch_size
  train.train_and_evaluate(cfg, str(wd), load_table(table))

  def run(body: str) -> dict:
    out = _run_on_four_devices(
        "from fer_jax import evaluate\n"
        f"model = evaluate.load({str(wd)!r}, load_data=load_data)\n"
        + body)
    return json.loads(out.strip().splitlines()[-1])

  return wd, table, run


def test_load_places_the_state_on_every_device_of_the_mesh(
    tmp_path, make_table, load_table):
  """Trained on one device, restored where there are 4 (a Colab TPU, say):
  the state is replicated over the new mesh, so predict runs."""
  wd, table, run = _four_device_run(tmp_path, make_table, load_table, 16)
  got = run(
      "devs = {len(x.sharding.device_set) for x in "
      "jax.tree.leaves(model.state)}\n"
      "faces = t.images[:5]\n"
      "print(json.dumps({'devices': sorted(devs), "
      "'preds': model.predict(faces).tolist()}))\n")
  assert got["devices"] == [4]
  assert got["preds"] == evaluate.load(str(wd)).predict(
      table.images[:5]).tolist()


def test_evaluate_on_more_devices_than_the_eval_batch_divides(
    tmp_path, make_table, load_table):
  """eval_batch_size=6 on one device, evaluated where 4 devices share each
  batch: the batch is padded to 8 (masked rows), the report is the run's."""
  wd, _, run = _four_device_run(tmp_path, make_table, load_table, 6)
  saved = json.loads((wd / "eval" / "report.json").read_text())
  got = run(
      "r = model.evaluate('test')\n"
      "print(json.dumps({k: r[k] for k in ('accuracy', 'confusion_matrix', "
      "'state_digest', 'num_examples')}))\n")
  for k, v in got.items():
    assert v == saved[k], k


def test_load_a_run_trained_on_more_devices(tmp_path, fake_data):
  """Trained where 4 devices share the batch (a TPU), restored on one: the
  checkpoint's arrays are placed on this mesh, the report is the run's."""
  wd = tmp_path / "run4"
  _run_on_four_devices(
      "import test_train\n"
      f"train.train_and_evaluate(test_train.tiny_config('baseline'), "
      f"{str(wd)!r}, load_data)\n")
  saved = json.loads((wd / "eval" / "report.json").read_text())
  report = evaluate.load(str(wd), load_data=fake_data).evaluate("test")
  for k in ("accuracy", "confusion_matrix", "state_digest", "step"):
    assert report[k] == saved[k], k
