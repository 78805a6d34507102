"""The structured-JSON task export and the window index: records in the public format on the
corpus' session splits, media decoded back, the sensor bridge, labels by majority, and
resume / refusal like every export."""

import json
import pathlib
import shutil

import av
import numpy as np
import pytest

from conftest import JSON_TASKS
from data_pipelines.export import common
from data_pipelines.export import json_tasks
from data_pipelines.export import window_index
from xefm_jax.data import source as source_lib
from xefm_jax.eval import answer_scores
from xefm_jax.eval import answers



def _records(export):
  return common.read_jsonl(export / json_tasks.DATASET)


def test_records_cover_every_window_on_the_session_splits(json_task_export, shard_corpus):
  corpus = source_lib.Corpus(shard_corpus)
  rows = _records(json_task_export)
  manifest = json.loads((json_task_export / json_tasks.MANIFEST).read_text())
  s = corpus.options.frame_stride
  expected = {}
  for e in corpus.episodes:  # windows of 20 frames at a stride of 20
    expected[e["split"]] = expected.get(e["split"], 0) + (e["length"] * s - 20) // 20 + 1
  assert manifest["split_counts"] == expected == common.split_counts(rows)
  assert manifest["num_records"] == len(rows) and len({r["id"] for r in rows}) == len(rows)
  split_of = {common.episode_key(e["episode"]): e["split"] for e in corpus.episodes}
  options = answer_scores.Options.from_manifest(manifest)
  for r in rows:
    assert r["split"] == split_of[r["episode_id"]]  # the corpus' split, never recomputed
    assert r["id"] == f"{r['episode_id']}:qa:{r['center_window']['start_frame'] // 20}"
    assert r["target"] == "episode_qa" and r["prompt_type"] == "json_episode_understanding"
    assert r["label"] == r["answer_json"]["action"]
    answer, reason = answer_scores.check(r["answer_json"], options)
    assert reason is None, (r["id"], r["answer_json"])  # every true answer is a valid one
    assert r["answer_json"]["evidence_window"] == {
        k: r["center_window"][k] for k in ("start_frame", "end_frame")}
    roles = [m["role"] for m in r["messages"]]
    assert roles == ["system", "user", "assistant"]
    assert [p["type"] for p in r["messages"][1]["content"]] == ["video", "audio", "text"]
    assert json.loads(r["messages"][2]["content"]) == r["answer_json"]
    assert r["messages"][2]["content"] == answers.answer_text(r["answer_json"])
  # some labels of every kind: the majority rule is not "unknown" everywhere
  assert {r["answer_json"]["transition"] for r in rows} >= {"yes", "no"}
  assert sum(r["answer_json"]["action"] != "unknown" for r in rows) > len(rows) // 2


def test_mosaic_and_audio_decode_back(json_task_export):
  """The 2x3 mosaic has the sampled frames and lasts the context; the WAV is the context's
  16 kHz mono audio."""
  r = _records(json_task_export)[1]
  m = r["media"]
  context = m["context_end_frame"] - m["context_start_frame"] + 1
  assert context == JSON_TASKS["context_frames"]
  w, h = JSON_TASKS["tile"]
  with av.open(str(json_task_export / m["mosaic_video_path"])) as c:
    stream = c.streams.video[0]
    frames = [f.to_ndarray(format="rgb24") for f in c.decode(stream)]
    duration = float(stream.duration * stream.time_base)
  assert len(frames) == JSON_TASKS["max_video_frames"]
  assert frames[0].shape == (2 * h, 3 * w, 3)
  assert duration == pytest.approx(context / 20.0, abs=1e-3)
  assert all(f.std() > 1 for f in frames)  # rendered views, not black tiles
  with av.open(str(json_task_export / m["audio_path"])) as c:
    stream = c.streams.audio[0]
    samples = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(stream)])
    assert (stream.sample_rate, stream.channels) == (16000, 1)
  assert len(samples) == context * 16000 // 20
  assert np.abs(samples).max() > 0


def test_sensor_bridge_rows_belong_to_their_records(json_task_export):
  rows = _records(json_task_export)
  r = rows[2]
  with np.load(json_task_export / r["sensor_feature_path"]) as z:
    assert z["features"].shape[1] == r["sensor_feature_dim"] > 0
    assert str(z["ids"][r["sensor_feature_index"]]) == r["id"]
    assert str(z["action_labels"][r["sensor_feature_index"]]) == r["answer_json"]["action"]
    assert int(z["ends"][r["sensor_feature_index"]]) == r["center_window"]["end_frame"]
    assert np.isfinite(z["features"]).all()


