"""Issue #17 item 6: a gs:// workdir. Every file a run writes goes through
``fer_jax.files``, so on ``gs://bucket/run`` the config, metrics,
TensorBoard events, reports, pictures and checkpoints all land in the
bucket, nothing named 'gs:' is made in the working directory, and
``evaluate.load('gs://...')`` restores the run. The bucket is a fake one
(``fake_gcs``: gs:// mapped to a local folder for epath, fsspec and Orbax's
TensorStore); Orbax against a real bucket is not tested here."""

import io
import json
import os
import time

import numpy as np
import pytest
from PIL import Image

from fer_jax import compare, config_lib, evaluate, files, train, viz
from fer_jax import main as cli
from fer_jax import metrics as metrics_lib

from fake_gcs import fake_gcs, local_path
from test_train import tiny_config

RUN = "gs://bucket/run"


@pytest.fixture
def bucket(tmp_path):
  """gs:// -> tmp_path/gcs for the test; the test runs in an empty cwd."""
  cwd = os.getcwd()
  (tmp_path / "cwd").mkdir()
  os.chdir(tmp_path / "cwd")
  try:
    with fake_gcs(str(tmp_path / "gcs")) as root:
      yield root
  finally:
    os.chdir(cwd)


# ------------------------------------------------------------ the path layer

def test_files_round_trip_through_the_bucket(bucket):
  files.write_json_atomic(f"{RUN}/eval/report.json", {"accuracy": 0.25})
  assert json.load(open(local_path(bucket, f"{RUN}/eval/report.json"))) == {
      "accuracy": 0.25}
  assert files.read_json(f"{RUN}/eval/report.json") == {"accuracy": 0.25}
  assert files.exists(f"{RUN}/eval/report.json")
  assert not files.exists(f"{RUN}/eval/other.json")
  assert files.isdir(f"{RUN}/eval") and files.isdir(RUN)
  assert not files.isdir(f"{RUN}/nothing")
  assert files.listdir(RUN) == ["eval"]
  assert files.listdir(f"{RUN}/nothing") == []
  files.append_text(f"{RUN}/log.txt", "a\n")
  files.append_text(f"{RUN}/log.txt", "b\n")
  assert files.read_text(f"{RUN}/log.txt") == "a\nb\n"
  files.write_bytes_atomic(f"{RUN}/x.bin", bytes(range(7)))
  assert open(local_path(bucket, f"{RUN}/x.bin"), "rb").read() == bytes(
      range(7))
  files.remove(f"{RUN}/x.bin")
  files.remove(f"{RUN}/x.bin")  # missing is fine
  assert files.listdir(RUN) == ["eval", "log.txt"]
  with pytest.raises(files.FileError, match=r"run/bad.json \(the run's "
                     r"config\) is not valid JSON"):
    files.write_text_atomic(f"{RUN}/bad.json", "{")
    files.read_json(f"{RUN}/bad.json", "the run's config")
  assert os.listdir(".") == []  # no ./gs:/bucket/...


def test_local_paths_are_plain_files(tmp_path):
  path = str(tmp_path / "a" / "b.json")
  files.write_json_atomic(path, [1, 2])  # makes the local parent folder
  assert json.load(open(path)) == [1, 2]
  assert os.listdir(tmp_path / "a") == ["b.json"]  # no temporary left
  files.append_text(str(tmp_path / "log"), "x")
  files.append_text(str(tmp_path / "log"), "y")
  assert open(tmp_path / "log").read() == "xy"
  assert files.listdir(str(tmp_path)) == ["a", "log"]
  assert not files.is_remote(path) and files.is_remote(RUN)


def test_pictures_are_written_to_the_bucket(bucket):
  rows = [np.full((2, 8, 8, 3), 40 * i, np.uint8) for i in range(3)]
  viz.save_grid(f"{RUN}/eval/grid.png", rows, title="t")
  with Image.open(local_path(bucket, f"{RUN}/eval/grid.png")) as im:
    np.testing.assert_array_equal(np.asarray(im.convert("RGB")),
                                  viz.grid_image(rows, title="t"))
  viz.save_confusion_matrix(f"{RUN}/eval/cm.png", np.eye(2) * 3, ["a", "b"])
  with Image.open(local_path(bucket, f"{RUN}/eval/cm.png")) as im:
    assert im.size[0] > 50 and im.format == "PNG"
  assert os.listdir(".") == []


