"""The scaling-law fits (xefm_jax/eval/scaling.py) on synthetic power laws with known
parameters: the fitted exponent lies in its bootstrap interval, and that interval covers
the true exponent; the sweep report's eval-task table and plot from synthetic points."""

import json

import numpy as np
import pytest

from xefm_jax.eval import scaling
from xefm_jax.eval import scaling_report


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


# ------------------------------------------------------------- the sweep report's eval tasks


def _point(variant, budget, compute, loss, tasks=None):
  p = {"name": f"{variant}_{budget:.3g}", "variant": variant, "budget": budget,
       "steps": 10, "compute": compute, "tokens": 1000, "wall_s": 1.0,
       "val": {"val/loss": loss}, "val_by_step": {"10": {"val/loss": loss}}}
  if tasks is not None:
    p["eval"] = {"definition": {"config": "configs/eval.py:quick", "set": []}, "step": 10,
                 "split": "test", "significant_wins": 1,
                 "tasks": {n: dict(e, wins=False) for n, e in tasks.items()}}
  return p


def _task(model, handcrafted, random_init, metric="macro_f1", higher=True):
  return {"metric": metric, "higher_is_better": higher, "model": model, "model_ema": model,
          "handcrafted": handcrafted, "random_init": random_init}


def _sweep(points):
  return {"config": "configs/pilot.py", "variants": ["s0", "s1"], "budgets": [1e12, 1e13],
          "set": [], "eval_batches": 1, "eval_every": 10,
          "eval": {"config": "configs/eval.py:quick", "set": []},
          "sizes": {v: {"params": n, "params_backbone": n, "model_flops_per_window": 1e6,
                        "tokens_per_step": 100} for v, n in (("s0", 1000), ("s1", 4000))},
          "points": [{"name": p["name"]} for p in points]}


def _synthetic():
  points = [  # s1 at 1e13 has no eval (a sweep without --eval_config, or its eval failed)
      _point("s1", 1e12, 1.1e12, 3.0, {"action": _task(0.4, 0.2, 0.1),
                                       "hands": _task(0.05, 0.09, 0.2, "mpjpe", False)}),
      _point("s0", 1e13, 0.9e13, 2.9, {"action": _task(0.3, 0.2, 0.15),
                                       "hands": _task(0.07, 0.09, 0.25, "mpjpe", False)}),
      _point("s0", 1e12, 1.0e12, 3.2, {"action": _task(0.25, 0.2, 0.15),
                                       "hands": _task(None, 0.09, 0.25, "mpjpe", False)}),
      _point("s1", 1e13, 1.2e13, 2.5),
  ]
  return _sweep(points), points


def test_task_table_rows_are_the_evaluated_points_in_ladder_order():
  sweep, points = _synthetic()
  tasks = scaling_report.task_scores(sweep, points)
  assert tasks["names"] == ["action", "hands"]
  assert tasks["metrics"]["hands"] == {"metric": "mpjpe", "higher_is_better": False}
  assert [r["point"] for r in tasks["points"]] == ["s0_1e+12", "s0_1e+13", "s1_1e+12"]
  first = tasks["points"][0]
  assert first["model"] == {"action": 0.25, "hands": None} and first["params"] == 1000
  assert first["random_init"]["action"] == 0.15 and first["handcrafted"]["hands"] == 0.09
  assert scaling_report.task_scores(sweep, points[3:]) is None  # no point evaluated

  lines = scaling_report.tasks_markdown(sweep, tasks)
  assert lines[0] == "## Eval tasks"
  head = next(line for line in lines if line.startswith("| size |"))
  assert "action (macro_f1)" in head and "hands (mpjpe, lower better)" in head
  rows = [line for line in lines if line.startswith(("| s0 ", "| s1 "))]
  assert len(rows) == 3 and rows[0].startswith("| s0 | 1e+12 | 1e+12 | 1 | 0.250 | n/a |")
  assert "| hand-crafted | | | | 0.200 | 0.090 |" in lines
  assert "| random init s1 | | | | 0.100 | 0.200 |" in lines
  assert "3 of 4 points evaluated" in lines[2]


def test_report_writes_the_task_table_and_plot(tmp_path):
  sweep, points = _synthetic()
  (tmp_path / "sweep.json").write_text(json.dumps(sweep))
  for p in points:
    (tmp_path / p["name"]).mkdir()
    (tmp_path / p["name"] / "point.json").write_text(json.dumps(p))
  data = scaling_report.write(tmp_path, [])
  assert [r["point"] for r in data["tasks"]["points"]] == ["s0_1e+12", "s0_1e+13",
                                                            "s1_1e+12"]
  assert json.loads((tmp_path / "report.json").read_text())["tasks"] == data["tasks"]
  assert "tasks_vs_flops.png" in data["plots"]
  assert (tmp_path / "tasks_vs_flops.png").read_bytes()[:4] == b"\x89PNG"
  text = (tmp_path / "report.md").read_text()
  assert "## Eval tasks" in text and "![tasks_vs_flops.png](tasks_vs_flops.png)" in text
  # without an evaluated point: no section, no plot
  for p in points:
    record = dict(p)
    record.pop("eval", None)
    (tmp_path / p["name"] / "point.json").write_text(json.dumps(record))
  data = scaling_report.write(tmp_path, [])
  assert data["tasks"] is None and "tasks_vs_flops.png" not in data["plots"]
  assert "## Eval tasks" not in (tmp_path / "report.md").read_text()