def test_majority_needs_six_tenths_of_the_frames():
  assert json_tasks.majority(np.array([1] * 12 + [2] * 8), 0.6) == 1
  assert json_tasks.majority(np.array([1] * 11 + [2] * 9), 0.6) is None
  assert json_tasks.majority(np.array([1] * 12 + [-1] * 8), 0.6) == 1
  assert json_tasks.majority(np.array([1] * 11 + [-1] * 9), 0.6) is None  # unlabelled count
  assert json_tasks.majority(np.full(20, -1), 0.6) is None
  assert json_tasks.context_span(0, 19, 300, 120) == (0, 119)
  assert json_tasks.context_span(280, 299, 300, 120) == (180, 299)
  assert json_tasks.context_span(100, 119, 300, 120) == (50, 169)


def test_resume_redoes_only_missing_parts_and_refuses_other_options(shard_corpus, tmp_path):
  out = tmp_path / "export"
  opts = json_tasks.Options(media=False, split="val")
  first = json_tasks.run(str(shard_corpus), str(out), opts, progress=False)
  assert first["merged"] and first["exported_now"] == first["episodes"] > 0
  before = (out / json_tasks.DATASET).read_text()
  again = json_tasks.run(str(shard_corpus), str(out), opts, progress=False)
  assert again["exported_now"] == 0 and (out / json_tasks.DATASET).read_text() == before
  parts = sorted((out / common.PARTS / "json_tasks").glob("*.jsonl"))
  parts[0].unlink()  # a killed run: one episode's part never appeared
  redo = json_tasks.run(str(shard_corpus), str(out), opts, progress=False)
  assert redo["exported_now"] == 1 and (out / json_tasks.DATASET).read_text() == before
  assert not list(out.rglob(f"{common.TMP}*"))  # nothing half-written left behind
  with pytest.raises(common.ExportError, match="other options"):
    json_tasks.run(str(shard_corpus), str(out), json_tasks.Options(media=False, split="test"),
                   progress=False)


def test_cli_errors_are_one_line(shard_corpus, tmp_path, capsys):
  argv = ["--shards", str(tmp_path), "--out", str(tmp_path / "x"), "--no-media", "--quiet"]
  assert json_tasks.main(argv) == 1
  err = capsys.readouterr().err
  assert err.startswith("json_tasks: --shards") and len(err.strip().splitlines()) == 1
  argv[1] = str(shard_corpus)
  assert json_tasks.main(argv + ["--window-frames", "0"]) == 1
  assert "--window-frames 0" in capsys.readouterr().err


def test_window_index_has_the_three_adapter_views(json_task_export, tmp_path):
  rows = _records(json_task_export)
  shutil.copytree(json_task_export, tmp_path / "export",
                  ignore=shutil.ignore_patterns("window_index*", "parts"))
  src, out = tmp_path / "export", tmp_path / "index"
  summary = window_index.run(str(src), str(out), horizon=2, progress=False)
  assert summary["split_counts"] == common.split_counts(rows)
  index = common.read_jsonl(out / window_index.INDEX)
  by_id = {r["id"]: r for r in index}
  assert set(by_id) == {r["id"] for r in rows}
  for r in index:
    assert set(r) == {"id", "episode_id", "split", "window", "modalities", "supervision",
                      "adapter_views", "provenance"}
    assert set(r["adapter_views"]) == {"qwen3_omni_lora", "cosmos_world_model",
                                       "policy_vla_branch"}
    future = r["adapter_views"]["cosmos_world_model"]["future_window_id"]
    if future is not None:  # 2 windows later, same episode and split
      assert by_id[future]["episode_id"] == r["episode_id"]
      assert (by_id[future]["window"]["start_frame"]
              == r["window"]["start_frame"] + 2 * r["window"]["num_frames"])
    media = r["modalities"]["media"]
    assert (out / media["mosaic_video_path"]).is_file()  # rewritten relative to --out
    assert (out / r["modalities"]["sensor_features"]["path"]).is_file()
  manifest = json.loads((out / window_index.MANIFEST).read_text())
  assert manifest["num_records"] == len(rows) and manifest["export"] == "window_index"
