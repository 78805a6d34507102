"""The Cosmos export (data_pipelines/export/cosmos.py): one clip, one prompt and one pose
file per future-window pair; clips decode to the stated frame count; pairs stay in their
episode; the forward-dynamics targets agree with the SLAM poses of the shards."""

import json

import av
import numpy as np

from data_pipelines.export import common
from data_pipelines.export import cosmos
from xefm_jax.data import geometry
from xefm_jax.data import source as source_lib


def test_cosmos_export(shard_corpus, tmp_path):
  out = tmp_path / "cosmos"
  opts = cosmos.Options(horizon=2, window_frames=10, stride_frames=10, size=(32, 24),
                        clip_stride=2)
  summary = cosmos.run(str(shard_corpus), str(out), opts, progress=False)
  assert summary["merged"]
  corpus = source_lib.Corpus(shard_corpus)
  rows = common.read_jsonl(out / cosmos.DATASET)
  manifest = json.loads((out / cosmos.MANIFEST).read_text())
  # pairs per episode: windows k with k + H inside the episode
  expected = {}
  for e in corpus.episodes:
    windows = (e["length"] - 10) // 10 + 1
    expected[e["episode"]] = max(0, windows - 2)
  got = {}
  for r in rows:
    got[r["source_episode_id"]] = got.get(r["source_episode_id"], 0) + 1
  assert got == {k: v for k, v in expected.items() if v}
  assert manifest["num_records"] == len(rows) == sum(expected.values())
  assert sum(manifest["split_counts"].values()) == len(rows)
  # the layout: as many clips as metas (and pose files), same stems
  clips = sorted(p.stem for p in (out / "videos").glob("*.mp4"))
  metas = sorted(p.stem for p in (out / "metas").glob("*.txt"))
  poses = sorted(p.stem for p in (out / "poses").glob("*.json"))
  assert clips == metas == poses and len(clips) == len(rows)
  stated = manifest["clip"]["frames_per_clip"]
  assert stated == (2 + 1) * 10 // 2
  by_name = {e["episode"]: (i, e) for i, e in enumerate(corpus.episodes)}
  for r in rows[:3] + rows[-2:]:
    ci, ep = by_name[r["source_episode_id"]]
    assert r["split"] == ep["split"]
    assert r["future_window"]["start_frame"] - r["window"]["start_frame"] == 2 * 10
    with av.open(str(out / r["media"]["clip"])) as c:
      frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == stated and frames[0].shape == (24, 32, 3)
    assert (out / r["meta_path"]).read_text().strip() == r["prompt"] != ""
    # the sensor bridge of both windows: rows of the episode's npz at their window ends
    npz = np.load(out / r["sensor_features"]["path"])
    now, later = r["sensor_features"], r["future_sensor_features"]
    assert now["path"] == later["path"] and now["dim"] == npz["features"].shape[1] > 0
    assert npz["ends"][now["index"]] == r["window"]["end_frame"]
    assert npz["ends"][later["index"]] == r["future_window"]["end_frame"]
    assert np.isfinite(npz["features"]).all()
    p = json.loads((out / r["poses_path"]).read_text())
    chunks = np.array(p["chunks"])
    assert chunks.shape == (-(-(stated - 1) // 8), 8, 9)
    steps = np.array(p["actions"])
    assert len(steps) == stated - 1
    # independent: the displacement from the clip start, straight from the shard poses,
    # and the composition of the per-step deltas
    pose = corpus.read_episode(ci, ("pose",))["pose"].astype(np.float64)
    T = pose[np.array(p["frames"])]
    disp = np.einsum("ij,kj->ki", T[0, :3, :3].T, T[1:, :3, 3] - T[0, :3, 3])
    np.testing.assert_allclose(steps[:, 6:], disp, atol=1e-5)
    acc = np.eye(4)
    for s in steps:
      acc = acc @ geometry.make_se3(geometry.axis_angle_to_matrix(s[3:6]), s[:3])
    np.testing.assert_allclose(acc[:3, 3], disp[-1], atol=1e-4)
