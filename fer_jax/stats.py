"""Paired comparisons of runs: Student-t intervals with numpy and math only.

scipy is a test-only dependency, so the t quantile is computed here: the
t CDF from the regularized incomplete beta function (a continued fraction),
inverted by bisection. Agrees with scipy.stats.t.ppf to ~1e-10 for any df
(tests/test_compare.py).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

_EPS = 1e-15
_TINY = 1e-300
# Above this df t_ppf uses the Cornish-Fisher series in 1/df (error
# ~z^11/df^5, < 1e-20 here) and t_sf the normal tail (error < 1e-7): the
# continued fraction would need ~sqrt(df) terms.
_LARGE_DF = 1e5
_NORMAL_DF = 1e7


def _beta_cf(a: float, b: float, x: float) -> float:
  """Continued fraction of I_x(a, b) (modified Lentz; Numerical Recipes)."""
  qab, qap, qam = a + b, a + 1.0, a - 1.0
  c, d = 1.0, 1.0 - qab * x / qap
  d = 1.0 / (d if abs(d) > _TINY else _TINY)
  h = d
  for m in range(1, 100_000):
    m2 = 2 * m
    for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)),
               -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
      d = 1.0 + aa * d
      d = 1.0 / (d if abs(d) > _TINY else _TINY)
      c = 1.0 + aa / c
      c = c if abs(c) > _TINY else _TINY
      h *= d * c
    if abs(d * c - 1.0) < _EPS:
      return h
  raise ArithmeticError(f"incomplete beta did not converge (a={a}, b={b}, "
                        f"x={x})")


def betainc(a: float, b: float, x: float) -> float:
  """The regularized incomplete beta function I_x(a, b), a, b > 0."""
  if x <= 0.0:
    return 0.0
  if x >= 1.0:
    return 1.0
  log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
               + a * math.log(x) + b * math.log1p(-x))
  # The fraction converges fast on this side of the mean; use symmetry
  # on the other.
  if x < (a + 1.0) / (a + b + 2.0):
    return math.exp(log_front) * _beta_cf(a, b, x) / a
  return 1.0 - math.exp(log_front) * _beta_cf(b, a, 1.0 - x) / b


def _t_tail(t: float, df: float) -> float:
  """P(T > t), t >= 0: accurate far out in the tail."""
  return 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))


def _t_central(t: float, df: float) -> float:
  """P(0 < T < t), t >= 0: accurate near 0, where 0.5 - tail cancels."""
  return 0.5 * betainc(0.5, df / 2.0, t * t / (df + t * t))


def _normal_sf(z: float) -> float:
  return 0.5 * math.erfc(z / math.sqrt(2.0))


def _bisect_up(f, target: float) -> float:
  """The t >= 0 where the increasing f(t) reaches target (0 < target)."""
  lo, hi = 0.0, 1.0
  while f(hi) < target:  # df=1, upper tail 1e-12: t ~ 3e11
    lo, hi = hi, 2.0 * hi
  for _ in range(400):
    mid = 0.5 * (lo + hi)
    if f(mid) < target:
      lo = mid
    else:
      hi = mid
    if hi - lo <= 2 * _EPS * hi:
      break
  return 0.5 * (lo + hi)


def normal_ppf(p: float) -> float:
  """The standard normal p quantile (bisection on erfc)."""
  if p == 0.5:
    return 0.0
  if p < 0.5:
    return -normal_ppf(1.0 - p)
  q = 1.0 - p
  if q > 0.25:  # 0.5 - sf cancels near 0: use P(0 < Z < z) there
    return _bisect_up(lambda z: 0.5 * math.erf(z / math.sqrt(2.0)), p - 0.5)
  return _bisect_up(lambda z: -_normal_sf(z), -q)


def t_sf(t: float, df: float) -> float:
  """P(T > t) for Student's t with ``df`` degrees of freedom."""
  if df <= 0:
    raise ValueError(f"df={df} must be positive")
  if df > _NORMAL_DF:
    return _normal_sf(t)
  at = abs(t)
  tail = (_t_tail(at, df) if at * at > df
          else 0.5 - _t_central(at, df))
  return tail if t >= 0 else 1.0 - tail


