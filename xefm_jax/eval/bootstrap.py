"""Paired bootstrap over test sessions: is a model's score different from a baseline's?

Windows of one session are not independent draws (overlapping windows, one wearer, one
place, one activity), so the unit of resampling is the session: a replicate draws the test
split's S sessions with replacement and recomputes each feature set's metric on the windows
of the drawn sessions, a session drawn twice counting twice (a cluster bootstrap). Every
feature set sees the same replicates (paired), so the interval of model minus baseline
leaves out what both share (which sessions happen to be easy). Nothing is refitted: the
probes' per-window predictions are computed once and only the metric is recomputed
(evaluators/base.py, predict / metrics).

    weights = session_weights(sessions, replicates=1000, seed=0)   # (R, N) row counts
    model = replicate_metric(ev, task, data, model_predictions, weights, task.metric)  # (R,)
    lo, hi = interval(signed_difference(model, baseline, task.higher_is_better))

A difference is signed so that positive means the model is better (negated for
lower-is-better metrics); a significant win is an interval whose lower bound is above zero.
With fewer than two test sessions every replicate is the test split itself, and there is
no interval (None).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

LEVEL = 0.95


def session_weights(sessions: np.ndarray, replicates: int, seed: int) -> np.ndarray:
  """(R, N) float64: how many times each test row counts in each replicate, for rows whose
  sessions are `sessions` (N,) (any hashable ids)."""
  _, inverse = np.unique(np.asarray(sessions), return_inverse=True)
  inverse = inverse.reshape(-1)
  s = int(inverse.max(initial=-1)) + 1
  draws = np.random.default_rng(seed).integers(0, s, size=(replicates, s))  # (R, S)
  counts = np.zeros((replicates, s))
  np.add.at(counts, (np.arange(replicates)[:, None], draws), 1.0)
  return counts[:, inverse]


def replicate_metric(evaluator: Any, task: Any, data: Any, predictions: Any,
                     weights: np.ndarray, metric: str) -> np.ndarray:
  """(R,) the task's `metric` in each replicate of `weights` (R, N test rows)."""
  unit = weights[:, predictions.rows]  # (R, P) per unit
  out = np.empty(len(weights))
  for r, w in enumerate(unit):
    v = evaluator.metrics(task, data, predictions, w).get(metric)
    out[r] = np.nan if v is None else v
  return out


def signed_difference(model: np.ndarray, baseline: np.ndarray, higher_is_better: bool
                      ) -> np.ndarray:
  """Replicate-wise model - baseline, positive where the model is better."""
  d = np.asarray(model, np.float64) - np.asarray(baseline, np.float64)
  return d if higher_is_better else -d


def interval(differences: np.ndarray, level: float = LEVEL) -> Optional[tuple[float, float]]:
  """The percentile interval of the finite replicate differences, None when there are none
  (a metric undefined in every replicate)."""
  d = np.asarray(differences, np.float64)
  d = d[np.isfinite(d)]
  if not len(d):
    return None
  tail = 100 * (1 - level) / 2
  lo, hi = np.percentile(d, [tail, 100 - tail])
  return float(lo), float(hi)


def significant(ci: Optional[tuple[float, float]]) -> bool:
  """Better beyond noise: the interval's lower bound is above zero."""
  return ci is not None and ci[0] > 0
