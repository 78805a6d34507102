"""The evaluation suite: evaluators on features whose answer is known, input variants, the
frozen encoder against the model, session splits, and an end-to-end eval of a tiny run."""

import json
import pathlib
import shutil
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

from configs import eval as eval_configs
from configs import local
from data_pipelines.export import common as export_common
from model_helpers import host_params
from xefm_jax.data import spec as spec_lib
from xefm_jax.data import splits as splits_lib
from xefm_jax.data import source as source_lib
from xefm_jax.eval import bootstrap
from xefm_jax.eval import checkpoints
from xefm_jax.eval import answer_scores
from xefm_jax.eval import answers
from xefm_jax.eval import embed
from xefm_jax.eval import encode
from xefm_jax.eval import evaluators
from xefm_jax.eval import handcrafted
from xefm_jax.eval import metrics
from xefm_jax.eval import probes
from xefm_jax.eval import report as report_lib
from xefm_jax.eval import suite
from xefm_jax.eval import targets as targets_lib
from xefm_jax.eval import variants as variants_lib
from xefm_jax.eval.evaluators import base as evaluators_base
from xefm_jax.eval.evaluators import retrieval
from xefm_jax.model.xefm import XEFM
from xefm_jax.objectives import base as objectives_base

ROOT = pathlib.Path(__file__).resolve().parents[1]
CFG = eval_configs.get_config("quick")
CFG.lock()  # as launch/eval.py has it (config_flags lock_config=True)
GRID = probes.Grid(linear_c=(1.0,), ridge_alpha=(0.1,))
EPISODES, PER_EPISODE = 6, 60  # windows at stride 1 (frames)


def _store(rng, features: dict, targets: dict, seed_offset=0) -> embed.Store:
  n = EPISODES * PER_EPISODE
  arrays = {"meta/episode": np.repeat(np.arange(EPISODES) + 100 * seed_offset, PER_EPISODE),
            "meta/start": np.tile(np.arange(PER_EPISODE), EPISODES)}
  arrays.update({f"targets/{k}": v for k, v in targets.items()})
  arrays.update({f"features/{fs}/{v}": x for (fs, v), x in features.items()})
  assert all(len(a) == n for a in arrays.values())
  return embed.Store(arrays)


def _data(make) -> evaluators.Data:
  """make(rng, split index) -> (features, targets) of one split."""
  stores = [_store(np.random.default_rng(i), *make(np.random.default_rng(i), i), i)
            for i in range(3)]
  return evaluators.Data(*stores, grid=GRID, seed=0, window=4, base_stride=1, fps=20.0)


def _score(task, data, fs="model"):
  ev = evaluators.get(task.evaluator)
  return ev.score(task, data, fs, ev.fit(task, data, fs))


N = EPISODES * PER_EPISODE


# ------------------------------------------------------------------ evaluators: known answers


def test_classify_scores_one_for_label_features_and_chance_for_noise():
  task = CFG.tasks.timeline_action.copy_and_resolve_references()

  def make(rng, _):
    y = rng.integers(0, 5, N)
    y[::17] = -1  # unlabelled windows take no part
    onehot = np.eye(5)[np.maximum(y, 0)] * 3 + 0.01 * rng.normal(size=(N, 5))
    return {("model", "full"): onehot, ("handcrafted", "full"): rng.normal(size=(N, 5))}, {
        "action": y}
  data = _data(make)
  good, noise = _score(task, data, "model"), _score(task, data, "handcrafted")
  assert good["macro_f1"] == 1.0 and good["windows"] == np.sum(data.test.target("action") >= 0)
  assert noise["macro_f1"] < 0.4  # chance is 0.2


def test_multilabel_and_binary_targets():
  objects, contact = CFG.tasks.object_relevance, CFG.tasks.contact_prediction

  def make(rng, _):
    y = rng.random((N, 6)) < 0.3
    c = rng.random(N) < 0.5
    return {("model", "full"): np.concatenate([y * 2.0, c[:, None] * 2.0], 1),
            ("handcrafted", "full"): rng.normal(size=(N, 7))}, {"objects": y, "contact": c}
  data = _data(make)
  assert _score(objects, data)["micro_f1"] == 1.0
  assert _score(contact, data)["macro_f1"] == 1.0
  assert _score(objects, data, "handcrafted")["micro_f1"] < 0.45
  assert _score(contact, data, "handcrafted")["macro_f1"] < 0.65


def test_regression_recovers_linear_targets_and_masks_missing_entries():
  tasks = CFG.tasks.copy_and_resolve_references()
  ext = CFG.extensions.copy_and_resolve_references()
  w_hands = np.random.default_rng(7).normal(size=(8, 10 * 2 * 21 * 3)) * 0.05
  w_ego = np.random.default_rng(8).normal(size=(8, 40 * 3)) * 0.3

  def make(rng, _):
    x = rng.normal(size=(N, 8))
    hands = (x @ w_hands).reshape(N, 10, 2, 21, 3)
    hv = rng.random((N, 10, 2)) < 0.7
    hands[~hv] = 99.0  # garbage where untracked: must neither be fitted nor scored
    ego_valid = np.ones((N, 40), bool)
    ego_valid[::5, 30:] = False
    return {("model", "full"): x, ("handcrafted", "full"): rng.normal(size=(N, 8))}, {
        "hands_future": hands, "hands_future_valid": hv,
        "ego_future": (x @ w_ego).reshape(N, 40, 3), "ego_future_valid": ego_valid,
        "motion_intensity": x @ np.arange(8.0), "action_phase": np.where(
            np.arange(N) % 7 == 0, np.nan, np.tanh(x[:, 0]))}
  data = _data(make)
  assert _score(tasks.hand_trajectory_forecast, data)["mpjpe"] < 5e-3
  ego = _score(ext.ego_motion_forecast, data)
  assert ego["ade@2s"] < 1e-3 and ego["fde@0.5s"] < 1e-3
  assert _score(ext.motion_intensity, data)["r2"] > 0.999
  assert _score(ext.action_phase, data)["r2"] > 0.5
  assert _score(ext.motion_intensity, data, "handcrafted")["r2"] < 0.1


