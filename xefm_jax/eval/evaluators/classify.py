"""Single-label classification of a window (current action, subtask, next action, transition,
contact): a logistic-regression or MLP probe; macro-F1 (or F1 of the positive class).

Rows whose label is -1 (no action, a label unseen in the manifest) are left out of every
split. Macro-F1 averages over the classes present in the test labels or predictions, so a
probe that always answers the majority class scores low on a many-class task.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import numpy as np

from xefm_jax.eval import metrics
from xefm_jax.eval import probes
from xefm_jax.eval.evaluators import base


def labels(store, target: str) -> tuple[np.ndarray, np.ndarray]:
  """(N,) int labels and (N,) bool: labelled."""
  y = store.target(target)
  if y.dtype == bool:
    return y.astype(np.int64), np.ones(len(y), bool)
  y = y.astype(np.int64)
  return y, y >= 0


def scores(y_true: np.ndarray, y_pred: np.ndarray, binary: bool) -> dict[str, float]:
  out = metrics.f1_scores(y_true, y_pred)
  out["accuracy"] = out.pop("micro_f1")
  if binary:
    out["f1"] = metrics.binary_f1(y_true, y_pred)
  return out


@base.register("classify")
class Classify(base.Evaluator):

  def fit(self, task, data: base.Data, feature_set: str) -> probes.Probe:
    y_tr, ok_tr = labels(data.train, task.target)
    y_va, ok_va = labels(data.val, task.target)
    rows = base.train_rows(data, ok_tr)
    x_tr = base.features(data.train, feature_set, task.inputs[0])[rows]
    x_va = base.features(data.val, feature_set, task.inputs[0])[ok_va]
    binary = data.train.target(task.target).dtype == bool
    metric = task.metric

    def score(y_true, y_pred):
      return scores(y_true, y_pred, binary)[metric] if len(y_true) else 0.0
    return probes.fit("classify", x_tr, y_tr[rows], x_va, y_va[ok_va], score,
                      task.higher_is_better, kinds=tuple(task.probes), seed=data.seed,
                      grid=data.grid)

  def score(self, task, data: base.Data, feature_set: str, fitted: probes.Probe,
            swap: Optional[Mapping[str, str]] = None,
            rows: Optional[np.ndarray] = None) -> dict[str, Any]:
    y, ok = labels(data.test, task.target)
    ok &= base.test_mask(data.test, rows)
    if not ok.any():
      return {task.metric: float("nan"), "windows": 0}
    x = base.features(data.test, feature_set, task.inputs[0], swap)[ok]
    binary = data.test.target(task.target).dtype == bool
    out: dict[str, Any] = scores(y[ok], fitted.predict(x), binary)
    out["windows"] = int(ok.sum())
    return out
