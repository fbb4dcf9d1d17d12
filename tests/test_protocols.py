"""Protocols: subject-independent folds, frame roles, and example pairing."""

import dataclasses

import numpy as np
import pytest

from fer_jax.data import classes as classes_lib
from fer_jax.data import protocols
from fer_jax.data.frames import DataError

NEUTRAL = classes_lib.canonical_index("neutral")
CONTEMPT = classes_lib.canonical_index("contempt")
SURPRISE = classes_lib.canonical_index("surprise")
BASIC6 = classes_lib.resolve_class_set("basic6")


def permuted(table, seed=1):
  """The same table with its rows shuffled (pairing must not rely on order)."""
  perm = np.random.default_rng(seed).permutation(len(table))
  return dataclasses.replace(
      table, images=table.images[perm], label=table.label[perm],
      subject_id=table.subject_id[perm], sequence_id=table.sequence_id[perm],
      frame_index=table.frame_index[perm], num_frames=table.num_frames[perm],
      intensity=table.intensity[perm])


def all_rows(table):
  return np.ones(len(table), bool)


# ---------------------------------------------------------------- folds


@pytest.mark.parametrize("num_folds", [2, 3, 4, 6, 12])
def test_assign_folds_never_splits_a_subject(make_table, num_folds):
  """Every subject's rows land in one fold, and every fold is used."""
  table = make_table(num_subjects=12, num_frames=2)
  for seed in range(3):
    fold_id = protocols.assign_folds(table.subject_id, num_folds, seed)
    for subject in np.unique(table.subject_id):
      assert len(np.unique(fold_id[table.subject_id == subject])) == 1
    assert set(np.unique(fold_id)) == set(range(num_folds))


def test_assign_folds_is_deterministic_and_seeded(make_table):
  """One seed always gives the same folds; other seeds give other folds."""
  groups = make_table(num_subjects=12, num_frames=2).subject_id
  a = protocols.assign_folds(groups, 4, seed=3)
  np.testing.assert_array_equal(a, protocols.assign_folds(groups, 4, seed=3))
  seen = {tuple(protocols.assign_folds(groups, 4, seed))
          for seed in range(6)}
  assert len(seen) > 1


def test_assign_folds_equal_subjects_give_equal_folds(make_table):
  """12 equal-size subjects in 4 folds: 3 subjects and 3*7*F rows per fold."""
  table = make_table(num_subjects=12, num_frames=3)
  for seed in range(4):
    fold_id = protocols.assign_folds(table.subject_id, 4, seed)
    np.testing.assert_array_equal(np.bincount(fold_id), [3 * 7 * 3] * 4)
    per_fold = [len(np.unique(table.subject_id[fold_id == k]))
                for k in range(4)]
    assert per_fold == [3, 3, 3, 3]


def test_assign_folds_balances_rows_largest_first():
  """Unequal subjects (10,9,7,5,5,4,3,2,1,1 rows) dealt largest-first to the
  lightest fold give loads {16, 16, 15} (hand-run), whatever the seed."""
  sizes = [10, 9, 7, 5, 5, 4, 3, 2, 1, 1]
  groups = np.repeat(np.arange(len(sizes)) * 7 + 3, sizes)  # sparse ids
  groups = np.random.default_rng(0).permutation(groups)
  for seed in range(5):
    fold_id = protocols.assign_folds(groups, 3, seed)
    assert sorted(np.bincount(fold_id, minlength=3)) == [15, 16, 16]
    for g in np.unique(groups):
      assert len(np.unique(fold_id[groups == g])) == 1


@pytest.mark.parametrize("num_folds,val_folds", [(3, 1), (5, 2), (6, 0)])
def test_fold_rows_partition_by_subject(make_table, num_folds, val_folds):
  """train/val/test cover each row once, share no subject, val is the next
  ``val_folds`` folds after the test fold, and tests tile the whole table."""
  table = make_table(num_subjects=12, num_frames=2)
  fold_id = protocols.assign_folds(table.subject_id, num_folds, seed=7)
  test_count = np.zeros(len(table), int)
  for fold in range(num_folds):
    m = protocols.fold_rows(table, num_folds, fold, val_folds, seed=7)
    stack = np.stack([m["train"], m["val"], m["test"]]).astype(int)
    np.testing.assert_array_equal(stack.sum(0), 1)
    np.testing.assert_array_equal(m["test"], fold_id == fold)
    want_val = np.isin(fold_id, [(fold + j) % num_folds
                                 for j in range(1, val_folds + 1)])
    np.testing.assert_array_equal(m["val"], want_val)
    assert not np.any(m["val"] & m["test"])
    subj = {k: set(table.subject_id[v]) for k, v in m.items()}
    assert not subj["train"] & subj["test"]
    assert not subj["train"] & subj["val"]
    assert not subj["val"] & subj["test"]
    assert m["train"].any()
    test_count += m["test"]
  np.testing.assert_array_equal(test_count, 1)


