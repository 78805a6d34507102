"""World-model evaluation: does a window's predicted future latent pick out its true future?

The future-state objective (xefm_jax/objectives/future_state.py) regresses, from the
current window, the EMA (target) encoder's window embedding of the *following* window
(frames start + s [W, 2W), every modality of the model, language included: XEFM.encode_next),
layer-normalised without parameters. Here, on the test split:

  target latents   the EMA trunk's embedding of every test window with every modality
                   (`features/model_ema/future_target`, the same pass as encode_next),
                   layer-normalised: the space the head was trained to predict into;
  query            for window t, a prediction of the target latent of window t + s W (the
                   next non-overlapping window of its episode: its "true future");
  ranking          cosine similarity of the query against the target latents of ALL test
                   windows (the true future is one of them; the query's own window and its
                   overlapping neighbours are candidates too, so copying the present is not
                   rewarded); pessimistic on ties (metrics.retrieval_ranks).
Metrics: median rank, MRR, R@1/5/10, and temporal consistency: the cosine between the
prediction at window t and at the next evaluated window of the same episode (t + one eval
stride), beside the same cosine of the true targets (how much the truth itself changes).

Queries by feature set:
  "future_state_head"  the head's own prediction (`predictions/future_state/embedding`,
                       read on the test windows without language; no probe): what
                       pretraining learned;
  "present_latent"     the window's own target latent (no probe): the "nothing moves"
                       reference a world model must beat;
  any feature set      (model, model_ema, handcrafted, random_init) a ridge map from the
                       window's `inputs[0]` features to the future's target latent, fitted
                       on train windows (with a future in train), alpha chosen on val by
                       this task's metric ranked among val's target latents.
Why both for the model: EVAL_SUITE.md's honest comparisons ask for the same probe family
and regularisation search on every feature set, so wins are counted on the equal ridge
probe (model vs both baselines); the head is what the issue asks about and has no
counterpart for the baselines (they were never trained to predict), so it is reported
beside them with its own intervals, marked as the head.
A unit is a test window with its true future among the test windows (one session: both
windows are of one episode). Metrics are exact under integer weights (a bootstrap
replicate counts a unit as often as its session is drawn); the pool never changes.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import numpy as np

from xefm_jax.eval import metrics as metrics_lib
from xefm_jax.eval import probes
from xefm_jax.eval.evaluators import base
from xefm_jax.eval.evaluators import pairs
from xefm_jax.eval.evaluators import retrieval

TARGET_VARIANT = "future_target"  # features/model_ema/<this>: the EMA pass, every modality
HEAD_KEY = "predictions/future_state/embedding"
HEAD = "future_state_head"
PRESENT = "present_latent"
KS = (1, 5, 10)


def layer_norm(x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
  """Parameter-free layer norm over the last axis (objectives/heads.layer_norm's)."""
  x = np.asarray(x, np.float64)
  mean = x.mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + eps)


def target_latents(store) -> np.ndarray:
  """(N, D) the layer-normalised EMA embedding of every window of a split."""
  key = f"features/model_ema/{TARGET_VARIANT}"
  if not store.has(key):
    raise KeyError(f"no future-state target latents ({key}) in this split: the run's "
                   "future_state objective is off or the store predates them")
  return layer_norm(store.arrays[key])


def offset(data: base.Data) -> int:
  """Frames (shard clock) from a window's start to its future's: s W."""
  return int(data.window) * int(data.frame_stride)


def next_rows(store) -> np.ndarray:
  """(N,) the row of the next evaluated window of the same episode (by start), -1 at an
  episode's last window."""
  ep, start = store.arrays["meta/episode"], store.arrays["meta/start"]
  order = np.lexsort((start, ep))
  out = np.full(len(ep), -1, np.int64)
  same = ep[order[1:]] == ep[order[:-1]]
  out[order[:-1][same]] = order[1:][same]
  return out


def ranks(query: np.ndarray, candidates: np.ndarray, true: np.ndarray) -> np.ndarray:
  """(Q,) 1-based rank of candidate true[i] for query i by cosine (pessimistic ties)."""
  sim = retrieval.unit(np.asarray(query, np.float64)) @ retrieval.unit(candidates).T
  relevant = np.zeros(sim.shape, bool)
  relevant[np.arange(len(true)), true] = True
  return metrics_lib.retrieval_ranks(sim, relevant)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  return np.sum(retrieval.unit(np.asarray(a, np.float64)) * retrieval.unit(b), -1)


def weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
  """The median of `values` each repeated weights[i] times (integer weights: np.median of
  the repeated array, the mean of the two middle ones for an even count)."""
  keep = weights > 0
  v, w = np.asarray(values, np.float64)[keep], np.asarray(weights, np.float64)[keep]
  if not len(v):
    return float("nan")
  order = np.argsort(v, kind="stable")
  v, cum = v[order], np.cumsum(w[order])
  total = cum[-1]
  pos = np.array([np.floor((total - 1) / 2), np.ceil((total - 1) / 2)])  # 0-based positions
  lo, hi = v[np.minimum(np.searchsorted(cum, pos, side="right"), len(v) - 1)]
  return float((lo + hi) / 2)


def rank_metrics(r: np.ndarray, weights: np.ndarray) -> dict[str, float]:
  out = {f"r@{k}": metrics_lib.recall_at_k(r, k, weights) for k in KS}
  out["mrr"] = metrics_lib.mean_reciprocal_rank(r, weights)
  out["median_rank"] = weighted_median(r, weights)
  return out


