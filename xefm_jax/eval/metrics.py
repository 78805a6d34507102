"""The suite's metrics, in numpy, each checked against hand-computed cases in the tests.

Conventions: labels are integer class ids; `-1` marks "no label" and is excluded by the
callers, not here. Trajectories are (N, T, ..., 3) in metres.
"""

from __future__ import annotations

import numpy as np


def _weights(n: int, weights: np.ndarray | None) -> np.ndarray:
  """(n,) float64 multiplicities: ones when None."""
  return np.ones(n) if weights is None else np.asarray(weights, np.float64).reshape(n)


def f1_scores(y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray | None = None
              ) -> dict[str, float]:
  """Macro- and micro-F1 of single-label predictions.

  Macro averages the per-class F1 over the classes present in y_true or y_pred (a class
  never seen and never predicted does not count); micro pools counts, which for single-label
  data equals accuracy. weights: (N,) how many times each row counts (0 leaves it out),
  the same as repeating rows: a bootstrap replicate is a weighting of the rows.
  """
  y_true, y_pred = np.asarray(y_true).reshape(-1), np.asarray(y_pred).reshape(-1)
  n = len(y_true)
  w = _weights(n, weights)
  classes, inverse = np.unique(np.concatenate([y_true, y_pred]), return_inverse=True)
  t, p = inverse[:n], inverse[n:]
  k = len(classes)
  hit = t == p
  tp = np.bincount(t[hit], weights=w[hit], minlength=k)
  # 2 tp + fp + fn = (rows of the class) + (rows predicted as it)
  denom = np.bincount(t, weights=w, minlength=k) + np.bincount(p, weights=w, minlength=k)
  present = denom > 0
  total = w.sum()
  return {"macro_f1": float(np.mean(2 * tp[present] / denom[present])) if present.any()
                      else 0.0,
          "micro_f1": float(tp.sum() / total) if total > 0 else 0.0}


def binary_f1(y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray | None = None
              ) -> float:
  """F1 of the positive class (1); weights as in f1_scores."""
  y_true = np.asarray(y_true).astype(bool).reshape(-1)
  y_pred = np.asarray(y_pred).astype(bool).reshape(-1)
  w = _weights(len(y_true), weights)
  tp = np.sum(w[y_true & y_pred])
  denom = 2 * tp + np.sum(w[~y_true & y_pred]) + np.sum(w[y_true & ~y_pred])
  return float(2 * tp / denom) if denom else 0.0


def multilabel_micro_f1(y_true: np.ndarray, y_pred: np.ndarray,
                        weights: np.ndarray | None = None) -> float:
  """Micro-F1 over all (sample, label) pairs of (N, K) 0/1 matrices; weights (N,) per
  sample, as in f1_scores."""
  y_true, y_pred = np.asarray(y_true).astype(bool), np.asarray(y_pred).astype(bool)
  w = _weights(len(y_true), weights)
  tp = w @ (y_true & y_pred).sum(1)
  denom = 2 * tp + w @ (~y_true & y_pred).sum(1) + w @ (y_true & ~y_pred).sum(1)
  return float(2 * tp / denom) if denom else 0.0


def retrieval_ranks(similarity: np.ndarray, relevant: np.ndarray) -> np.ndarray:
  """1-based rank of the best-ranked relevant candidate for each query.

  similarity: (Q, C) higher is better; relevant: (Q, C) bool, at least one True per row.
  Ties are broken pessimistically (a relevant item tied with irrelevant ones ranks after
  them), so a constant similarity cannot score well.
  """
  similarity, relevant = np.asarray(similarity, np.float64), np.asarray(relevant, bool)
  if not relevant.any(1).all():
    raise ValueError("every query needs at least one relevant candidate")
  best = np.where(relevant, similarity, -np.inf).max(1)  # (Q,)
  # candidates strictly better than the best relevant one, plus irrelevant ties
  better = (similarity > best[:, None]).sum(1)
  ties = ((similarity == best[:, None]) & ~relevant).sum(1)
  return better + ties + 1


def recall_at_k(ranks: np.ndarray, k: int, weights: np.ndarray | None = None) -> float:
  """Fraction of queries whose rank is at most k (weights: per query, as in f1_scores)."""
  ranks = np.asarray(ranks).reshape(-1)
  return float(np.average(ranks <= k, weights=_weights(len(ranks), weights)))


def mean_reciprocal_rank(ranks: np.ndarray, weights: np.ndarray | None = None) -> float:
  ranks = np.asarray(ranks, np.float64).reshape(-1)
  return float(np.average(1.0 / ranks, weights=_weights(len(ranks), weights)))


