"""The fast paths train the same run as the plain one: device-resident data
(the step gathers the batch from the split in device memory), several steps
per dispatch (lax.scan), class-balanced batches, and the log line that shows
a rerun loading its step from the persistent compilation cache."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fer_jax import steps, train
from fer_jax.data import pipeline, protocols, resident

from test_train import tiny_config


def _log(workdir):
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  return [r for r in rows if "train/loss" in r]


@pytest.mark.parametrize("group,log_every,ckpt_every,want", [
    (1, 5, 10, [1] * 8),
    (4, 5, 10, [4, 1, 3]),        # steps 1-4, 5 (log), 6-8 (phase end)
    (4, 2, 3, [2, 1, 1, 2, 2]),   # groups end at 2, 3, 4, 6 and 8
    (8, 50, 500, [8]),
])
def test_dispatch_groups_end_on_logs_and_checkpoints(group, log_every,
                                                     ckpt_every, want):
  sizes = steps.dispatch_groups(0, 8, group, [log_every, ckpt_every, 0])
  assert sizes == want
  assert steps.dispatch_groups(5, 8, group, [log_every, ckpt_every, 0]
                               )[-1] <= 3


def _train(load_data, tmp_path, name, **overrides):
  cfg = tiny_config(num_steps=8, log_every=4, checkpoint_every=8)
  for k, v in overrides.items():
    section, field = k.split("__")
    setattr(getattr(cfg, section), field, v)
  workdir = str(tmp_path / name)
  report = train.Trainer(cfg, workdir, load_data(cfg)).train()
  return report, _log(workdir)


def test_device_resident_and_scanned_steps_match_streaming(fake_data,
                                                            tmp_path,
                                                            capsys):
  plain, plain_log = _train(fake_data, tmp_path, "plain", data__device_resident="off")
  assert "by streaming" in capsys.readouterr().out
  res, res_log = _train(fake_data, tmp_path, "resident", data__device_resident="on")
  assert "from device memory" in capsys.readouterr().out
  scan, scan_log = _train(fake_data, tmp_path, "scan", data__device_resident="on",
                          train__steps_per_dispatch=3)
  # Same batches, same arithmetic: the gather moved from host to device.
  assert res["state_digest"] == plain["state_digest"]
  for a, b in zip(plain_log, res_log):
    assert a["train/loss"] == b["train/loss"]
  # The scan runs the same guarded steps; XLA may fuse the loop body
  # differently, so agreement is to float rounding.
  assert [r["step"] for r in scan_log] == [r["step"] for r in plain_log]
  for a, b in zip(plain_log, scan_log):
    np.testing.assert_allclose(b["train/loss"], a["train/loss"], rtol=1e-5)
  assert scan["accuracy"] == pytest.approx(plain["accuracy"], abs=0.05)


def test_resident_gather_equals_host_gather(make_table):
  import jax
  from fer_jax import sharding
  table = make_table(num_subjects=3, num_frames=6, image_size=8,
                     with_landmarks=True)
  rows = np.ones(len(table), bool)
  ex = protocols.make_examples(table, rows, "neutral_pair",
                               "basic6+contempt", "peak", 2, (3, 4), 0)
  mesh = sharding.make_mesh(jax.devices()[:1])
  data = resident.put(ex, True, mesh)
  # Only the frames the examples use are on the device.
  used = np.unique(np.concatenate(list(ex.slots.values())))
  assert data["images"].shape[0] == len(used) < len(table)
  idx = np.array([5, 0, 3, 3, len(ex) - 1])
  host = pipeline.gather(ex, idx, with_landmarks=True)
  dev = jax.device_get(jax.jit(resident.gather)(data, idx))
  assert set(host) == set(dev)
  for k in host:
    np.testing.assert_array_equal(dev[k], host[k])


def test_auto_mode_streams_what_does_not_fit(make_table):
  import jax
  import ml_collections
  table = make_table(num_subjects=2, num_frames=4, image_size=8)
  ex = protocols.make_examples(table, np.ones(len(table), bool), "single",
                               "basic6+contempt", "all", 1, (2, 3), 0)
  cfg = ml_collections.ConfigDict(dict(device_resident="auto",
                                       device_memory_gb=1e-9))
  on, why = resident.choose(cfg, ex, False, jax.devices()[0])
  assert not on and "budget" in why
  cfg.device_memory_gb = 1.0
  assert resident.choose(cfg, ex, False, jax.devices()[0])[0]
  cfg.device_resident = "sometimes"
  with pytest.raises(ValueError, match="device_resident"):
    resident.choose(cfg, ex, False, jax.devices()[0])


def test_class_balanced_batches_are_balanced_and_resume(make_table):
  table = make_table(num_subjects=5, num_frames=6, image_size=8)
  rows = np.ones(len(table), bool)
  ex = protocols.make_examples(table, rows, "single", "basic6+contempt",
                               "all", 1, (2, 3), 0)
  # Unequal classes: drop most 'happy' examples.
  classes = np.unique(ex.label)
  it = pipeline.TrainIterator(ex, 4 * len(classes), seed=3,
                              sampler="class_balanced")
  batches = [next(it)["label"] for _ in range(12)]
  for labels in batches:
    counts = np.bincount(labels, minlength=classes.max() + 1)[classes]
    assert (counts == 4).all(), counts
  state = it.state()
  after = [next(it)["image"] for _ in range(3)]
  again = pipeline.TrainIterator(ex, 4 * len(classes), seed=3,
                                 sampler="class_balanced")
  again.restore(state)
  for a in after:
    np.testing.assert_array_equal(next(again)["image"], a)


def test_class_balanced_walks_each_class_epoch_without_repeats(make_table):
  table = make_table(num_subjects=4, num_frames=5, image_size=8)
  ex = protocols.make_examples(table, np.ones(len(table), bool), "single",
                               "basic6+contempt", "all", 1, (2, 3), 0)
  keep = np.flatnonzero((ex.label != ex.label[0]) |
                        (np.arange(len(ex)) % 4 == 0))  # one class is rare
  ex = protocols.Examples(ex.table, {k: v[keep] for k, v in ex.slots.items()},
                          ex.label[keep])
  c = len(np.unique(ex.label))
  ds = pipeline.index_batches(ex.label, 2 * c, seed=0,
                              sampler="class_balanced")
  drawn = np.concatenate([ds[j] for j in range(40)])
  for cls in np.unique(ex.label):
    members = np.flatnonzero(ex.label == cls)
    seq = drawn[np.isin(drawn, members)]
    n = len(members)
    # Every full pass over a class is a permutation of its members.
    for e in range(len(seq) // n):
      assert sorted(seq[e * n:(e + 1) * n]) == sorted(members)
  with pytest.raises(ValueError, match="multiple of the"):
    pipeline.index_batches(ex.label, 2 * c + 1, 0, "class_balanced")


def test_rerun_loads_its_step_from_the_compilation_cache(fake_data, tmp_path,
                                                         capsys):
  import jax
  if not jax.config.jax_compilation_cache_dir:
    pytest.skip("no persistent compilation cache configured")
  cfg = tiny_config(num_steps=2)
  cfg.data.device_resident = "on"
  train.Trainer(cfg, str(tmp_path / "a"), fake_data(cfg)).train()
  capsys.readouterr()
  train.Trainer(cfg, str(tmp_path / "b"), fake_data(cfg)).train()
  out = capsys.readouterr().out
  assert "'gndl': program loaded from the compilation cache" in out, out
  assert "initial state: program loaded from the compilation cache" in out


FOUR_DEVICES = textwrap.dedent("""
    import json, os, sys, tempfile
    sys.path.insert(0, %(tests)r)
    import jax, numpy as np
    from fer_jax import sharding, train
    import conftest, test_train
    assert jax.device_count() == 4
    table = conftest.build_table(num_subjects=6, num_frames=8, image_size=16)
    load_data = conftest.table_data(table)
    out = {}
    for name, ndev, mode, group in (("plain1", 1, "off", 1),
                                    ("fast4", 4, "on", 4)):
      cfg = test_train.tiny_config(num_steps=8, log_every=4,
                                   checkpoint_every=8)
      cfg.data.device_resident = mode
      cfg.train.steps_per_dispatch = group
      mesh = sharding.make_mesh(jax.devices()[:ndev])
      d = tempfile.mkdtemp()
      train.Trainer(cfg, d, load_data(cfg), mesh=mesh).train()
      out[name] = [json.loads(l)["train/loss"] for l in
                   open(os.path.join(d, "metrics.jsonl"))
                   if "train/loss" in l]
    print(json.dumps(out))
