"""BU-3DFE builder: name parsing, intensity selection (3-4 + neutral by
default), subjects F/M kept apart, subject folds."""

from __future__ import annotations

import face_trees as ft
import ml_collections
import pytest

from data_builders.bu3dfe import Bu3dfe, Bu3dfeConfig, bu3dfe
from fer_jax.data import frames
from fer_jax.data.classes import DATASET_CODES, canonical_index


@pytest.mark.parametrize("variant", [False, True])
@pytest.mark.parametrize("intensities", [(3, 4), (1, 2, 3, 4)])
def test_builds_selected_intensities(tmp_path, data_dir, variant, intensities):
  expected = ft.write_bu3dfe(tmp_path / "manual", variant=variant)
  cfg = Bu3dfeConfig(name=f"t{len(intensities)}", image_size=32,
                     intensities=intensities)
  builder = ft.build(Bu3dfe, tmp_path / "manual", data_dir, cfg)
  got = {ft.text(r["source_path"]).split("/")[-1]: r
         for r in ft.records(builder)}
  want = {k for k, (_, code, lv) in expected.items()
          if code == "NE" or lv in intensities}
  assert set(got) == want
  for name, r in got.items():
    subject, code, level = expected[name]
    assert r["label"] == canonical_index(DATASET_CODES["bu3dfe"][code])
    assert r["subject_id"] == bu3dfe.subject_number(subject[0], subject[1:])
    assert r["intensity"] == pytest.approx(level / 4)
  assert len({int(r["subject_id"]) for r in got.values()}) == 4
  assert builder.info.metadata["skipped_train"] == (
      {"unreadable image": 1} if 4 in intensities else {})


def test_subject_folds(tmp_path, data_dir):
  ft.write_bu3dfe(tmp_path / "manual")
  ft.build(Bu3dfe, tmp_path / "manual", data_dir,
           Bu3dfe.builder_configs["small"])
  table = frames.load_frames(ml_collections.ConfigDict(
      {"name": "bu3dfe", "data_dir": str(data_dir),
       "builder_config": "small"}))
  ft.assert_no_subject_leakage(table, num_folds=4)
