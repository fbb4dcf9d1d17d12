"""data.protocol='official' on the tiny RAF-DB and AffectNet trees: the
trainer's train/val/test rows are the builder's splits (no image in two),
the config checks name their fields, and the IF-GAN RAF-DB preset trains
from the command line to a report."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import face_trees as ft
import numpy as np
import pytest

from fer_jax.data_builders.affectnet import Affectnet
from fer_jax.data_builders.rafdb import Rafdb
from fer_jax import config_lib
from fer_jax.data import run_data
from fer_jax.data import frames

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
CONFIGS = os.path.join(ROOT, "configs")


def preset(file: str, arg: str):
  return config_lib.load_config_module(
      os.path.join(CONFIGS, file)).get_config(arg)


def _built(tmp_path_factory, name, write_tree, builder):
  """The tiny tree of ``name`` written and built ('small'): its data dir."""
  root = tmp_path_factory.mktemp(name)
  write_tree(root / "manual")
  ft.build(builder, root / "manual", root / "tfds", "small")
  return root / "tfds"


@pytest.fixture(scope="module")
def rafdb_dir(tmp_path_factory):
  return _built(tmp_path_factory, "rafdb", ft.write_rafdb, Rafdb)


@pytest.fixture(scope="module")
def affectnet_dir(tmp_path_factory):
  return _built(tmp_path_factory, "affectnet", ft.write_affectnet, Affectnet)


def split_sizes(cls, data_dir) -> dict[str, int]:
  builder = cls(config="small", data_dir=str(data_dir))
  return {k: v.num_examples for k, v in builder.info.splits.items()}


def shrink(config, data_dir):
  """The preset's data path on the tiny 64 px build."""
  config.data.data_dir = str(data_dir)
  config.data.builder_config = "small"
  config.data.resize = config.data.crop = 64
  config.train.batch_size = config.train.eval_batch_size = 4
  config_lib.validate(config)
  return config


def count(run, split) -> int:
  return len(run.examples(split, "single", run.config.data.role))


def assert_disjoint_images(run, a: str, b: str) -> None:
  """No image of split ``a`` is also an image of split ``b``."""
  images = np.asarray(run.table.images).reshape(len(run.table), -1)
  seen = {images[r].tobytes() for r in np.flatnonzero(run.splits[b])}
  assert seen
  assert not any(images[r].tobytes() in seen
                 for r in np.flatnonzero(run.splits[a]))


@pytest.mark.parametrize("arg", ["rafdb", "baseline_rafdb"])
def test_rafdb_presets_train_and_test_on_the_official_split(rafdb_dir, arg):
  """IF-GAN's RAF-DB presets: test = the builder's test split; train plus
  the held-out val (RAF-DB has no validation split) = its train split."""
  config = shrink(preset("ifgan.py", arg), rafdb_dir)
  assert config.data.protocol == "official"
  sizes = split_sizes(Rafdb, rafdb_dir)
  assert set(sizes) == {"train", "test"}
  run = run_data.prepare_data(config)
  assert count(run, "test") == sizes["test"] == 6
  assert count(run, "train") + count(run, "val") == sizes["train"] == 13
  # val_fraction 0.1 of 13 images: 2 held out, whole.
  assert count(run, "val") == 2
  # All seven classes (neutral too: role 'all') are trained on.
  assert set(run.examples("train", "single", "all").label) == set(range(7))
  for a, b in (("train", "test"), ("val", "test"), ("train", "val")):
    assert_disjoint_images(run, a, b)
  assert run.eval_split == "val"
  # Deterministic: the same rows again.
  again = run_data.prepare_data(config)
  for k in run.splits:
    np.testing.assert_array_equal(run.splits[k], again.splits[k])


def test_affectnet_official_split_uses_its_validation_split(affectnet_dir):
  """No method here is evaluated on AffectNet (SNA, the one that is, has no
  config), so the baseline config reads it: val is the builder's
  validation split, test its test split (AffectNet's validation set)."""
  config = preset("baseline.py", "")
  config.data.name = "affectnet"
  config.data.protocol = "official"
  config.data.classes = "all8"
  config.data.role = "all"
  config = shrink(config, affectnet_dir)
  sizes = split_sizes(Affectnet, affectnet_dir)
  assert set(sizes) == {"train", "validation", "test"}
  run = run_data.prepare_data(config)
  assert count(run, "train") == sizes["train"] == 21
  assert count(run, "val") == sizes["validation"] == 1
  assert count(run, "test") == sizes["test"] == 8
  for a, b in (("train", "test"), ("val", "test"), ("train", "val")):
    assert_disjoint_images(run, a, b)


