"""AffectNet builder: CSV columns, 8/7 classes, validation.csv as test, a
stable validation carve, landmark alignment, broken/duplicate rows."""

from __future__ import annotations

import face_trees as ft
import numpy as np
import pytest

from fer_jax.data_builders.affectnet import (Affectnet, AffectnetConfig,
                                             affectnet)
from fer_jax.data import align
from fer_jax.data.classes import DATASET_CODES, canonical_index


def _read(builder):
  out = {}
  for split in builder.info.splits:
    for r in ft.records(builder, split):
      rel = ft.text(r["source_path"]).split("Manually_Annotated_Images/")[-1]
      assert rel not in out, "an image in two splits"
      out[rel] = (split, r)
  return out


@pytest.mark.parametrize("variant", [False, True])
@pytest.mark.parametrize("num_classes", [8, 7])
def test_builds_classes_and_splits(tmp_path, data_dir, variant, num_classes):
  expected = ft.write_affectnet(tmp_path / "manual", variant=variant)
  cfg = AffectnetConfig(name=f"t{num_classes}", image_size=32,
                        num_classes=num_classes, val_fraction=0.3)
  _check(tmp_path, data_dir, expected, cfg)


def test_box_alignment(tmp_path, data_dir):
  expected = ft.write_affectnet(tmp_path / "manual")
  cfg = AffectnetConfig(name="tbox", image_size=32, align="box", margin=0.1,
                        val_fraction=0.3)
  got = _check(tmp_path, data_dir, expected, cfg, eyes_level=False)
  for rel, (_, r) in got.items():
    w = 64 + 8 * (int(rel.split("/")[1][3:7]) % 3)
    side = (w // 2) * 1.2  # the box's longer side, grown 10% each side
    np.testing.assert_allclose(r["transform"][:, :2],
                               np.eye(2) * 32 / side, atol=1e-5)


def _check(tmp_path, data_dir, expected, cfg, eyes_level=True):
  num_classes = cfg.num_classes
  builder = ft.build(Affectnet, tmp_path / "manual", data_dir, cfg)
  got = _read(builder)
  want = {k: v for k, v in expected.items() if v[1] < num_classes}
  assert sorted(got) == sorted(want)
  spec = cfg.align_spec
  for rel, (split, r) in got.items():
    want_split, code, pts = want[rel]
    if want_split == "test":
      assert split == "test"
    else:
      assert split == ("validation" if affectnet.in_validation(
          rel, cfg.val_fraction) else "train")
    assert r["label"] == canonical_index(DATASET_CODES["affectnet"][code])
    assert r["subject_id"] == -1
    np.testing.assert_allclose(
        r["landmarks"], align.apply_affine(r["transform"], pts), atol=1e-3)
    if eyes_level:
      left, right = align.eye_centres(r["landmarks"])
      assert abs(left[1] - right[1]) < 1e-3
      np.testing.assert_allclose(right[0] - left[0], spec.eye_distance * 32,
                                 atol=1e-3)
  assert {s for s, _ in got.values()} == {"train", "validation", "test"}
  meta = builder.info.metadata["skipped_train"]
  meta_val = builder.info.metadata.get("skipped_validation", {})
  merged = {k: meta.get(k, 0) + meta_val.get(k, 0)
            for k in set(meta) | set(meta_val)}
  assert merged == {"missing image": 1, "unreadable image": 1,
                    "duplicate row": 1}
  return got


def test_csv_without_expression_column_is_an_error(tmp_path, data_dir):
  ft.write_affectnet(tmp_path / "manual")
  csv = tmp_path / "manual" / "Manually_Annotated_file_lists" / "training.csv"
  csv.write_text("subDirectory_filePath,face_x\n1/a.jpg,3\n")
  with pytest.raises(ValueError, match=r"training.csv: header lacks"):
    ft.build(Affectnet, tmp_path / "manual", data_dir,
             AffectnetConfig(name="t", image_size=32))


def test_csv_with_a_byte_order_mark_keeps_its_header(tmp_path):
  """A header row behind a BOM is still the header, not a malformed row."""
  ft.write_affectnet(tmp_path / "manual")
  csv = tmp_path / "manual" / "Manually_Annotated_file_lists" / "training.csv"
  csv.write_bytes(b"\xef\xbb\xbf" + csv.read_bytes())
  rows = affectnet.read_csv(str(csv))
  assert len(rows) == 34  # 33 + the duplicate, no header row among them
  assert rows[0]["subDirectory_filePath"] == "100/tra0000.jpg"


def _read_npy_build(builder):
  out = {}
  for split in builder.info.splits:
    for r in ft.records(builder, split):
      name = ft.text(r["source_path"]).rsplit("/", 1)[-1]
      assert name not in out, "an image in two splits"
      out[name] = (split, r)
  return out


@pytest.mark.parametrize("variant", [False, True])
@pytest.mark.parametrize("num_classes", [8, 7])
def test_eight_class_npy_release(tmp_path, data_dir, variant, num_classes):
  """train_set/ and val_set/ with annotations/<id>_exp.npy and _lnd.npy:
  the CSV release's class names and landmarks, val_set as test."""
  expected = ft.write_affectnet_npy(tmp_path / "manual", variant=variant)
  cfg = AffectnetConfig(name=f"n{num_classes}", image_size=32,
                        release="npy", num_classes=num_classes,
                        val_fraction=0.3)
  builder = ft.build(Affectnet, tmp_path / "manual", data_dir, cfg)
  assert builder.info.features["label"].names == Affectnet(
      config="small", data_dir=str(data_dir)).info.features["label"].names
  got = _read_npy_build(builder)
  want = {k: v for k, v in expected.items() if v[1] < num_classes}
  assert sorted(got) == sorted(want)
  spec = cfg.align_spec
  for name, (split, r) in got.items():
    want_split, code, pts = want[name]
    if want_split == "test":
      assert split == "test"
      assert "val_set" in ft.text(r["source_path"])
    else:
      assert split == ("validation" if affectnet.in_validation(
          name, cfg.val_fraction) else "train")
    assert r["label"] == canonical_index(DATASET_CODES["affectnet"][code])
    np.testing.assert_allclose(
        r["landmarks"], align.apply_affine(r["transform"], pts), atol=1e-3)
    left, right = align.eye_centres(r["landmarks"])
    assert abs(left[1] - right[1]) < 1e-3
    np.testing.assert_allclose(right[0] - left[0], spec.eye_distance * 32,
                               atol=1e-3)
  assert {s for s, _ in got.values()} == {"train", "validation", "test"}
  meta = builder.info.metadata
  merged = {}
  for split in ("train", "validation"):
    for k, n in meta.get(f"skipped_{split}", {}).items():
      merged[k] = merged.get(k, 0) + n
  assert merged == {"missing annotation": 1, "unreadable image": 1,
                    "malformed landmarks": 1}


def test_csv_config_on_the_npy_release_names_the_config(tmp_path, data_dir):
  from fer_jax.data_builders.common import LayoutError
  ft.write_affectnet_npy(tmp_path / "manual")
  with pytest.raises(LayoutError, match=r"8-class release.*--builder_config"
                                        r"=npy8"):
    ft.build(Affectnet, tmp_path / "manual", data_dir,
             Affectnet.builder_configs["small"])
  assert Affectnet.builder_configs["npy8_small"].image_size == 64
