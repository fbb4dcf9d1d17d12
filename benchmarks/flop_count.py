"""FLOPs of a JAX function counted from its jaxpr: the same number on every
backend and jax version, with nothing lowered or compiled.

Why: the throughput issue asks for FLOPs from the unoptimised program, not
from the compiled one (on GPU the compiled cost analysis leaves out cuDNN
convolutions). jax 0.11.2 on an H200 reported no FLOPs for the lowered
program either, for the GPU or a CPU lowering (benchmarks/RESULTS.md), so
utilisation there had to be counted on another machine. Walking the jaxpr
needs no backend at all.

Counted as XLA's HLO cost analysis counts them (so the two agree, which
tests/test_benchmark.py checks):

* ``dot_general``: 2 x batch x M x N x K.
* ``conv_general_dilated``: 2 multiply-adds per kernel tap that lands on a
  real input element: taps on padding or on the holes of an input dilation
  (transposed convolutions) are not counted, per spatial dimension exactly.
* elementwise arithmetic (add, mul, max, compare, select, ...): 1 per output
  element; transcendentals (exp, log, tanh, ...) are counted apart, as XLA
  does; reductions: 1 per input element folded in.
* ``scan``: its body times its length; ``cond``: the costliest branch;
  ``while``: the body once (the trip count is not static), flagged in
  ``unbounded_loops``. Calls, remat, custom JVP/VJP rules: their bodies.

``matmul_flops`` (convolutions and dots alone) is the usual numerator of
model FLOP utilisation; ``flops`` adds the elementwise work, like XLA's.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
from jax._src.interpreters import partial_eval as pe  # dce_jaxpr
from jax.extend import core as jex_core

_ELEMENTWISE = frozenset("""
add sub mul div rem max min neg abs sign floor ceil round nextafter
eq ne lt le gt ge and or not xor select_n clamp square
copysign add_any is_finite shift_left
shift_right_logical shift_right_arithmetic population_count clz
convert_element_type
""".split())
_TRANSCENDENTAL = frozenset("""
exp exp2 expm1 log log1p tanh sin cos tan asin acos atan sinh cosh
asinh acosh atanh sqrt rsqrt cbrt erf erfc erf_inv lgamma digamma pow
atan2
""".split())
_REDUCTIONS = frozenset("""
reduce_sum reduce_max reduce_min reduce_prod reduce_and reduce_or argmax
argmin cumsum cumprod cummax cummin cumlogsumexp
""".split())
_THREEFRY_OPS_PER_WORD = 29


@dataclasses.dataclass
class FlopCount:
  flops: float = 0.0           # everything XLA would call a flop
  matmul_flops: float = 0.0    # convolutions and dots alone
  transcendentals: float = 0.0
  unbounded_loops: int = 0     # while loops counted once

  def add(self, other: "FlopCount", times: float = 1.0) -> None:
    self.flops += times * other.flops
    self.matmul_flops += times * other.matmul_flops
    self.transcendentals += times * other.transcendentals
    self.unbounded_loops += other.unbounded_loops


def _size(aval) -> int:
  return math.prod(getattr(aval, "shape", ()))


def _dot_flops(eqn) -> float:
  lhs, rhs = (v.aval for v in eqn.invars)
  (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
  contract = math.prod(lhs.shape[d] for d in lc)
  batch = math.prod(lhs.shape[d] for d in lb)
  lhs_free = _size(lhs) // max(contract * batch, 1)
  rhs_free = _size(rhs) // max(math.prod(rhs.shape[d] for d in rc)
                               * math.prod(rhs.shape[d] for d in rb), 1)
  return 2.0 * batch * lhs_free * rhs_free * contract


def _valid_taps(in_size, out_size, k_size, stride, pad_lo, lhs_dil, rhs_dil):
  """(output position, kernel position) pairs of one spatial dimension that
  read a real input element (not padding, not a dilation hole)."""
  last = (in_size - 1) * lhs_dil
  count = 0
  for o in range(out_size):
    base = o * stride - pad_lo
    for k in range(k_size):
      i = base + k * rhs_dil
      if 0 <= i <= last and i % lhs_dil == 0:
        count += 1
  return count


def _conv_flops(eqn) -> float:
  lhs, rhs = (v.aval for v in eqn.invars)
  out = eqn.outvars[0].aval
  p = eqn.params
  lhs_spec, rhs_spec, out_spec = p["dimension_numbers"]
  spatial = len(lhs_spec) - 2
  taps = 1
  for d in range(spatial):
    taps *= _valid_taps(
        lhs.shape[lhs_spec[2 + d]], out.shape[out_spec[2 + d]],
        rhs.shape[rhs_spec[2 + d]], p["window_strides"][d],
        p["padding"][d][0], (p["lhs_dilation"] or (1,) * spatial)[d],
        (p["rhs_dilation"] or (1,) * spatial)[d])
  # Each output (batch, feature) row sums over the kernel's input features.
  rows = out.shape[out_spec[0]] * out.shape[out_spec[1]]
  return 2.0 * rows * rhs.shape[rhs_spec[1]] * taps


def _sub_jaxprs(params: dict[str, Any]):
  for v in params.values():
    items = v if isinstance(v, (tuple, list)) else (v,)
    for j in items:
      if isinstance(j, jex_core.ClosedJaxpr):
        yield j.jaxpr
      elif isinstance(j, jex_core.Jaxpr):
        yield j


def count_jaxpr(jaxpr) -> FlopCount:
  """FLOPs of every equation of ``jaxpr`` (dead code already removed, see
  ``count``)."""
  total = FlopCount()
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    out_size = sum(_size(v.aval) for v in eqn.outvars)
    if name == "dot_general":
      f = _dot_flops(eqn)
      total.flops += f
      total.matmul_flops += f
    elif name == "conv_general_dilated":
      f = _conv_flops(eqn)
      total.flops += f
      total.matmul_flops += f
    elif name in _ELEMENTWISE:
      total.flops += out_size
    elif name in _TRANSCENDENTAL:
      total.transcendentals += out_size
    elif name == "integer_pow":  # x ** n: n - 1 multiplies
      total.flops += out_size * max(abs(eqn.params["y"]) - 1, 1)
    elif name == "logistic":  # 1 / (1 + exp(-x))
      total.transcendentals += out_size
      total.flops += 3 * out_size
    elif name in _REDUCTIONS:
      total.flops += max(_size(eqn.invars[0].aval) - out_size, 0)
    elif name.startswith("reduce_window"):
      # Pooling: every output folds its window.
      total.flops += out_size * (
          math.prod(eqn.params["window_dimensions"]) - 1)
    elif name == "select_and_scatter_add":
      # Max-pool's gradient: a selection over each source element's window.
      total.flops += _size(eqn.invars[0].aval) * math.prod(
          eqn.params["window_dimensions"])
    elif name == "random_bits":
      # threefry2x32 as XLA lowers it: 29 integer ops per 32-bit word.
      total.flops += _THREEFRY_OPS_PER_WORD * out_size * max(
          eqn.params["bit_width"] // 32, 1)
    elif name == "scan":
      # Carries feed back into the body: all of it runs.
      total.add(count_jaxpr(eqn.params["jaxpr"].jaxpr),
                eqn.params["length"])
    elif name == "cond":
      branches = [count_jaxpr(b.jaxpr) for b in eqn.params["branches"]]
      total.add(max(branches, key=lambda c: c.flops))
    elif name == "while":
      total.add(count_jaxpr(eqn.params["body_jaxpr"].jaxpr))
      total.add(count_jaxpr(eqn.params["cond_jaxpr"].jaxpr))
      total.unbounded_loops += 1
    else:
      # Calls (jit, remat, custom_jvp/vjp, shard_map): their bodies once.
      # A custom_vjp carries its rules as params too; after autodiff the
      # jaxpr holds the rules that run, so the first body is the
      # computation.
      subs = list(_sub_jaxprs(eqn.params))
      if subs:
        total.add(count_jaxpr(subs[0]))
  return total


def count(fn, *args, **kwargs) -> FlopCount:
  """FLOPs of ``fn(*args, **kwargs)``; arrays or ShapeDtypeStructs."""
  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype)
      if hasattr(x, "shape") else x, (args, kwargs))
  closed = jax.make_jaxpr(fn)(*abstract[0], **abstract[1])
  # jit's own dead-code pass, as lowering runs it: it recurses into scans,
  # conds, calls and custom rules, pruning dead carries, outputs and inputs.
  jaxpr, _ = pe.dce_jaxpr(closed.jaxpr, [True] * len(closed.jaxpr.outvars))
  return count_jaxpr(jaxpr)
