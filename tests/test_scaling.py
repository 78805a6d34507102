"""The scaling-law fits (xefm_jax/eval/scaling.py) on synthetic power laws with known
parameters: the fitted exponent lies in its bootstrap interval, and that interval covers
the true exponent."""

import numpy as np
import pytest

from xefm_jax.eval import scaling


def _noisy(x, a, b, e, noise, seed):
  rng = np.random.default_rng(seed)
  return (e + a * x ** -b) * np.exp(rng.normal(0.0, noise, len(x)))


def test_power_law_recovers_exponent_within_its_interval():
  x = np.geomspace(1e12, 1e15, 12)
  y = _noisy(x, a=40.0, b=0.12, e=0.0, noise=0.01, seed=0)
  law = scaling.fit_power_law(x, y)
  boot = scaling.bootstrap(x, y, law, resamples=400)
  assert boot.b.low <= law.b <= boot.b.high
  assert boot.b.low <= 0.12 <= boot.b.high
  assert abs(law.b - 0.12) < 0.01
  assert boot.b.high - boot.b.low < 0.03  # 12 points at 1% noise pin it down


def test_exact_power_law_is_recovered_exactly():
  x = np.array([1.0, 10.0, 100.0, 1000.0])
  law = scaling.fit_power_law(x, 3.0 * x ** -0.5)
  assert law.a == pytest.approx(3.0) and law.b == pytest.approx(0.5)
  assert law.rms_log < 1e-9 and not law.irreducible


def test_irreducible_term_is_kept_only_when_the_data_support_it():
  x = np.geomspace(1e10, 1e16, 16)
  curved = _noisy(x, a=2e3, b=0.3, e=1.5, noise=0.002, seed=1)
  law = scaling.choose_fit(x, curved)
  assert law.irreducible and law.e == pytest.approx(1.5, rel=0.05)
  assert law.b == pytest.approx(0.3, rel=0.1)
  boot = scaling.bootstrap(x, curved, law, resamples=200)
  assert boot.b.low <= 0.3 <= boot.b.high and boot.e.low <= 1.5 <= boot.e.high
  straight = _noisy(x, a=50.0, b=0.1, e=0.0, noise=0.01, seed=2)
  assert not scaling.choose_fit(x, straight).irreducible
  assert not scaling.choose_fit(x[:4], curved[:4]).irreducible  # too few points


def test_prediction_flags_extrapolation():
  x = np.geomspace(1e12, 1e14, 6)
  y = _noisy(x, a=40.0, b=0.1, e=0.0, noise=0.01, seed=3)
  boot = scaling.bootstrap(x, y, resamples=200)
  inside, outside = boot.predict(1e13), boot.predict(1e20)
  assert not inside["extrapolation"] and outside["extrapolation"]
  assert outside["factor_beyond"] == pytest.approx(1e6)
  assert outside["low"] <= outside["loss"] <= outside["high"]
  assert outside["high"] - outside["low"] > inside["high"] - inside["low"]


def test_pareto_frontier():
  compute = [1, 2, 3, 4, 5]
  loss = [5.0, 4.0, 4.5, 3.0, 3.5]
  assert scaling.pareto_frontier(compute, loss) == [0, 1, 3]
  # a point 1% cheaper than a better one is on the exact frontier, not within 5%
  assert scaling.pareto_frontier([1.0, 1.01, 3.0], [9.0, 2.0, 1.0]) == [0, 1, 2]
  assert scaling.pareto_frontier([1.0, 1.01, 3.0], [9.0, 2.0, 1.0], rtol=0.05) == [1, 2]


def test_fit_refuses_degenerate_input():
  with pytest.raises(ValueError):
    scaling.fit_power_law([1.0, 1.0], [2.0, 3.0])
  with pytest.raises(ValueError):
    scaling.fit_power_law([1.0, 2.0], [0.0, 1.0])
