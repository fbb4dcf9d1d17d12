"""Every method's state digest after a fixed few-step run: a refactor that
claims to change no behaviour must leave these equal.

  python benchmarks/state_digests.py            # print {method: digest}
  python benchmarks/state_digests.py --check    # compare with state_digests.json

Each method trains its tiny config (a few steps per phase, narrow nets) on
one in-memory table (tests/conftest.build_table, landmarks included) and the
digest is eval/report.json's state_digest. CPU, counter-based keys as in the
tests (tests/conftest.py), so the numbers are the suite's.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_DEFAULT_PRNG_IMPL", "rbg")
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    os.path.join(tempfile.gettempdir(), "fer_jax_test_xla_cache"))

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RECORD = os.path.join(HERE, "state_digests.json")
METHODS = ("baseline", "gndl", "ifgan", "groupgan", "cgan_wsc", "sna")


def tiny_config(method: str):
  """The method's tiny run (the sizes its tests train at), fixed here so the
  record does not move when the tests do."""
  from fer_jax import config_lib  # pylint: disable=import-outside-toplevel
  c = config_lib.load_config_module(
      os.path.join(ROOT, "configs", f"{method}.py")).get_config()
  c.data.num_folds = 3
  c.model.base_width = 8
  c.train.progress_bar = False
  c.train.async_checkpoint = False
  c.train.eval_every = 0
  if method in ("baseline", "gndl"):
    c.data.resize, c.data.crop = 16, 16
    c.train.update(batch_size=8, eval_batch_size=16, num_steps=4,
                   log_every=2, checkpoint_every=2)
  elif method == "ifgan":
    c.data.resize, c.data.crop = 16, 16
    c.data.rotate_deg = 0.0
    c.ifgan.update(unet_depth=3, unet_features=8, unet_max_features=16,
                   d_features=8, d_layers=2)
    c.optim.schedule = "constant"
    c.train.update(batch_size=8, eval_batch_size=8, num_steps=4,
                   log_every=2, checkpoint_every=2)
  elif method == "groupgan":
    c.data.resize, c.data.crop = 32, 32
    c.data.rotate_deg = 0.0
    c.basenet = "vgg11_bn"
    c.groupgan.update(fc_width=16, g_features=(4, 8, 8, 8),
                      d_features=(4, 8, 8, 8), d_fc_width=8,
                      extractor_steps=2, autoencoder_steps=2,
                      g_residual=False)
    c.optim.update(name="sgd", lr=0.05, momentum=0.0, weight_decay=0.0,
                   schedule="constant")
    c.train.update(batch_size=4, eval_batch_size=8, num_steps=2,
                   log_every=1, checkpoint_every=1)
  elif method == "cgan_wsc":
    c.data.resize, c.data.crop = 32, 32
    c.cgan_wsc.update(unet_depth=5, unet_features=8, unet_max_features=16,
                      d_features=8, d_layers=2, cgan_steps=2,
                      landmark_steps=2, max_iter=20, knn_k=10,
                      rank_order_k=5)
    c.train.update(batch_size=4, eval_batch_size=16, log_every=1,
                   checkpoint_every=2)
  elif method == "sna":
    c.data.resize, c.data.crop = 32, 32
    s = c.sna
    s.widths, s.fc = (4, 4, 8, 8, 4), (8, 4)
    s.ae_widths, s.ae_top_width = (4, 4, 8, 8), 4
    s.critic_widths = (4, 8)
    for stage in (s.fer, s.ae, s.refine):
      stage.num_steps = 2
    s.fer.batch_size, s.ae.batch_size, s.refine.batch_size = 14, 8, 8
    s.fer.optim.update(weight_decay=0.0, schedule="constant")
    c.train.update(eval_batch_size=16, log_every=1, checkpoint_every=1)
  return c


def digest(method: str, workdir: str) -> str:
  sys.path.insert(0, os.path.join(ROOT, "tests"))
  from conftest import build_table  # pylint: disable=import-outside-toplevel
  from fer_jax import train  # pylint: disable=import-outside-toplevel
  from fer_jax.data import run_data  # pylint: disable=import-outside-toplevel
  table = build_table(num_subjects=6, num_frames=8, image_size=32,
                      with_landmarks=True)
  config = tiny_config(method)
  report = train.Trainer(config, workdir,
                         run_data.from_table(config, table)).train()
  with open(os.path.join(workdir, "eval", "report.json")) as f:
    assert json.load(f)["state_digest"] == report["state_digest"]
  return report["state_digest"]


def main(argv) -> int:
  methods = [a for a in argv if not a.startswith("--")] or METHODS
  got = {}
  for m in methods:
    with tempfile.TemporaryDirectory() as wd:
      got[m] = digest(m, wd)
    print(f"{m}: {got[m]}", flush=True)
  if "--check" not in argv:
    print(json.dumps(got, indent=2))
    return 0
  with open(RECORD) as f:
    want = json.load(f)
  bad = {m: (want.get(m), d) for m, d in got.items() if want.get(m) != d}
  print("state digests " + ("DIFFER: " + json.dumps(bad) if bad else
                            "match the record"))
  return 1 if bad else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