@pytest.mark.parametrize("fold", [-1, 4, 9])
def test_fold_out_of_range_names_field(make_table, fold):
  """A fold outside 0..num_folds-1 raises ValueError naming config.data.fold."""
  with pytest.raises(ValueError, match=r"config\.data\.fold"):
    protocols.fold_rows(make_table(), 4, fold, 0, seed=0)


@pytest.mark.parametrize("val_folds", [-1, 3, 4])
def test_val_folds_out_of_range_names_field(make_table, val_folds):
  """val_folds must leave a training fold: else ValueError naming the field."""
  with pytest.raises(ValueError, match=r"config\.data\.val_folds"):
    protocols.fold_rows(make_table(), 4, 0, val_folds, seed=0)


def test_too_few_subjects_raise_data_error(make_table):
  """3 subjects cannot fill 4 subject-independent folds."""
  table = make_table(num_subjects=3, num_frames=2)
  with pytest.raises(DataError, match="3 subjects"):
    protocols.fold_rows(table, 4, 0, 0, seed=0)
  with pytest.raises(DataError):
    protocols.assign_folds(table.subject_id, 4, seed=0)


def test_unknown_subjects_raise_data_error(make_table):
  """Subject id -1 (not recorded) makes subject folds impossible."""
  table = make_table(num_subjects=4, num_frames=1)
  table = dataclasses.replace(table, subject_id=np.full(len(table), -1))
  with pytest.raises(DataError, match="subject"):
    protocols.fold_rows(table, 2, 0, 0, seed=0)


# ---------------------------------------------------------------- roles


def test_role_masks_ten_frames(make_table):
  """F=10: neutral = frame 0, peak = frames 7,8,9, weak = 1-based 6-8 = 5,6,7,
  all = every row."""
  table = make_table(num_subjects=2, num_frames=10)
  f = table.frame_index
  np.testing.assert_array_equal(protocols.role_mask(table, "neutral"), f == 0)
  np.testing.assert_array_equal(protocols.role_mask(table, "peak"),
                                np.isin(f, [7, 8, 9]))
  np.testing.assert_array_equal(protocols.role_mask(table, "weak"),
                                np.isin(f, [5, 6, 7]))
  assert protocols.role_mask(table, "all").all()
  assert protocols.role_mask(table, "peak").sum() == 2 * 7 * 3


def test_role_masks_custom_and_short_sequences(make_table):
  """peak_frames=2 -> last two; weak never includes a sequence's last frame
  (F=8: 1-based 6-8 gives frames 5,6 only, frame 7 being the peak)."""
  table = make_table(num_subjects=2, num_frames=8)
  f = table.frame_index
  np.testing.assert_array_equal(
      protocols.role_mask(table, "peak", peak_frames=2), np.isin(f, [6, 7]))
  np.testing.assert_array_equal(protocols.role_mask(table, "weak"),
                                np.isin(f, [5, 6]))
  np.testing.assert_array_equal(
      protocols.role_mask(table, "weak", weak_frames=(2, 3)),
      np.isin(f, [1, 2]))


def test_role_mask_unknown_role_raises(make_table):
  with pytest.raises(ValueError, match="role"):
    protocols.role_mask(make_table(), "apex")


def test_frame_labels_make_frame_zero_neutral(make_table):
  """Sequences: frame 0 becomes 'neutral', other frames keep their label;
  stills (F=1) keep every label."""
  table = make_table(num_subjects=2, num_frames=5)
  labels = protocols.frame_labels(table)
  first = table.frame_index == 0
  assert np.all(labels[first] == NEUTRAL)
  np.testing.assert_array_equal(labels[~first], table.label[~first])
  assert NEUTRAL not in table.label  # the input is not modified
  stills = make_table(num_subjects=2, num_frames=1)
  np.testing.assert_array_equal(protocols.frame_labels(stills), stills.label)


# ---------------------------------------------------------------- examples


