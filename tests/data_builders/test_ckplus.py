"""CK+ builder: a tiny archive in the owners' layout (and the nested variant)
built, then read back as the trainer reads it."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys

import face_trees as ft
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from fer_jax.data_builders.ckplus import Ckplus, CkplusConfig
from fer_jax.data_builders.common import LayoutError
from fer_jax.data import align, frames, protocols

SMALL = CkplusConfig(name="t32", image_size=32)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def _by_frame(recs):
  out = {}
  for r in recs:
    path = ft.text(r["source_path"])
    subj, seq = path.split(os.sep)[-3:-1]
    out[(int(subj[1:]), int(seq), int(r["frame_index"]))] = r
  return out


@pytest.mark.parametrize("variant", [False, True])
def test_builds_labelled_frames_aligned(tmp_path, data_dir, variant, caplog):
  expected = ft.write_ckplus(tmp_path / "manual", variant=variant)
  lost = next((tmp_path / "manual").rglob("S005_001_00000002_landmarks.txt"))
  lost.unlink()  # that frame cannot be aligned: skipped and counted
  with caplog.at_level(logging.WARNING, "fer_jax.data_builders"):
    builder = ft.build(Ckplus, tmp_path / "manual", data_dir, SMALL)
  got = _by_frame(ft.records(builder))
  want = {k: v for k, v in expected.items()
          if v["label"] is not None and k not in (ft.CK_CORRUPT, (5, 1, 1))}
  assert sorted(got) == sorted(want)  # unlabelled, corrupt, unaligned out
  spec = SMALL.align_spec
  for k, r in got.items():
    w = want[k]
    assert r["label"] == w["label"]
    assert r["subject_id"] == k[0]
    assert r["sequence_id"] == k[0] * 1000 + k[1]
    assert r["num_frames"] == w["num_frames"]
    np.testing.assert_allclose(r["intensity"], k[2] / (w["num_frames"] - 1),
                               atol=1e-6)
    assert r["image"].shape == (32, 32, 3)
    # Landmarks are the file's, through the stored transform; eyes level,
    # at the configured distance and height.
    np.testing.assert_allclose(
        r["landmarks"], align.apply_affine(r["transform"], w["points"]),
        atol=1e-3)
    left, right = align.eye_centres(r["landmarks"])
    assert abs(left[1] - right[1]) < 1e-3
    np.testing.assert_allclose(right[0] - left[0], spec.eye_distance * 32,
                               atol=1e-3)
    np.testing.assert_allclose(left[1], spec.eye_height * 32, atol=1e-3)
    # The bright eye dots drawn in the source land at the eye centres.
    grey = r["image"].astype(float).mean(-1)
    for eye in (left, right):
      x, y = np.round(eye).astype(int)
      assert grey[y - 1:y + 2, x - 1:x + 2].max() > 100
  assert "skipped 3" in caplog.text  # the totals, logged at the end
  assert "unreadable image" in caplog.text
  meta = tfds.builder_from_directory(builder.data_dir).info.metadata
  assert meta["skipped_train"] == {
      "unlabelled sequence (no _emotion.txt)": 1, "unreadable image": 1,
      "missing landmark file": 1}


def _summary(builder):
  """What a build holds, independent of where the files were: per frame
  its subject, sequence, frame, label, frame count and landmarks."""
  out = {}
  for (s, q, i), r in _by_frame(ft.records(builder)).items():
    out[(s, q, i)] = (int(r["label"]), int(r["subject_id"]),
                      int(r["sequence_id"]), int(r["num_frames"]),
                      np.round(r["landmarks"], 3).tolist())
  return out


@pytest.mark.parametrize("layout", sorted(set(ft.CK_LAYOUTS) - {"canonical"}))
def test_every_unpacking_builds_the_canonical_examples(tmp_path, layout):
  """Emotion_Labels/ with a capital L, each zip in its own folder (and both
  nested): the same labels, subjects, sequences, frame counts and
  landmarks as the three zips extracted side by side."""
  ft.write_ckplus(tmp_path / "canonical")
  ft.write_ckplus(tmp_path / layout, variant=layout)
  want = _summary(ft.build(Ckplus, tmp_path / "canonical",
                           tmp_path / "tfds_c", SMALL))
  got = _summary(ft.build(Ckplus, tmp_path / layout, tmp_path / "tfds_v",
                          SMALL))
  assert len(want) == 31 and got == want


def test_outer_label_folder_is_not_taken_for_the_labels(tmp_path, data_dir):
  """Emotion_Labels/ holding a mis-named inner folder: the error names the
  outer folder and says it holds no subject folders, not a KeyError later."""
  ft.write_ckplus(tmp_path / "manual", variant="capital_labels")
  outer = tmp_path / "manual" / "Emotion_Labels"
  (outer / "Emotion").rename(outer / "labels")
  with pytest.raises(LayoutError,
                     match=r"Emotion_Labels holds no S### subject folders"):
    ft.build(Ckplus, tmp_path / "manual", data_dir, SMALL)


def test_frame_order_and_paper_frames(tmp_path, data_dir):
  ft.write_ckplus(tmp_path / "manual")
  builder = ft.build(Ckplus, tmp_path / "manual", data_dir,
                     CkplusConfig(name="p32", image_size=32, frames="paper"))
  got = _by_frame(ft.records(builder))
  # first + last 3 of each labelled sequence; 10/003 unlabelled, 22/001/2 corrupt
  want = set()
  for s, q, n, code in ft.CK_SEQUENCES:
    if code is not None:
      want |= {(s, q, i) for i in {0, n - 3, n - 2, n - 1}}
  assert set(got) == want - {ft.CK_CORRUPT}
  for (s, q, i), r in got.items():
    name = os.path.basename(ft.text(r["source_path"]))
    assert name == f"S{s:03d}_{q:03d}_{i + 1:08d}.png"  # file order = frame order


def test_fold_protocol_has_no_subject_leakage(tmp_path, data_dir):
  ft.write_ckplus(tmp_path / "manual")
  ft.build(Ckplus, tmp_path / "manual", data_dir,
           Ckplus.builder_configs["small"])
  cfg = ml_collections.ConfigDict({"name": "ckplus", "data_dir": str(data_dir),
                                   "builder_config": "small",
                                   "in_memory": True})
  table = frames.load_frames(cfg)
  assert table.is_sequential and table.landmarks is not None
  ft.assert_no_subject_leakage(table, num_folds=3)
  ex = protocols.make_examples(table, np.ones(len(table), bool),
                               "neutral_pair", "basic6+contempt")
  # every peak frame pairs with its own sequence's frame 0
  assert np.all(table.frame_index[ex.slots["neutral"]] == 0)
  assert np.all(table.sequence_id[ex.slots["neutral"]]
                == table.sequence_id[ex.slots["image"]])


def test_missing_labels_and_empty_manual_dir_name_the_path(tmp_path, data_dir):
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(LayoutError, match="does not exist or is empty"):
    ft.build(Ckplus, empty, data_dir, SMALL)
  wrong = tmp_path / "wrong"
  (wrong / "something").mkdir(parents=True)
  with pytest.raises(LayoutError, match="cohn-kanade-images"):
    ft.build(Ckplus, wrong, data_dir, SMALL)
  ft.write_ckplus(tmp_path / "manual")
  for sub in (tmp_path / "manual" / "Emotion").iterdir():
    shutil.rmtree(sub)  # the folder without its subjects' label folders
  with pytest.raises(LayoutError, match=r"Emotion holds no S###"):
    ft.build(Ckplus, tmp_path / "manual", data_dir, SMALL)
  shutil.rmtree(tmp_path / "manual" / "Emotion")
  with pytest.raises(LayoutError, match=r"Emotion.*Expected layout"):
    ft.build(Ckplus, tmp_path / "manual", data_dir, SMALL)


def test_failed_build_leaves_nothing_that_looks_complete(tmp_path, data_dir):
  ft.write_ckplus(tmp_path / "manual")
  # A landmark file that is not numbers fails the build half-way.
  bad = next((tmp_path / "manual" / "Landmarks" / "S037").rglob("*.txt"))
  bad.write_text("not numbers\n")
  with pytest.raises(ValueError, match="expected numbers"):
    ft.build(Ckplus, tmp_path / "manual", data_dir, SMALL)
  builder = Ckplus(config=SMALL, data_dir=str(data_dir))
  assert not builder.is_prepared()
  leftovers = [p for p in data_dir.rglob("*") if p.is_file()]
  assert not any("incomplete" in str(p) for p in leftovers), leftovers
  assert not os.path.exists(builder.data_dir)
  bad.write_text("1.0 2.0\n")
  with pytest.raises(ValueError, match=r"expected 68 lines.*got 2 numbers"):
    ft.build(Ckplus, tmp_path / "manual", data_dir, SMALL)
  assert not Ckplus(config=SMALL, data_dir=str(data_dir)).is_prepared()
  # Fixing the file then builds.
  np.savetxt(bad, np.full((68, 2), 20.0) + np.arange(68)[:, None])
  ft.build(Ckplus, tmp_path / "manual", data_dir, SMALL)
  assert Ckplus(config=SMALL, data_dir=str(data_dir)).is_prepared()


def test_build_cli_then_trainer_data_path(tmp_path, data_dir, monkeypatch):
  """A user with CK+ on disk: the README's build command, then the gndl
  :ckplus preset's data path as the trainer runs it (data dir from
  $FER_JAX_DATA_DIR, no other step)."""
  from fer_jax import config_lib
  from fer_jax.data import run_data
  from fer_jax.data import pipeline
  ft.write_ckplus(tmp_path / "manual")
  out = subprocess.run(
      [sys.executable, "-m", "fer_jax.data.build", "ckplus",
       f"--manual_dir={tmp_path / 'manual'}", f"--data_dir={data_dir}"],
      capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "built ckplus/default/1.0.0" in out.stdout
  assert "train: skipped 1 unlabelled sequence" in out.stdout
  assert "1 unreadable image" in out.stdout
  monkeypatch.setenv("FER_JAX_DATA_DIR", str(data_dir))
  config = config_lib.load_config_module(
      os.path.join(ROOT, "configs", "gndl.py")).get_config("ckplus")
  config.data.num_folds = 3  # the tiny archive has 5 subjects
  config_lib.validate(config)
  run = run_data.prepare_data(config)
  assert run.table.image_shape == (256, 256, 3)
  assert set(run.table.subject_id[run.splits["test"]]).isdisjoint(
      run.table.subject_id[run.splits["train"]])
  ex = run.examples("train", "neutral_pair", "peak")
  batch = pipeline.gather(ex, np.arange(min(4, len(ex))), with_landmarks=True)
  assert batch["image"].shape == (len(batch["label"]), 256, 256, 3)
  assert batch["neutral"].shape == batch["image"].shape
  assert batch["image_landmarks"].shape == (len(batch["label"]), 68, 2)
