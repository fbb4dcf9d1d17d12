"""Is a twin the same work as fer_jax's step? Parameters per network and
matmul/convolution FLOPs per training step, from shapes on the jax side
(``jax.eval_shape`` of the state, ``flop_count`` of the step's jaxpr) and
from one step of the twin on the CPU (``flops.count``)."""

from __future__ import annotations

import dataclasses
import math

import jax
import torch

import flop_count
import throughput
from fer_jax import steps as step_lib
from torch_reference import flops as torch_flops
from torch_reference import nets as torch_nets
from torch_reference import steps as twin_steps

# Where each twin network's params sit in fer_jax's method state.
JAX_PARAMS = {
    "gndl": {"net": ("params",)},
    "ifgan": {k: (k, "params") for k in ("g", "d", "e")},
    "cgan_wsc": {k: (k, "params") for k in ("g", "d")},
    "sna": {"fer": ("fer", "params"), "fer0": ("fer0", "params"),
            "enc": ("ae", "params", "enc"), "dec": ("ae", "params", "dec"),
            "critic": ("critic", "params")},
    "groupgan": {k: (k, "params") for k in ("c", "e", "g", "d", "dp")},
}


@dataclasses.dataclass
class Parity:
  jax_params: dict[str, int]
  torch_params: dict[str, int]
  jax_matmul_flops: float  # convolutions and dots of the plain step
  torch_flops: float  # FlopCounterMode, real taps (flops.REAL_TAP_MAPPING)
  torch_flops_all_taps: float  # FlopCounterMode's own formulas
  batch: int


def _size(tree) -> int:
  return int(sum(math.prod(x.shape) for x in jax.tree.leaves(tree)))


def jax_side(config, batch_size=None, phase=None):
  """(params per network, matmul FLOPs of one step, phase batch size)."""
  plain = throughput.plain(config)
  method, ph, image_shape, k = throughput._setup(  # pylint: disable=protected-access
      plain, batch_size, phase)
  host = throughput.random_batch(ph, image_shape, k)
  state = jax.eval_shape(lambda: method.init_state(jax.random.key(0), host))
  params = {}
  for name, path in JAX_PARAMS[config.method].items():
    tree = state
    for p in path:
      tree = tree[p]
    params[name] = _size(tree)
  loop = jax.eval_shape(lambda: step_lib.init_loop_state(method, 0, host))
  one = step_lib.dispatch_step(ph.step, True, 1, False)
  counted = flop_count.count(one, loop, host, None)
  return params, counted.matmul_flops, ph.batch_size, k


def check(config, batch_size=None, phase=None, seed=0) -> Parity:
  """Both sides of one step at ``config`` (run the twin on the CPU in
  float32: keep the sizes small)."""
  jax_params, jax_flops, batch, k = jax_side(config, batch_size, phase)
  torch.manual_seed(seed)
  twin = twin_steps.build(config, k, "cpu", phase, batch)
  torch_params = {n: torch_nets.count_params(m) for n, m in twin.nets.items()}
  data = twin.make_batch(seed)
  real, _ = torch_flops.count(twin.step, data)
  full, _ = torch_flops.count(twin.step, data, real_taps=False)
  return Parity(jax_params, torch_params, jax_flops, real, full, batch)


def relative_gap(a: float, b: float) -> float:
  return abs(a - b) / max(abs(a), abs(b), 1.0)


# The suite's steps, at each config's :tiny preset.
TINY_CASES = (("gndl.py", None), ("ifgan.py", None), ("cgan_wsc.py", "cgan"),
              ("sna.py", "fer_sna"), ("sna.py", "ae_refine"),
              ("groupgan.py", None))


def main() -> None:
  """``cd benchmarks && python -m torch_reference.parity``: the parity
  table at the :tiny configs, as markdown rows."""
  import os  # pylint: disable=import-outside-toplevel
  from fer_jax.config_lib import load_config_module  # pylint: disable=import-outside-toplevel
  root = os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))))
  print("| step (:tiny) | batch | params per network (jax = torch?) | jaxpr "
        "conv+dot MFLOP | torch, real taps | torch, own formula |")
  print("| --- | --- | --- | --- | --- | --- |")
  for name, phase in TINY_CASES:
    cfg = load_config_module(os.path.join(root, "configs", name)).get_config(
        "tiny")
    p = check(cfg, phase=phase)
    same = "yes" if p.jax_params == p.torch_params else "NO"
    print(f"| {name[:-3]}:{phase or 'last'} | {p.batch} | {same}: "
          f"{p.jax_params} | {p.jax_matmul_flops / 1e6:.3f} | "
          f"{p.torch_flops / 1e6:.3f} | {p.torch_flops_all_taps / 1e6:.3f} |",
          flush=True)


if __name__ == "__main__":
  main()
