"""Shared fixtures: a small synthetic FrameTable built in memory.

Also points every test process (and the subprocesses they start) at one
persistent XLA compilation cache, so the same step compiled by several tests
compiles once: the suite's time is mostly XLA compiles on CPU.
"""

import os
import tempfile

# Before JAX is imported anywhere: env vars reach subprocesses too.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    os.path.join(tempfile.gettempdir(), "fer_jax_test_xla_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Counter-based 'rbg' keys: XLA:CPU compiles threefry's unrolled hash for
# every dropout mask and augmentation draw, which made the GAN steps take
# ~50 s to compile; rbg compiles in a few. Runs keep JAX's default.
os.environ.setdefault("JAX_DEFAULT_PRNG_IMPL", "rbg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from fer_jax.data import classes as classes_lib
from fer_jax.data import run_data
from fer_jax.data.frames import FrameTable

# The 7 expression classes of a sequence (every canonical class but neutral,
# which a sequence's frame 0 plays), as canonical indices.
SEQUENCE_LABELS = tuple(classes_lib.canonical_index(n)
                        for n in classes_lib.BASIC6_CONTEMPT)


def build_table(num_subjects: int = 6, num_frames: int = 8,
                image_size: int = 16, seed: int = 0,
                with_landmarks: bool = False) -> FrameTable:
  """S subjects x 7 sequences (one per class) x F frames, subject-major.

  Subject ids are 100 + s (not row or subject positions), sequence ids
  s * 7 + q, every frame carries its sequence's canonical label, intensity
  rises linearly from 0 at frame 0 to 1 at the last frame, images are random
  uint8 (H, H, 3) and landmarks random pixel coordinates (or None).
  """
  rng = np.random.default_rng(seed)
  s, q, f = np.meshgrid(np.arange(num_subjects), np.arange(7),
                        np.arange(num_frames), indexing="ij")
  s, q, f = s.ravel(), q.ravel(), f.ravel()
  n = len(s)
  images = rng.integers(0, 256, (n, image_size, image_size, 3), np.uint8)
  landmarks = (rng.uniform(0, image_size, (n, 68, 2)).astype(np.float32)
               if with_landmarks else None)
  return FrameTable(
      name="synthetic_test_table",
      images=images,
      label=np.asarray(SEQUENCE_LABELS, np.int32)[q],
      subject_id=(100 + s).astype(np.int32),
      sequence_id=(s * 7 + q).astype(np.int32),
      frame_index=f.astype(np.int32),
      num_frames=np.full(n, num_frames, np.int32),
      intensity=(f / max(1, num_frames - 1)).astype(np.float32),
      landmarks=landmarks)


@pytest.fixture(scope="session")
def make_table():
  """Factory: ``make_table(num_subjects=6, num_frames=8, image_size=16,
  seed=0, with_landmarks=False) -> FrameTable`` (see ``build_table``)."""
  return build_table


def table_data(table: FrameTable):
  """``load_data(config) -> RunData``: ``table``'s rows in the configured
  fold, in place of a built data set."""
  return lambda config: run_data.from_table(config, table)


@pytest.fixture(scope="session")
def load_table():
  """Factory: ``load_table(table) -> load_data`` (see ``table_data``); a
  fixture, since another conftest may own the module name."""
  return table_data


@pytest.fixture
def fake_data(make_table):
  """``load_data`` over a small in-memory table (see ``table_data``)."""
  return table_data(make_table(num_subjects=6, num_frames=8, image_size=16))


@pytest.fixture(scope="session")
def baseline_run(tmp_path_factory, make_table, load_table):
  """A tiny trained baseline run's workdir (train_and_evaluate on a
  6-subject 16 px table), shared by the tests that restore, predict from
  or export a trained model."""
  import test_train  # pylint: disable=import-outside-toplevel
  from fer_jax import train  # pylint: disable=import-outside-toplevel
  wd = tmp_path_factory.mktemp("baseline_run") / "run"
  train.train_and_evaluate(test_train.tiny_config("baseline"), str(wd),
                           load_table(make_table(num_subjects=6, num_frames=8,
                                                 image_size=16)))
  return str(wd)
