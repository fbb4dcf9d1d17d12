"""MMI builder: emotion sessions decoded from AVI (PyAV), onset-to-apex
frames in order, sessions without emotion / video / readable data skipped."""

from __future__ import annotations

import face_trees as ft
import ml_collections
import numpy as np
import pytest

from data_builders.mmi import Mmi, MmiConfig, mmi
from fer_jax.data import frames, protocols
from fer_jax.data.classes import DATASET_CODES, canonical_index

pytest.importorskip("av", reason="MMI's videos need PyAV: pip install av")


def _by_session(recs):
  out = {}
  for r in recs:
    path, frame = ft.text(r["source_path"]).split("#frame=")
    out.setdefault(int(r["sequence_id"]), []).append(
        (int(r["frame_index"]), int(frame), path, r))
  return {k: sorted(v) for k, v in out.items()}


def test_onset_to_apex_selection():
  assert mmi.onset_to_apex(10, "all", 0) == [0, 1, 2, 3, 4, 5, 6]
  assert mmi.onset_to_apex(10, "paper", 0) == [0, 4, 5, 6]
  kept = mmi.onset_to_apex(100, "all", 8)
  assert len(kept) == 8 and kept[0] == 0 and kept[-3:] == [49, 50, 51]


@pytest.mark.parametrize("variant", [False, True])
def test_builds_labelled_sessions_in_frame_order(tmp_path, data_dir,
                                                 variant):
  expected = ft.write_mmi(tmp_path / "manual", variant=variant)
  cfg = MmiConfig(name="t32", image_size=32)
  builder = ft.build(Mmi, tmp_path / "manual", data_dir, cfg)
  got = _by_session(ft.records(builder))
  assert sorted(got) == sorted(expected)
  for sid, rows in got.items():
    subject, code, n = expected[sid]
    kept = mmi.onset_to_apex(n, "all", 0)
    assert [f for _, f, _, _ in rows] == kept
    assert [i for i, _, _, _ in rows] == list(range(len(kept)))
    for _, _, path, r in rows:
      assert path.endswith(f"S{subject:03d}-{sid:03d}.avi")
      assert r["label"] == canonical_index(DATASET_CODES["mmi"][code])
      assert r["subject_id"] == subject
      assert r["num_frames"] == len(kept)
    # brightness follows the source frame number (~20 + 20 f)
    means = np.array([r["image"].mean() for _, _, _, r in rows])
    np.testing.assert_allclose(means, 24.5 + 20 * np.array(kept), atol=6)
  assert builder.info.metadata["skipped_train"] == {
      "no Emotion metatag (AU-only session)": 1,
      "no video (still-image session)": 1, "unreadable video": 1}


def test_peak_is_the_middle_and_folds(tmp_path, data_dir):
  ft.write_mmi(tmp_path / "manual")
  ft.build(Mmi, tmp_path / "manual", data_dir, Mmi.builder_configs["small"])
  table = frames.load_frames(ml_collections.ConfigDict(
      {"name": "mmi", "data_dir": str(data_dir), "builder_config": "small"}))
  ft.assert_no_subject_leakage(table, num_folds=4)
  peak = protocols.role_mask(table, "peak", peak_frames=3)
  # the protocol's peak frames are the videos' middle frames: brightest
  for s in np.unique(table.sequence_id):
    rows = table.sequence_id == s
    bright = table.images[rows].mean((1, 2, 3))
    assert bright[peak[rows]].min() > bright[~peak[rows]].max()


def test_unknown_emotion_code_is_counted_as_such(tmp_path, data_dir):
  """A code outside 1-6 is not an AU-only session: its own skip reason."""
  ft.write_mmi(tmp_path / "manual")
  xml = tmp_path / "manual" / "Sessions" / "250" / "session.xml"
  xml.write_text(xml.read_text().replace('Name="Emotion" Value="5"',
                                         'Name="Emotion" Value="9"'))
  builder = ft.build(Mmi, tmp_path / "manual", data_dir,
                     MmiConfig(name="t32", image_size=32))
  assert 250 not in _by_session(ft.records(builder))
  assert builder.info.metadata["skipped_train"] == {
      "no Emotion metatag (AU-only session)": 1,
      "unknown emotion code": 1,
      "no video (still-image session)": 1, "unreadable video": 1}


def test_session_without_session_xml_is_skipped_and_counted(tmp_path,
                                                            data_dir):
  expected = ft.write_mmi(tmp_path / "manual")
  gone = sorted(expected)[0]
  (tmp_path / "manual" / "Sessions" / str(gone) / "session.xml").unlink()
  builder = ft.build(Mmi, tmp_path / "manual", data_dir,
                     MmiConfig(name="t32", image_size=32))
  assert sorted(_by_session(ft.records(builder))) == sorted(
      set(expected) - {gone})
  assert builder.info.metadata["skipped_train"]["no session.xml"] == 1