@pytest.mark.parametrize("shuffle", [False, True])
def test_neutral_pair_pairs_peak_with_own_frame_zero(make_table, shuffle):
  """Each of the 3 peak frames of each sequence pairs with frame 0 of the
  SAME sequence and subject; S*7*3 examples; labels are the task indices."""
  table = make_table(num_subjects=4, num_frames=8)
  if shuffle:
    table = permuted(table)
  ex = protocols.make_examples(table, all_rows(table), "neutral_pair",
                               classes_lib.BASIC6_CONTEMPT)
  assert set(ex.slots) == {"image", "neutral"}
  assert len(ex) == 4 * 7 * 3
  img, neu = ex.slots["image"], ex.slots["neutral"]
  assert np.all(table.frame_index[img] >= 5)
  assert np.all(table.frame_index[neu] == 0)
  np.testing.assert_array_equal(table.sequence_id[img],
                                table.sequence_id[neu])
  np.testing.assert_array_equal(table.subject_id[img], table.subject_id[neu])
  np.testing.assert_array_equal(ex.subjects, table.subject_id[img])
  want = [classes_lib.BASIC6_CONTEMPT.index(
      classes_lib.CANONICAL_CLASSES[c]) for c in table.label[img]]
  np.testing.assert_array_equal(ex.label, want)
  # Every (sequence, peak frame) appears exactly once.
  keys = set(zip(table.sequence_id[img], table.frame_index[img]))
  assert len(keys) == len(ex)


def test_weak_peak_pair_pairs_weak_with_own_last_frame(make_table):
  """F=10: weak frames 5,6,7 pair with frame 9 of the same sequence."""
  table = permuted(make_table(num_subjects=3, num_frames=10), seed=4)
  ex = protocols.make_examples(table, all_rows(table), "weak_peak_pair",
                               classes_lib.BASIC6_CONTEMPT)
  assert set(ex.slots) == {"weak", "peak"}
  assert len(ex) == 3 * 7 * 3
  weak, peak = ex.slots["weak"], ex.slots["peak"]
  assert set(table.frame_index[weak]) == {5, 6, 7}
  assert np.all(table.frame_index[peak] == 9)
  np.testing.assert_array_equal(table.sequence_id[weak],
                                table.sequence_id[peak])
  np.testing.assert_array_equal(table.subject_id[weak], table.subject_id[peak])
  np.testing.assert_array_equal(
      ex.label, [classes_lib.BASIC6_CONTEMPT.index(
          classes_lib.CANONICAL_CLASSES[c]) for c in table.label[peak]])


def test_single_basic6_drops_contempt(make_table):
  """'single' with basic6: 6 of 7 sequences kept, labels re-indexed to
  basic6 order (anger 0, disgust 1, fear 2, happiness 3, sadness 4,
  surprise 5)."""
  table = make_table(num_subjects=3, num_frames=6)
  ex = protocols.make_examples(table, all_rows(table), "single", BASIC6)
  assert set(ex.slots) == {"image"}
  img = ex.slots["image"]
  assert len(ex) == 3 * 6 * 3
  assert CONTEMPT not in table.label[img]
  canon_to_task = {0: 0, 2: 1, 3: 2, 4: 3, 6: 4, 7: 5}
  np.testing.assert_array_equal(
      ex.label, [canon_to_task[c] for c in table.label[img]])
  assert np.bincount(ex.label).tolist() == [9] * 6


def test_labels_follow_task_class_order(make_table):
  """classes=['surprise', 'anger']: surprise is task 0, anger task 1, the
  other five sequences are dropped."""
  table = make_table(num_subjects=2, num_frames=4)
  ex = protocols.make_examples(table, all_rows(table), "single",
                               ["surprise", "anger"])
  img = ex.slots["image"]
  assert len(ex) == 2 * 2 * 3
  np.testing.assert_array_equal(
      ex.label, np.where(table.label[img] == SURPRISE, 0, 1))
  assert set(table.label[img]) == {SURPRISE, 0}


def test_single_all_role_with_neutral_class(make_table):
  """Role 'all' with basic6+neutral: every frame 0 (even contempt's) is a
  neutral example (task 4), plus frames 1.. of the 6 basic sequences:
  S*7 + S*6*(F-1) examples."""
  s, f = 3, 5
  table = make_table(num_subjects=s, num_frames=f)
  ex = protocols.make_examples(table, all_rows(table), "single",
                               classes_lib.BASIC6_NEUTRAL, role="all")
  img = ex.slots["image"]
  assert len(ex) == s * 7 + s * 6 * (f - 1)
  is_first = table.frame_index[img] == 0
  assert np.all(ex.label[is_first] == 4) and is_first.sum() == s * 7
  assert not np.any(ex.label[~is_first] == 4)


def test_rows_mask_restricts_examples(make_table):
  """Only rows in the mask become anchors (one subject -> its 7*3 peaks)."""
  table = make_table(num_subjects=4, num_frames=8)
  rows = table.subject_id == 102
  ex = protocols.make_examples(table, rows, "neutral_pair",
                               classes_lib.BASIC6_CONTEMPT)
  assert len(ex) == 7 * 3
  assert np.all(ex.subjects == 102)


