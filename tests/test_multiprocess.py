"""Two processes (jax.distributed on CPU, gloo collectives, a coordinator on
127.0.0.1) train the same short run as one process: same losses, same
final parameters, same report. This is the multi-host code path (per-process
batch rows, global arrays, Orbax from every process) run on one machine."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np

WORKER = textwrap.dedent("""
    import json, os, sys
    sys.path.insert(0, %(tests)r)
    import jax
    nproc, pid, port, workdir = (int(sys.argv[1]), int(sys.argv[2]),
                                 sys.argv[3], sys.argv[4])
    if nproc > 1:
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
      jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=nproc,
                                 process_id=pid)
    from fer_jax import train
    import conftest, test_train
    table = conftest.build_table(num_subjects=6, num_frames=8, image_size=16)
    cfg = test_train.tiny_config(num_steps=4, log_every=1,
                                 checkpoint_every=2)
    cfg.data.device_resident = %(resident)r
    report = train.Trainer(cfg, workdir,
                           conftest.table_data(table)(cfg)).train()
    if pid == 0:
      losses = [json.loads(l)["train/loss"] for l in
                open(os.path.join(workdir, "metrics.jsonl"))
                if "train/loss" in l]
      print("RESULT " + json.dumps({
          "losses": losses, "digest": report["state_digest"],
          "accuracy": report["accuracy"],
          "devices": jax.device_count(), "processes": jax.process_count()}))
""")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _run(nproc, workdir, resident="off"):
  tests = os.path.dirname(os.path.abspath(__file__))
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)  # one CPU device per process
  script = WORKER % {"tests": tests, "resident": resident}
  port = str(_free_port())
  procs = [subprocess.Popen([sys.executable, "-c", script, str(nproc),
                             str(i), port, workdir], env=env, cwd=tests,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True) for i in range(nproc)]
  outs = [p.communicate(timeout=400) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  line = next(l for l in outs[0][0].splitlines() if l.startswith("RESULT "))
  return json.loads(line[len("RESULT "):])


def test_two_processes_train_like_one(tmp_path):
  one = _run(1, str(tmp_path / "one"))
  two = _run(2, str(tmp_path / "two"), resident="on")
  assert (one["processes"], two["processes"]) == (1, 2)
  assert two["devices"] == 2
  assert len(one["losses"]) == 4
  # 2 devices split each batch; BatchNorm statistics stay global, so only
  # reduction order differs.
  np.testing.assert_allclose(two["losses"], one["losses"], rtol=1e-4)
  assert abs(two["accuracy"] - one["accuracy"]) <= 0.05
