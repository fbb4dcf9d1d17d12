"""The same GNDL step on 1 device and on 4 simulated CPU devices."""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import os, json, tempfile
    import jax, numpy as np
    from fer_jax import config_lib, sharding, steps, train
    from fer_jax.data import run_data
    from fer_jax.data.frames import FrameTable
    assert jax.device_count() == 4, jax.devices()
    cfg = config_lib.load_config_module(os.path.join(%(configs)r, "gndl.py")).get_config()
    cfg.data.resize = cfg.data.crop = 16
    cfg.model.base_width = 8
    cfg.train.batch_size = 8
    rng = np.random.default_rng(0)
    S, Q, F = 6, 7, 8
    n = S * Q * F
    fi = np.tile(np.arange(F), S * Q).astype(np.int32)
    table = FrameTable("fake", rng.integers(0, 255, (n, 16, 16, 3), dtype=np.uint8),
                       np.repeat(np.tile([0, 1, 2, 3, 4, 6, 7], S), F).astype(np.int32),
                       np.repeat(np.arange(S), Q * F).astype(np.int32),
                       np.repeat(np.arange(S * Q), F).astype(np.int32), fi,
                       np.full(n, F, np.int32), fi / (F - 1.0), None)
    losses = {}
    for ndev in (1, 4):
      mesh = sharding.make_mesh(jax.devices()[:ndev])
      tr = train.Trainer(cfg, tempfile.mkdtemp(),
                         run_data.from_table(cfg, table), mesh=mesh)
      loop = tr.init_state()
      phase = tr.phases[0]
      it = train.pipeline.TrainIterator(tr.data.examples("train", phase.example_kind, phase.role), 8, seed=0)
      step = jax.jit(steps.guarded_step(phase.step, True))
      out = []
      for _ in range(3):
        batch = sharding.to_global(next(it), mesh)
        loop, m = step(loop, batch)
        out.append(float(m["loss"]))
      losses[ndev] = out
      if ndev == 4:
        assert len(batch["image"].sharding.device_set) == 4
    print(json.dumps(losses))
""")


def test_one_and_four_devices_agree():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu")
  configs = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                         "configs")
  out = subprocess.run([sys.executable, "-c", SCRIPT % {"configs": configs}],
                       env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  import json
  losses = json.loads(out.stdout.strip().splitlines()[-1])
  one, four = losses["1"], losses["4"]
  assert len(one) == 3
  for a, b in zip(one, four):
    assert abs(a - b) <= 1e-4 * max(1.0, abs(a)), (one, four)
