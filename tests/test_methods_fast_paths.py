"""Every method's training step on the fast paths gives the plain path's
numbers: the batch sharded over 4 devices, gathered from device-resident
frames, two steps scanned in one dispatch, all at once, against one device,
host batches and one step per dispatch (tests/test_fast_paths.py does the
same for GNDL through the whole trainer).

Each method runs in a subprocess with 4 simulated CPU devices.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))

SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path[:0] = [%(tests)r, %(benchmarks)r]
    import jax, numpy as np
    import throughput
    from fer_jax import sharding, steps
    assert jax.device_count() == 4, jax.devices()
    import %(module)s as m
    cfg = m.tiny_config(%(args)s)
    %(setup)s
    method, phase, shape, ncls = throughput._setup(cfg, None, %(phase)r)
    assert phase.batch_size %% 4 == 0, phase.batch_size
    rng = np.random.default_rng(0)
    slots = throughput.protocols.EXAMPLE_KINDS[phase.example_kind]
    n = 3 * phase.batch_size
    split = {"images": rng.integers(0, 256, (n,) + shape, dtype=np.uint8),
             "rows": {s: rng.permutation(n).astype(np.int32) for s in slots},
             "label": rng.integers(0, ncls, (n,), dtype=np.int32)}
    if phase.with_landmarks:
      split["landmarks"] = (rng.uniform(0.2, 0.8, (n, 68, 2)) *
                            shape[0]).astype(np.float32)
    index = [rng.permutation(n)[:phase.batch_size].astype(np.int32)
             for _ in range(2)]

    def host_batch(idx):
      b = {}
      for s in slots:
        rows = split["rows"][s][idx]
        b[s] = split["images"][rows]
        if "landmarks" in split:
          b[s + "_landmarks"] = split["landmarks"][rows]
      b["label"] = split["label"][idx]
      return b

    def run(ndev, resident, group):
      mesh = sharding.make_mesh(jax.devices()[:ndev])
      host = host_batch(index[0])
      loop = jax.jit(lambda: steps.init_loop_state(method, 0, host),
                     out_shardings=sharding.replicated(mesh))()
      data = (jax.device_put(split, sharding.replicated(mesh)) if resident
              else None)
      batches = [{"index": i} if resident else host_batch(i) for i in index]
      fn = jax.jit(steps.dispatch_step(phase.step, True, group, resident))
      if group == 1:
        out = []
        for b in batches:
          loop, metrics = fn(loop, sharding.to_global(b, mesh), data)
          out.append(metrics)
      else:
        stacked = {k: np.stack([b[k] for b in batches]) for k in batches[0]}
        loop, metrics = fn(loop, sharding.to_global(stacked, mesh,
                                                    stacked=True), data)
        out = [jax.tree.map(lambda v: v[i], metrics) for i in range(group)]
      if ndev == 4:
        assert len(loop["step"].sharding.device_set) == 4
      return [{k: float(v) for k, v in jax.device_get(o).items()}
              for o in out]

    print(json.dumps({"plain": run(1, False, 1), "fast": run(4, True, 2)}))
""")

# (test module, tiny_config args, extra setup line, phase). GNDL's fast
# paths are tested through the whole trainer in tests/test_fast_paths.py.
SLOW = pytest.mark.slow  # over a minute on 2 cores (the biggest steps)
CASES = {
    "ifgan": ("test_ifgan", "", "", None),
    "groupgan_2v2": ("test_groupgan", "'2v2'", "", None),
    "cgan_wsc": ("test_cgan_wsc", "", "", "cgan"),
    "sna_fer_sna": ("test_sna", "", "cfg.sna.fer.batch_size = 28",
                    "fer_sna"),
    "sna_ae_refine": ("test_sna", "", "", "ae_refine"),
}


# Every case compiles its step three ways with threefry keys and no warm
# compilation cache in CI: 3-10 minutes each on 2 cores, so all run with -m
# slow. CI keeps the generic fast paths (tests/test_fast_paths.py, GNDL).
@pytest.mark.parametrize("case", [pytest.param(c, marks=SLOW)
                                  for c in sorted(CASES)])
def test_sharded_resident_and_scanned_steps_match_the_plain_step(case):
  module, args, setup, phase = CASES[case]
  # JAX's default keys, as training uses: threefry with partitionable bits
  # draws the same dropout masks however the batch is sharded. (The suite's
  # conftest picks 'rbg' keys for compile speed; those draw per-shard bits,
  # so masks, and losses, would differ by design.)
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu", JAX_DEFAULT_PRNG_IMPL="threefry2x32")
  script = SCRIPT % {"tests": TESTS,
                     "benchmarks": os.path.join(TESTS, "..", "benchmarks"),
                     "module": module, "args": args, "setup": setup,
                     "phase": phase}
  out = subprocess.run([sys.executable, "-c", script], env=env,
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-4000:]
  got = json.loads(out.stdout.strip().splitlines()[-1])
  plain = got["plain"]
  assert len(plain) == 2 and plain[0], got
  for step, (want, have) in enumerate(zip(plain, got["fast"])):
    assert want.keys() == have.keys()
    for k in want:
      tol = 1e-4 * max(1.0, abs(want[k]))
      assert abs(want[k] - have[k]) <= tol, (step, k, want[k], have[k])
