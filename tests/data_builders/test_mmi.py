"""MMI builder: emotion sessions decoded from AVI (PyAV), labels from the
per-video XML as the archive ships them (session.xml as a fallback),
dual-view frames cropped to their frontal half, onset-to-apex frames in
order, sessions without emotion / video / readable data skipped."""

from __future__ import annotations

import face_trees as ft
import ml_collections
import numpy as np
import pytest

from fer_jax.data_builders.mmi import Mmi, MmiConfig, mmi
from fer_jax.data import align, frames, protocols
from fer_jax.data.classes import DATASET_CODES, canonical_index

pytest.importorskip("av", reason="MMI's videos need PyAV: pip install av")


def _by_session(recs):
  out = {}
  for r in recs:
    path, frame = ft.text(r["source_path"]).split("#frame=")
    out.setdefault(int(r["sequence_id"]), []).append(
        (int(r["frame_index"]), int(frame), path, r))
  return {k: sorted(v) for k, v in out.items()}


def _inverse(affine):
  return np.linalg.inv(np.vstack([affine, [0, 0, 1]]))[:2]


def test_onset_to_apex_selection():
  assert mmi.onset_to_apex(10, "all", 0) == [0, 1, 2, 3, 4, 5, 6]
  assert mmi.onset_to_apex(10, "paper", 0) == [0, 4, 5, 6]
  kept = mmi.onset_to_apex(100, "all", 8)
  assert len(kept) == 8 and kept[0] == 0 and kept[-3:] == [49, 50, 51]


SKIPPED = {"no Emotion metatag (AU-only session)": 1,
           "no video (still-image session)": 1, "unreadable video": 1}


@pytest.mark.parametrize("variant", [False, True])
def test_builds_labelled_sessions_in_frame_order(tmp_path, data_dir,
                                                 variant):
  expected = ft.write_mmi(tmp_path / "manual", variant=variant)
  cfg = MmiConfig(name="t32", image_size=32)
  builder = ft.build(Mmi, tmp_path / "manual", data_dir, cfg)
  got = _by_session(ft.records(builder))
  assert sorted(got) == sorted(expected)
  assert {v[3] for v in expected.values()} == {0, 2}  # both views built
  for sid, rows in got.items():
    subject, code, n, view = expected[sid]
    kept = mmi.onset_to_apex(n, "all", 0)
    assert [f for _, f, _, _ in rows] == kept
    assert [i for i, _, _, _ in rows] == list(range(len(kept)))
    for _, _, path, r in rows:
      assert path.endswith(f"S{subject:03d}-{sid:03d}.avi")
      assert r["label"] == canonical_index(DATASET_CODES["mmi"][code])
      assert r["subject_id"] == subject
      assert r["num_frames"] == len(kept)
      np.testing.assert_allclose(
          r["transform"], mmi.frame_affine(48, 32, view, "left",
                                           cfg.align_spec), atol=1e-5)
    # brightness follows the source frame number (~20 + 20 f); in the
    # dual-view sessions only the left (frontal) half is lit, so this also
    # says the crop stayed inside it
    means = np.array([r["image"].mean() for _, _, _, r in rows])
    np.testing.assert_allclose(means, 24.5 + 20 * np.array(kept), atol=6)
  assert builder.info.metadata["skipped_train"] == SKIPPED


def test_archive_layout_and_session_xml_copy_build_the_same(tmp_path,
                                                            data_dir):
  """The per-video-XML archive and a copy with the tag in session.xml give
  the same examples: labels, subjects, sequences, frames."""
  def rows(variant):
    manual = tmp_path / f"manual{int(variant)}"
    ft.write_mmi(manual, variant=variant)
    builder = ft.build(Mmi, manual, tmp_path / f"tfds{int(variant)}",
                       MmiConfig(name="t32", image_size=32))
    return sorted((int(r["sequence_id"]), int(r["frame_index"]),
                   int(r["num_frames"]), int(r["label"]),
                   int(r["subject_id"]),
                   ft.text(r["source_path"]).split("Sessions")[-1])
                  for r in ft.records(builder))
  canonical = rows(False)
  assert canonical and canonical == rows(True)


