"""Retrieval: a query side -> its candidate among test windows, by cosine similarity.

  target "window"   query = features of variant inputs[0] (e.g. the motion side), candidate
                    = features of inputs[1] of the same window (the visual side, another
                    camera view); a ridge map fitted on train takes the query into the
                    candidates' standardised space. Exactly one relevant candidate.
  target "caption"  query = a sentence as a fixed TF-IDF vector of its words (IDF from the
                    train captions; the same for every feature set), candidate = the window
                    side (inputs[0]) mapped into that space by a ridge probe; every test
                    window with the same sentence is relevant; queries are the distinct
                    sentences.
Ranks are pessimistic on ties (metrics.retrieval_ranks). With `pool` > 0 the test windows
are split into random groups of `pool` (seeded) and each query ranks only its own group's
candidates (chance top-5 = 5 / pool); 0 ranks among all test windows. The ridge alpha is
chosen on val by the task's metric, ranked the same way.

Every query is ranked once, against the fixed pool of all usable test windows; the
metrics of a weighting of the test rows (a subset, a bootstrap replicate) average those
ranks over the weighted queries, so the pool and its chance level never change. A unit is
a test window: for "window" its own query; for "caption" the window's sentence, a sentence
counting with the mean weight of the windows that carry it (every window once: each
distinct sentence once).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import numpy as np
from sklearn import preprocessing

from xefm_jax.data import spec as spec_lib
from xefm_jax.eval import handcrafted
from xefm_jax.eval import metrics
from xefm_jax.eval import probes
from xefm_jax.eval.evaluators import base


def unit(x: np.ndarray) -> np.ndarray:
  """Rows scaled to unit L2 norm."""
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class TfIdf:
  """Sentence -> L2-normalised TF-IDF vector, IDF fitted on train sentences."""

  def __init__(self, train_ids: np.ndarray):
    self.vocab = int(max(train_ids.max(initial=0), spec_lib.EOS_ID) + 1)
    df = (handcrafted.bag_of_words(train_ids, self.vocab) > 0).sum(0)
    self.idf = np.log((1 + len(train_ids)) / (1 + df)) + 1.0

  def __call__(self, ids: np.ndarray) -> np.ndarray:
    return unit(handcrafted.bag_of_words(ids, self.vocab) * self.idf)


def groups(n: int, pool: int, seed: int) -> list[np.ndarray]:
  """Row indices split into random groups of about `pool` (all rows: one group)."""
  if pool <= 0 or pool >= n:
    return [np.arange(n)]
  perm = np.random.default_rng(seed).permutation(n)
  return np.array_split(perm, int(np.ceil(n / pool)))


def window_ranks(query: np.ndarray, candidates: np.ndarray, pool: int, seed: int
                 ) -> tuple[np.ndarray, int]:
  """(N,) rank of query i's relevant candidate, candidate i, within its pool group; and
  the pool's size."""
  ranks = np.zeros(len(query), np.int64)
  for g in groups(len(query), pool, seed):
    sim = unit(query[g]) @ unit(candidates[g]).T
    ranks[g] = metrics.retrieval_ranks(sim, np.eye(len(g), dtype=bool))
  return ranks, int(len(query) if pool <= 0 else min(pool, len(query)))


def _recalls(ranks: np.ndarray, weights: Optional[np.ndarray]) -> dict[str, float]:
  return {"r@1": metrics.recall_at_k(ranks, 1, weights),
          "r@5": metrics.recall_at_k(ranks, 5, weights),
          "r@10": metrics.recall_at_k(ranks, 10, weights),
          "mrr": metrics.mean_reciprocal_rank(ranks, weights)}


def rank_windows(query: np.ndarray, candidates: np.ndarray, pool: int, seed: int
                 ) -> dict[str, float]:
  """Query i's relevant candidate is candidate i; metrics over all queries."""
  ranks, size = window_ranks(query, candidates, pool, seed)
  return {**_recalls(ranks, None), "pool": size,
          "chance_r@5": float(min(1.0, 5 / max(size, 1)))}


def sentence_ranks(text: np.ndarray, ids: np.ndarray, windows: np.ndarray
                   ) -> dict[str, np.ndarray]:
  """Each distinct sentence (row of `ids`) against every window; windows whose sentence is
  identical are relevant. text: (N, V) TF-IDF of each window's sentence; windows: (N, V)
  the window sides mapped into that space. Per window: its sentence's index, that
  sentence's rank and how many windows carry it."""
  _, first, inverse = np.unique(ids, axis=0, return_index=True, return_inverse=True)
  inverse = inverse.reshape(-1)
  relevant = inverse[None, :] == np.arange(len(first))[:, None]  # (S, N)
  sim = unit(text[first]) @ unit(windows).T  # (S, N)
  ranks = metrics.retrieval_ranks(sim, relevant)
  return {"sentence": inverse, "rank": ranks[inverse], "relevant": relevant.sum(1)[inverse]}


