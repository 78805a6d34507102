"""Probes on frozen features: fitted on the train split, selected on val, scored on test.

One probe family and one regularisation search for every task and every feature set
(EVAL_SUITE.md "Honest comparisons"): linear probes only, logistic regression for labels
and ridge for continuous targets and maps, each over a log grid of its regularisation
strength (C of 1e-4 .. 1e3 for logistic regression, alpha of 1e-1 .. 1e6 for ridge: seven
orders of magnitude, from "nearly constant" to "nearly unregularised"), class-balanced
(`class_weight="balanced"`) where the task's metric is macro-F1. The scaler and every fit
see train-split features only, the choice among the candidates sees the val split only,
and the test split is touched once, by the chosen probe. The same procedure runs on every
feature set (model, EMA model, hand-crafted, random init), so differences are the
features'.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import warnings
from typing import Any, Callable, Iterator

import numpy as np
import threadpoolctl
from sklearn import base
from sklearn import exceptions as sk_exceptions
from sklearn import linear_model
from sklearn import preprocessing

LINEAR_C = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3)
RIDGE_ALPHA = (1e-1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6)
# BLAS threads while fitting. Probe problems are small (thousands of rows), and a BLAS
# pool spinning beside JAX's threads on a few cores is ruinous: on 2 cores a logistic
# regression of 1,000 x 192 features took 30 s with OpenBLAS's default pool, 0.4 s with one.
BLAS_THREADS = 1


def blas_limit() -> threadpoolctl.threadpool_limits:
  """Context manager: BLAS_THREADS threads for numpy/scipy/sklearn inside it."""
  return threadpoolctl.threadpool_limits(limits=BLAS_THREADS, user_api="blas")


@contextlib.contextmanager
def quiet_solvers() -> Iterator[None]:
  """Solvers' ConvergenceWarnings ignored inside it (a grid point that does not converge is
  still a candidate; val decides)."""
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", sk_exceptions.ConvergenceWarning)
    yield


@dataclasses.dataclass(frozen=True)
class Grid:
  """The candidates a fit chooses among (configs/eval.py `probe` sets them)."""

  linear_c: tuple[float, ...] = LINEAR_C  # logistic regression inverse regularisation
  ridge_alpha: tuple[float, ...] = RIDGE_ALPHA
  max_iter: int = 500  # lbfgs iterations per logistic fit (warm-started along the grid)

  @classmethod
  def from_config(cls, c: Any) -> "Grid":
    return cls(tuple(float(v) for v in c.linear_c), tuple(float(v) for v in c.ridge_alpha),
               int(c.get("max_iter", 500)))


@dataclasses.dataclass
class Probe:
  """A fitted probe: the train-split scaler and estimator, and how it was chosen."""

  kind: str  # "linear" | "constant"
  params: dict[str, Any]
  scaler: preprocessing.StandardScaler
  estimator: Any
  val_score: float
  task: str  # "classify" | "multilabel" | "regress"
  searched: dict[str, float] = dataclasses.field(default_factory=dict)  # candidate: val
  column: bool = False  # a (N, 1) target fitted 1-d: predictions come back as (N, 1)

  def predict(self, x: np.ndarray) -> np.ndarray:
    out = self.estimator.predict(self.scaler.transform(x))
    return out[:, None] if self.column else out

  def scores(self, x: np.ndarray) -> np.ndarray:
    """Class probabilities (classification) or predictions (regression)."""
    if self.task == "regress":
      return self.predict(x)
    return self.estimator.predict_proba(self.scaler.transform(x))


class _Constant:
  """The majority class (a split with one class leaves nothing else to fit)."""

  def __init__(self, value):
    self.value = value

  def predict(self, z):
    return np.repeat(np.asarray(self.value)[None], len(z), axis=0)

  def predict_proba(self, z):
    return np.ones((len(z), 1))


class _MultiLabel:
  """One logistic regression per label that varies over the train split (the others are
  predicted as their constant), each warm-started along the grid like a single-label fit.
  sklearn's OneVsRestClassifier clones its estimator on every fit, which would restart
  every label's solver from zero at every grid point."""

  def __init__(self, varying: np.ndarray, first: np.ndarray, class_weight: Any,
               max_iter: int):
    self.varying, self.first = varying, first
    self.labels = [_logistic(1.0, class_weight, max_iter) for _ in np.flatnonzero(varying)]

  def set_params(self, **params):
    for est in self.labels:
      est.set_params(**params)
    return self

  def fit(self, z, y):
    for est, j in zip(self.labels, np.flatnonzero(self.varying)):
      est.fit(z, y[:, j])
    return self

  def predict(self, z):
    out = np.repeat(self.first[None], len(z), axis=0).astype(np.int64)
    if self.labels:
      out[:, self.varying] = np.stack([est.predict(z) for est in self.labels], 1)
    return out

  def predict_proba(self, z):
    return np.stack([est.predict_proba(z)[:, 1] for est in self.labels], 1)