def test_per_video_xml_wins_over_session_xml(tmp_path, data_dir):
  """An Emotion tag in both: the per-video XML's is the label; without the
  per-video XML the session.xml tag is read."""
  ft.write_mmi(tmp_path / "manual")
  folder = tmp_path / "manual" / "Sessions" / "101"
  xml = folder / "session.xml"
  xml.write_text(xml.read_text().replace(
      "</session>", '<Metatag Name="Emotion" Value="6"/></session>'))
  folder2 = tmp_path / "manual" / "Sessions" / "102"
  (folder2 / "S001-102.xml").unlink()
  xml2 = folder2 / "session.xml"
  xml2.write_text(xml2.read_text().replace(
      "</session>", '<Metatag Name="Emotion" Value="3"/></session>'))
  builder = ft.build(Mmi, tmp_path / "manual", data_dir,
                     MmiConfig(name="t32", image_size=32))
  got = _by_session(ft.records(builder))
  label = {sid: {int(r["label"]) for *_, r in rows}
           for sid, rows in got.items()}
  assert label[101] == {canonical_index(DATASET_CODES["mmi"][1])}
  assert label[102] == {canonical_index(DATASET_CODES["mmi"][3])}


def test_dual_view_frames_keep_the_frontal_half(tmp_path, data_dir):
  """Measured on the test frames: the left half is lit (~20 + 20 f), the
  right (profile) half dark (~5). 'left' keeps the lit half; 'right' the
  dark one; a centre crop of the whole frame would mix both."""
  expected = ft.write_mmi(tmp_path / "manual")
  dual = [sid for sid, v in expected.items() if v[3] == 2]
  assert dual
  for half in ("left", "right"):
    builder = ft.build(Mmi, tmp_path / "manual", data_dir,
                       MmiConfig(name=f"d{half}", image_size=32,
                                 dual_view_half=half))
    got = _by_session(ft.records(builder))
    for sid in dual:
      for _, f, _, r in got[sid]:
        mean = r["image"].mean()
        if half == "left":
          assert abs(mean - (24.5 + 20 * f)) < 6, (sid, f, mean)
        else:
          assert mean < 12, (sid, f, mean)
  # the whole frame's centre square (what the builder did before) straddles
  # the halves: a third of it is the dark profile
  spec = MmiConfig(name="x", image_size=32).align_spec
  centre = mmi.frame_affine(48, 32, 0, "left", spec)
  left = mmi.frame_affine(48, 32, 2, "left", spec)
  corners = np.array([[0, 0], [31, 31]], float)  # stored image -> source
  xs_centre = align.apply_affine(_inverse(centre), corners)[:, 0]
  xs_left = align.apply_affine(_inverse(left), corners)[:, 0]
  assert xs_centre[0] < 24 < xs_centre[1]
  assert xs_left[1] < 24


def test_profile_only_view_is_skipped_and_counted(tmp_path, data_dir):
  ft.write_mmi(tmp_path / "manual")
  xml = tmp_path / "manual" / "Sessions" / "203" / "session.xml"
  xml.write_text(xml.read_text().replace('view="0"', 'view="1"'))
  builder = ft.build(Mmi, tmp_path / "manual", data_dir,
                     MmiConfig(name="t32", image_size=32))
  assert 203 not in _by_session(ft.records(builder))
  assert builder.info.metadata["skipped_train"][
      "not a frontal view (track view is not 0 or 2)"] == 1


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
  xml = tmp_path / "manual" / "Sessions" / "250" / "S009-250.xml"
  xml.write_text(xml.read_text().replace('Name="Emotion" Value="5"',
                                         'Name="Emotion" Value="9"'))
  builder = ft.build(Mmi, tmp_path / "manual", data_dir,
                     MmiConfig(name="t32", image_size=32))
  assert 250 not in _by_session(ft.records(builder))
  assert builder.info.metadata["skipped_train"] == {
      "no Emotion metatag (AU-only session)": 1,
      "unknown emotion code": 1,
      "no video (still-image session)": 1, "unreadable video": 1}


def test_session_without_session_xml_builds_from_its_video_xml(tmp_path,
                                                               data_dir):
  """No session.xml: the label from the per-video XML, the subject from the
  video's name, the view taken as frontal; nothing skipped for it."""
  expected = ft.write_mmi(tmp_path / "manual")
  (tmp_path / "manual" / "Sessions" / "101" / "session.xml").unlink()
  builder = ft.build(Mmi, tmp_path / "manual", data_dir,
                     MmiConfig(name="t32", image_size=32))
  got = _by_session(ft.records(builder))
  assert sorted(got) == sorted(expected)
  assert {int(r["subject_id"]) for *_, r in got[101]} == {1}
  assert builder.info.metadata["skipped_train"] == SKIPPED
