"""BU-3DFE builder: name parsing, intensity selection (3-4 + neutral by
default), subjects F/M kept apart, subject folds."""

from __future__ import annotations

import face_trees as ft
import ml_collections
import pytest

from fer_jax.data_builders.bu3dfe import Bu3dfe, Bu3dfeConfig, bu3dfe
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


def test_subjects_still_packed_name_the_archives_and_command(tmp_path,
                                                             data_dir):
  """BU-3DFE as shipped (one .rar per subject): the error names the files
  and the unpack command; a subject packed beside unpacked ones is never
  silently left out, one with its folder already unpacked is fine."""
  from fer_jax.data_builders.common import LayoutError
  packed = tmp_path / "packed"
  packed.mkdir()
  for s in ("F0001", "F0002", "M0001"):
    (packed / f"{s}.rar").write_bytes(b"Rar!\x1a\x07\x00")
  with pytest.raises(LayoutError) as e:
    ft.build(Bu3dfe, packed, data_dir, Bu3dfeConfig(name="t", image_size=32))
  msg = str(e.value)
  assert str(packed / "F0001.rar") in msg and "M0001.rar" in msg
  assert 'for f in *.rar; do unrar x "$f"; done' in msg
  assert "Expected layout" in msg
  ft.write_bu3dfe(tmp_path / "manual")
  (tmp_path / "manual" / "F0001.rar").write_bytes(b"Rar!")  # unpacked too
  (tmp_path / "manual" / "M0044.rar").write_bytes(b"Rar!")  # only packed
  with pytest.raises(LayoutError, match=r"1 subject\(s\) still packed") as e:
    ft.build(Bu3dfe, tmp_path / "manual", data_dir,
             Bu3dfeConfig(name="t", image_size=32))
  said = str(e.value).split("Expected layout")[0]
  assert "M0044.rar" in said and "F0001.rar" not in said
  assert "unrar x M0044.rar" in said
  (tmp_path / "manual" / "M0044.rar").unlink()
  ft.build(Bu3dfe, tmp_path / "manual", data_dir,
           Bu3dfeConfig(name="t", image_size=32))
