"""The LeRobot v2.1 export (data_pipelines/export/lerobot.py), read back: parquet columns
against info.json's features, row and MP4 frame counts against the corpus episodes, values
against the shards, splits as contiguous ranges, GR00T's modality.json and train-only stats."""

import json

import av
import numpy as np
import pyarrow.parquet as pq
import pytest

from data_pipelines.export import common
from data_pipelines.export import lerobot
from xefm_jax.data import actions
from xefm_jax.data import source as source_lib


def _mp4_frames(path):
  with av.open(str(path)) as c:
    frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
  return len(frames), frames[0].shape


def test_lerobot_export_reads_back(shard_corpus, tmp_path):
  out = tmp_path / "lerobot"
  opts = lerobot.Options(views=("stereo_left", "fisheye_cam0"), size=(32, 24), step=2)
  # an array job of two tasks: the first leaves the merge to the second
  first = lerobot.run(str(shard_corpus), str(out), opts, task=(0, 2), progress=False)
  assert not first["merged"] and first["exported_now"] == 4
  assert not (out / "meta" / "info.json").exists()
  second = lerobot.run(str(shard_corpus), str(out), opts, task=(1, 2), progress=False)
  assert second["merged"] and second["exported_now"] == 4

  corpus = source_lib.Corpus(shard_corpus)
  space = opts.space(corpus.options.fps)
  meta = out / "meta"
  info = json.loads((meta / "info.json").read_text())
  assert info["codebase_version"] == "v2.1" and info["fps"] == 10.0
  eps = common.read_jsonl(meta / "episodes.jsonl")
  tasks = [t["task"] for t in common.read_jsonl(meta / "tasks.jsonl")]
  assert [t["task_index"] for t in common.read_jsonl(meta / "tasks.jsonl")] == list(
      range(len(tasks)))
  by_name = {e["episode"]: (i, e) for i, e in enumerate(corpus.episodes)}
  # splits: contiguous ranges, train first, each episode in its corpus split
  for split, rng in info["splits"].items():
    a, b = map(int, rng.split(":"))
    assert {by_name[e["source_episode_id"]][1]["split"] for e in eps[a:b]} == {split}
  assert info["splits"]["train"].startswith("0:")
  feats = info["features"]
  columns = {k for k, f in feats.items() if f["dtype"] != "video"}
  index = 0
  for e in eps:
    k = e["episode_index"]
    ci, cep = by_name[e["source_episode_id"]]
    n = len(range(0, cep["length"], 2))
    assert e["length"] == n
    table = pq.read_table(out / info["data_path"].format(episode_chunk=0, episode_index=k))
    assert set(table.column_names) == columns and table.num_rows == n
    d = table.to_pydict()
    for name in columns:
      shape = feats[name]["shape"][0]
      if feats[name]["names"] is not None:
        assert {len(v) for v in d[name]} == {shape}, name
    assert d["frame_index"] == list(range(n)) and d["episode_index"] == [k] * n
    assert d["index"] == list(range(index, index + n))
    np.testing.assert_allclose(d["timestamp"], np.arange(n) / 10.0, atol=1e-6)
    assert d["next.done"] == [False] * (n - 1) + [True]
    # values against the shards: actions, and the language of the frame's labels
    ref = actions.read_episode(corpus, ci, space)
    np.testing.assert_array_equal(np.array(d["action"], np.float32), ref["action"])
    labels = corpus.read_episode(ci, ("labels",))
    for row in (0, n // 2):
      t = labels["task"][2 * row]
      assert tasks[d["task_index"][row]] == (corpus.labels.tasks[t] if t >= 0 else "unknown")
      s = labels["subtask"][2 * row]
      if s >= 0:
        assert tasks[d[lerobot.ANNOTATION][row]] == corpus.labels.subtasks[s]
    for view in opts.views:
      frames, shape = _mp4_frames(out / info["video_path"].format(
          episode_chunk=0, video_key=f"observation.images.{view}", episode_index=k))
      assert frames == n and shape == (24, 32, 3)
    index += n
  assert info["total_frames"] == index and info["total_episodes"] == len(corpus.episodes)
  # GR00T's modality.json slices tile the state and action vectors
  mod = json.loads((meta / "modality.json").read_text())
  for key, dim in (("state", space.state_dim), ("action", space.action_dim)):
    spans = sorted((v["start"], v["end"]) for v in mod[key].values())
    assert spans[0][0] == 0 and spans[-1][1] == dim
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
  assert set(mod["video"]) == set(opts.views)
  # GR00T's stats.json: the train-only statistics of the action space
  stats = json.loads((meta / "stats.json").read_text())
  train = actions.compute_stats(corpus, space)
  np.testing.assert_allclose(stats["action"]["mean"], train["action"]["mean"])
  assert json.loads((meta / "action_space.json").read_text())["rate_hz"] == 10.0
  manifest = json.loads((out / lerobot.MANIFEST).read_text())
  assert manifest["episode_split_counts"] == {"test": 2, "train": 4, "val": 2}
  # a view the raw episode lacks (a quirk of the fixture) is black and reported
  for e in eps:
    views = by_name[e["source_episode_id"]][1]["views"]
    assert set(e["video_errors"]) == set(opts.views) - set(views)
  # bad options are refused naming the flag; other options in the same folder too
  with pytest.raises(common.ExportError, match="--views stereo_up"):
    lerobot.run(str(shard_corpus), str(tmp_path / "bad"), lerobot.Options(views=("stereo_up",)))
  with pytest.raises(common.ExportError, match="other options"):
    lerobot.run(str(shard_corpus), str(out), lerobot.Options(step=3), progress=False)