def test_tasks_13_to_20_score_known_answers():
  """The additional contracts' evaluators: a forecast set with rows past the episode's end
  (invalid: neither fitted nor scored), hand joints from a linear image (MAE in metres),
  frames to a transition (MAE), and the synchronized camera pair (MRR)."""
  t = CFG.tasks.copy_and_resolve_references()
  w = np.random.default_rng(9).normal(size=(8, 2 * 21 * 3)) * 0.05

  def make(rng, _):
    x = rng.normal(size=(N, 8))
    objects = rng.random((N, 5)) < 0.3
    valid = np.arange(N) % 6 != 0
    objects[~valid] = True  # garbage past the horizon
    hands = (x @ w).reshape(N, 2, 21, 3)
    hv = rng.random((N, 2)) < 0.6
    hands[~hv] = 50.0
    frames = np.where(np.arange(N) % 9 == 0, np.nan, np.clip(40 + 30 * x[:, 1], 1, 200))
    cam1 = rng.normal(size=(N, 6))
    return {("model", "full"): np.concatenate([x, objects * 3.0], 1),
            ("handcrafted", "full"): rng.normal(size=(N, 13)), ("model", "imu"): x,
            ("handcrafted", "imu"): rng.normal(size=(N, 8)), ("model", "cam1"): cam1,
            ("model", "cam3"): cam1 @ np.diag([2.0, 1, 1, 3, 1, 1]),
            ("handcrafted", "cam1"): cam1, ("handcrafted", "cam3"): rng.normal(size=(N, 6))
            }, {"objects_5s": objects, "objects_5s_valid": valid, "hands_now": hands,
                "hands_now_valid": hv, "time_to_transition": frames}
  data = _data(make)
  forecast = _score(t.object_set_forecast, data)
  assert forecast["micro_f1"] == 1.0
  assert forecast["windows"] == np.sum(data.test.target("objects_5s_valid"))
  hands = _score(t.imu_to_hand_pose, data)
  assert hands["mae"] < 1e-3 and hands["windows"] == np.sum(
      data.test.target("hands_now_valid").any(1))
  assert _score(t.imu_to_hand_pose, data, "handcrafted")["mae"] > 0.01
  ttt = _score(t.time_to_transition, data)
  assert ttt["mae"] < 5.0 and ttt["windows"] == np.sum(  # frames; a linear probe of a clip
      np.isfinite(data.test.target("time_to_transition")))
  assert _score(t.time_to_transition, data, "handcrafted")["mae"] > 15.0
  sync = _score(t.camera_view_sync_retrieval, data)
  assert sync["mrr"] == 1.0
  assert _score(t.camera_view_sync_retrieval, data, "handcrafted")["mrr"] < 0.2


