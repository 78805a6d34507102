"""Multi-label classification of a window (the relevant-object set): one logistic regression
per label; micro-F1 over (window, label) pairs. A unit is a test window: its true and
predicted sets.

Labels constant over the train split are predicted as that constant (nothing to fit).
Where the store has `targets/<target>_valid` (a set 5 s ahead, past some episodes' end),
only those rows take part.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import numpy as np

from xefm_jax.eval import metrics
from xefm_jax.eval import probes
from xefm_jax.eval.evaluators import base


def labelled(store, target: str) -> np.ndarray:
  """(N,) bool: rows whose label set is known."""
  key = f"{target}_valid"
  return store.target(key).astype(bool) if store.has(f"targets/{key}") else np.ones(
      len(store), bool)


@base.register("multilabel")
class MultiLabel(base.Evaluator):

  def fit(self, task, data: base.Data, feature_set: str) -> probes.Probe:
    rows = base.train_rows(data, labelled(data.train, task.target))
    ok_va = labelled(data.val, task.target)
    y_tr = data.train.target(task.target).astype(np.int64)[rows]
    y_va = data.val.target(task.target).astype(np.int64)[ok_va]
    x_tr = base.features(data.train, feature_set, task.inputs[0])[rows]
    x_va = base.features(data.val, feature_set, task.inputs[0])[ok_va]
    return probes.fit("multilabel", x_tr, y_tr, x_va, y_va, metrics.multilabel_micro_f1,
                      task.higher_is_better, grid=data.grid,
                      balanced=task.metric == "macro_f1")

  def predict(self, task, data: base.Data, feature_set: str, fitted: probes.Probe,
              swap: Optional[Mapping[str, str]] = None) -> base.Predictions:
    rows = np.flatnonzero(labelled(data.test, task.target))
    y = data.test.target(task.target).astype(np.int64)[rows]
    x = base.features(data.test, feature_set, task.inputs[0], swap)[rows]
    pred = (np.asarray(fitted.predict(x)).astype(np.int64) if len(rows)
            else np.zeros_like(y))
    return base.Predictions(rows, {"true": y, "pred": pred})

  def metrics(self, task, data: base.Data, pred: base.Predictions, weights: np.ndarray
              ) -> dict[str, Any]:
    used = weights > 0
    if not used.any():
      return {task.metric: float("nan"), "windows": 0}
    y, p, w = pred.values["true"][used], pred.values["pred"][used], weights[used]
    return {"micro_f1": metrics.multilabel_micro_f1(y, p, w),
            "predicted_per_window": float(np.average(p.sum(1), weights=w)),
            "true_per_window": float(np.average(y.sum(1), weights=w)),
            "windows": int(w.sum())}

  def coverage(self, task, data: base.Data) -> dict[str, Any]:
    rows = base.train_rows(data, labelled(data.train, task.target))
    return base.label_coverage(data.train.target(task.target)[rows],
                               data.test.target(task.target)[labelled(data.test, task.target)])
