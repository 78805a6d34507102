"""The world-model evaluation (future-window retrieval) on synthetic latents, checked against
brute-force numpy: no model, no corpus, no training (a fraction of a second)."""

import ml_collections
import numpy as np

from xefm_jax.eval import bootstrap
from xefm_jax.eval import embed
from xefm_jax.eval import evaluators
from xefm_jax.eval import probes
from xefm_jax.eval import report as report_lib
from xefm_jax.eval import world_model
from xefm_jax.eval.evaluators import future_retrieval as fr

W, S, D = 4, 2, 12  # window frames, frame stride (the future starts W S frames later), dims
TASK = ml_collections.ConfigDict(dict(evaluator="future_retrieval", target="future_window",
                                      inputs=("full",), metric="mrr", higher_is_better=True))


def _store(rng, episodes, length, head=None):
  """Windows at every 2 shard frames of `episodes` episodes of `length` windows; EMA latents
  random; hand-crafted features a noisy linear image of the future's latent; random-init
  features noise. head: "perfect" / "shuffled" / None (no predictions)."""
  ep = np.repeat(np.arange(episodes), length)
  start = np.tile(np.arange(length) * 2, episodes)
  n = len(ep)
  ema = rng.normal(size=(n, D)) * rng.uniform(0.5, 2, size=(n, 1)) + rng.normal(size=(n, 1))
  arrays = {"meta/episode": ep.astype(np.int32), "meta/start": start.astype(np.int32),
            f"features/model_ema/{fr.TARGET_VARIANT}": ema.astype(np.float32)}
  future = {(e, s): i for i, (e, s) in enumerate(zip(ep, start))}
  fut = np.array([future.get((e, s + W * S), -1) for e, s in zip(ep, start)])
  target = fr.layer_norm(ema)
  mix = np.random.default_rng(7).normal(size=(D, 20))  # the same map in every split
  lat = np.where(fut[:, None] >= 0, target[np.maximum(fut, 0)],
                 fr.layer_norm(rng.normal(size=(n, D))))  # no future: anything
  arrays["features/handcrafted/full"] = lat @ mix + 0.01 * rng.normal(size=(n, 20))
  arrays["features/random_init/full"] = rng.normal(size=(n, 20))
  if head is not None:
    pred = lat + 0.0
    if head == "shuffled":
      pred = pred[rng.permutation(n)]
    arrays[fr.HEAD_KEY] = pred.astype(np.float32)
  return embed.Store(arrays), fut


def _data(head, seed=0):
  rng = np.random.default_rng(seed)
  train, _ = _store(rng, 12, 20)
  val, _ = _store(rng, 6, 20)
  test, fut = _store(rng, 10, 20, head)
  grid = probes.Grid(ridge_alpha=(1e-2, 1.0, 100.0))
  data = evaluators.Data(train, val, test, grid=grid, seed=0, window=W, base_stride=2,
                         fps=10.0, frame_stride=S)
  return data, fut


def _brute_ranks(query, cand, true):
  qn = query / np.linalg.norm(query, axis=1, keepdims=True)
  cn = cand / np.linalg.norm(cand, axis=1, keepdims=True)
  out = []
  for q, t in zip(qn, true):
    sim = cn @ q
    out.append(1 + int(np.sum(sim > sim[t])) + int(np.sum(sim[np.arange(len(sim)) != t]
                                                         == sim[t])))
  return np.array(out)


