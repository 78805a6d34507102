"""Power-law fits for scaling curves, with bootstrap intervals (issue 17).

    L(x) = a * x^-b            (fit_power_law)
    L(x) = e + a * x^-b        (irreducible=True: e is the loss no compute removes)

Least squares on log L (the residuals of a scaling curve are multiplicative: a 1% miss at a
small and at a large loss weigh the same). Without an irreducible term this is a straight
line in log-log space and numpy solves it exactly; with one, scipy's bounded least squares
(0 <= e < min L) starting from the line. `choose_fit` keeps the irreducible term only when
the data support it: enough points (>= 5) and a lower AICc than the pure power law.

Intervals: a bootstrap over points (resampling (x, L) pairs with replacement, refitting,
percentile intervals). With few points it is wide, and honest about it; a resample with
fewer than 3 distinct x is skipped (a line through 2 points has no spread to learn from).
Predictions at an x outside the fitted range are flagged as extrapolation by `predict`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import numpy as np

try:  # the bounded fit of the irreducible term; the pure power law needs only numpy
  from scipy import optimize
except ImportError:  # pragma: no cover - scipy is a dependency of the venv
  optimize = None


@dataclasses.dataclass(frozen=True)
class PowerLaw:
  """L(x) = e + a * x^-b, fitted on x in [x_min, x_max] from n points."""

  a: float
  b: float
  e: float
  x_min: float
  x_max: float
  n: int
  rms_log: float  # root mean square residual of log L

  def __call__(self, x):
    return self.e + self.a * np.power(np.asarray(x, float), -self.b)

  @property
  def irreducible(self) -> bool:
    return self.e > 0


def _line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
  """(a, b) of y = a x^-b by least squares in log-log space."""
  slope, intercept = np.polyfit(np.log(x), np.log(y), 1)
  return float(math.exp(intercept)), float(-slope)


def fit_power_law(x: Sequence[float], y: Sequence[float], irreducible: bool = False
                  ) -> PowerLaw:
  """The least-squares (log L) power law through (x, y); see the module docstring. The
  irreducible fit starts from the plain power law (e = 0) with an analytic Jacobian."""
  x, y = np.asarray(x, float), np.asarray(y, float)
  if len(x) < 2 or len(np.unique(x)) < 2:
    raise ValueError(f"a power law needs 2 or more distinct x, got {len(np.unique(x))}")
  if np.any(x <= 0) or np.any(y <= 0):
    raise ValueError("a power law in log space needs positive x and L")
  a, b = _line(x, y)
  e = 0.0
  if irreducible:
    if optimize is None:
      raise ImportError("the irreducible term needs scipy")
    # parameters: log a, b, e; x scaled to 1 at its geometric mean for conditioning
    scale = float(np.exp(np.mean(np.log(x))))
    xs = x / scale

    def residuals(p):
      return np.log(p[2] + np.exp(p[0]) * np.power(xs, -p[1])) - np.log(y)

    def jacobian(p):  # d residual / d (log a, b, e)
      term = np.exp(p[0]) * np.power(xs, -p[1])
      total = p[2] + term
      return np.stack([term / total, -term * np.log(xs) / total, 1.0 / total], axis=1)
    upper = float(np.min(y)) * (1 - 1e-9)
    p0 = [math.log(a * scale ** -b), min(max(b, 1e-3), 10.0), 0.0]  # inside the bounds
    fit = optimize.least_squares(residuals, p0, jac=jacobian,
                                 bounds=([-np.inf, 0.0, 0.0], [np.inf, 10.0, upper]))
    log_a, b, e = fit.x
    a = float(math.exp(log_a) * scale ** b)
  law = PowerLaw(a=float(a), b=float(b), e=float(e), x_min=float(x.min()),
                 x_max=float(x.max()), n=len(x), rms_log=0.0)
  rms = float(np.sqrt(np.mean((np.log(law(x)) - np.log(y)) ** 2)))
  return dataclasses.replace(law, rms_log=rms)


def aicc(law: PowerLaw, k: int) -> float:
  """Corrected Akaike information of a least-squares fit with k parameters (log space)."""
  n = law.n
  rss = max(law.rms_log ** 2 * n, 1e-300)
  value = n * math.log(rss / n) + 2 * k
  return value + (2 * k * (k + 1) / (n - k - 1) if n - k - 1 > 0 else math.inf)


def choose_fit(x: Sequence[float], y: Sequence[float]) -> PowerLaw:
  """The pure power law, or the one with an irreducible term where the data support it
  (>= 5 points, scipy present, lower AICc)."""
  plain = fit_power_law(x, y)
  if len(x) < 5 or optimize is None:
    return plain
  full = fit_power_law(x, y, irreducible=True)
  return full if full.irreducible and aicc(full, 3) < aicc(plain, 2) else plain


@dataclasses.dataclass(frozen=True)
class Interval:
  low: float
  high: float


@dataclasses.dataclass(frozen=True)
class Bootstrap:
  """Percentile intervals of a fit's parameters (and of its predictions) over resamples."""

  law: PowerLaw
  a: Interval
  b: Interval
  e: Interval
  samples: np.ndarray  # (resamples kept, 3): a, b, e
  level: float

  def predict(self, x: float) -> dict[str, float | bool]:
    """The fit's loss at x, its bootstrap interval, and whether x lies outside the range
    the law was fitted on (an extrapolation)."""
    values = self.samples[:, 2] + self.samples[:, 0] * np.power(float(x), -self.samples[:, 1])
    tail = (1 - self.level) / 2 * 100
    return {"x": float(x), "loss": float(self.law(x)),
            "low": float(np.percentile(values, tail)),
            "high": float(np.percentile(values, 100 - tail)),
            "extrapolation": bool(x < self.law.x_min or x > self.law.x_max),
            "factor_beyond": float(max(x / self.law.x_max, self.law.x_min / x, 1.0))}


def bootstrap(x: Sequence[float], y: Sequence[float], law: Optional[PowerLaw] = None,
              resamples: int = 1000, level: float = 0.95, seed: int = 0) -> Bootstrap:
  """Percentile intervals by refitting resampled points (same form as `law`: with an
  irreducible term if it has one)."""
  x, y = np.asarray(x, float), np.asarray(y, float)
  law = law or fit_power_law(x, y)
  rng = np.random.default_rng(seed)
  kept = []
  for _ in range(resamples):
    idx = rng.integers(0, len(x), len(x))
    if len(np.unique(x[idx])) < 3:
      continue
    fit = fit_power_law(x[idx], y[idx], irreducible=law.irreducible)
    kept.append((fit.a, fit.b, fit.e))
  if not kept:
    raise ValueError(f"no bootstrap resample has 3 distinct x ({len(x)} points)")
  samples = np.asarray(kept)
  tail = (1 - level) / 2 * 100

  def interval(i):
    return Interval(float(np.percentile(samples[:, i], tail)),
                    float(np.percentile(samples[:, i], 100 - tail)))
  return Bootstrap(law, interval(0), interval(1), interval(2), samples, level)


def pareto_frontier(compute: Sequence[float], loss: Sequence[float], rtol: float = 0.0
                    ) -> list[int]:
  """Indices of the compute-efficient points, by compute: those with no point of at most
  (1 + rtol) x their compute and a lower loss. rtol > 0 treats budgets that differ by a
  rounding of steps as one (a run 0.5% cheaper but far worse is not on the frontier)."""
  order = sorted(range(len(compute)), key=lambda i: (compute[i], loss[i]))
  return [i for i in order
          if not any(j != i and compute[j] <= compute[i] * (1 + rtol) and loss[j] < loss[i]
                     for j in order)]