def sentence_metrics(v: Mapping[str, np.ndarray], weights: np.ndarray, candidates: int
                     ) -> dict[str, float]:
  """Retrieval metrics of the distinct sentences of `sentence_ranks` values, a sentence
  weighted by the mean weight of its windows."""
  count = np.bincount(v["sentence"])
  ws = np.bincount(v["sentence"], weights=weights, minlength=len(count)) / np.maximum(count, 1)
  _, first = np.unique(v["sentence"], return_index=True)  # a window of each sentence
  keep = ws > 0
  ranks, relevant, ws = v["rank"][first[keep]], v["relevant"][first[keep]], ws[keep]
  return {**_recalls(ranks, ws), "sentences": int(keep.sum()), "candidates": int(candidates),
          # 1 / the expected rank of the first relevant window in a random order
          "chance_mrr": float(np.average((relevant + 1) / (candidates + 1), weights=ws))}


def rank_sentences(text: np.ndarray, ids: np.ndarray, windows: np.ndarray
                   ) -> dict[str, float]:
  """The metrics of `sentence_ranks`, each distinct sentence once."""
  return sentence_metrics(sentence_ranks(text, ids, windows), np.ones(len(ids)), len(ids))


class _Fitted:
  def __init__(self, probe: probes.Probe, scaler: Any, tfidf: Optional[TfIdf]):
    self.probe, self.scaler, self.tfidf = probe, scaler, tfidf


@base.register("retrieval")
class Retrieval(base.Evaluator):

  def _sides(self, task, store, feature_set, swap=None):
    """(query features, candidate features or caption ids, usable rows)."""
    if task.target == "caption":
      ok = store.target("caption_valid").astype(bool)
      return (base.features(store, feature_set, task.inputs[0], swap),
              store.target("caption"), ok)
    return (base.features(store, feature_set, task.inputs[0], swap),
            base.features(store, feature_set, task.inputs[1], swap),
            np.ones(len(store), bool))

  def fit(self, task, data: base.Data, feature_set: str) -> _Fitted:
    q_tr, c_tr, ok_tr = self._sides(task, data.train, feature_set)
    q_va, c_va, ok_va = self._sides(task, data.val, feature_set)
    rows = base.train_rows(data, ok_tr)
    if task.target == "caption":
      tfidf = TfIdf(c_tr[ok_tr])
      y_tr = tfidf(c_tr[rows])
      text_va, ids_va = tfidf(c_va[ok_va]), c_va[ok_va]

      def score(_, pred):
        return rank_sentences(text_va, ids_va, pred)[task.metric]
      probe = probes.ridge_map(q_tr[rows], y_tr, q_va[ok_va], text_va, score, data.grid)
      return _Fitted(probe, None, tfidf)
    scaler = preprocessing.StandardScaler().fit(c_tr[rows])
    z_va = scaler.transform(c_va)
    pool = int(task.pool)

    def score(_, pred):
      return rank_windows(pred, z_va, pool, data.seed)[task.metric]
    probe = probes.ridge_map(q_tr[rows], scaler.transform(c_tr[rows]), q_va, z_va, score,
                             data.grid)
    return _Fitted(probe, scaler, None)

  def predict(self, task, data: base.Data, feature_set: str, fitted: _Fitted,
              swap: Optional[Mapping[str, str]] = None) -> base.Predictions:
    q, c, ok = self._sides(task, data.test, feature_set, swap)
    rows = np.flatnonzero(ok)
    if len(rows) < 2:
      return base.Predictions(rows[:0], {}, {"candidates": len(rows)})
    mapped = np.asarray(fitted.probe.predict(q[rows]))
    if task.target == "caption":
      return base.Predictions(rows, sentence_ranks(fitted.tfidf(c[rows]), c[rows], mapped),
                              {"candidates": len(rows)})
    ranks, size = window_ranks(mapped, fitted.scaler.transform(c[rows]), int(task.pool),
                               data.seed)
    return base.Predictions(rows, {"rank": ranks},
                            {"pool": size, "chance_r@5": float(min(1.0, 5 / max(size, 1)))})

  def metrics(self, task, data: base.Data, pred: base.Predictions, weights: np.ndarray
              ) -> dict[str, Any]:
    if not (weights > 0).any():
      return {task.metric: float("nan"), "windows": int(weights.sum())}
    if task.target == "caption":
      out = sentence_metrics(pred.values, weights, pred.info["candidates"])
    else:
      out = {**_recalls(pred.values["rank"], weights), **pred.info}
    out["windows"] = int(weights.sum())
    return out


def grounding_examples(task, data: base.Data, feature_set: str, fitted: _Fitted,
                       queries: int = 3, k: int = 3) -> list[dict[str, Any]]:
  """For the first `queries` distinct test sentences: the test rows of the `k` best-ranked
  windows and whether each carries the sentence (the figures' retrieval examples)."""
  q, ids, ok = Retrieval()._sides(task, data.test, feature_set)
  rows = np.flatnonzero(ok)
  if len(rows) < 2:
    return []
  mapped = np.asarray(fitted.probe.predict(q[rows]))
  text = fitted.tfidf(ids[rows])
  _, first = np.unique(ids[rows], axis=0, return_index=True)
  out = []
  for i in sorted(first)[:queries]:
    sim = unit(mapped) @ unit(text[i])
    top = np.argsort(-sim, kind="stable")[:k]
    out.append({"query_row": int(rows[i]), "top_rows": [int(rows[j]) for j in top],
                "relevant": [bool(np.array_equal(ids[rows[j]], ids[rows[i]])) for j in top]})
  return out
