"""Regression from a window: future hand joints (MPJPE), current hand joints (MAE, metres),
future ego-motion (ADE/FDE at fixed horizons), scalars (motion intensity, action phase,
frames to the next transition: R^2 and MAE), fixed feature targets (R^2).

Targets with missing entries (an untracked hand, an invalid pose) are scored only where
valid. For fitting, a missing entry is first filled with its train column mean; the probe
chosen on val is then refitted a few times with the missing entries filled by its own
predictions (EM for missing responses: for a linear probe the fixed point is the fit to
the valid entries alone, where mean filling would pull every prediction towards the
average). Targets are standardised with train statistics before fitting, so one ridge
alpha suits every column.

Target names: keys of targets.window_targets, or `handcrafted:<m1>,<m2>` for the
hand-crafted statistics of those modalities of the full window (targets/stats/<m>).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import numpy as np

from xefm_jax.eval import metrics
from xefm_jax.eval import probes
from xefm_jax.eval.evaluators import base

EGO_HORIZONS_S = (0.5, 1.0, 2.0)
EM_STEPS = 4  # refits with missing train entries imputed by the probe


def target(store, name: str) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
  """y (N, d) float64, valid (N, d) bool, and the per-window shape of y."""
  if name.startswith("handcrafted:"):
    y = np.concatenate([store.target(f"stats/{m}") for m in name.split(":")[1].split(",")],
                       -1).astype(np.float64)
    return y, np.ones(y.shape, bool), y.shape[1:]
  y = store.target(name).astype(np.float64)
  shape = y.shape[1:]
  if store.has(f"targets/{name}_valid"):
    valid = store.target(f"{name}_valid").astype(bool)  # leading axes of y
    valid = np.broadcast_to(valid.reshape(valid.shape + (1,) * (y.ndim - valid.ndim)),
                            y.shape)
  else:
    valid = np.isfinite(y)
  n = len(y)
  return np.nan_to_num(y).reshape(n, -1), valid.reshape(n, -1), shape


def per_window(name: str, y: np.ndarray, pred: np.ndarray, valid: np.ndarray,
               shape: tuple[int, ...]) -> dict[str, np.ndarray]:
  """What the metrics of target `name` read, per window: y, pred, valid (N, d) flattened.

  hands_future: err (N, K, 2) mean joint error per future frame and hand, valid (N, K, 2);
  hands_now: abs and err (N, 2) mean absolute error and mean joint error per hand, valid;
  ego_future: err (N, F) displacement per future frame, valid (N, F); else y and pred of
  the rows whose every column is valid (R^2)."""
  n = len(y)
  if name == "hands_future":  # (N, K, 2, 21, 3) joints, metres
    y, pred = y.reshape((n,) + shape), pred.reshape((n,) + shape)
    return {"err": metrics.joint_errors(pred, y),
            "valid": valid.reshape((n,) + shape)[..., 0, 0]}
  if name == "ego_future":  # (N, F, 3) positions in the body frame of now, metres
    y, pred = y.reshape((n,) + shape), pred.reshape((n,) + shape)
    return {"err": metrics.displacement(pred, y), "valid": valid.reshape((n,) + shape)[..., 0]}
  if name == "hands_now":  # (N, 2, 21, 3) joints, metres: per hand, mean |error| and joint error
    y, pred = y.reshape((n,) + shape), pred.reshape((n,) + shape)
    return {"abs": np.abs(pred - y).mean((-1, -2)), "err": metrics.joint_errors(pred, y),
            "valid": valid.reshape((n,) + shape)[..., 0, 0]}
  full = valid.all(1)
  return {"y": np.where(full[:, None], y, 0.0), "pred": np.where(full[:, None], pred, 0.0),
          "valid": full}


def from_windows(name: str, v: Mapping[str, np.ndarray], weights: np.ndarray, fps: float,
                 horizons_s=EGO_HORIZONS_S) -> dict[str, float]:
  """The metrics of target `name` from `per_window` values, window i counted weights[i]
  times."""
  if name == "hands_future":
    return {"mpjpe": metrics.masked_mean(v["err"], v["valid"], weights),
            "mpjpe_last": metrics.masked_mean(v["err"][:, -1], v["valid"][:, -1], weights)}
  if name == "ego_future":
    out = {}
    for h in horizons_s:
      k = int(round(h * fps))
      if 0 < k <= v["err"].shape[1]:
        out[f"ade@{h:g}s"], out[f"fde@{h:g}s"] = metrics.ade_fde_of_errors(
            v["err"][:, :k], v["valid"][:, :k], weights)
    return out
  if name == "hands_now":
    return {"mae": metrics.masked_mean(v["abs"], v["valid"], weights),
            "mpjpe": metrics.masked_mean(v["err"], v["valid"], weights)}
  rows = v["valid"] & (weights > 0)
  return {"r2": metrics.r2_score(v["y"][rows], v["pred"][rows], weights[rows])
          if rows.sum() > 1 else float("nan"),
          "mae": metrics.mae(v["pred"], v["y"], v["valid"], weights)}


def scores(name: str, y: np.ndarray, pred: np.ndarray, valid: np.ndarray,
           shape: tuple[int, ...], fps: float, horizons_s=EGO_HORIZONS_S) -> dict[str, float]:
  """The metrics of target `name`, every window once: y, pred, valid (N, d) flattened."""
  return from_windows(name, per_window(name, y, pred, valid, shape), np.ones(len(y)), fps,
                      horizons_s)


class _Fitted:
  def __init__(self, probe: probes.Probe, mean: np.ndarray, std: np.ndarray):
    self.probe, self.mean, self.std = probe, mean, std

  def predict(self, x: np.ndarray) -> np.ndarray:
    return np.asarray(self.probe.predict(x)).reshape(len(x), -1) * self.std + self.mean


@base.register("regress")
class Regress(base.Evaluator):

  def fit(self, task, data: base.Data, feature_set: str) -> _Fitted:
    y_tr, v_tr, shape = target(data.train, task.target)
    y_va, v_va, _ = target(data.val, task.target)
    rows = base.train_rows(data, v_tr.any(1))
    y_tr, v_tr = y_tr[rows], v_tr[rows]
    counts = np.maximum(v_tr.sum(0), 1)
    mean = (y_tr * v_tr).sum(0) / counts  # (d,) over valid entries
    std = np.sqrt((((y_tr - mean) ** 2) * v_tr).sum(0) / counts)
    std = np.where(std > 1e-8, std, 1.0)
    z_tr = (np.where(v_tr, y_tr, mean) - mean) / std
    ok_va = v_va.any(1)
    x_tr = base.features(data.train, feature_set, task.inputs[0])[rows]
    x_va = base.features(data.val, feature_set, task.inputs[0])[ok_va]
    y_va, v_va = y_va[ok_va], v_va[ok_va]
    metric = task.metric

    def score(_, z_pred):
      pred = np.asarray(z_pred).reshape(len(z_pred), -1) * std + mean
      value = scores(task.target, y_va, pred, v_va, shape, data.fps).get(metric, np.nan)
      return value if np.isfinite(value) else (-np.inf if task.higher_is_better else np.inf)
    z_va = (np.where(v_va, y_va, mean) - mean) / std
    probe = probes.fit("regress", x_tr, z_tr, x_va, z_va, score, task.higher_is_better,
                       grid=data.grid)
    if not v_tr.all():
      for _ in range(EM_STEPS):
        guess = np.asarray(probe.predict(x_tr)).reshape(z_tr.shape)
        probe = probes.refit(probe, x_tr, np.where(v_tr, z_tr, guess))
    return _Fitted(probe, mean, std)

  def predict(self, task, data: base.Data, feature_set: str, fitted: _Fitted,
              swap: Optional[Mapping[str, str]] = None) -> base.Predictions:
    y, valid, shape = target(data.test, task.target)
    rows = np.flatnonzero(valid.any(1))
    x = base.features(data.test, feature_set, task.inputs[0], swap)[rows]
    pred = fitted.predict(x) if len(rows) else np.zeros((0, y.shape[1]))
    return base.Predictions(rows, per_window(task.target, y[rows], pred, valid[rows], shape))

  def metrics(self, task, data: base.Data, pred: base.Predictions, weights: np.ndarray
              ) -> dict[str, Any]:
    used = weights > 0
    if used.sum() < 2:
      return {task.metric: float("nan"), "windows": int(weights.sum())}
    out: dict[str, Any] = from_windows(task.target, {k: v[used] for k, v in pred.values.items()},
                                       weights[used], data.fps)
    out["windows"] = int(weights.sum())
    return out
