"""The suite's metrics, in numpy, each checked against hand-computed cases in the tests.

Conventions: labels are integer class ids; `-1` marks "no label" and is excluded by the
callers, not here. Trajectories are (N, T, ..., 3) in metres.
"""

from __future__ import annotations

import numpy as np


def f1_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
  """Macro- and micro-F1 of single-label predictions.

  Macro averages the per-class F1 over the classes present in y_true or y_pred (a class
  never seen and never predicted does not count); micro pools counts, which for single-label
  data equals accuracy.
  """
  y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
  classes = np.union1d(y_true, y_pred)
  f1s = []
  for c in classes:
    tp = np.sum((y_pred == c) & (y_true == c))
    fp = np.sum((y_pred == c) & (y_true != c))
    fn = np.sum((y_pred != c) & (y_true == c))
    f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
  tp = np.sum(y_true == y_pred)
  return {"macro_f1": float(np.mean(f1s)) if f1s else 0.0,
          "micro_f1": float(tp / len(y_true)) if len(y_true) else 0.0}


def binary_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
  """F1 of the positive class (1)."""
  y_true, y_pred = np.asarray(y_true).astype(bool), np.asarray(y_pred).astype(bool)
  tp = np.sum(y_true & y_pred)
  denom = 2 * tp + np.sum(~y_true & y_pred) + np.sum(y_true & ~y_pred)
  return float(2 * tp / denom) if denom else 0.0


def multilabel_micro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
  """Micro-F1 over all (sample, label) pairs of (N, K) 0/1 matrices."""
  return binary_f1(np.asarray(y_true).ravel(), np.asarray(y_pred).ravel())


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


def recall_at_k(ranks: np.ndarray, k: int) -> float:
  return float(np.mean(np.asarray(ranks) <= k))


def mean_reciprocal_rank(ranks: np.ndarray) -> float:
  return float(np.mean(1.0 / np.asarray(ranks, np.float64)))


def retrieval_metrics(similarity: np.ndarray, relevant: np.ndarray) -> dict[str, float]:
  ranks = retrieval_ranks(similarity, relevant)
  return {"r@1": recall_at_k(ranks, 1), "r@5": recall_at_k(ranks, 5),
          "r@10": recall_at_k(ranks, 10), "mrr": mean_reciprocal_rank(ranks)}


def ade_fde(pred: np.ndarray, true: np.ndarray, valid: np.ndarray | None = None
            ) -> tuple[float, float]:
  """Average and final displacement error of (N, T, 3) trajectories, metres.

  valid: optional (N, T) mask; ADE averages valid steps, FDE uses trajectories whose last
  step is valid.
  """
  err = np.linalg.norm(np.asarray(pred) - np.asarray(true), axis=-1)  # (N, T)
  valid = np.ones(err.shape, bool) if valid is None else np.asarray(valid, bool)
  ade = float(err[valid].mean()) if valid.any() else float("nan")
  last = valid[:, -1]
  fde = float(err[last, -1].mean()) if last.any() else float("nan")
  return ade, fde


def mpjpe(pred: np.ndarray, true: np.ndarray, valid: np.ndarray | None = None) -> float:
  """Mean per-joint position error of (..., J, 3) joints, metres, over valid (...) rows."""
  err = np.linalg.norm(np.asarray(pred) - np.asarray(true), axis=-1).mean(-1)  # (...,)
  if valid is None:
    return float(err.mean())
  valid = np.asarray(valid, bool)
  return float(err[valid].mean()) if valid.any() else float("nan")


def mae(pred: np.ndarray, true: np.ndarray, valid: np.ndarray | None = None) -> float:
  """Mean absolute error over the valid entries (`valid` of the same shape, or None)."""
  err = np.abs(np.asarray(pred, np.float64) - np.asarray(true, np.float64))
  if valid is None:
    return float(err.mean()) if err.size else float("nan")
  valid = np.broadcast_to(np.asarray(valid, bool), err.shape)
  return float(err[valid].mean()) if valid.any() else float("nan")


def r2_score(true: np.ndarray, pred: np.ndarray) -> float:
  """Coefficient of determination, uniformly averaged over output columns (sklearn's
  'uniform_average'); a constant column counts 1 if predicted exactly, else 0."""
  true = np.asarray(true, np.float64).reshape(len(true), -1)
  pred = np.asarray(pred, np.float64).reshape(len(pred), -1)
  ss_res = ((true - pred) ** 2).sum(0)
  ss_tot = ((true - true.mean(0)) ** 2).sum(0)
  with np.errstate(divide="ignore", invalid="ignore"):
    r2 = np.where(ss_tot > 0, 1 - ss_res / ss_tot, np.where(ss_res == 0, 1.0, 0.0))
  return float(r2.mean())


def r2_from_sums(count: float, total: float, squares: float, sse: float) -> float:
  """R^2 of pooled elements from running sums: n, sum y, sum y^2 and the sum of squared
  errors (so a large reconstruction never has to be held at once); NaN when y is constant."""
  sst = squares - total * total / max(count, 1.0)
  return float(1.0 - sse / sst) if sst > 0 else float("nan")
