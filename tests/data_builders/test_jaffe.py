"""JAFFE builder: labels and subjects parsed by position from the file
names, in both folder layouts; subject folds; neutral pairing."""

from __future__ import annotations

import face_trees as ft
import ml_collections
import numpy as np
import pytest

from fer_jax.data_builders.common import FaceConfig
from fer_jax.data_builders.jaffe import Jaffe, jaffe
from fer_jax.data import frames, protocols
from fer_jax.data.classes import DATASET_CODES, canonical_index

SMALL = FaceConfig(name="t32", image_size=32, margin=-0.1)


def test_parse_name_by_position():
  assert jaffe.parse_name("NA.NE1.200.tiff") == ("NA", "NE", 1, 200)
  assert jaffe.parse_name("KA.AN1.39.tif") == ("KA", "AN", 1, 39)
  assert jaffe.parse_name("NE.NA1.3.tiff") is None  # swapped fields
  assert jaffe.parse_name("XX.AN1.3.tiff") is None
  assert jaffe.parse_name("KA.AN1.39.png") is None


@pytest.mark.parametrize("variant", [False, True])
def test_builds_every_image(tmp_path, data_dir, variant):
  expected = ft.write_jaffe(tmp_path / "manual", variant=variant)
  builder = ft.build(Jaffe, tmp_path / "manual", data_dir, SMALL)
  recs = ft.records(builder)
  got = {ft.text(r["source_path"]).split("/")[-1]: r for r in recs}
  assert sorted(got) == sorted(expected)  # corrupt, README, ._ copy out
  for name, r in got.items():
    subject, code = expected[name]
    assert r["label"] == canonical_index(DATASET_CODES["jaffe"][code])
    assert r["subject_id"] == ft.JAFFE_SUBJECTS.index(subject)
    assert r["num_frames"] == 1 and r["frame_index"] == 0
    assert r["image"].shape == (32, 32, 3)
  assert len({int(r["sequence_id"]) for r in recs}) == len(recs)
  assert builder.info.metadata["skipped_train"] == {"unreadable image": 1}


def test_subject_folds_and_neutral_pairs(tmp_path, data_dir):
  ft.write_jaffe(tmp_path / "manual")
  ft.build(Jaffe, tmp_path / "manual", data_dir, Jaffe.builder_configs["small"])
  table = frames.load_frames(ml_collections.ConfigDict(
      {"name": "jaffe", "data_dir": str(data_dir), "builder_config": "small"}))
  assert not table.is_sequential
  ft.assert_no_subject_leakage(table, num_folds=5)
  ex = protocols.make_examples(table, np.ones(len(table), bool),
                               "neutral_pair", "basic6")
  ref = ex.slots["neutral"]
  assert np.all(table.label[ref] == canonical_index("neutral"))
  assert np.all(table.subject_id[ref] == table.subject_id[ex.slots["image"]])


def test_data_dir_with_a_tilde_is_the_home_folder(tmp_path, monkeypatch):
  """--config.data.data_dir=~/... (the shell leaves '~' after '=' alone) and
  FER_JAX_DATA_DIR='~/...' read the set the build command wrote there."""
  monkeypatch.setenv("HOME", str(tmp_path))
  ft.write_jaffe(tmp_path / "manual")
  ft.build(Jaffe, tmp_path / "manual", tmp_path / "tfds",
           Jaffe.builder_configs["small"])
  table = frames.load_frames(ml_collections.ConfigDict(
      {"name": "jaffe", "data_dir": "~/tfds", "builder_config": "small"}))
  assert len(table) == 69
  monkeypatch.setenv("FER_JAX_DATA_DIR", "~/tfds")
  table = frames.load_frames(ml_collections.ConfigDict(
      {"name": "jaffe", "data_dir": "", "builder_config": "small"}))
  assert len(table) == 69