def test_horizon_targets_read_the_episode_timeline(shard_corpus):
  """Labels 5 s ahead and frames to the next action start come from the whole episode (past
  the window's future frames); past the episode's end they are unknown."""
  corpus = source_lib.Corpus(shard_corpus)
  labels = targets_lib.EpisodeLabels(corpus, cache=2)
  s = labels.stride
  ep = next(i for i, e in enumerate(corpus.episodes) if e["length"] * s > 130)
  stored = corpus.read_episode(ep)
  n = corpus.episodes[ep]["length"]
  now = np.arange(0, n, 3)
  out = targets_lib.horizon_targets(labels, np.full(len(now), ep), now)
  h = 100 // s
  for i, t in enumerate(now):
    if t + h < n:
      assert out["action_5s"][i] == stored["action"][t + h]
      assert out["subtask_5s"][i] == stored["subtask"][t + h]
      np.testing.assert_array_equal(out["objects_5s"][i], stored["objects"][t + h])
      assert out["objects_5s_valid"][i]
    else:
      assert out["action_5s"][i] == -1 and not out["objects_5s_valid"][i]
    later = [f for f in range(t + 1, min(n, t + 200 // s + 1)) if stored["boundary"][f]]
    if later:
      assert out["time_to_transition"][i] == (later[0] - t) * s
    elif t + 200 // s < n:
      assert out["time_to_transition"][i] == 200
    else:
      assert np.isnan(out["time_to_transition"][i])
  assert np.isfinite(out["time_to_transition"]).any() and (out["action_5s"] >= 0).any()
  assert targets_lib.label_class([3, 1]) == targets_lib.label_class(np.array([3, 1]))
  assert targets_lib.label_class([3, 1]) != targets_lib.label_class([1, 3])
  assert targets_lib.label_class([2], [4, 5]) != targets_lib.label_class([2, 4], [5])
  assert 0 <= targets_lib.label_class([7]) < 2 ** 62


def test_window_retrieval_finds_a_linear_image_and_noise_is_near_chance():
  task = CFG.tasks.cross_modal_retrieval
  rotation = np.linalg.qr(np.random.default_rng(3).normal(size=(12, 12)))[0]

  def make(rng, _):
    q = rng.normal(size=(N, 12))
    return {("model", "motion"): q, ("model", "visual"): q @ rotation,
            ("handcrafted", "motion"): q, ("handcrafted", "visual"): rng.normal(size=(N, 12))
            }, {}
  data = _data(make)
  good = _score(task, data)
  assert good["r@1"] == 1.0 and good["pool"] == task.pool
  assert _score(task, data, "handcrafted")["r@5"] < 3 * good["chance_r@5"]


def test_caption_grounding_with_bag_of_words_features_is_perfect():
  task = CFG.tasks.caption_grounding
  sentences = np.random.default_rng(5).integers(4, 30, size=(12, 6))
  sentences[:, 0] = spec_lib.BOS_ID

  def make(rng, _):
    which = rng.integers(0, len(sentences), N)
    ids = sentences[which]
    bow = np.stack([np.bincount(r, minlength=30) for r in ids]).astype(float)
    valid = rng.random(N) < 0.9
    return {("model", "full"): bow, ("handcrafted", "full"): rng.normal(size=(N, 30))}, {
        "caption": ids, "caption_valid": valid}
  data = _data(make)
  good = _score(task, data)
  assert good["mrr"] == 1.0 and good["sentences"] == 12
  assert _score(task, data, "handcrafted")["mrr"] < 0.6


def test_pairs_temporal_order_and_misalignment():
  order, shift = CFG.tasks.temporal_order, CFG.tasks.misalignment_detection

  def make(rng, _):
    t = np.tile(np.arange(PER_EPISODE), EPISODES)[:, None] / 10.0
    noise = rng.normal(size=(N, 3))
    return {("model", "full"): np.concatenate([t, noise], 1),
            ("model", "motion"): t + 0.001 * noise[:, :1],
            ("model", "visual"): t + 0.001 * noise[:, 1:2],
            ("handcrafted", "full"): noise, ("handcrafted", "motion"): noise[:, :1],
            ("handcrafted", "visual"): noise[:, 1:]}, {}
  data = _data(make)
  got = _score(order, data)
  assert got["f1"] == 1.0 and got["pairs"] == EPISODES * (PER_EPISODE - 4)
  assert _score(shift, data)["f1"] == 1.0
  assert _score(order, data, "handcrafted")["f1"] < 0.75
  assert _score(shift, data, "handcrafted")["f1"] < 0.75


def test_misalignment_is_seen_by_a_linear_probe_through_the_aligned_product():
  """Each side alone looks the same whether aligned or shifted, so a linear probe on
  [motion, visual] is at chance; the product with the mapped motion side is a cosine."""
  task = CFG.tasks.misalignment_detection
  rotation = np.linalg.qr(np.random.default_rng(4).normal(size=(6, 6)))[0]

  def make(rng, _):
    q = rng.normal(size=(N, 6))
    return {("model", "motion"): q,
            ("model", "visual"): q @ rotation + 0.1 * rng.normal(size=(N, 6))}, {}
  got = _score(task, _data(make))
  assert got["f1"] > 0.95 and got["accuracy"] > 0.95


def test_robustness_swaps_the_input_and_subsets_select_rows():
  task = CFG.tasks.timeline_action

  def make(rng, _):
    y = rng.integers(0, 3, N)
    x = np.eye(3)[y] * 3
    return {("model", "full"): x, ("model", "full-video"): np.zeros_like(x)}, {"action": y}
  data = _data(make)
  ev = evaluators.get("classify")
  fitted = ev.fit(task, data, "model")
  assert ev.score(task, data, "model", fitted)["macro_f1"] == 1.0
  dropped = ev.score(task, data, "model", fitted, swap={"full": "full-video"})
  assert dropped["macro_f1"] < 0.5
  half = ev.score(task, data, "model", fitted, rows=np.arange(N) < N // 2)
  assert half["windows"] == N // 2


# ------------------------------------------------- predictions, metrics and the bootstrap


def _weighted_equals_repeated(ev, task, data, pred, rng):
  """metrics under integer weights == metrics of the units repeated that many times."""
  w = rng.integers(0, 4, len(pred)).astype(float)
  w[0] = 2.0
  rep = np.repeat(np.arange(len(pred)), w.astype(int))
  repeated = evaluators_base.Predictions(pred.rows[rep],
                                         {k: v[rep] for k, v in pred.values.items()},
                                         pred.info)
  got = ev.metrics(task, data, pred, w)
  want = ev.metrics(task, data, repeated, np.ones(len(rep)))
  assert got.keys() == want.keys()
  for k in got:
    np.testing.assert_allclose(got[k], want[k], rtol=1e-9, atol=1e-12, err_msg=k)


def test_score_is_the_metric_of_the_predictions_and_weights_repeat_units():
  """For every evaluator: score == metrics(predict(every row once)); integer weights are
  the same as repeating units; a subset is weights 0/1."""
  rng = np.random.default_rng(0)
  w_hands = rng.normal(size=(6, 10 * 2 * 21 * 3)) * 0.05
  w_ego = rng.normal(size=(6, 40 * 3)) * 0.3
  sentences = rng.integers(4, 30, size=(8, 6))

  def make(rng, _):
    x = rng.normal(size=(N, 6))
    y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0.5)
    ids = sentences[rng.integers(0, len(sentences), N)]
    bow = np.stack([np.bincount(r, minlength=30) for r in ids]).astype(float)
    t = np.tile(np.arange(PER_EPISODE), EPISODES)[:, None] / 10.0
    feats = np.concatenate([x + 0.5 * rng.normal(size=x.shape), bow, t], 1)
    return {("model", "full"): feats, ("model", "motion"): x[:, :3] + t,
            ("model", "visual"): x[:, :3] @ np.ones((3, 3)) + t}, {
        "action": np.where(np.arange(N) % 11 == 0, -1, y), "contact": x[:, 2] > 0,
        "objects": rng.random((N, 5)) < 0.3,
        "hands_future": (x @ w_hands).reshape(N, 10, 2, 21, 3) + rng.normal(size=(N, 1260)
                                                                           ).reshape(
            N, 10, 2, 21, 3) * 0.01,
        "hands_future_valid": rng.random((N, 10, 2)) < 0.8,
        "ego_future": (x @ w_ego).reshape(N, 40, 3), "ego_future_valid": rng.random((N, 40)) < 0.9,
        "motion_intensity": x @ np.arange(6.0) + rng.normal(size=N),
        "caption": ids, "caption_valid": rng.random(N) < 0.8}
  data = _data(make)
  tables = [CFG.tasks, CFG.extensions]
  names = ("timeline_action", "contact_prediction", "object_relevance",
           "hand_trajectory_forecast", "ego_motion_forecast", "motion_intensity",
           "caption_grounding", "cross_modal_retrieval", "temporal_order",
           "misalignment_detection")
  kinds = set()
  for name in names:
    task = next(t[name] for t in tables if name in t)
    ev = evaluators.get(task.evaluator)
    kinds.add(task.evaluator)
    fitted = ev.fit(task, data, "model")
    pred = ev.predict(task, data, "model", fitted)
    assert ev.score(task, data, "model", fitted) == ev.metrics(task, data, pred,
                                                               np.ones(len(pred)))
    if name != "caption_grounding":  # a sentence weighs the mean of its windows' weights
      _weighted_equals_repeated(ev, task, data, pred, rng)
    half = np.arange(N) < N // 2
    assert ev.score(task, data, "model", fitted, rows=half) == ev.metrics(
        task, data, pred, half[pred.rows].astype(float))
  # every evaluator is covered (future_retrieval, on synthetic latents, in test_world_model)
  assert kinds | {"future_retrieval"} == set(evaluators_base.EVALUATORS._classes)
  # caption grounding: every window once is each distinct sentence once (the definition)
  task = CFG.tasks.caption_grounding
  ev = evaluators.get("retrieval")
  fitted = ev.fit(task, data, "model")
  q, ids, ok = ev._sides(task, data.test, "model")
  want = retrieval.rank_sentences(fitted.tfidf(ids[ok]), ids[ok],
                                  np.asarray(fitted.probe.predict(q[ok])))
  got = ev.score(task, data, "model", fitted)
  assert got["mrr"] == pytest.approx(want["mrr"]) and got["sentences"] == want["sentences"]
  # a weighting where each sentence's windows are weighted alike weighs the sentence so
  pred = ev.predict(task, data, "model", fitted)
  per_sentence = rng.integers(0, 3, pred.values["sentence"].max() + 1).astype(float)
  per_sentence[0] = 1.0
  weighted = ev.metrics(task, data, pred, per_sentence[pred.values["sentence"]])
  _, first = np.unique(pred.values["sentence"], return_index=True)
  ranks = pred.values["rank"][first]
  assert weighted["mrr"] == pytest.approx(np.average(1 / ranks, weights=per_sentence))


def test_probes_in_worker_processes_give_the_results_of_one_process():
  """score_tasks with probe.workers=2 (spawned processes) returns what it returns in this
  process, in the config's order, for a classification, a regression and a retrieval."""
  def make(rng, _):
    x = rng.normal(size=(N, 6))
    return {("model", "full"): x + 0.5 * rng.normal(size=x.shape),
            ("model", "motion"): x[:, :3], ("model", "visual"): x[:, 3:],
            ("handcrafted", "full"): rng.normal(size=(N, 4)),
            ("handcrafted", "motion"): x[:, :2], ("handcrafted", "visual"): x[:, 4:]}, {
        "action": (x[:, 0] > 0).astype(int) + (x[:, 1] > 0.5),
        "motion_intensity": x @ np.arange(6.0) + rng.normal(size=N)}
  data = _data(make)
  cfg = CFG.copy_and_resolve_references()
  cfg.unlock()
  cfg.tasks = ml_collections.ConfigDict(sort_keys=False)  # the config's order
  for name in ("timeline_action", "cross_modal_retrieval"):
    cfg.tasks[name] = CFG.tasks[name]
  cfg.extensions = ml_collections.ConfigDict(dict(motion_intensity=CFG.extensions.motion_intensity))
  test = data.test
  replicates = bootstrap.session_weights(test.arrays["meta/episode"] // 3, 20, seed=0)
  out = {}
  for workers in (1, 2):
    cfg.probe.workers = workers
    results, _ = suite.score_tasks(data, cfg, ("model", "handcrafted"), {"score": test},
                                   {}, replicates)
    for table in results.values():
      for per_fs in table.values():
        for r in per_fs.values():
          del r["seconds"]
    out[workers] = results
  assert list(out[2]["tasks"]) == ["timeline_action", "cross_modal_retrieval"]
  assert json.dumps(out[1], sort_keys=True, default=repr) == json.dumps(
      out[2], sort_keys=True, default=repr)
  assert out[1]["tasks"]["timeline_action"]["model"]["replicates"].shape == (20,)


def test_session_weights_resample_whole_sessions():
  sessions = np.repeat(np.array(["a", "b", "c", "d", "e"]), [3, 1, 4, 2, 5])
  w = bootstrap.session_weights(sessions, 300, seed=7)
  assert w.shape == (300, 15)
  for s in np.unique(sessions):  # a session's rows are drawn together
    rows = w[:, sessions == s]
    assert (rows == rows[:, :1]).all()
  _, first = np.unique(sessions, return_index=True)
  assert (w[:, first].sum(1) == 5).all()  # S draws of S sessions, with replacement
  assert (w[:, first] == 0).any() and (w[:, first] >= 2).any()
  np.testing.assert_array_equal(w, bootstrap.session_weights(sessions, 300, seed=7))


def _accuracy_predictions(right_by_session: dict[str, list[bool]]):
  """Classify predictions whose rows are right/wrong as given; the session of each row."""
  right = np.concatenate([np.asarray(v) for v in right_by_session.values()])
  sessions = np.concatenate([[s] * len(v) for s, v in right_by_session.items()])
  y = np.arange(len(right)) % 3
  pred = evaluators_base.Predictions(np.arange(len(y)), {"true": y,
                                                         "pred": np.where(right, y, (y + 1) % 3)},
                                     {"binary": False})
  return pred, sessions


def test_bootstrap_intervals_by_hand():
  task = CFG.tasks.timeline_action.copy_and_resolve_references()
  with task.ignore_type():
    task.metric = "accuracy"
  ev = evaluators.get("classify")
  sessions = [f"s{i}" for i in range(6)]
  # the model is right on 80% of every session's windows, the baseline on 50%
  model, ids = _accuracy_predictions({s: [k % 5 != 0 for k in range(20)] for s in sessions})
  base_, _ = _accuracy_predictions({s: [k % 2 == 0 for k in range(20)] for s in sessions})
  w = bootstrap.session_weights(ids, 500, seed=0)
  m = bootstrap.replicate_metric(ev, task, None, model, w, "accuracy")
  b = bootstrap.replicate_metric(ev, task, None, base_, w, "accuracy")
  np.testing.assert_allclose(m, 0.8)  # better on every session: every replicate agrees
  ci = bootstrap.interval(bootstrap.signed_difference(m, b, True))
  assert ci == pytest.approx((0.3, 0.3)) and bootstrap.significant(ci)
  # lower is better: the sign flips, the same model is now significantly worse
  assert bootstrap.interval(bootstrap.signed_difference(m, b, False))[1] < 0
  # identical feature sets: every difference is zero, the interval holds zero, no win
  ci = bootstrap.interval(bootstrap.signed_difference(m, m.copy(), True))
  assert ci == (0.0, 0.0) and not bootstrap.significant(ci)
  # by session, not by window: the model is far better on one big session and worse on
  # the five small ones. Over windows it leads by 0.45 (a window bootstrap would call that
  # certain); over sessions, replicates without the big one favour the baseline.
  model, ids = _accuracy_predictions({"big": [True] * 400, **{s: [False] * 20
                                                                 for s in sessions[1:]}})
  base_, _ = _accuracy_predictions({"big": [False] * 400, **{s: [True] * 20
                                                                for s in sessions[1:]}})
  assert ev.metrics(task, None, model, np.ones(500))["accuracy"] == 0.8
  w = bootstrap.session_weights(ids, 1000, seed=0)
  d = bootstrap.signed_difference(bootstrap.replicate_metric(ev, task, None, model, w,
                                                             "accuracy"),
                                  bootstrap.replicate_metric(ev, task, None, base_, w,
                                                             "accuracy"), True)
  lo, hi = bootstrap.interval(d)
  assert lo < 0 < hi and not bootstrap.significant((lo, hi))
  assert np.mean(d < 0) == pytest.approx((5 / 6) ** 6, abs=0.04)  # P(big never drawn)


def test_report_entry_intervals_wins_coverage_and_supervision():
  task = CFG.tasks.timeline_action
  reps = np.linspace(0, 1, 101)

  def result(score, shift):
    return {"test": {"macro_f1": score}, "probe": {}, "replicates": reps + shift}
  per_fs = {"model": result(0.6, 0.2), "model_ema": result(0.55, 0.05),
            "handcrafted": result(0.5, 0.0), "random_init": result(0.3, -0.1)}
  fs = tuple(per_fs)
  cov = {"labels": 0.5, "classes": 0.5, "test_labels": 10, "test_classes": 4, "unseen": [3, 7]}
  e = suite._entry(task, per_fs, fs, sessions=6, enabled=("procedure", "contrastive"),
                   coverage=cov, min_coverage=0.8)
  assert e["ci95_vs_handcrafted"] == pytest.approx((0.2, 0.2))
  assert e["ci95_vs_random_init"] == pytest.approx((0.3, 0.3)) and e["wins"] is True
  assert e["ema"]["ci95_vs_handcrafted"] == pytest.approx((0.05, 0.05))
  assert e["ema"]["wins"] is True and e["beats_both"] is True
  assert e["supervised_by"] == ["procedure"]  # captioning is not enabled
  assert e["low_label_coverage"] is True and e["label_coverage"]["unseen"] == [3, 7]
  assert report_lib.verdict(e) == "wins"
  one = suite._entry(task, per_fs, fs, sessions=1)  # one session: no interval, no win
  assert one["ci95_vs_handcrafted"] is None and one["wins"] is False
  assert report_lib.verdict(one) == "ahead of both, no interval"
  per_fs["model"] = result(0.4, 0.0)  # the model is the handcrafted baseline, below nothing
  e = suite._entry(task, per_fs, fs, sessions=6)
  assert e["wins"] is False and report_lib.verdict(e) == "tie with handcrafted"


def test_baseline_scores_and_replicates_are_cached_together(tmp_path):
  path = tmp_path / "baselines" / "scores.json"
  results = {"tasks": {"timeline_action": {"handcrafted": {
      "test": {"macro_f1": 0.5}, "probe": {"kind": "linear"},
      "replicates": np.array([0.4, 0.5, np.nan])}}}, "extensions": {}}
  suite._save_scores(path, "key", results)
  loaded = suite._load_scores(path, "key")
  got = loaded["tasks"]["timeline_action"]["handcrafted"]
  np.testing.assert_array_equal(got["replicates"], [0.4, 0.5, np.nan])
  assert got["test"] == {"macro_f1": 0.5}
  assert "replicates" in results["tasks"]["timeline_action"]["handcrafted"]  # not consumed
  assert suite._load_scores(path, "other key") is None
  (path.parent / suite.REPLICATES_FILE).unlink()
  assert suite._load_scores(path, "key") is None  # scores without replicates: recompute


def test_label_coverage_counts_test_labels_train_never_has():
  cov = evaluators_base.label_coverage(np.array([0, 1, 1, 2]), np.array([1, 1, 3, 3, 2]))
  assert cov["labels"] == pytest.approx(3 / 5) and cov["classes"] == pytest.approx(2 / 3)
  assert cov["unseen"] == [3] and cov["test_classes"] == 3
  sets = evaluators_base.label_coverage(np.array([[1, 0, 0], [0, 1, 0]]),
                                        np.array([[1, 0, 1], [0, 0, 1], [1, 0, 0]]))
  assert sets["labels"] == pytest.approx(2 / 4) and sets["unseen"] == [2]
  # through an evaluator: a held-out session doing an action train never saw
  task = CFG.tasks.timeline_action

  def make(rng, split):
    y = rng.integers(0, 3, N)
    if split == 2:
      y[: N // 4] = 5
    return {("model", "full"): np.eye(6)[y]}, {"action": y}
  cov = evaluators.get("classify").coverage(task, _data(make))
  assert cov["labels"] == pytest.approx(0.75) and cov["unseen"] == [5]


def test_probes_one_log_grid_class_balanced_for_macro_f1():
  grid = probes.Grid.from_config(eval_configs.get_config().probe)
  for values in (grid.linear_c, grid.ridge_alpha):
    assert len(values) >= 8 and max(values) / min(values) >= 1e6
  rng = np.random.default_rng(0)

  def split(n):  # 5% positives, a weak signal: an unweighted probe mostly says "negative"
    y = (rng.random(n) < 0.05).astype(int)
    x = rng.normal(size=(n, 8))
    x[:, 0] += 1.5 * y
    return x, y
  (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = split(2000), split(1000), split(2000)

  def macro(y_true, y_pred):
    return metrics.f1_scores(y_true, y_pred)["macro_f1"]
  plain = probes.fit("classify", x_tr, y_tr, x_va, y_va, macro, grid=grid)
  balanced = probes.fit("classify", x_tr, y_tr, x_va, y_va, macro, grid=grid, balanced=True)
  assert balanced.estimator.class_weight == "balanced" and plain.estimator.class_weight is None
  assert list(balanced.searched) == [f"{c:g}" for c in sorted(grid.linear_c)]
  def recall(probe):  # of the rare class
    return np.mean(probe.predict(x_te)[y_te == 1] == 1)
  assert recall(plain) < 0.3 and recall(balanced) > 0.7
  # the suite asks for it exactly where the metric is macro-F1
  task = CFG.tasks.contact_prediction

  def make(rng, _):
    c = rng.random(N) < 0.1
    return {("model", "full"): rng.normal(size=(N, 4)) + c[:, None]}, {"contact": c}
  data = _data(make)
  assert evaluators.get("classify").fit(task, data, "model").estimator.class_weight == \
      "balanced"
  order = evaluators.get("pairs").fit(CFG.tasks.temporal_order, _data(
      lambda rng, _: ({("model", "full"): rng.normal(size=(N, 2))}, {})), "model")
  assert order.probe.estimator.class_weight is None  # F1 of the positive class


# ------------------------------------------------------------------------------ variants


def test_variants_mask_what_they_remove():
  s = spec_lib.WindowSpec(view_size=16, depth_size=8, frames=4, future=4, caption_len=8,
                          next_window=False)
  batch = spec_lib.fake_batch(s, 6)
  bases = variants_lib.base_variants(CFG, ("audio", "depth", "imu", "language", "mocap",
                                           "pose", "video"))
  full = variants_lib.apply(bases["full"], batch, s.views, 0)
  assert not full["caption_valid"].any() and not full["caption"].any()
  assert np.array_equal(full["video"], batch["video"])
  motion = variants_lib.apply(bases["motion"], batch, s.views, 0)
  assert not motion["video_valid"].any() and not motion["depth"].any()
  assert np.array_equal(motion["imu"], batch["imu"])
  assert np.allclose(motion["pose"], batch["pose"])
  visual = variants_lib.apply(bases["visual"], batch, s.views, 0)
  assert np.allclose(visual["pose"], np.eye(4)) and not visual["pose_valid"].any()
  view = variants_lib.apply(bases["view_a"], batch, s.views, 0)
  assert view["video_valid"].sum(1).tolist() == [1] * 6
  assert view["video_valid"][:, s.views.index("stereo_left")].all()
  derived = variants_lib.robustness_variants(bases["full"], CFG.robustness.drop, True)
  assert set(derived) == {f"full-{m}" for m in CFG.robustness.drop} | {"full~views"}
  assert derived["full-imu"].dropped == ("imu",) and derived["full-imu"].base == "full"
  assert variants_lib.robustness_variants(bases["view_a"], CFG.robustness.drop, True) == {}
  rv = variants_lib.apply(derived["full~views"], batch, s.views, 0)
  assert (rv["video_valid"].sum(1) == 3).all()  # half of six present views
  again = variants_lib.apply(derived["full~views"], batch, s.views, 0)
  assert np.array_equal(rv["video_valid"], again["video_valid"])  # seeded by the window


def test_handcrafted_features_of_a_variant_are_those_of_its_masked_window():
  s = spec_lib.WindowSpec(view_size=16, depth_size=8, frames=4, future=4, caption_len=8,
                          next_window=False)
  batch = spec_lib.fake_batch(s, 5)
  batch["video_valid"][1, 2] = False
  batch["video"][1, 2] = 0  # the pipeline zeroes a missing view
  bases = variants_lib.base_variants(CFG, ("audio", "depth", "imu", "language", "mocap",
                                           "pose", "video"))
  derived = variants_lib.robustness_variants(bases["full"], CFG.robustness.drop, True)
  blocks = embed._HandcraftedBlocks(batch, s.views, 0, 100)
  for v in (bases["full"], bases["view_a"], bases["motion"], derived["full~views"],
            derived["full-video"], derived["full-imu"]):
    masked = variants_lib.apply(v, batch, s.views, 0)
    want = np.concatenate([handcrafted.statistics(m, masked, 100) for m in v.universe], -1)
    np.testing.assert_allclose(blocks.features(v), want, rtol=1e-6, atol=1e-6)


def test_a_subset_pass_equals_the_model_with_masks():
  c = local.get_config("tiny")
  s = spec_lib.WindowSpec.from_config(c.data)
  batch = spec_lib.fake_batch(s, 3)
  model = XEFM(c.model)
  variables = host_params(model, batch)
  names = ("audio", "depth", "imu", "language", "mocap", "pose", "video")
  # a subset of the modalities (pose, mocap, imu, video) and of the views (two of six)
  mods, views = ("imu", "mocap", "pose", "video"), (1, 4)
  batch["video_valid"] = np.broadcast_to(np.isin(np.arange(6), views), (3, 6)).copy()
  drop = {n: np.full(3, n not in mods) for n in names}
  want = jax.jit(lambda v, b, d: model.apply(v, b, drop=d).embedding)(variables, batch, drop)
  got = jax.jit(lambda v, b, d: model.apply(v, b, drop=d, modalities=mods,
                                            views=np.asarray(views, np.int32)).embedding)(
      variables, batch, {n: drop[n] for n in mods})
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------- session splits


class _FakeCorpus:
  def __init__(self, episodes):
    self.root, self.episodes = pathlib.Path("fake"), episodes

  def split_episodes(self, split):
    return [i for i, e in enumerate(self.episodes) if e["split"] == split]


def test_no_session_is_on_two_sides_of_any_split(shard_corpus):
  corpus = source_lib.Corpus(shard_corpus)
  counts = suite.check_sessions(corpus, dict(CFG.splits))
  sessions = {role: {e["session"] for e in corpus.episodes if e["split"] == c["split"]}
              for role, c in counts.items()}
  roles = list(sessions)
  for i, a in enumerate(roles):
    for b in roles[i + 1:]:
      assert not sessions[a] & sessions[b], (a, b)
  # held-out activities and objects: every session with one goes to the held-out split
  facts = [splits_lib.EpisodeFacts(f"s{s}/ep{k}", f"s{s}", activity=f"act{s % 4}",
                                   objects=frozenset({f"obj{s % 3}"}))
           for s in range(12) for k in range(2)]
  spec = splits_lib.SplitSpec(holdout_activities=("act1",), holdout_objects=("obj2",))
  assignment = splits_lib.assign_splits(facts, spec)
  fake = _FakeCorpus([{"session": f.session, "split": assignment[f.episode]} for f in facts])
  suite.check_sessions(fake, dict(CFG.splits))
  held = {f.session for f in facts if f.activity == "act1" or "obj2" in f.objects}
  assert all(e["split"] == splits_lib.HELDOUT_SPLIT for e in fake.episodes
             if e["session"] in held)
  fake.episodes[0] = {"session": fake.episodes[1]["session"],
                      "split": "val" if fake.episodes[1]["split"] != "val" else "train"}
  with pytest.raises(ValueError, match="is in splits"):
    suite.check_sessions(fake, dict(CFG.splits))


def test_generalization_subsets_come_from_the_split_spec():
  class Labels:
    tasks, objects = ("cook", "fold", "water"), ("cup", "shirt", "can")
  corpus = type("C", (), {"labels": Labels, "manifest": {"splits": {"spec": {
      "holdout_activities": ["water"], "holdout_objects": ["can"]}}}})()
  test = embed.Store({"meta/episode": np.array([0, 0, 1, 1, 2]),
                      "targets/task": np.array([0, 0, 2, 2, 1]),
                      "targets/objects": np.array([[1, 0, 0], [1, 0, 1], [0, 1, 0],
                                                   [0, 1, 0], [0, 0, 0]], bool)})
  subsets = suite._subsets(corpus, test)
  assert subsets["heldout_activities"].tolist() == [False, False, True, True, False]
  assert subsets["seen_activities"].tolist() == [True, True, False, False, True]
  assert subsets["heldout_objects"].tolist() == [True, True, False, False, False]  # episode 0
  corpus.manifest = {"splits": {"spec": {}}}
  assert isinstance(suite._subsets(corpus, test)["heldout_objects"], str)  # why: none


def test_selection_keeps_pair_partners(shard_corpus):
  corpus = source_lib.Corpus(shard_corpus)
  data_cfg = embed.data_config(local.get_config("tiny").data, CFG, 8)
  full = embed.select(corpus, "train", data_cfg, 10_000)
  small = embed.select(corpus, "train", data_cfg, len(full.indices) // 3)
  assert full.stride == data_cfg.window_stride == 1
  assert data_cfg.frames % small.stride == 0 and 8 % small.stride == 0
  assert set(small.indices) <= set(full.indices)
  few = embed.select(corpus, "train", data_cfg, 50)  # whole episodes thinned out
  assert 0 < len(few.indices) <= 50 and few.stride == data_cfg.frames

@pytest.mark.xdist_group("reference_run")  # see test_train.REFERENCE_RUN
def test_eval_names_a_json_task_export_that_is_not_there(reference, train_env, tmp_path):
  """--json_tasks at a folder without the export's dataset: a usage error (exit 2) in one
  line naming the file, before any checkpoint is restored."""
  workdir = tmp_path / "run"
  shutil.copytree(reference / "checkpoints" / "8", workdir / "checkpoints" / "8")
  missing = tmp_path / "no-export"
  proc = subprocess.run([sys.executable, "launch/eval.py", "--config=configs/eval.py:quick",
                         f"--workdir={workdir}", f"--json_tasks={missing}"], cwd=ROOT,
                        env=train_env, capture_output=True, text=True)
  lines = [line for line in proc.stderr.splitlines() if line.startswith("xefm: ")]
  assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
  assert f"--json_tasks: {missing / 'dataset.jsonl'}: not found" in lines[0], lines[0]
  assert not (workdir / "eval" / "8" / answers.PREDICTIONS_FILE).exists()



# ------------------------------------------------------------------------------ end to end


@pytest.mark.xdist_group("reference_run")  # see test_train.REFERENCE_RUN
def test_eval_end_to_end_writes_reports_and_resumes(reference, train_env, json_task_export,
                                                   tmp_path):
  """launch/eval.py (the README's command, quick config) on a copy of the tiny run's last
  two checkpoints: every checkpoint evaluated, then the default (latest) finds its report
  and skips, and answers the JSON tasks with the captioning decoder."""
  workdir = tmp_path / "run"
  for step in (6, 8):
    shutil.copytree(reference / "checkpoints" / str(step), workdir / "checkpoints" / str(step))
  env = train_env  # one device: see conftest.train_env (restores onto other meshes: test_train)
  cmd = [sys.executable, "launch/eval.py", "--config=configs/eval.py:quick",
         f"--workdir={workdir}", "--config.progress=false"]
  out = subprocess.run(cmd + ["--checkpoint=all"], cwd=ROOT, env=env, capture_output=True,
                       text=True)
  assert out.returncode == 0, out.stderr[-3000:]
  again = subprocess.run(cmd + [f"--json_tasks={json_task_export}"], cwd=ROOT, env=env,
                         capture_output=True, text=True)  # latest
  assert again.returncode == 0, again.stderr[-2000:]
  assert "skipped" in again.stderr
  predictions = workdir / "eval" / "8" / answers.PREDICTIONS_FILE
  assert f"json task predictions: {predictions}" in again.stdout
  records = {r["id"]: r for r in export_common.read_jsonl(json_task_export / "dataset.jsonl")}
  found, problems = answer_scores.read_predictions(predictions, records, answer_scores.SPLITS)
  assert not problems and set(found) == set(records)  # one answer per record, every split
  for rid, text in found.items():
    answer = answer_scores.parse(text)
    if answer is not None:  # the decoder's answers carry the record's own window
      assert answer["evidence_window"] == records[rid]["answer_json"]["evidence_window"]
  assert (workdir / "eval" / "baselines" / "scores.json").is_file()
  stdout = out.stdout
  steps = sorted(int(p.name) for p in (workdir / "eval").iterdir() if p.name.isdigit())
  assert steps == [6, 8]  # every checkpoint of the run
  out_dir = workdir / "eval" / str(steps[-1])
  assert f"eval report: {out_dir / 'report.json'}" in stdout
  report = json.loads((out_dir / "report.json").read_text())
  assert list(report["tasks"]) == list(CFG.tasks)  # the 20, in the contracts' order
  assert len(report["tasks"]) == 20 and len(report["extensions"]) == 4
  summary = report["summary"]
  sessions = summary["test_sessions"]
  assert sessions == report["splits"]["score"]["sessions"] >= 1
  for table in ("tasks", "extensions"):
    for name, entry in report[table].items():
      for fs in ("model", "model_ema", "handcrafted", "random_init"):
        assert fs in entry and entry["probe"][fs], (name, fs)
        assert entry["probe"][fs]["kind"] in ("linear", "constant"), (name, fs)
      assert isinstance(entry["beats_both"], bool)
      for block in (entry, entry["ema"]):  # the online trunk and its EMA
        assert isinstance(block["wins"], bool)
        for b in ("handcrafted", "random_init"):
          ci = block[f"ci95_vs_{b}"]
          if sessions < 2:
            assert ci is None and not block["wins"]
          else:
            assert len(ci) == 2 and ci[0] <= ci[1]
      if entry["evaluator"] in ("classify", "multilabel"):
        cov = entry["label_coverage"]
        assert 0.0 <= cov["labels"] <= 1.0 and isinstance(entry["low_label_coverage"], bool)
      else:
        assert "label_coverage" not in entry
  tasks = report["tasks"]
  enabled = objectives_base.enabled(checkpoints.run_config(workdir, steps[-1]))
  assert "procedure" in enabled  # the tiny run trains the supervised heads
  assert tasks["timeline_action"]["supervised_by"] == [
      o for o in ("procedure", "captioning") if o in enabled]
  assert tasks["temporal_order"]["supervised_by"] == []
  assert summary["tasks"] == 20
  assert summary["significant_wins"] == sum(e["wins"] for e in tasks.values())
  assert summary["ema_significant_wins"] == sum(e["ema"]["wins"] for e in tasks.values())
  assert summary["bootstrap"]["replicates"] == CFG.bootstrap.replicates
  for extra in ("structured_generation", "text_window_retrieval", "forecasting",
                "reconstruction", "robustness", "generalization"):
    assert extra in report["protocol"], extra
  assert 0.0 <= report["protocol"]["structured_generation"]["json_validity_rate"] <= 1.0
  assert "drop video" in report["protocol"]["robustness"]["timeline_action"]["model"]
  assert report["protocol"]["generalization"]["heldout_activities"]["available"] is False
  # the world-model section (the tiny run trains future_state): every query set ranked
  # among every test window (tests/test_world_model.py checks the metrics themselves)
  assert "future_state" in enabled
  wm = report["world_model"]
  assert wm["available"] and wm["pool"] == report["splits"]["score"]["windows"]
  assert {"future_state_head", "present_latent", "model", "model_ema", "handcrafted",
          "random_init"} == set(wm["feature_sets"])
  for e in wm["feature_sets"].values():
    assert 1 <= e["test"]["median_rank"] <= wm["pool"] and 0 < e["test"]["mrr"] <= 1
  md = (out_dir / "report.md").read_text()
  assert "## World-model evaluation" in md
  assert f"Significant wins against both baselines: {summary['significant_wins']} of 20" in md
  assert "model - handcrafted (95% CI)" in md and "supervised by" in md
  assert "timeline_action" in md and "label coverage" in md
  if sessions < 2:
    assert "Intervals: n/a" in md
  for name in report["figures"]:
    assert (out_dir / name).read_bytes()[:4] == b"\x89PNG"
  assert {"confusion_timeline_action.png", "robustness.png",
          "future_retrieval.png"} <= set(report["figures"])
  assert (workdir / "eval" / "baselines" / "replicates.npz").is_file()
  # the console: the libraries' INFO chatter and sklearn's conversion warnings are gone
  for noise in ("Read ratio", "Given directory is read only", "DataConversionWarning",
                "Unable to initialize backend"):
    assert noise not in out.stderr + again.stderr, noise
