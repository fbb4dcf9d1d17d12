"""Grain pipeline: deterministic batches, exact resume, complete evaluation."""

import numpy as np
import pytest

from fer_jax.data import frames, pipeline, protocols, registry
from fer_jax.data.classes import BASIC6_CONTEMPT, CANONICAL_CLASSES


def pair_examples(table):
  rows = np.ones(len(table), bool)
  return protocols.make_examples(table, rows, "neutral_pair", BASIC6_CONTEMPT)


def take(it, n):
  return [next(it) for _ in range(n)]


def test_batches_hold_the_examples_images_and_labels(make_table):
  table = make_table()
  ex = pair_examples(table)
  batch = next(pipeline.TrainIterator(ex, 8, seed=0))
  assert batch["image"].shape == (8, 16, 16, 3)
  assert batch["image"].dtype == np.uint8
  # Each pair's images are frames of the table: find them and check roles.
  flat = table.images.reshape(len(table), -1)
  for img, neu, label in zip(batch["image"], batch["neutral"],
                             batch["label"]):
    r_img = np.flatnonzero((flat == img.ravel()).all(1))[0]
    r_neu = np.flatnonzero((flat == neu.ravel()).all(1))[0]
    assert table.sequence_id[r_img] == table.sequence_id[r_neu]
    assert table.frame_index[r_neu] == 0
    assert table.frame_index[r_img] >= table.num_frames[r_img] - 3
    assert BASIC6_CONTEMPT[label] == CANONICAL_CLASSES[table.label[r_img]]


def test_same_seed_same_batches_other_seed_other_batches(make_table):
  ex = pair_examples(make_table())
  a = take(pipeline.TrainIterator(ex, 8, seed=3), 5)
  b = take(pipeline.TrainIterator(ex, 8, seed=3), 5)
  c = take(pipeline.TrainIterator(ex, 8, seed=4), 5)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x["image"], y["image"])
  assert any(not np.array_equal(x["label"], z["label"]) for x, z in zip(a, c))


def test_every_example_once_per_epoch_then_reshuffled(make_table):
  table = make_table()
  ex = protocols.make_examples(table, np.ones(len(table), bool), "single",
                               BASIC6_CONTEMPT)
  n = len(ex)
  assert n % 6 == 0
  it = pipeline.TrainIterator(ex, n // 6, seed=0)
  flat = table.images.reshape(len(table), -1)

  def rows_of(batches):
    return sorted(int(np.flatnonzero((flat == im.ravel()).all(1))[0])
                  for b in batches for im in b["image"])
  first, second = take(it, 6), take(it, 6)
  assert rows_of(first) == sorted(ex.slots["image"].tolist())
  assert rows_of(second) == rows_of(first)
  assert not all(np.array_equal(x["label"], y["label"])
                 for x, y in zip(first, second))


def test_restored_iterator_continues_exactly(make_table):
  ex = pair_examples(make_table())
  it = pipeline.TrainIterator(ex, 8, seed=0)
  take(it, 3)
  state = it.state()
  expected = take(it, 4)
  resumed = pipeline.TrainIterator(ex, 8, seed=0)
  resumed.restore(state)
  for x, y in zip(expected, take(resumed, 4)):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


def test_state_travels_with_prefetched_batches(make_table):
  """The state yielded with batch k resumes at batch k+1, prefetch or not."""
  import jax
  from fer_jax import sharding
  ex = pair_examples(make_table())
  mesh = sharding.make_mesh(jax.devices()[:1])
  stream = pipeline.device_prefetch(pipeline.TrainIterator(ex, 8, seed=0),
                                    mesh, depth=3)
  _, state_after_2 = [next(stream) for _ in range(2)][-1]
  batch3, _ = next(stream)
  again = pipeline.TrainIterator(ex, 8, seed=0)
  again.restore(state_after_2)
  np.testing.assert_array_equal(np.asarray(batch3["image"]),
                                next(again)["image"])


def test_eval_batches_cover_each_example_once_with_mask(make_table):
  ex = pair_examples(make_table())
  n = len(ex)
  batches = list(pipeline.eval_batches(ex, 16))
  assert len(batches) == -(-n // 16)
  mask = np.concatenate([b["mask"] for b in batches])
  labels = np.concatenate([b["label"] for b in batches])
  assert mask.sum() == n and mask[:n].all()
  np.testing.assert_array_equal(labels[mask], ex.label)


def test_batch_larger_than_data_is_refused(make_table):
  ex = pair_examples(make_table(num_subjects=2))
  with pytest.raises(ValueError, match="exceeds"):
    pipeline.TrainIterator(ex, 10_000, seed=0)


def test_unbuilt_data_set_names_the_build_command(tmp_path, monkeypatch):
  import ml_collections
  import tensorflow_datasets as tfds

  class Unbuilt(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features
                                   .FeaturesDict({"label": tfds.features
                                                  .ClassLabel(num_classes=2)}))

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples()}

    def _generate_examples(self):
      yield from ()

  monkeypatch.setattr(registry, "builder_class", lambda name: Unbuilt)
  cfg = ml_collections.ConfigDict(dict(name="unbuilt", data_dir=str(tmp_path),
                                       builder_config=""))
  with pytest.raises(frames.DataError,
                     match="python -m fer_jax.data.build unbuilt"):
    frames.load_frames(cfg)
  assert "--builder_config=px112 " in registry.build_command(
      "affectnet", "/d", "px112")


def test_mixed_data_sets_keep_subjects_and_sequences_apart(make_table):
  """data.name='a+b' (GroupGAN's CK+ and Oulu-CASIA): one table whose ids
  never collide across the parts."""
  a, b = make_table(num_subjects=2, seed=0), make_table(num_subjects=3, seed=1)
  mixed = frames.concat_tables([a, b])
  assert len(mixed) == len(a) + len(b)
  np.testing.assert_array_equal(mixed.images[len(a):], b.images)
  assert not set(mixed.subject_id[:len(a)]) & set(mixed.subject_id[len(a):])
  assert not set(mixed.sequence_id[:len(a)]) & set(mixed.sequence_id[len(a):])
  c = make_table(num_subjects=2, image_size=8)
  with pytest.raises(frames.DataError, match="image shapes"):
    frames.concat_tables([a, c])
