"""Single-label classification of a window (current action, subtask, next action, transition,
contact): a logistic-regression probe, class-balanced for macro-F1 tasks; macro-F1 (or F1 of
the positive class).

Rows whose label is -1 (no action, a label unseen in the manifest) are left out of every
split. Macro-F1 averages over the classes present in the test labels or predictions, so a
probe that always answers the majority class scores low on a many-class task. A unit is a
labelled test window: its label and the probe's answer.
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


def scores(y_true: np.ndarray, y_pred: np.ndarray, binary: bool,
           weights: Optional[np.ndarray] = None) -> dict[str, float]:
  out = metrics.f1_scores(y_true, y_pred, weights)
  out["accuracy"] = out.pop("micro_f1")
  if binary:
    out["f1"] = metrics.binary_f1(y_true, y_pred, weights)
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
                      task.higher_is_better, grid=data.grid, balanced=metric == "macro_f1")

  def predict(self, task, data: base.Data, feature_set: str, fitted: probes.Probe,
              swap: Optional[Mapping[str, str]] = None) -> base.Predictions:
    y, ok = labels(data.test, task.target)
    rows = np.flatnonzero(ok)
    x = base.features(data.test, feature_set, task.inputs[0], swap)[rows]
    pred = np.asarray(fitted.predict(x)) if len(rows) else np.zeros(0, np.int64)
    return base.Predictions(rows, {"true": y[rows], "pred": pred.astype(np.int64)},
                            {"binary": data.test.target(task.target).dtype == bool})

  def metrics(self, task, data: base.Data, pred: base.Predictions, weights: np.ndarray
              ) -> dict[str, Any]:
    used = weights > 0
    if not used.any():
      return {task.metric: float("nan"), "windows": 0}
    v = pred.values
    out: dict[str, Any] = scores(v["true"][used], v["pred"][used], pred.info["binary"],
                                 weights[used])
    out["windows"] = int(weights.sum())
    return out

  def coverage(self, task, data: base.Data) -> dict[str, Any]:
    y_tr, ok_tr = labels(data.train, task.target)
    y_te, ok_te = labels(data.test, task.target)
    return base.label_coverage(y_tr[base.train_rows(data, ok_tr)], y_te[ok_te])