def test_images_on_disk_read_the_same(rafdb_dir, monkeypatch):
  """data.in_memory=False: the splits' images are read through the TFDS
  sources, stacked, and equal the in-memory table row for row; loading the
  table decodes no image (AffectNet's ~290k would take minutes)."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  config = shrink(preset("ifgan.py", "rafdb"), rafdb_dir)
  held = run_data.prepare_data(config).table
  config.data.in_memory = False
  decoded = []
  for name in ("decode_example", "decode_example_np"):
    def counted(self, *a, real=getattr(tfds.features.Image, name), **k):
      decoded.append(1)
      return real(self, *a, **k)
    monkeypatch.setattr(tfds.features.Image, name, counted)
  lazy = run_data.prepare_data(config).table
  assert not decoded, f"{len(decoded)} images decoded to read the columns"
  for c in frames.COLUMNS:
    np.testing.assert_array_equal(getattr(lazy, c), getattr(held, c))
  assert isinstance(lazy.images, frames.StackedImages)
  rows = np.array([[0, len(held) - 1], [12, 13]])  # across the split seam
  np.testing.assert_array_equal(lazy.images[rows], held.images[rows])
  np.testing.assert_array_equal(lazy.images[5], held.images[5])


def test_images_over_the_memory_budget_stay_on_disk(rafdb_dir, caplog):
  """data.in_memory=True but over data.in_memory_max_gb: read from disk,
  with a warning naming the field, and the same pixels."""
  config = shrink(preset("ifgan.py", "rafdb"), rafdb_dir)
  held = run_data.prepare_data(config).table
  config.data.in_memory_max_gb = 1e-9
  with caplog.at_level("WARNING"):
    lazy = run_data.prepare_data(config).table
  assert isinstance(lazy.images, frames.StackedImages)
  assert "in_memory_max_gb" in caplog.text
  np.testing.assert_array_equal(lazy.images[np.arange(len(held))],
                                held.images[np.arange(len(held))])


def test_folds_on_a_set_without_subjects_points_at_official(rafdb_dir):
  config = shrink(preset("ifgan.py", "rafdb"), rafdb_dir)
  config.data.protocol = "folds"
  with pytest.raises(frames.DataError,
                     match=r"config.data.protocol='official'"):
    run_data.prepare_data(config)


def test_official_without_a_test_split_says_so(tmp_path):
  config = preset("gndl.py", "")
  config.data.protocol = "official"
  config.data.data_dir = str(tmp_path)
  config.data.synth.update(num_subjects=7, sequences_per_subject=1,
                           num_frames=8, image_size=32)
  with pytest.raises(frames.DataError, match="needs a 'test' split"):
    run_data.prepare_data(config)


@pytest.mark.parametrize("field,value,message", [
    ("protocol", "kfold", "config.data.protocol"),
    ("all_folds", True, "config.data.all_folds.*data.protocol='official'"),
    ("val_fraction", 1.0, "config.data.val_fraction"),
])
def test_protocol_config_errors_name_the_fields(field, value, message):
  config = preset("ifgan.py", "rafdb")
  setattr(config.data, field, value)
  with pytest.raises(ValueError, match=message):
    config_lib.validate(config)


@pytest.mark.slow  # 3.5 minutes on 2 cores: IF-GAN compiled without a cache
def test_ifgan_rafdb_trains_from_the_command_line(rafdb_dir, tmp_path):
  """The README's command on RAF-DB, a few steps with tiny nets: it trains
  on the official split and reports on its test split."""
  wd = tmp_path / "wd"
  cmd = [sys.executable, "-m", "fer_jax.main",
         "--config=configs/ifgan.py:rafdb", f"--workdir={wd}",
         "--compilation_cache=", "--config.data.builder_config=small",
         "--config.data.resize=32", "--config.data.crop=32",
         "--config.model.arch=resnet18", "--config.model.base_width=4",
         "--config.ifgan.unet_depth=3", "--config.ifgan.unet_features=4",
         "--config.ifgan.unet_max_features=8", "--config.ifgan.d_features=4",
         "--config.train.batch_size=4", "--config.train.eval_batch_size=4",
         "--config.train.num_steps=2", "--config.train.log_every=1",
         "--config.train.checkpoint_every=2",
         "--config.train.progress_bar=False"]
  env = dict(os.environ, FER_JAX_DATA_DIR=str(rafdb_dir), JAX_PLATFORMS="cpu")
  out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=600, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  report = json.loads((wd / "eval" / "report.json").read_text())
  assert report["dataset"].startswith("rafdb/small/")
  assert report["split"] == "test" and report["step"] == 2
  assert report["num_examples"] == 6
  assert len(report["classes"]) == 7
