"""What every real-data builder shares: registration, instructions, config
presets that name them, and errors for an empty, missing or wrong manual dir
(from the API and from the build command)."""

from __future__ import annotations

import os
import subprocess
import sys

import face_trees as ft
import numpy as np
import pytest

from fer_jax.data_builders.common import LayoutError
from fer_jax import config_lib
from fer_jax.data import registry

REAL = ("ckplus", "oulu_casia", "mmi", "jaffe", "bu3dfe", "rafdb", "affectnet")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


@pytest.mark.parametrize("name", REAL)
def test_registered_with_instructions_and_configs(name):
  cls = registry.builder_class(name)
  assert cls.name == name
  text = cls.MANUAL_DOWNLOAD_INSTRUCTIONS
  assert "--manual_dir" in text and cls.LAYOUT.strip() in text
  configs = cls.builder_configs
  assert "default" in configs and "small" in configs
  assert cls.BUILDER_CONFIGS[0].name == "default"  # what presets read
  assert configs["small"].image_size == 64


@pytest.mark.parametrize("config_file, presets", [
    ("gndl.py", ["ckplus", "oulu_casia", "mmi"]),
    ("baseline.py", ["ckplus", "oulu_casia", "mmi"]),
    ("ifgan.py", ["ckplus", "mmi", "bu3dfe", "rafdb", "baseline_ckplus"]),
    ("cgan_wsc.py", ["ckplus", "jaffe", "oulu_casia"]),
    ("groupgan.py", ["ckplus_oulu"]),
])
def test_paper_presets_name_registered_builders(config_file, presets):
  module = config_lib.load_config_module(
      os.path.join(ROOT, "configs", config_file))
  for preset in presets:
    config = module.get_config(preset)
    config_lib.validate(config)
    for name in config.data.name.split("+"):
      assert name in REAL


@pytest.mark.parametrize("name", REAL)
def test_empty_missing_or_wrong_manual_dir_says_what_it_looked_for(
    tmp_path, data_dir, name):
  cls = registry.builder_class(name)
  cfg = cls.builder_configs["small"]
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(LayoutError, match="does not exist or is empty") as e:
    ft.build(cls, empty, data_dir, cfg)
  assert str(empty) in str(e.value) and "Expected layout" in str(e.value)
  with pytest.raises(LayoutError, match="does not exist or is empty"):
    ft.build(cls, tmp_path / "nowhere", data_dir, cfg)
  wrong = tmp_path / "wrong"
  (wrong / "photos" / "holiday").mkdir(parents=True)
  (wrong / "photos" / "holiday" / "a.txt").write_text("x")
  with pytest.raises(LayoutError, match=str(wrong)) as e:
    ft.build(cls, wrong, data_dir, cfg)
  assert "Expected layout" in str(e.value)
  # nothing written that could pass for a built data set
  assert not cls(config=cfg, data_dir=str(data_dir)).is_prepared()
  assert not [p for p in (data_dir / name / "small").rglob("*")]


PACKED = {  # what a user may have before unpacking: the archives as shipped
    "ckplus": ["extended-cohn-kanade-images.zip", "Emotion_labels.zip",
               "Landmarks.zip"],
    "oulu_casia": ["OriginalImg.zip"],
    "mmi": ["Sessions.zip"],
    "jaffe": ["jaffedbase.tar"],
    "bu3dfe": ["F0001.rar", "M0001.rar"],
    "rafdb": ["basic.zip"],
    "affectnet": ["Manually_Annotated.tar.gz"],
}
COMMANDS = {".zip": "unzip", ".tar": "tar -xf", ".tar.gz": "tar -xf",
            ".rar": "unrar x"}


@pytest.mark.parametrize("name", REAL)
def test_packed_archives_are_named_with_the_unpack_command(tmp_path,
                                                           data_dir, name):
  cls = registry.builder_class(name)
  manual = tmp_path / "download"
  manual.mkdir()
  for archive in PACKED[name]:
    (manual / archive).write_bytes(b"PK\x03\x04 not unpacked")
  with pytest.raises(LayoutError) as e:
    ft.build(cls, manual, data_dir, cls.builder_configs["small"])
  msg = str(e.value)
  assert "Archives still packed" in msg and "Expected layout" in msg
  for archive in PACKED[name]:
    assert str(manual / archive) in msg
    ending = archive[archive.index("."):]
    assert f"cd {manual} && " in msg and COMMANDS[ending] in msg