def make_stills(make_table, num_subjects=4):
  """Stills (F=1) where each subject's contempt and surprise images are
  relabelled neutral: 2 neutral images and 5 basic6 images per subject."""
  table = make_table(num_subjects=num_subjects, num_frames=1)
  label = table.label.copy()
  label[np.isin(label, [CONTEMPT, SURPRISE])] = NEUTRAL
  return dataclasses.replace(table, label=label)


def test_stills_neutral_pair_uses_same_subject_neutral(make_table):
  """Stills pair each expressive image with a neutral image of its subject."""
  table = make_stills(make_table)
  assert not table.is_sequential
  ex = protocols.make_examples(table, all_rows(table), "neutral_pair",
                               BASIC6, seed=3)
  assert len(ex) == 4 * 5
  img, neu = ex.slots["image"], ex.slots["neutral"]
  assert np.all(table.label[neu] == NEUTRAL)
  assert not np.any(table.label[img] == NEUTRAL)
  np.testing.assert_array_equal(table.subject_id[img], table.subject_id[neu])
  # Deterministic for a seed.
  again = protocols.make_examples(table, all_rows(table), "neutral_pair",
                                  BASIC6, seed=3)
  np.testing.assert_array_equal(again.slots["neutral"], neu)


def test_stills_without_subject_neutral_are_dropped(make_table):
  """A subject with no neutral image contributes no neutral_pair example."""
  table = make_stills(make_table)
  label = table.label.copy()
  orig = make_table(num_subjects=4, num_frames=1).label
  s0 = table.subject_id == 100
  label[s0] = orig[s0]  # subject 100 loses its neutral images
  table = dataclasses.replace(table, label=label)
  ex = protocols.make_examples(table, all_rows(table), "neutral_pair",
                               BASIC6)
  assert len(ex) == 3 * 5
  assert 100 not in ex.subjects


def test_stills_roles(make_table):
  """Stills: peak = non-neutral images, neutral = neutral-labelled images,
  all = every image (RAF-DB's 7 classes train on neutral too); role 'weak'
  (and so weak_peak_pair) raises DataError."""
  table = make_stills(make_table)
  np.testing.assert_array_equal(protocols.role_mask(table, "neutral"),
                                table.label == NEUTRAL)
  np.testing.assert_array_equal(protocols.role_mask(table, "peak"),
                                table.label != NEUTRAL)
  assert protocols.role_mask(table, "all").all()
  ex = protocols.make_examples(table, all_rows(table), "single",
                               classes_lib.BASIC6_NEUTRAL, role="all")
  assert len(ex) == len(table)
  assert classes_lib.BASIC6_NEUTRAL.index("neutral") in ex.label
  with pytest.raises(DataError, match="weak"):
    protocols.role_mask(table, "weak")
  with pytest.raises(DataError, match="weak"):
    protocols.make_examples(table, all_rows(table), "single", BASIC6,
                            role="weak")
  with pytest.raises(DataError):
    protocols.make_examples(table, all_rows(table), "weak_peak_pair",
                            BASIC6)


def test_make_examples_errors(make_table):
  """Unknown kind -> ValueError; an empty selection -> DataError."""
  table = make_table(num_subjects=2, num_frames=4)
  with pytest.raises(ValueError, match="kind"):
    protocols.make_examples(table, all_rows(table), "triplet", BASIC6)
  with pytest.raises(DataError, match="no single examples"):
    protocols.make_examples(table, np.zeros(len(table), bool), "single",
                            BASIC6)


def test_stills_with_unknown_subjects_do_not_pair_across_people(make_table):
  """Stills whose subjects are unknown (-1) cannot be paired with a neutral
  of the same face: make_examples must not invent cross-person pairs."""
  table = make_stills(make_table)
  table = dataclasses.replace(table,
                              subject_id=np.full(len(table), -1, np.int32))
  with pytest.raises(DataError):
    protocols.make_examples(table, all_rows(table), "neutral_pair", BASIC6)


def test_fold_by_sequence_keeps_sequences_whole(make_table):
  """GroupGAN's folds group sequences: no sequence straddles two splits,
  while a subject's sequences may."""
  table = make_table(num_subjects=3, num_frames=4)
  splits = protocols.fold_rows(table, 5, 0, 0, seed=0, fold_by="sequence")
  for seq in np.unique(table.sequence_id):
    rows = table.sequence_id == seq
    assert splits["test"][rows].all() or not splits["test"][rows].any()
  straddling = [s for s in np.unique(table.subject_id)
                if 0 < splits["test"][table.subject_id == s].sum()
                < (table.subject_id == s).sum()]
  assert straddling
  with pytest.raises(ValueError, match="fold_by"):
    protocols.fold_rows(table, 5, 0, 0, seed=0, fold_by="frame")
