"""What every evaluator shares: the splits it reads, its interface and the registry.

The protocol is fixed here, not in each evaluator: features and scalers are fitted on the
`train` store, the probe's candidates are compared on `val`, and `test` is only scored,
with the probe chosen on val (robustness and subsets reuse it unchanged: no refit).

Scoring is split in two so that a bootstrap never refits nor re-predicts:

  predict(task, data, fs, fitted, swap) -> Predictions   once per feature set (and swap):
      what the probe says about the test split, one *unit* at a time (a window, a pair of
      windows, a retrieval query), each unit tied to the test row (window) it belongs to;
  metrics(task, data, predictions, weights) -> {metric: value}   cheap, many times:
      the metrics over a weighting of the units, unit i counted weights[i] times (a
      bootstrap replicate draws sessions with replacement: a session drawn twice counts
      twice; a subset weights its rows 1 and the rest 0).
  score(...) = metrics(predict(...), weights of the rows asked for): every row once by
      default, so a score is the metric over all test rows.

Adding a kind of task is one file in this package: a class decorated `@register("<kind>")`
with `fit`, `predict` and `metrics` (and `coverage` if its labels are classes), whose
metrics are exact under integer weights (the same as repeating those units). The pieces
shared by every evaluator (the splits, input features, the probe grid) are below.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

import ml_collections
import numpy as np

from xefm_jax import registry
from xefm_jax.eval import embed
from xefm_jax.eval import probes


@dataclasses.dataclass
class Data:
  """The three splits' stores and the settings evaluators share.

  window: W context frames; base_stride: frames between the windows of the eval stride
  (the misalignment shift is 8 of them); fps: frames per second of the window's frames;
  frame_stride: shard frames between a window's frames (its next window starts s W later).
  """

  train: embed.Store
  val: embed.Store
  test: embed.Store
  grid: probes.Grid = probes.Grid()
  seed: int = 0
  window: int = 16
  base_stride: int = 4
  fps: float = 20.0
  max_train: int = 0  # 0: every train row
  frame_stride: int = 1

  def split(self, name: str) -> embed.Store:
    return {"train": self.train, "val": self.val, "test": self.test}[name]


@dataclasses.dataclass
class Predictions:
  """A fitted probe's output on the test split, unit by unit (see the module docstring).

  rows: (P,) int, the test row each unit belongs to (its session is the row's session);
  values: {name: (P, ...) array}, whatever the evaluator's `metrics` reads, computed once;
  info: unit-independent numbers reported beside the metrics (a retrieval pool's size).
  """

  rows: np.ndarray
  values: dict[str, np.ndarray]
  info: dict[str, Any] = dataclasses.field(default_factory=dict)

  def __len__(self) -> int:
    return len(self.rows)


def features(store: embed.Store, feature_set: str, variant: str,
             swap: Optional[Mapping[str, str]] = None) -> np.ndarray:
  """(N, F) float64 features of `variant` (or the variant `swap` puts in its place)."""
  name = (swap or {}).get(variant, variant)
  return np.nan_to_num(store.features(feature_set, name).astype(np.float64))


def train_rows(data: Data, mask: np.ndarray) -> np.ndarray:
  """Indices of usable train rows, evenly thinned to `data.max_train` (probe cost)."""
  idx = np.flatnonzero(mask)
  if data.max_train and len(idx) > data.max_train:
    idx = idx[np.linspace(0, len(idx) - 1, data.max_train).round().astype(int)]
  return idx


def row_weights(n: int, rows: Optional[np.ndarray]) -> np.ndarray:
  """(n,) float64 multiplicity of each test row: every row once (None), a subset (a bool
  mask), or a multiset (indices, a repeated index counting as often as it occurs)."""
  if rows is None:
    return np.ones(n)
  rows = np.asarray(rows)
  if rows.dtype == bool:
    return rows.astype(np.float64)
  return np.bincount(rows.astype(np.int64), minlength=n).astype(np.float64)


class Evaluator:
  """Base of the evaluators (see the module docstring)."""

  def fit(self, task: ml_collections.ConfigDict, data: Data, feature_set: str) -> Any:
    raise NotImplementedError

  def predict(self, task: ml_collections.ConfigDict, data: Data, feature_set: str,
              fitted: Any, swap: Optional[Mapping[str, str]] = None) -> Predictions:
    raise NotImplementedError

  def metrics(self, task: ml_collections.ConfigDict, data: Data, pred: Predictions,
              weights: np.ndarray) -> dict[str, Any]:
    """Every metric of the task over the units, weights: (P,) per unit (>= 0)."""
    raise NotImplementedError

  def score(self, task: ml_collections.ConfigDict, data: Data, feature_set: str, fitted: Any,
            swap: Optional[Mapping[str, str]] = None,
            rows: Optional[np.ndarray] = None) -> dict[str, Any]:
    """The metrics on the test rows `rows` (row_weights; default every row once)."""
    pred = self.predict(task, data, feature_set, fitted, swap)
    return self.metrics(task, data, pred, row_weights(len(data.test), rows)[pred.rows])

  def coverage(self, task: ml_collections.ConfigDict, data: Data) -> Optional[dict[str, Any]]:
    """For class labels: how much of the test labels the train split has (label_coverage);
    None for tasks without classes."""
    return None

  def describe(self, fitted: Any) -> dict[str, Any]:
    """How the probe was chosen (kind, parameters, val score, the grid's val scores)."""
    probe = fitted if isinstance(fitted, probes.Probe) else getattr(fitted, "probe", None)
    if probe is None:
      return {}
    return {"kind": probe.kind, "params": probe.params, "val_score": float(probe.val_score),
            "searched": dict(probe.searched)}


def label_coverage(train_labels: np.ndarray, test_labels: np.ndarray) -> dict[str, Any]:
  """How much of the test labels occur among the train labels (what a probe could have
  learned). labels: the fraction of test labels whose class is in train (one label per
  window; for multi-hot (N, K) sets, one per (window, positive class)); classes: the
  fraction of the distinct test classes; unseen: the test classes train never has."""
  train_labels, test_labels = np.asarray(train_labels), np.asarray(test_labels)
  if test_labels.ndim == 2:
    seen = train_labels.astype(bool).any(0)  # (K,) ever positive in train
    test = test_labels.astype(bool)
    units = int(test.sum())
    covered = float((test & seen).sum() / units) if units else float("nan")
    classes = np.flatnonzero(test.any(0))
    known = seen[classes]
  else:
    units = len(test_labels)
    covered = float(np.isin(test_labels, train_labels).mean()) if units else float("nan")
    classes = np.unique(test_labels)
    known = np.isin(classes, train_labels)
  return {"labels": covered, "classes": float(known.mean()) if len(classes) else float("nan"),
          "test_labels": units, "test_classes": int(len(classes)),
          "unseen": [int(c) for c in classes[~known]]}


EVALUATORS: registry.Registry = registry.Registry("evaluator", "xefm_jax.eval.evaluators")
register = EVALUATORS.register


def get(name: str) -> Evaluator:
  """An instance of the evaluator registered as `name` (xefm_jax/eval/evaluators/<name>.py)."""
  return EVALUATORS.get(name)()