def t_cdf(t: float, df: float) -> float:
  return t_sf(-t, df)


def t_ppf(p: float, df: float) -> float:
  """The p quantile of Student's t (inverse CDF)."""
  if df <= 0:
    raise ValueError(f"df={df} must be positive")
  if not 0.0 < p < 1.0:
    if p in (0.0, 1.0):
      return math.copysign(math.inf, p - 0.5)
    raise ValueError(f"p={p} must be in [0, 1]")
  if p == 0.5:
    return 0.0
  if p < 0.5:
    return -t_ppf(1.0 - p, df)
  if df > _LARGE_DF:  # Abramowitz & Stegun 26.7.5
    z = normal_ppf(p)
    g = ((z**3 + z) / 4,
         (5 * z**5 + 16 * z**3 + 3 * z) / 96,
         (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384,
         (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z)
         / 92160)
    return z + sum(gi / df**(i + 1) for i, gi in enumerate(g))
  q = 1.0 - p
  if q > 0.25:  # p - 0.5 is exact here, 1 - p - 0.5 is not
    return _bisect_up(lambda t: _t_central(t, df), p - 0.5)
  return _bisect_up(lambda t: -_t_tail(t, df), -q)


def mean_interval(x: Sequence[float], confidence: float = 0.95
                  ) -> tuple[int, float, tuple[float, float]]:
  """(n, mean, (lo, hi)): the Student-t interval for the mean of ``x``.

  n = 1 gives (-inf, inf) (one value says nothing about its spread); n = 0
  gives nan; a constant sample a zero-width interval at its value.
  """
  x = np.asarray(x, np.float64).ravel()
  if not np.all(np.isfinite(x)):
    raise ValueError(f"non-finite values in {x}")
  n = len(x)
  if n == 0:
    return 0, math.nan, (math.nan, math.nan)
  mean = float(x.mean())
  if n == 1:
    return 1, mean, (-math.inf, math.inf)
  sd = float(x.std(ddof=1))
  half = t_ppf(0.5 + confidence / 2.0, n - 1) * sd / math.sqrt(n)
  return n, mean, (mean - half, mean + half)


def group_means(x: Sequence[float], groups: Sequence
                ) -> tuple[list, list[float]]:
  """(the groups in sorted order, the mean of ``x`` in each)."""
  if len(x) != len(groups):
    raise ValueError(f"{len(x)} values but {len(groups)} group labels")
  keys = sorted(set(groups))
  sums = {k: [0.0, 0] for k in keys}
  for v, g in zip(x, groups):
    sums[g][0] += float(v)
    sums[g][1] += 1
  return keys, [sums[k][0] / sums[k][1] for k in keys]


def paired_difference(a: Sequence[float], b: Sequence[float],
                      confidence: float = 0.95, groups: Sequence | None = None
                      ) -> tuple[int, float, tuple[float, float]]:
  """(n, mean of a - b, t interval of it, df = n - 1) for paired samples.

  Pairing (same fold and seed in both) removes the fold-to-fold spread
  that both arms share, so a small gain can be told from fold noise.
  ``groups``: each pair's unit (its fold). Pairs of one unit are not
  independent (a fold's seeds share its test faces), so their differences
  are averaged first and n counts units: the interval is over units.
  """
  a = np.asarray(a, np.float64).ravel()
  b = np.asarray(b, np.float64).ravel()
  if a.shape != b.shape:
    raise ValueError(f"paired samples differ in length: {len(a)} vs {len(b)}")
  if groups is None:
    return mean_interval(a - b, confidence)
  return mean_interval(group_means(a - b, groups)[1], confidence)


def std(x: Sequence[float]) -> float:
  """Sample standard deviation (ddof 1); nan below two values."""
  x = np.asarray(x, np.float64).ravel()
  return float(x.std(ddof=1)) if len(x) > 1 else math.nan