def retrieval_metrics(similarity: np.ndarray, relevant: np.ndarray) -> dict[str, float]:
  ranks = retrieval_ranks(similarity, relevant)
  return {"r@1": recall_at_k(ranks, 1), "r@5": recall_at_k(ranks, 5),
          "r@10": recall_at_k(ranks, 10), "mrr": mean_reciprocal_rank(ranks)}


def masked_mean(values: np.ndarray, valid: np.ndarray | None = None,
                weights: np.ndarray | None = None) -> float:
  """Mean of (N, ...) values over valid entries, row i counted weights[i] times; NaN when
  nothing is valid."""
  values = np.asarray(values, np.float64)
  n = len(values)
  values = values.reshape(n, -1)
  valid = (np.ones(values.shape, bool) if valid is None
           else np.broadcast_to(np.asarray(valid, bool).reshape(n, -1), values.shape))
  w = _weights(n, weights)
  count = w @ valid.sum(1)
  return float(w @ np.where(valid, values, 0.0).sum(1) / count) if count > 0 else float("nan")


def displacement(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
  """(N, T) Euclidean errors of (N, T, 3) trajectories."""
  return np.linalg.norm(np.asarray(pred, np.float64) - np.asarray(true, np.float64), axis=-1)


def ade_fde_of_errors(err: np.ndarray, valid: np.ndarray | None = None,
                      weights: np.ndarray | None = None) -> tuple[float, float]:
  """ADE and FDE of (N, T) displacement errors (see ade_fde), rows weighted."""
  valid = np.ones(err.shape, bool) if valid is None else np.asarray(valid, bool)
  return masked_mean(err, valid, weights), masked_mean(err[:, -1], valid[:, -1], weights)


def ade_fde(pred: np.ndarray, true: np.ndarray, valid: np.ndarray | None = None,
            weights: np.ndarray | None = None) -> tuple[float, float]:
  """Average and final displacement error of (N, T, 3) trajectories, metres.

  valid: optional (N, T) mask; ADE averages valid steps, FDE uses trajectories whose last
  step is valid. weights: (N,) per trajectory, as in f1_scores.
  """
  return ade_fde_of_errors(displacement(pred, true), valid, weights)


def joint_errors(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
  """(...,) mean per-joint position error of (..., J, 3) joints."""
  return np.linalg.norm(np.asarray(pred, np.float64) - np.asarray(true, np.float64),
                        axis=-1).mean(-1)


def mpjpe(pred: np.ndarray, true: np.ndarray, valid: np.ndarray | None = None,
          weights: np.ndarray | None = None) -> float:
  """Mean per-joint position error of (..., J, 3) joints, metres, over valid (...) rows;
  weights (N,) on the leading axis, as in f1_scores."""
  err = joint_errors(pred, true)
  if err.ndim == 0:
    err = err[None]
  return masked_mean(err, valid, weights)


def mae(pred: np.ndarray, true: np.ndarray, valid: np.ndarray | None = None,
        weights: np.ndarray | None = None) -> float:
  """Mean absolute error over the valid entries of (N, ...) arrays, row i counted
  weights[i] times."""
  err = np.abs(np.asarray(pred, np.float64) - np.asarray(true, np.float64))
  return masked_mean(err, valid, weights)


def r2_score(true: np.ndarray, pred: np.ndarray, weights: np.ndarray | None = None) -> float:
  """Coefficient of determination, uniformly averaged over output columns (sklearn's
  'uniform_average'); a constant column counts 1 if predicted exactly, else 0. weights:
  (N,) per row, as in f1_scores."""
  true = np.asarray(true, np.float64).reshape(len(true), -1)
  pred = np.asarray(pred, np.float64).reshape(len(pred), -1)
  w = _weights(len(true), weights)
  mean = (w @ true) / w.sum()
  ss_res = w @ (true - pred) ** 2
  ss_tot = w @ (true - mean) ** 2
  with np.errstate(divide="ignore", invalid="ignore"):
    r2 = np.where(ss_tot > 0, 1 - ss_res / ss_tot, np.where(ss_res == 0, 1.0, 0.0))
  return float(r2.mean())


def r2_from_sums(count: float, total: float, squares: float, sse: float) -> float:
  """R^2 of pooled elements from running sums: n, sum y, sum y^2 and the sum of squared
  errors (so a large reconstruction never has to be held at once); NaN when y is constant."""
  sst = squares - total * total / max(count, 1.0)
  return float(1.0 - sse / sst) if sst > 0 else float("nan")
