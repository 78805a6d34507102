"""Pairs of windows: temporal order and misalignment, by a probe on both windows' features.

  target "order"       windows t and t + W of one episode (W = the window's frames: the
                       adjacent, non-overlapping window), presented in order or swapped
                       (a seeded coin per pair); input [first, second, second - first] of
                       variant inputs[0]; label 1 = in order; F1 of "in order".
  target "misaligned"  the motion side (inputs[0]) of window t with the visual side
                       (inputs[1]) of t, or of the window 8 eval strides later (a seeded
                       coin per window); input [motion, visual, mapped * visual]; label
                       1 = misaligned; F1 of "misaligned".
Why the product for misalignment: a linear probe on [motion, visual] scores f(m) + g(v),
whose distribution is nearly the same for aligned and shifted pairs (each side alone looks
the same), so it cannot tell them apart whatever the features. `mapped` is the motion side
taken into the visual side's standardised space by the ridge map of cross-modal retrieval
(retrieval.py, fitted on aligned train windows, alpha chosen on val), both sides L2
normalised: the sum of their elementwise product is the cosine of the two, which a linear
probe can threshold. The same construction serves every feature set.
Only windows whose partner is among the split's windows take part. The coins depend on the
seed and the split's name, so every feature set sees the same pairs and labels. A unit is
a test pair, tied to its first window (both windows are of one episode, so one session).
"""

from __future__ import annotations

import zlib
from typing import Any, Mapping, Optional

import ml_collections
import numpy as np

from xefm_jax.eval import metrics
from xefm_jax.eval import probes
from xefm_jax.eval.evaluators import base
from xefm_jax.eval.evaluators import classify
from xefm_jax.eval.evaluators import retrieval

ALIGN_POOL = 100  # the aligning map's val ranking pool (cross_modal_retrieval's)


def partners(store, offset: int) -> np.ndarray:
  """(N,) row of the window `offset` frames later in the same episode, -1 where absent."""
  ep, start = store.arrays["meta/episode"], store.arrays["meta/start"]
  where = {(int(e), int(s)): i for i, (e, s) in enumerate(zip(ep, start))}
  return np.array([where.get((int(e), int(s) + offset), -1) for e, s in zip(ep, start)])


def offset_frames(task, data: base.Data) -> int:
  return data.window if task.offset == "window" else 8 * data.base_stride


def pairs(task, data: base.Data, split: str, feature_set: str,
          swap: Optional[Mapping[str, str]] = None, aligner: Any = None
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(inputs (P, F), labels (P,), anchor rows (P,)) of a split; `aligner`: the motion-to-
  visual map of "misaligned" (see `align`)."""
  store = data.split(split)
  other = partners(store, offset_frames(task, data))
  rows = np.flatnonzero(other >= 0)
  coin = np.random.default_rng([data.seed, zlib.crc32(f"{task.target}:{split}".encode())]
                               ).random(len(store)) < 0.5
  coin = coin[rows]
  if task.target == "order":
    x = base.features(store, feature_set, task.inputs[0], swap)
    a, b = x[rows], x[other[rows]]
    first, second = np.where(coin[:, None], b, a), np.where(coin[:, None], a, b)
    return np.concatenate([first, second, second - first], 1), (~coin).astype(int), rows
  motion = base.features(store, feature_set, task.inputs[0], swap)[rows]
  visual = base.features(store, feature_set, task.inputs[1], swap)
  seen = np.where(coin[:, None], visual[other[rows]], visual[rows])
  mapped = retrieval.unit(np.asarray(aligner.probe.predict(motion)).reshape(len(rows), -1))
  product = mapped * retrieval.unit(aligner.scaler.transform(seen))
  return np.concatenate([motion, seen, product], 1), coin.astype(int), rows


def align(task, data: base.Data, feature_set: str) -> Any:
  """The ridge map from the motion side to the standardised visual side (cross-modal
  retrieval's, fitted on the train split's aligned windows, alpha chosen on val MRR)."""
  as_retrieval = ml_collections.ConfigDict(
      {**task.to_dict(), "target": "window", "metric": "mrr", "pool": ALIGN_POOL})
  return retrieval.Retrieval().fit(as_retrieval, data, feature_set)


class _Fitted:
  def __init__(self, probe: probes.Probe, aligner: Any):
    self.probe, self.aligner = probe, aligner


@base.register("pairs")
class Pairs(base.Evaluator):

  def fit(self, task, data: base.Data, feature_set: str) -> _Fitted:
    aligner = align(task, data, feature_set) if task.target == "misaligned" else None
    x_tr, y_tr, _ = pairs(task, data, "train", feature_set, aligner=aligner)
    x_va, y_va, _ = pairs(task, data, "val", feature_set, aligner=aligner)
    keep = base.train_rows(data, np.ones(len(y_tr), bool))

    def score(y_true, y_pred):
      return metrics.binary_f1(y_true, y_pred) if len(y_true) else 0.0
    return _Fitted(probes.fit("classify", x_tr[keep], y_tr[keep], x_va, y_va, score, True,
                              grid=data.grid, balanced=task.metric == "macro_f1"), aligner)

  def predict(self, task, data: base.Data, feature_set: str, fitted: _Fitted,
              swap: Optional[Mapping[str, str]] = None) -> base.Predictions:
    x, y, anchors = pairs(task, data, "test", feature_set, swap, fitted.aligner)
    pred = np.asarray(fitted.probe.predict(x)) if len(y) else np.zeros(0, np.int64)
    return base.Predictions(anchors, {"true": y, "pred": pred.astype(np.int64)})

  def metrics(self, task, data: base.Data, pred: base.Predictions, weights: np.ndarray
              ) -> dict[str, Any]:
    used = weights > 0
    if not used.any():
      return {task.metric: float("nan"), "pairs": 0}
    out: dict[str, Any] = classify.scores(pred.values["true"][used], pred.values["pred"][used],
                                          True, weights[used])
    out["pairs"] = int(weights.sum())
    return out