""")


def test_four_devices_resident_and_scanned_match_one_device_streaming():
  tests = os.path.dirname(os.path.abspath(__file__))
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", FOUR_DEVICES % {"tests": tests}],
                       env=env, capture_output=True, text=True, timeout=300,
                       cwd=tests)
  assert out.returncode == 0, out.stderr[-3000:]
  losses = json.loads(out.stdout.strip().splitlines()[-1])
  assert len(losses["plain1"]) == 2
  np.testing.assert_allclose(losses["fast4"], losses["plain1"], rtol=1e-4)


def test_shuffled_batches_walk_permuted_epochs_and_are_one_call_each(
    make_table):
  table = make_table(num_subjects=3, num_frames=5, image_size=8)
  ex = protocols.make_examples(table, np.ones(len(table), bool), "single",
                               "basic6+contempt", "all", 1, (2, 3), 0)
  n = len(ex)
  ds = pipeline.index_batches(ex.label, 8, seed=5)
  stream = np.concatenate([ds[j] for j in range(3 * n // 8 + 1)])
  epochs = [stream[e * n:(e + 1) * n] for e in range(3)]
  for e in epochs:
    assert sorted(e) == list(range(n))
  assert not np.array_equal(epochs[0], epochs[1])  # reshuffled
  # A pure function of (seed, j): the same batch again, another seed differs.
  np.testing.assert_array_equal(ds[7], pipeline.index_batches(
      ex.label, 8, seed=5)[7])
  assert not np.array_equal(ds[7], pipeline.index_batches(
      ex.label, 8, seed=6)[7])
