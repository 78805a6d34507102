"""The report's world-model section: future-window retrieval from the future-state head.

    section, examples = world_model.evaluate(task, data, feature_sets, replicates, sessions)

Runs the `future_retrieval` evaluator (evaluators/future_retrieval.py, whose docstring says
what is ranked against what) for the future-state head, the present-latent reference and
the equal ridge probe on every feature set of the suite; each metric gets its 95% session-
bootstrap interval (bootstrap.py, the suite's replicates: the same draws as every task),
and the head and the model's probe get paired intervals of their difference with each
baseline (the task's metric, signed so that positive means better). Nothing here is cached
with the baselines: the targets are the checkpoint's own EMA latents, so the baselines'
probes are refitted for every checkpoint (a ridge map per feature set: seconds).

section: {"available", "metric", "target", "future_offset_frames", "pool", "chance",
          "feature_sets": {name: {"how", "test": metrics, "ci95": {metric: [lo, hi]},
                                  "probe"}},
          "ci95_vs": {"future_state_head" | "model": {baseline: [lo, hi]}},
          "wins": {"future_state_head" | "model": bool}}  (report.py's markdown)
or protocol.unavailable(reason) when the run has no future-state head.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import ml_collections
import numpy as np

from xefm_jax.eval import bootstrap
from xefm_jax.eval import protocol
from xefm_jax.eval.evaluators import base
from xefm_jax.eval.evaluators import future_retrieval as fr

BASELINES = ("handcrafted", "random_init")
METRICS = ("median_rank", "mrr", "r@1", "r@5", "r@10", "consistency", "truth_consistency")
LOWER_IS_BETTER = ("median_rank",)


def _replicates(ev: fr.FutureRetrieval, task, data: base.Data, pred: base.Predictions,
                weights: np.ndarray) -> dict[str, np.ndarray]:
  """{metric: (R,)} every metric in each replicate of `weights` (R, N test rows)."""
  unit = weights[:, pred.rows]
  out = {m: np.empty(len(weights)) for m in METRICS}
  for r, w in enumerate(unit):
    scores = ev.metrics(task, data, pred, w)
    for m in METRICS:
      v = scores.get(m)
      out[m][r] = np.nan if v is None else v
  return out


def _how(fs: str) -> str:
  if fs == fr.HEAD:
    return "the future_state head's prediction (no probe)"
  if fs == fr.PRESENT:
    return "the window's own target latent (reference: nothing moves; no probe)"
  return f"ridge probe on {fs.replace('_', ' ')} features (train, alpha on val)"


def evaluate(task: ml_collections.ConfigDict, data: base.Data, feature_sets: Sequence[str],
             replicates: Optional[np.ndarray], sessions: int, examples: int = 4
             ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
  """The section (module docstring) and the figure's retrieved-futures examples."""
  key = f"features/model_ema/{fr.TARGET_VARIANT}"
  if not data.test.has(fr.HEAD_KEY):
    return protocol.unavailable(protocol.NOT_TRAINED.format("future_state")), []
  if not all(s.has(key) for s in (data.train, data.val, data.test)):
    return protocol.unavailable("no EMA target latents (the checkpoint's EMA trunk was not "
                                "given to the evaluation)"), []
  ev = fr.FutureRetrieval()
  names = [fr.HEAD, fr.PRESENT] + [fs for fs in feature_sets
                                   if all(data.split(s).has(f"features/{fs}/{task.inputs[0]}")
                                          for s in ("train", "val", "test"))]
  rows: dict[str, Any] = {}
  reps: dict[str, dict[str, np.ndarray]] = {}
  shown: list[dict[str, Any]] = []
  pool = len(data.test)
  for fs in names:
    fitted = ev.fit(task, data, fs)
    pred = ev.predict(task, data, fs, fitted)
    test = ev.metrics(task, data, pred, base.row_weights(len(data.test), None)[pred.rows])
    entry: dict[str, Any] = {"how": _how(fs), "test": test, "probe": ev.describe(fitted)}
    if replicates is not None and sessions >= 2 and len(pred):
      reps[fs] = _replicates(ev, task, data, pred, replicates)
      entry["ci95"] = {m: bootstrap.interval(v) for m, v in reps[fs].items()}
    rows[fs] = entry
    if fs == fr.HEAD:
      shown = fr.examples(task, data, fs, fitted, count=examples)
  higher = task.metric not in LOWER_IS_BETTER
  ci_vs: dict[str, Any] = {}
  wins: dict[str, bool] = {}
  for fs in (fr.HEAD, "model"):
    if fs not in reps:
      continue
    ci_vs[fs] = {b: bootstrap.interval(bootstrap.signed_difference(
        reps[fs][task.metric], reps[b][task.metric], higher)) for b in BASELINES if b in reps}
    wins[fs] = bool(len(ci_vs[fs]) == len(BASELINES) and
                    all(bootstrap.significant(ci) for ci in ci_vs[fs].values()))
  head_test = rows[fr.HEAD]["test"]
  section = {"available": True, "metric": task.metric, "higher_is_better": higher,
             "target": "the EMA encoder's layer-normalised window embedding (every modality) "
                       "of the window s W frames later, ranked among every test window's",
             "future_offset_frames": fr.offset(data), "pool": pool,
             "queries": int(head_test.get("queries", 0)), "chance": fr.chance(pool),
             "test_sessions": int(sessions), "feature_sets": rows, "ci95_vs": ci_vs,
             "wins": wins}
  return section, shown