def test_remote_workdir_is_checked_and_unlocked(bucket, capsys):
  config_lib.check_workdir(RUN)  # writes and deletes a probe object
  assert files.listdir(RUN) == []
  with files.WorkdirLock(RUN):
    pass
  assert "gs://bucket/run is remote: it has no workdir lock" in (
      capsys.readouterr().out)


def test_an_unreachable_bucket_is_one_clear_error(monkeypatch):
  def no_gcs(path, data):
    raise ImportError("Please install gcsfs to access Google Storage")
  monkeypatch.setattr(files, "write_bytes_atomic", no_gcs)
  with pytest.raises(ValueError, match=r"--workdir=gs://nowhere/run cannot "
                     r"be written \(ImportError: Please install gcsfs.*"
                     r"authenticate_user\(\)"):
    config_lib.check_workdir("gs://nowhere/run")


def test_compare_refuses_a_remote_workdir(capsys):
  assert compare.compare("cpu", "gs://bucket/cmp") == 2
  assert "--workdir=gs://bucket/cmp is remote" in capsys.readouterr().err


# ------------------------------------------------------------- the metrics

def test_remote_metrics_are_buffered_flushed_and_cut_on_resume(bucket,
                                                               monkeypatch):
  monkeypatch.setattr(metrics_lib, "REMOTE_FLUSH_SECS", 3600.0)
  log = local_path(bucket, f"{RUN}/metrics.jsonl")
  w = metrics_lib.MetricWriter(RUN)
  for step in (1, 2, 3):
    w.write(step, {"train/loss": 1.0 / step})
  assert not os.path.exists(log)  # buffered: no upload per row
  w.flush()
  assert [json.loads(l)["step"] for l in open(log)] == [1, 2, 3]
  w.write(4, {"train/loss": float("nan")})
  w.write_pictures(4, RUN, "test")  # no PNG there: nothing to add
  w.close()
  rows = [json.loads(l) for l in open(log)]
  assert [r["step"] for r in rows] == [1, 2, 3, 4]
  assert rows[1]["train/loss"] == 0.5 and rows[3]["train/loss"] == "nan"
  events = os.listdir(local_path(bucket, f"{RUN}/tensorboard"))
  assert len(events) == 1 and events[0].startswith("events.out.tfevents")
  blob = open(local_path(bucket, f"{RUN}/tensorboard/{events[0]}"),
              "rb").read()
  assert b"train/loss" in blob
  # A resume from step 2 cuts the log back (one rewrite) and continues it.
  w = metrics_lib.MetricWriter(RUN, resume_step=2)
  assert [json.loads(l)["step"] for l in open(log)] == [1, 2]
  w.write(3, {"train/loss": 0.25})
  w.close()
  assert [r["step"] for r in metrics_lib.read_metrics(RUN)] == [1, 2, 3]
  assert metrics_lib.read_metrics(RUN)[2]["train/loss"] == 0.25
  assert len(os.listdir(local_path(bucket, f"{RUN}/tensorboard"))) >= 2
  assert os.listdir(".") == []


def test_remote_metrics_upload_every_flush_interval(bucket, monkeypatch):
  monkeypatch.setattr(metrics_lib, "REMOTE_FLUSH_SECS", 0.0)
  w = metrics_lib.MetricWriter(RUN)
  w.write(1, {"a": 1.0})
  assert [r["step"] for r in metrics_lib.read_metrics(RUN)] == [1]
  w.close()


# ------------------------------------------------------- a run on gs://

@pytest.fixture(scope="module")
def remote_run(make_table, load_table, tmp_path_factory):
  """A tiny GNDL run (4 steps, checkpoints at 2 and 4) in gs://bucket/run,
  run from an empty working directory."""
  base = tmp_path_factory.mktemp("remote")
  (base / "cwd").mkdir()
  data = load_table(make_table(num_subjects=6, num_frames=8, image_size=16))
  cwd = os.getcwd()
  os.chdir(base / "cwd")
  try:
    with fake_gcs(str(base / "gcs")) as root:
      t0 = time.perf_counter()
      report = train.train_and_evaluate(tiny_config(), RUN, data)
      print(f"remote tiny run: {time.perf_counter() - t0:.1f} s")
      yield root, report, data, base / "cwd"
  finally:
    os.chdir(cwd)


