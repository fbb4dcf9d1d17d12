"""Oulu-CASIA builder: VL/Strong sequences of a tiny archive (and the
B_OriginalImg variant), frame order, paper frames, subject folds."""

from __future__ import annotations

import os

import face_trees as ft
import ml_collections
import numpy as np
import pytest

from fer_jax.data_builders.common import LayoutError
from fer_jax.data_builders.oulu_casia import OuluCasia, OuluCasiaConfig
from fer_jax.data import align, frames
from fer_jax.data.classes import canonical_index

SMALL = OuluCasiaConfig(name="t32", image_size=32)


def _by_frame(recs):
  out = {}
  for r in recs:
    parts = ft.text(r["source_path"]).split(os.sep)
    out[(int(parts[-3][1:]), parts[-2], int(r["frame_index"]))] = r
  return out


@pytest.mark.parametrize("variant", [False, True])
def test_builds_vl_strong_sequences(tmp_path, data_dir, variant):
  expected = ft.write_oulu(tmp_path / "manual", variant=variant)
  builder = ft.build(OuluCasia, tmp_path / "manual", data_dir, SMALL)
  got = _by_frame(ft.records(builder))
  assert sorted(got) == sorted(expected)  # VL/Strong only, corrupt frame out
  for (s, expr, i), r in got.items():
    assert "VL" in ft.text(r["source_path"]).split(os.sep)
    assert r["label"] == canonical_index(expr.lower())
    assert r["subject_id"] == s
    assert r["num_frames"] == expected[(s, expr, i)]
    assert r["image"].shape == (32, 32, 3)
    assert "landmarks" not in r
    # the centred square, tightened by the margin, scaled to 32 px
    np.testing.assert_allclose(
        r["transform"], align.centre_affine(40, 30, SMALL.align_spec),
        atol=1e-5)
  # frame order: brightness rises with the file number within a sequence
  for (s, expr, i), r in got.items():
    nxt = got.get((s, expr, i + 1))
    if nxt is not None:
      assert nxt["image"].mean() > r["image"].mean() + 15
  assert builder.info.metadata["skipped_train"] == {"unreadable image": 1}


def _summary(builder):
  """Per frame (subject, expression, frame): label, subject, sequence,
  frame count; where the files were plays no part."""
  return {(s, e.lower(), i): (int(r["label"]), int(r["subject_id"]),
                              int(r["sequence_id"]), int(r["num_frames"]))
          for (s, e, i), r in _by_frame(ft.records(builder)).items()}


@pytest.mark.parametrize("layout", sorted(set(ft.OULU_LAYOUTS) - {"canonical"}))
def test_every_unpacking_builds_the_canonical_examples(tmp_path, layout):
  """B_OriginalImg/, the nested B_OriginalImg/B_OriginalImg/OriginalImg/
  copy and lower-case folder names: the canonical layout's examples."""
  ft.write_oulu(tmp_path / "canonical")
  ft.write_oulu(tmp_path / layout, variant=layout)
  want = _summary(ft.build(OuluCasia, tmp_path / "canonical",
                           tmp_path / "tfds_c", SMALL))
  got = _summary(ft.build(OuluCasia, tmp_path / layout, tmp_path / "tfds_v",
                          SMALL))
  assert len(want) == sum(ft.oulu_frames(s, e) for s in ft.OULU_SUBJECTS
                          for e in range(6)) - 1  # the corrupt frame
  assert got == want


def test_copy_without_camera_folders_names_what_it_lacks(tmp_path, data_dir):
  (tmp_path / "manual" / "B_OriginalImg" / "photos").mkdir(parents=True)
  with pytest.raises(LayoutError,
                     match=r"B_OriginalImg holds no VL/ or NI/ camera folder"):
    ft.build(OuluCasia, tmp_path / "manual", data_dir, SMALL)


def test_paper_frames_and_nir(tmp_path, data_dir):
  expected = ft.write_oulu(tmp_path / "manual")
  paper = ft.build(OuluCasia, tmp_path / "manual", data_dir,
                   OuluCasiaConfig(name="p32", image_size=32, frames="paper"))
  got = _by_frame(ft.records(paper))
  want = {(s, e, i) for (s, e, _), n in expected.items()
          for i in {0, n - 3, n - 2, n - 1}}
  assert set(got) == want - {ft.OULU_CORRUPT}
  nir = ft.build(OuluCasia, tmp_path / "manual", data_dir,
                 OuluCasiaConfig(name="n32", image_size=32, camera="NI"))
  paths = [ft.text(r["source_path"]) for r in ft.records(nir)]
  assert paths and all(os.sep + "NI" + os.sep in p for p in paths)
  # the corrupt frame is only in VL: NI has every frame
  assert len(paths) == sum(ft.oulu_frames(s, e) for s in ft.OULU_SUBJECTS
                           for e in range(6))


def test_subject_folds_and_missing_lighting(tmp_path, data_dir):
  ft.write_oulu(tmp_path / "manual")
  ft.build(OuluCasia, tmp_path / "manual", data_dir,
           OuluCasia.builder_configs["small"])
  table = frames.load_frames(ml_collections.ConfigDict(
      {"name": "oulu_casia", "data_dir": str(data_dir),
       "builder_config": "small"}))
  assert table.is_sequential
  ft.assert_no_subject_leakage(table, num_folds=4)
  with pytest.raises(LayoutError, match=r"OriginalImg.VL.Dark"):
    ft.build(OuluCasia, tmp_path / "manual", data_dir,
             OuluCasiaConfig(name="d32", image_size=32, lighting="Dark"))


def test_mixed_with_ckplus_for_groupgan(tmp_path, data_dir):
  """GroupGAN's preset reads 'ckplus+oulu_casia': one table, ids apart."""
  from fer_jax.data_builders.ckplus import Ckplus
  from fer_jax import config_lib
  from fer_jax.data import run_data
  ft.write_oulu(tmp_path / "oulu")
  ft.write_ckplus(tmp_path / "ck")
  ft.build(OuluCasia, tmp_path / "oulu", data_dir,
           OuluCasia.builder_configs["small"])
  ft.build(Ckplus, tmp_path / "ck", data_dir, Ckplus.builder_configs["small"])
  root = os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))))
  config = config_lib.load_config_module(
      os.path.join(root, "configs", "groupgan.py")).get_config("ckplus_oulu")
  config.data.data_dir = str(data_dir)
  config.data.builder_config = "small"
  config_lib.validate(config)
  run = run_data.prepare_data(config)
  t = run.table
  assert len(t) == 31 + sum(1 for _ in ft.records(
      OuluCasia(config="small", data_dir=str(data_dir))))
  assert len(np.unique(t.subject_id)) == 5 + len(ft.OULU_SUBJECTS)
  for k, m in run.splits.items():  # folds by sequence: none straddles
    for j, n in run.splits.items():
      if k != j:
        assert not set(t.sequence_id[m]) & set(t.sequence_id[n])