def chance(pool: int) -> dict[str, float]:
  """The metrics of a random order of `pool` candidates (expected values; median of the
  uniform rank)."""
  return {**{f"r@{k}": min(1.0, k / pool) for k in KS},
          "mrr": float(np.sum(1.0 / np.arange(1, pool + 1)) / pool),
          "median_rank": (pool + 1) / 2}


class _Fitted:
  def __init__(self, probe: Optional[probes.Probe]):
    self.probe = probe


@base.register("future_retrieval")
class FutureRetrieval(base.Evaluator):

  def _units(self, data: base.Data, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(rows with their future among the split's windows, those futures' rows)."""
    other = pairs.partners(data.split(split), offset(data))
    rows = np.flatnonzero(other >= 0)
    return rows, other[rows]

  def queries(self, task, data: base.Data, feature_set: str, fitted: _Fitted, split: str,
              swap: Optional[Mapping[str, str]] = None) -> np.ndarray:
    """(N, D) the predicted future latent of every window of a split."""
    store = data.split(split)
    if feature_set == HEAD:
      if not store.has(HEAD_KEY):
        raise KeyError(f"no future-state head predictions ({HEAD_KEY}) in the {split} split")
      return np.asarray(store.arrays[HEAD_KEY], np.float64)
    if feature_set == PRESENT:
      return target_latents(store)
    return np.asarray(fitted.probe.predict(base.features(store, feature_set, task.inputs[0],
                                                         swap)))

  def fit(self, task, data: base.Data, feature_set: str) -> _Fitted:
    if feature_set in (HEAD, PRESENT):
      return _Fitted(None)
    rows_tr, fut_tr = self._units(data, "train")
    rows_va, fut_va = self._units(data, "val")
    if not len(rows_tr) or not len(rows_va):
      raise ValueError("future retrieval: no train or val window has its future among the "
                       "split's windows (episodes shorter than two windows?)")
    keep = base.train_rows(data, np.ones(len(rows_tr), bool))
    x_tr = base.features(data.train, feature_set, task.inputs[0])[rows_tr[keep]]
    y_tr = target_latents(data.train)[fut_tr[keep]]
    x_va = base.features(data.val, feature_set, task.inputs[0])[rows_va]
    cand_va = target_latents(data.val)

    def score(_, pred):
      return rank_metrics(ranks(pred, cand_va, fut_va), np.ones(len(fut_va)))[task.metric]
    return _Fitted(probes.ridge_map(x_tr, y_tr, x_va, cand_va[fut_va], score, data.grid))

  def predict(self, task, data: base.Data, feature_set: str, fitted: _Fitted,
              swap: Optional[Mapping[str, str]] = None) -> base.Predictions:
    rows, future = self._units(data, "test")
    cand = target_latents(data.test)
    if not len(rows):
      return base.Predictions(rows, {}, {"pool": len(cand)})
    q = self.queries(task, data, feature_set, fitted, "test", swap)
    nxt = next_rows(data.test)[rows]
    has = nxt >= 0
    cos_next = np.full(len(rows), np.nan)
    cos_next[has] = cosine_rows(q[rows[has]], q[nxt[has]])
    truth_next = np.full(len(rows), np.nan)  # the true futures of t and of t + 1 stride
    fut_of_next = pairs.partners(data.test, offset(data))[nxt[has]]
    ok = fut_of_next >= 0
    idx = np.flatnonzero(has)[ok]
    truth_next[idx] = cosine_rows(cand[future[idx]], cand[fut_of_next[ok]])
    return base.Predictions(rows, {"rank": ranks(q[rows], cand, future), "future": future,
                                   "cos_next": cos_next, "truth_cos_next": truth_next},
                            {"pool": len(cand)})

  def metrics(self, task, data: base.Data, pred: base.Predictions, weights: np.ndarray
              ) -> dict[str, Any]:
    weights = np.asarray(weights, np.float64)
    if not len(pred) or not (weights > 0).any():
      return {task.metric: float("nan"), "queries": 0, **pred.info}
    out: dict[str, Any] = rank_metrics(pred.values["rank"], weights)
    for key, name in (("cos_next", "consistency"), ("truth_cos_next", "truth_consistency")):
      v = pred.values[key]
      ok = np.isfinite(v) & (weights > 0)
      out[name] = float(np.average(v[ok], weights=weights[ok])) if ok.any() else float("nan")
    out["queries"] = int(weights.sum())
    out.update(pred.info)
    return out

  def describe(self, fitted: _Fitted) -> dict[str, Any]:
    return super().describe(fitted.probe) if fitted.probe is not None else {"kind": "none"}


def examples(task, data: base.Data, feature_set: str, fitted: _Fitted, count: int = 4,
             k: int = 3) -> list[dict[str, Any]]:
  """For `count` test windows spread over the split (those with a future): the query's row,
  its true future's row, the rows of the `k` best-ranked target latents and the true
  future's rank (the figure of retrieved futures)."""
  ev = FutureRetrieval()
  rows, future = ev._units(data, "test")
  if not len(rows):
    return []
  q = ev.queries(task, data, feature_set, fitted, "test")
  cand = target_latents(data.test)
  picks = np.unique(np.linspace(0, len(rows) - 1, min(count, len(rows))).round().astype(int))
  out = []
  for i in picks:
    sim = retrieval.unit(cand) @ retrieval.unit(q[rows[i]][None])[0]
    top = np.argsort(-sim, kind="stable")[:k]
    out.append({"query_row": int(rows[i]), "future_row": int(future[i]),
                "top_rows": [int(j) for j in top],
                "rank": int(ranks(q[rows[i]][None], cand, future[i:i + 1])[0])})
  return out