def test_affectnet_images_still_packed_beside_the_lists(tmp_path, data_dir):
  """The CSV lists unpacked, the image tarball not: the error names it."""
  from fer_jax.data_builders.affectnet import Affectnet
  ft.write_affectnet(tmp_path / "manual")
  import shutil
  shutil.rmtree(tmp_path / "manual" / "Manually_Annotated_Images")
  (tmp_path / "manual" / "Manually_Annotated.tar").write_bytes(b"ustar")
  with pytest.raises(LayoutError, match="Manually_Annotated_Images") as e:
    ft.build(Affectnet, tmp_path / "manual", data_dir,
             Affectnet.builder_configs["small"])
  assert (f"cd {tmp_path / 'manual'} && tar -xf Manually_Annotated.tar"
          in str(e.value))


def test_build_command_reports_layout_errors(tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  out = subprocess.run(
      [sys.executable, "-m", "fer_jax.data.build", "jaffe",
       f"--manual_dir={empty}", f"--data_dir={tmp_path / 'tfds'}"],
      capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)
  assert out.returncode == 2
  assert "jaffedbase" in out.stderr or "KA.AN1.39.tiff" in out.stderr
  assert "Traceback" not in out.stderr


def test_build_command_reports_an_unusable_data_dir(tmp_path):
  """--data_dir under a file (or unwritable): one line, exit 2."""
  ft.write_jaffe(tmp_path / "manual")
  (tmp_path / "afile").write_text("x")
  out = subprocess.run(
      [sys.executable, "-m", "fer_jax.data.build", "jaffe",
       f"--manual_dir={tmp_path / 'manual'}",
       f"--data_dir={tmp_path / 'afile' / 'tfds'}"],
      capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)
  assert out.returncode == 2, out.stderr[-2000:]
  assert "afile" in out.stderr and "Traceback" not in out.stderr


def test_build_command_reports_a_missing_optional_decoder(tmp_path):
  """MMI without PyAV: exit 2 saying what to install, no traceback."""
  session = tmp_path / "manual" / "Sessions" / "101"
  session.mkdir(parents=True)
  (session / "S001-101.avi").write_bytes(b"RIFF....AVI ")
  (session / "session.xml").write_text(
      '<session sessionId="101" mediaFile="S001-101.avi">'
      '<subject id="1"/><Metatag Name="Emotion" Value="4"/></session>')
  code = ("import runpy, sys; sys.modules['av'] = None; "
          "runpy.run_module('fer_jax.data.build', run_name='__main__')")
  out = subprocess.run(
      [sys.executable, "-c", code, "mmi", f"--manual_dir={tmp_path / 'manual'}",
       f"--data_dir={tmp_path / 'tfds'}"],
      capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)
  assert out.returncode == 2, out.stderr[-2000:]
  assert "pip install" in out.stderr and "av" in out.stderr
  assert "Traceback" not in out.stderr


def test_open_image_counts_truncated_files_even_when_pil_is_lenient(tmp_path):
  from PIL import ImageFile

  from fer_jax.data_builders.common import BuildLog, open_image
  good = ft.save(ft.face_image(40, 30, np.random.default_rng(0)),
                 str(tmp_path / "a.jpg"))
  bad = ft.save(ft.face_image(40, 30, np.random.default_rng(1)),
                str(tmp_path / "b.jpg"))
  ft.corrupt(bad)
  (tmp_path / "c.png").write_bytes(b"not an image")
  log = BuildLog("t", "train")
  lenient = ImageFile.LOAD_TRUNCATED_IMAGES
  ImageFile.LOAD_TRUNCATED_IMAGES = True
  try:
    assert open_image(good, log).size == (40, 30)
    assert open_image(bad, log) is None
    assert open_image(str(tmp_path / "c.png"), log) is None
    assert ImageFile.LOAD_TRUNCATED_IMAGES  # left as the caller had it
  finally:
    ImageFile.LOAD_TRUNCATED_IMAGES = lenient
  assert log.counts == {"unreadable image": 2}
