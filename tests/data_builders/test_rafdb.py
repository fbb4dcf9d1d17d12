"""RAF-DB builder: official train/test split from the names, label codes,
both label-file spellings, missing and corrupt images counted."""

from __future__ import annotations

import face_trees as ft
import pytest

from fer_jax.data_builders.common import FaceConfig, LayoutError
from fer_jax.data_builders.rafdb import Rafdb
from fer_jax.data.classes import DATASET_CODES, canonical_index

SMALL = FaceConfig(name="t32", image_size=32)


@pytest.mark.parametrize("variant", [False, True])
def test_builds_official_split(tmp_path, data_dir, variant):
  expected = ft.write_rafdb(tmp_path / "manual", variant=variant)
  builder = ft.build(Rafdb, tmp_path / "manual", data_dir, SMALL)
  seen = {}
  for split in ("train", "test"):
    for r in ft.records(builder, split):
      name = ft.text(r["source_path"]).split("/")[-1].replace("_aligned", "")
      assert name not in seen
      seen[name] = (split, r)
  assert sorted(seen) == sorted(expected)
  for name, (split, r) in seen.items():
    want_split, code = expected[name]
    assert split == want_split
    assert r["label"] == canonical_index(DATASET_CODES["rafdb"][code])
    assert r["subject_id"] == -1
    assert r["image"].shape == (32, 32, 3)
  ids = [int(r["sequence_id"]) for _, r in seen.values()]
  assert len(set(ids)) == len(ids)
  meta = builder.info.metadata
  assert meta["skipped_train"] == {"missing image": 1}
  assert meta["skipped_test"] == {"unreadable image": 1}


def test_label_file_errors_name_the_path(tmp_path, data_dir):
  ft.write_rafdb(tmp_path / "manual")
  label = tmp_path / "manual" / "basic" / "EmoLabel" / "list_patition_label.txt"
  label.write_text("train_00001.jpg 5\ntrain_00002.jpg\n")
  with pytest.raises(ValueError, match=r"list_patition_label.txt:2"):
    ft.build(Rafdb, tmp_path / "manual", data_dir, SMALL)
  label.unlink()
  with pytest.raises(LayoutError, match="list_patition_label.txt"):
    ft.build(Rafdb, tmp_path / "manual", data_dir, SMALL)
  assert not Rafdb(config=SMALL, data_dir=str(data_dir)).is_prepared()


def test_label_file_with_a_byte_order_mark(tmp_path, data_dir):
  """A label file saved by a Windows editor starts with a BOM: still read."""
  expected = ft.write_rafdb(tmp_path / "manual")
  label = tmp_path / "manual" / "basic" / "EmoLabel" / "list_patition_label.txt"
  label.write_bytes(b"\xef\xbb\xbf" + label.read_bytes())
  builder = ft.build(Rafdb, tmp_path / "manual", data_dir, SMALL)
  assert sum(len(ft.records(builder, s)) for s in ("train", "test")) == len(
      expected)
