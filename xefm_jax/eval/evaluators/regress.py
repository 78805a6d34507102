"""Regression from a window: future hand joints (MPJPE), current hand joints (MAE, metres),
future ego-motion (ADE/FDE at fixed horizons), scalars (motion intensity, action phase,
frames to the next transition: R^2 and MAE), fixed feature targets (R^2).

Targets with missing entries (an untracked hand, an invalid pose) are scored only where
valid. For fitting, a missing entry is first filled with its train column mean; the probe
chosen on val is then refitted a few times with the missing entries filled by its own
predictions (EM for missing responses: for a linear probe the fixed point is the fit to
the valid entries alone, where mean filling would pull every prediction towards the
average). Targets are standardised with train statistics before fitting, so one ridge
alpha or MLP penalty suits every column.

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


def scores(name: str, y: np.ndarray, pred: np.ndarray, valid: np.ndarray,
           shape: tuple[int, ...], fps: float, horizons_s=EGO_HORIZONS_S) -> dict[str, float]:
  """The metrics of target `name`: y, pred, valid (N, d) flattened."""
  n = len(y)
  if name == "hands_future":  # (N, K, 2, 21, 3) joints, metres
    y, pred = y.reshape((n,) + shape), pred.reshape((n,) + shape)
    steps = valid.reshape((n,) + shape)[..., 0, 0]  # (N, K, 2)
    return {"mpjpe": metrics.mpjpe(pred, y, steps),
            "mpjpe_last": metrics.mpjpe(pred[:, -1], y[:, -1], steps[:, -1])}
  if name == "ego_future":  # (N, F, 3) positions in the body frame of now, metres
    y, pred = y.reshape((n,) + shape), pred.reshape((n,) + shape)
    steps = valid.reshape((n,) + shape)[..., 0]  # (N, F)
    out = {}
    for h in horizons_s:
      k = int(round(h * fps))
      if 0 < k <= shape[0]:
        out[f"ade@{h:g}s"], out[f"fde@{h:g}s"] = metrics.ade_fde(pred[:, :k], y[:, :k],
                                                                  steps[:, :k])
    return out
  if name == "hands_now":  # (N, 2, 21, 3) joints, metres
    y, pred = y.reshape((n,) + shape), pred.reshape((n,) + shape)
    hands = valid.reshape((n,) + shape)[..., 0, 0]  # (N, 2)
    return {"mae": metrics.mae(pred, y, hands[..., None, None]),
            "mpjpe": metrics.mpjpe(pred, y, hands)}
  rows = valid.all(1)
  return {"r2": metrics.r2_score(y[rows], pred[rows]) if rows.sum() > 1 else float("nan"),
          "mae": metrics.mae(pred[rows], y[rows])}


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
                       kinds=tuple(task.probes), seed=data.seed, grid=data.grid)
    if not v_tr.all():
      for _ in range(EM_STEPS):
        guess = np.asarray(probe.predict(x_tr)).reshape(z_tr.shape)
        probe = probes.refit(probe, x_tr, np.where(v_tr, z_tr, guess))
    return _Fitted(probe, mean, std)

  def score(self, task, data: base.Data, feature_set: str, fitted: _Fitted,
            swap: Optional[Mapping[str, str]] = None,
            rows: Optional[np.ndarray] = None) -> dict[str, Any]:
    y, valid, shape = target(data.test, task.target)
    ok = valid.any(1) & base.test_mask(data.test, rows)
    if ok.sum() < 2:
      return {task.metric: float("nan"), "windows": int(ok.sum())}
    x = base.features(data.test, feature_set, task.inputs[0], swap)[ok]
    out: dict[str, Any] = scores(task.target, y[ok], fitted.predict(x), valid[ok], shape,
                                 data.fps)
    out["windows"] = int(ok.sum())
    return out