def test_every_file_of_a_run_lands_in_the_bucket(remote_run):
  root, report, _, cwd = remote_run
  run = local_path(root, RUN)
  assert sorted(os.listdir(run)) == ["checkpoints", "config.json", "eval",
                                     "metrics.jsonl", "tensorboard"]
  assert os.listdir(cwd) == []  # nothing named gs: (or else) made locally
  assert json.load(open(f"{run}/config.json"))["method"] == "gndl"
  assert json.load(open(f"{run}/eval/report.json")) == json.loads(
      json.dumps(report))
  assert report["step"] == 4
  with Image.open(f"{run}/eval/confusion_matrix.png") as im:
    assert im.format == "PNG"
  rows = [json.loads(l) for l in open(f"{run}/metrics.jsonl")]
  assert [r["step"] for r in rows if "train/loss" in r] == [2, 4]
  assert rows[-1] == {"step": 4, "test/accuracy": report["accuracy"]}
  (events,) = os.listdir(f"{run}/tensorboard")
  blob = open(f"{run}/tensorboard/{events}", "rb").read()
  assert b"test/accuracy" in blob and b"test/confusion_matrix" in blob
  steps = sorted(os.listdir(f"{run}/checkpoints"))
  assert steps == ["2", "4"]
  assert "commit_success.txt" in os.listdir(f"{run}/checkpoints/4")


def test_a_remote_run_loads_evaluates_and_reports(remote_run, capsys):
  _, report, data, cwd = remote_run
  model = evaluate.load(RUN, load_data=data)
  assert model.step == 4
  again = model.evaluate("test")
  assert again["state_digest"] == report["state_digest"]
  assert again["accuracy"] == report["accuracy"]
  # --mode=eval of an older checkpoint rewrites the bucket's report.
  old = train.evaluate_checkpoint(tiny_config(), RUN, step=2, load_data=data)
  assert old["step"] == 2
  assert files.read_json(f"{RUN}/eval/report.json")["step"] == 2
  assert old["state_digest"] != report["state_digest"]
  lines = cli.closing_lines(report, RUN)
  assert f"report:      {RUN}/eval/report.json" in lines
  assert f"pictures:    {RUN}/eval/{{confusion_matrix.png}}" in lines
  assert f"tensorboard --logdir {RUN}/tensorboard" in lines
  assert os.listdir(cwd) == []


def test_a_remote_run_exports_and_predicts_into_the_bucket(remote_run):
  _, _, data, cwd = remote_run
  from fer_jax import export, exported, predict  # pylint: disable=import-outside-toplevel
  model = evaluate.load(RUN, load_data=data)
  export.export_model(model, f"{RUN}/export", platforms=("cpu",))
  assert sorted(files.listdir(f"{RUN}/export")) == ["model.jax_export",
                                                    "model.json"]
  assert exported.is_export_dir(f"{RUN}/export")
  loaded = exported.load(f"{RUN}/export")
  x = np.random.default_rng(0).integers(
      0, 256, (3, loaded.image_size, loaded.image_size, 3), np.uint8)
  np.testing.assert_allclose(loaded.logits(x), model.logits(x), rtol=1e-5,
                             atol=1e-5)
  photo = np.full((96, 128, 3), 200, np.uint8)  # no face in it
  (result,) = predict.predict_photos(loaded, [("blank.png", photo)],
                                     out_dir=f"{RUN}/predictions")
  assert result.faces == []
  assert result.pictures == (f"{RUN}/predictions/blank.png",)
  assert sorted(files.listdir(f"{RUN}/predictions")) == ["blank.png",
                                                         "predictions.json"]
  assert files.read_json(f"{RUN}/predictions/predictions.json")["classes"] == (
      list(model.classes))
  assert os.listdir(cwd) == []