def test_future_retrieval_metrics_match_brute_force():
  ev = evaluators.get("future_retrieval")
  data, fut = _data("perfect")
  rows = np.flatnonzero(fut >= 0)
  cand = fr.layer_norm(data.test.arrays[f"features/model_ema/{fr.TARGET_VARIANT}"])
  n = len(data.test)

  # perfect predictions: every true future first
  pred = ev.predict(TASK, data, fr.HEAD, ev.fit(TASK, data, fr.HEAD))
  np.testing.assert_array_equal(pred.rows, rows)
  m = ev.metrics(TASK, data, pred, np.ones(len(pred)))
  assert m["r@1"] == 1.0 and m["median_rank"] == 1.0 and m["mrr"] == 1.0
  assert m["pool"] == n and m["queries"] == len(rows) == 10 * (20 - W * S // 2)

  # shuffled predictions: ranks equal a brute-force ranking, metrics near chance
  data_s, _ = _data("shuffled")
  pred = ev.predict(TASK, data_s, fr.HEAD, None)
  q = data_s.test.arrays[fr.HEAD_KEY][rows].astype(np.float64)
  expect = _brute_ranks(q, cand, fut[rows])
  np.testing.assert_array_equal(pred.values["rank"], expect)
  m = ev.metrics(TASK, data_s, pred, np.ones(len(pred)))
  assert m["median_rank"] == np.median(expect)
  assert abs(m["mrr"] - np.mean(1.0 / expect)) < 1e-12
  assert m["r@10"] == np.mean(expect <= 10) and m["r@10"] < 0.2
  chance = fr.chance(n)
  assert m["mrr"] < 4 * chance["mrr"] and m["median_rank"] > n / 4

  assert ev.score(TASK, data_s, fr.HEAD, None) == m  # every test row once
  # integer weights = repeating units (the bootstrap's contract), median included
  w = np.random.default_rng(1).integers(0, 3, len(pred)).astype(float)
  mw = ev.metrics(TASK, data_s, pred, w)
  rep = np.repeat(expect, w.astype(int))
  assert mw["median_rank"] == np.median(rep)
  assert abs(mw["mrr"] - np.mean(1.0 / rep)) < 1e-12 and mw["r@5"] == np.mean(rep <= 5)

  # temporal consistency: cosine of the prediction at t and at the next window of the
  # episode (start + 2), by brute force; none after an episode's last window
  ep, st = data_s.test.arrays["meta/episode"], data_s.test.arrays["meta/start"]
  allq = data_s.test.arrays[fr.HEAD_KEY].astype(np.float64)
  cos = []
  for i in rows:
    j = np.flatnonzero((ep == ep[i]) & (st == st[i] + 2))
    if len(j):
      a, b = allq[i], allq[j[0]]
      cos.append(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
  assert abs(m["consistency"] - np.mean(cos)) < 1e-9

  # the ridge probe: hand-crafted features carry the future's latent -> near perfect;
  # random-init features are noise -> near chance
  hand = ev.metrics(TASK, data, ev.predict(TASK, data, "handcrafted",
                                           ev.fit(TASK, data, "handcrafted")),
                    np.ones(len(rows)))
  noise = ev.metrics(TASK, data, ev.predict(TASK, data, "random_init",
                                            ev.fit(TASK, data, "random_init")),
                     np.ones(len(rows)))
  assert hand["r@1"] > 0.95 and noise["r@5"] < 0.15


def test_world_model_section_intervals_and_report():
  data, _ = _data("perfect")
  sessions = data.test.arrays["meta/episode"]  # an episode per session here
  reps = bootstrap.session_weights(sessions, 50, 0)
  section, shown = world_model.evaluate(TASK, data, ("handcrafted", "random_init"), reps,
                                        len(np.unique(sessions)))
  fs = section["feature_sets"]
  assert set(fs) == {fr.HEAD, fr.PRESENT, "handcrafted", "random_init"}
  head = fs[fr.HEAD]
  assert head["test"]["r@1"] == 1.0 and head["ci95"]["r@1"] == (1.0, 1.0)
  lo, hi = fs["random_init"]["ci95"]["mrr"]
  assert lo <= fs["random_init"]["test"]["mrr"] <= hi
  # the present's own latent is a candidate, so "nothing moves" never ranks the future first
  assert fs[fr.PRESENT]["test"]["r@1"] == 0.0
  lo, _ = section["ci95_vs"][fr.HEAD]["random_init"]
  assert lo > 0.5  # perfect head vs noise: MRR 1 vs near 0
  assert len(shown) == 4 and all(s["top_rows"][0] == s["future_row"] and s["rank"] == 1
                                 for s in shown)
  md = "\n".join(report_lib.world_model_md(section))
  assert "World-model evaluation" in md and "future_state head" in md


def test_world_model_section_without_head():
  data, _ = _data(None)
  section, shown = world_model.evaluate(TASK, data, ("handcrafted",), None, 10)
  assert section["available"] is False and "future_state" in section["reason"]
  assert shown == []
  assert "Not available" in "\n".join(report_lib.world_model_md(section))