def _logistic(c: float, class_weight: Any, max_iter: int) -> linear_model.LogisticRegression:
  return linear_model.LogisticRegression(C=c, class_weight=class_weight, max_iter=max_iter,
                                         warm_start=True)


def fit(task: str, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray,
        y_val: np.ndarray, score: Callable[[np.ndarray, np.ndarray], float],
        higher_is_better: bool = True, grid: Grid = Grid(), balanced: bool = False
        ) -> Probe:
  """The grid point with the best val `score(y_true, y_pred)`.

  task: "classify" (integer labels), "multilabel" ((N, K) 0/1) or "regress" ((N,) or (N, K);
  one column is fitted as a 1-d target). balanced: class_weight="balanced" (classify,
  multilabel), for macro-F1 tasks whose majority class would otherwise win.
  """
  with blas_limit(), quiet_solvers():
    return _fit(task, x_train, y_train, x_val, y_val, score, higher_is_better, grid,
                balanced)


def _fit(task, x_train, y_train, x_val, y_val, score, higher_is_better, grid, balanced
         ) -> Probe:
  scaler = preprocessing.StandardScaler().fit(x_train)
  z_train, z_val = scaler.transform(x_train), scaler.transform(x_val)
  class_weight = "balanced" if balanced else None
  column = task == "regress" and y_train.ndim == 2 and y_train.shape[1] == 1
  if task == "regress":
    if column:  # sklearn wants a single target 1-d
      y_train = y_train[:, 0]
    name, values = "alpha", sorted(grid.ridge_alpha, reverse=True)  # strong to weak
    est: Any = None
  else:
    name, values = "C", sorted(grid.linear_c)  # strong to weak: each warm-starts the next
    if task == "classify":
      if len(np.unique(y_train)) < 2:
        const = _Constant(y_train[0])
        return Probe("constant", {}, scaler, const, score(y_val, const.predict(z_val)), task)
      est = _logistic(values[0], class_weight, grid.max_iter)
    else:  # labels constant over the train split cannot be fitted
      varying = y_train.min(0) != y_train.max(0)
      if not varying.any():
        const = _Constant(y_train[0])
        return Probe("constant", {}, scaler, const, score(y_val, const.predict(z_val)), task)
      est = _MultiLabel(varying, y_train[0], class_weight, grid.max_iter)
  best: Probe | None = None
  searched = {}
  for v in values:
    if task == "regress":
      est = linear_model.Ridge(alpha=v)
    else:
      est.set_params(C=v)
    est.fit(z_train, y_train)
    pred = est.predict(z_val)
    s = float(score(y_val, pred[:, None] if column else pred))
    searched[f"{v:g}"] = s
    if best is None or (s > best.val_score if higher_is_better else s < best.val_score):
      best = Probe("linear", {name: v}, scaler, copy.deepcopy(est), s, task, column=column)
  best.searched = searched
  return best


def refit(probe: Probe, x_train: np.ndarray, y_train: np.ndarray) -> Probe:
  """The chosen regression probe (same alpha, same train scaler) fitted again on new train
  targets, e.g. with missing entries imputed; how it was chosen is kept."""
  est = base.clone(probe.estimator)
  if probe.column:
    y_train = y_train.reshape(len(y_train))
  with blas_limit(), quiet_solvers():
    est.fit(probe.scaler.transform(x_train), y_train)
  return dataclasses.replace(probe, estimator=est)


def ridge_map(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
              score: Callable[[np.ndarray, np.ndarray], float], grid: Grid = Grid()) -> Probe:
  """A linear map from one side's features to another's (retrieval, reconstruction),
  alpha chosen on val by `score(y_val, predicted)` (higher is better)."""
  return fit("regress", x_train, y_train, x_val, y_val, score, True, grid=grid)
