"""Probes on frozen features: fitted on the train split, selected on val, scored on test.

Two families, as the suite asks: linear (logistic regression / ridge) and a small MLP
(one hidden layer). Each family has a small grid of regularisation strengths; the scaler
and every fit see train-split features only, the choice among the candidates sees the val
split only, and the test split is touched once, by the chosen probe. The same procedure
runs on every feature set (model, hand-crafted, random init), so differences are the
features'.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Callable, Sequence

import numpy as np
import threadpoolctl
from sklearn import base
from sklearn import exceptions as sk_exceptions
from sklearn import linear_model
from sklearn import multiclass
from sklearn import neural_network
from sklearn import preprocessing

LINEAR_C = (0.01, 0.1, 1.0, 10.0)
RIDGE_ALPHA = (0.1, 1.0, 10.0, 100.0)
MLP_ALPHA = (1e-4, 1e-2)
MLP_HIDDEN = 256
# BLAS threads while fitting. Probe problems are small (thousands of rows), and a BLAS
# pool spinning beside JAX's threads on a few cores is ruinous: on 2 cores a logistic
# regression of 1,000 x 192 features took 30 s with OpenBLAS's default pool, 0.4 s with one.
BLAS_THREADS = 1


def blas_limit() -> threadpoolctl.threadpool_limits:
  """Context manager: BLAS_THREADS threads for numpy/scipy/sklearn inside it."""
  return threadpoolctl.threadpool_limits(limits=BLAS_THREADS, user_api="blas")


@dataclasses.dataclass(frozen=True)
class Grid:
  """The candidates a fit chooses among (configs/eval.py `probe` sets them)."""

  linear_c: tuple[float, ...] = LINEAR_C  # logistic regression inverse regularisation
  ridge_alpha: tuple[float, ...] = RIDGE_ALPHA
  mlp_alpha: tuple[float, ...] = MLP_ALPHA  # L2 penalty of the one-hidden-layer MLP
  mlp_hidden: int = MLP_HIDDEN
  mlp_max_iter: int = 300

  @classmethod
  def from_config(cls, c: Any) -> "Grid":
    return cls(tuple(c.linear_c), tuple(c.ridge_alpha), tuple(c.mlp_alpha), int(c.mlp_hidden),
               int(c.mlp_max_iter))


@dataclasses.dataclass
class Probe:
  """A fitted probe: the train-split scaler and estimator, and how it was chosen."""

  kind: str  # "linear" | "mlp" | "constant"
  params: dict[str, Any]
  scaler: preprocessing.StandardScaler
  estimator: Any
  val_score: float
  task: str  # "classify" | "multilabel" | "regress"

  def predict(self, x: np.ndarray) -> np.ndarray:
    return self.estimator.predict(self.scaler.transform(x))

  def scores(self, x: np.ndarray) -> np.ndarray:
    """Class probabilities (classification) or predictions (regression)."""
    z = self.scaler.transform(x)
    if self.task == "regress":
      return self.estimator.predict(z)
    return self.estimator.predict_proba(z)


class _Constant:
  """The majority class (a split with one class leaves nothing else to fit)."""

  def __init__(self, value):
    self.value = value

  def predict(self, z):
    return np.repeat(np.asarray(self.value)[None], len(z), axis=0)

  def predict_proba(self, z):
    return np.ones((len(z), 1))


def _candidates(task: str, kinds: Sequence[str], seed: int, grid: Grid
                ) -> list[tuple[str, dict, Callable]]:
  out = []
  if "linear" in kinds:
    if task == "regress":
      out += [("linear", {"alpha": a}, lambda a=a: linear_model.Ridge(alpha=a))
              for a in grid.ridge_alpha]
    else:
      def logistic(c):
        est = linear_model.LogisticRegression(C=c, max_iter=2000)
        return multiclass.OneVsRestClassifier(est) if task == "multilabel" else est
      out += [("linear", {"C": c}, lambda c=c: logistic(c)) for c in grid.linear_c]
  if "mlp" in kinds:
    cls = (neural_network.MLPRegressor if task == "regress"
           else neural_network.MLPClassifier)
    out += [("mlp", {"alpha": a, "hidden": grid.mlp_hidden},
             lambda a=a: cls(hidden_layer_sizes=(grid.mlp_hidden,), alpha=a,
                             max_iter=grid.mlp_max_iter, early_stopping=False,
                             random_state=seed))
            for a in grid.mlp_alpha]
  return out


def fit(task: str, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray,
        y_val: np.ndarray, score: Callable[[np.ndarray, np.ndarray], float],
        higher_is_better: bool = True, kinds: Sequence[str] = ("linear", "mlp"),
        seed: int = 0, grid: Grid = Grid()) -> Probe:
  """The candidate with the best val `score(y_true, y_pred)`.

  task: "classify" (integer labels), "multilabel" ((N, K) 0/1) or "regress" ((N,) or (N, K)).
  """
  with blas_limit():
    return _fit(task, x_train, y_train, x_val, y_val, score, higher_is_better, kinds, seed,
                grid)


def _fit(task, x_train, y_train, x_val, y_val, score, higher_is_better, kinds, seed, grid
         ) -> Probe:
  scaler = preprocessing.StandardScaler().fit(x_train)
  z_train, z_val = scaler.transform(x_train), scaler.transform(x_val)
  if task == "classify" and len(np.unique(y_train)) < 2:
    const = _Constant(y_train[0])
    return Probe("constant", {}, scaler, const, score(y_val, const.predict(z_val)), task)
  if task == "multilabel":  # labels constant over the train split cannot be fitted
    varying = y_train.min(0) != y_train.max(0)
    if not varying.any():
      const = _Constant(y_train[0])
      return Probe("constant", {}, scaler, const, score(y_val, const.predict(z_val)), task)
  best = None
  for kind, params, make in _candidates(task, kinds, seed, grid):
    est = make()
    y_fit = y_train
    if task == "multilabel":
      est = _MultiLabel(make, varying, y_train[0])
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", sk_exceptions.ConvergenceWarning)
      est.fit(z_train, y_fit)
    s = score(y_val, est.predict(z_val))
    if best is None or (s > best.val_score if higher_is_better else s < best.val_score):
      best = Probe(kind, params, scaler, est, s, task)
  return best


def refit(probe: Probe, x_train: np.ndarray, y_train: np.ndarray) -> Probe:
  """The chosen probe (same kind and parameters, same train scaler) fitted again on new
  train targets, e.g. with missing entries imputed; how it was chosen is kept."""
  est = base.clone(probe.estimator)
  with warnings.catch_warnings(), blas_limit():
    warnings.simplefilter("ignore", sk_exceptions.ConvergenceWarning)
    est.fit(probe.scaler.transform(x_train), y_train)
  return dataclasses.replace(probe, estimator=est)


class _MultiLabel:
  """Fits the labels that vary over the train split; the others are constant."""

  def __init__(self, make: Callable, varying: np.ndarray, first: np.ndarray):
    self.est, self.varying, self.first = make(), varying, first

  def fit(self, z, y):
    self.est.fit(z, y[:, self.varying])
    return self

  def predict(self, z):
    out = np.repeat(self.first[None], len(z), axis=0).astype(np.int64)
    out[:, self.varying] = self.est.predict(z)
    return out


def ridge_map(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
              score: Callable[[np.ndarray, np.ndarray], float], grid: Grid = Grid()) -> Probe:
  """A linear map from one side's features to another's (retrieval, reconstruction),
  alpha chosen on val by `score(y_val, predicted)` (higher is better)."""
  return fit("regress", x_train, y_train, x_val, y_val, score, True, kinds=("linear",),
             grid=grid)
