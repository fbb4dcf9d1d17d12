"""Issue #17: no silent wrong results, no poisoned checkpoint, recovery from
partial writes. The workdir's config.json is the run's identity, a
non-finite state is never saved, one run per workdir, torn files are read
tolerantly, and a corrupt newest checkpoint is skipped."""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from fer_jax import checkpoint as ckpt_lib
from fer_jax import files, train

from test_train import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------ 1. config.json is identity

@pytest.fixture(scope="module")
def fake_data(make_table, load_table):
  return load_table(make_table(num_subjects=6, num_frames=8, image_size=16))


@pytest.fixture(scope="module")
def trained_once(fake_data, tmp_path_factory):
  """A tiny GNDL run on fold 0 (4 steps, checkpoints at 2 and 4)."""
  wd = str(tmp_path_factory.mktemp("trained") / "run")
  train.train_and_evaluate(tiny_config(), wd, fake_data)
  return wd


@pytest.fixture
def trained(trained_once, tmp_path):
  """A copy of ``trained_once`` the test may change."""
  wd = str(tmp_path / "run")
  shutil.copytree(trained_once, wd)
  return wd


def test_eval_with_another_fold_is_refused_and_report_kept(trained,
                                                           fake_data):
  before = open(os.path.join(trained, "eval", "report.json")).read()
  cfg = tiny_config()
  cfg.data.fold = 1
  with pytest.raises(ValueError, match=r"config.data.fold is 0 in .*config"
                     r"\.json but 1 here"):
    train.evaluate_checkpoint(cfg, trained, load_data=fake_data)
  assert open(os.path.join(trained, "eval", "report.json")).read() == before


def test_resume_with_identity_overrides_is_refused(trained, fake_data):
  for field, value, shown in (("data.classes", "basic6", "'basic6'"),
                              ("optim.lr", 0.5, "0.5"),
                              ("model.base_width", 16, "16")):
    cfg = tiny_config()
    cfg.train.num_steps = 6
    section, name = field.split(".")
    setattr(cfg[section], name, value)
    with pytest.raises(ValueError, match=rf"config.{field} is .* but "
                       rf"{shown} here"):
      train.train_and_evaluate(cfg, trained, fake_data)
  saved = json.load(open(os.path.join(trained, "config.json")))
  assert saved["optim"]["lr"] == tiny_config().optim.lr  # not overwritten


def test_a_shorter_training_is_refused_but_eval_ignores_length(trained,
                                                               fake_data):
  cfg = tiny_config(num_steps=2)
  with pytest.raises(ValueError, match="config.train.num_steps is 4"):
    train.train_and_evaluate(cfg, trained, fake_data)
  report = train.evaluate_checkpoint(cfg, trained, load_data=fake_data)
  assert report["step"] == 4


def test_harmless_overrides_are_allowed_and_listed(trained, fake_data,
                                                   capsys):
  cfg = tiny_config(eval_batch_size=8, num_steps=6, log_every=3)
  report = train.train_and_evaluate(cfg, trained, fake_data)
  out = capsys.readouterr().out
  assert "train.eval_batch_size: 16 -> 8" in out
  assert "train.num_steps: 4 -> 6" in out
  assert report["step"] == 6
  assert json.load(open(os.path.join(trained, "config.json")))[
      "train"]["num_steps"] == 6


def test_checkpoint_of_another_fold_is_refused(trained, fake_data):
  """Without config.json (a run from before it, or a Trainer used
  directly), the fold in the checkpoint still guards it."""
  cfg = tiny_config()
  cfg.data.fold = 1
  with pytest.raises(ckpt_lib.CheckpointError,
                     match="config.data.fold=0, this run's config says 1"):
    train.Trainer(cfg, trained, fake_data(cfg)).restore()
