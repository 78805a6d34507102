"""Shredding: round trip against the raw episode, kill -9 and resume, array-job tasks plus
merge, and clear errors for damaged corpora."""

import json
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from conftest import SHRED
from data_pipelines import shred
from xefm_jax.data import episode as episode_lib
from xefm_jax.data import shards
from xefm_jax.data import source as source_lib
from xefm_jax.data import spec as spec_lib
from xefm_jax.data import streams as streams_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]
CLI_SIZES = [f"--{k.replace('_', '-')}={v}" for k, v in SHRED.items()]


def _shred_cli(raw, out, *extra):
  return [sys.executable, str(ROOT / "data_pipelines/shred.py"), "--raw", str(raw), "--out",
          str(out), "--quiet", *CLI_SIZES, *extra]


def _arrays(corpus: pathlib.Path) -> dict[str, np.ndarray]:
  out = {}
  for d in sorted(p for p in corpus.iterdir() if p.name.startswith("shard-")):
    for a in shards.ARRAYS:
      out[f"{d.name}/{a.name}"] = shards.open_array(d, a.name).read().result()
  return out


def _manifest(corpus: pathlib.Path) -> dict:
  m = json.loads((corpus / shards.MANIFEST_FILE).read_text())
  m.pop("created")
  return m


def _assert_same_corpus(a: pathlib.Path, b: pathlib.Path):
  assert _manifest(a) == _manifest(b)
  arrays_a, arrays_b = _arrays(a), _arrays(b)
  assert arrays_a.keys() == arrays_b.keys()
  for k in arrays_a:
    np.testing.assert_array_equal(arrays_a[k], arrays_b[k], err_msg=k)


def test_round_trip_every_stream(shard_corpus, raw_corpus):
  """A window read from the shards equals the raw episode's frames after the documented
  resizing and resampling (streams.EpisodeStreams), for every stream."""
  corpus = source_lib.Corpus(shard_corpus)
  spec = spec_lib.WindowSpec(view_size=16, depth_size=8, frames=4, future=6, caption_len=8,
                             num_objects=len(corpus.labels.objects))
  src = source_lib.WindowSource(corpus, "train", spec, window_stride=5)
  i = len(src) // 2
  window = src[i]
  entry = corpus.episodes[int(window["episode"])]
  start = int(window["start"])
  with episode_lib.Episode(raw_corpus / entry["episode"]) as ep:
    es = streams_lib.EpisodeStreams(ep, corpus.options, corpus.labels)
    expect = es.block(start, start + max(src.span_low, src.span_frames))
  checked = set()
  for k in shards.STREAM_BY_NAME:
    if k == "frame_time_ns":
      continue
    got = window[k]
    np.testing.assert_array_equal(got, expect[k][:len(got)], err_msg=k)
    checked.add(k)
  assert checked == set(shards.STREAM_BY_NAME) - {"frame_time_ns"}
  # The same frames straight from the reader: resize by PyAV, audio and pose as read.
  with episode_lib.Episode(raw_corpus / entry["episode"]) as ep:
    view = ep.views[0]
    frames = ep.video(view, size=16, start=start, stop=start + 4)
    np.testing.assert_array_equal(window[f"video/{view}"][:4], frames)
    audio = ep.audio(16000)[start * 800:(start + 4) * 800]
    np.testing.assert_allclose(window["audio"][:4].reshape(-1) / 32767, audio, atol=1 / 32767)
    np.testing.assert_allclose(window["pose"][:4], ep.pose(start, start + 4).T_world_body,
                               atol=1e-5)


def test_manifest_contents(shard_corpus):
  m = json.loads((shard_corpus / shards.MANIFEST_FILE).read_text())
  assert m["schema_version"] == shards.SCHEMA_VERSION
  assert m["vocabularies"]["word"][:4] == ["<pad>", "<unk>", "<bos>", "<eos>"]
  assert {"imu", "hands_local", "wrist", "body_local", "depth", "pose_step"} <= set(m["stats"])
  e = m["episodes"][0]
  for key in ("source", "annotation_bytes", "annotation_sha256", "pipeline_version", "split",
              "offset", "length"):
    assert key in e
  # statistics from the train split only
  train_frames = sum(x["length"] for x in m["episodes"] if x["split"] == "train")
  assert m["stats"]["imu"]["count"] <= train_frames * 10
  sessions = {}
  for x in m["episodes"]:
    sessions.setdefault(x["session"], set()).add(x["split"])
  assert all(len(v) == 1 for v in sessions.values())


def test_kill_then_resume_equals_uninterrupted(shard_corpus, raw_corpus, tmp_path):
  report = shard_corpus / "stage0.json"
  reference = tmp_path / "reference"
  subprocess.run(_shred_cli(raw_corpus, reference, "--report", str(report)), check=True)
  out = tmp_path / "killed"
  proc = subprocess.Popen(_shred_cli(raw_corpus, out, "--report", str(report)))
  deadline = time.time() + 120
  while not any(out.glob("shard-*")) and time.time() < deadline:  # mid-run: some shards done
    time.sleep(0.05)
  time.sleep(random.uniform(0.0, 0.5))
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not (out / shards.MANIFEST_FILE).exists() or proc.returncode == 0
  subprocess.run(_shred_cli(raw_corpus, out, "--report", str(report)), check=True)
  assert not list(out.glob(shards.TMP_PREFIX + "shard-*"))
  _assert_same_corpus(reference, out)


def test_task_index_runs_plus_merge_equal_one_run(shard_corpus, raw_corpus, tmp_path):
  report = shard_corpus / "stage0.json"
  single = tmp_path / "single"
  subprocess.run(_shred_cli(raw_corpus, single, "--report", str(report)), check=True)
  split = tmp_path / "split"
  first = subprocess.run(_shred_cli(raw_corpus, split, "--report", str(report),
                                    "--task-index", "0", "--task-count", "2"),
                         check=True, capture_output=True, text=True)
  assert "manifest pending" in first.stdout
  assert not (split / shards.MANIFEST_FILE).exists()
  premature = subprocess.run(_shred_cli(raw_corpus, split, "--merge-only"),
                             capture_output=True, text=True)
  assert premature.returncode == 1 and "not complete" in premature.stderr
  subprocess.run(_shred_cli(raw_corpus, split, "--report", str(report), "--task-index", "1",
                            "--task-count", "2"), check=True)
  (split / shards.MANIFEST_FILE).unlink()  # the last task merged; merge again explicitly
  subprocess.run(_shred_cli(raw_corpus, split, "--merge-only"), check=True)
  _assert_same_corpus(single, split)


def _copy(corpus: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
  dst = tmp_path / "corpus"
  shutil.copytree(corpus, dst)
  return dst


def test_foreign_schema_version_is_refused(shard_corpus, tmp_path):
  c = _copy(shard_corpus, tmp_path)
  m = json.loads((c / shards.MANIFEST_FILE).read_text())
  m["schema_version"] = shards.SCHEMA_VERSION + 1
  (c / shards.MANIFEST_FILE).write_text(json.dumps(m))
  with pytest.raises(shards.ShardError, match="newer than this code"):
    source_lib.Corpus(c)


def test_missing_and_incomplete_shards_are_refused(shard_corpus, tmp_path):
  c = _copy(shard_corpus, tmp_path)
  shutil.rmtree(c / "shard-00001")
  with pytest.raises(shards.ShardError, match="shard-00001.*does not exist"):
    source_lib.Corpus(c)
  c2 = _copy(shard_corpus, tmp_path / "b")
  (c2 / "shard-00000" / shards.INDEX_FILE).unlink()
  with pytest.raises(shards.ShardError, match="incomplete shard"):
    source_lib.Corpus(c2)


def test_truncated_chunk_is_a_clear_error(shard_corpus, tmp_path):
  c = _copy(shard_corpus, tmp_path)
  corpus = source_lib.Corpus(c)
  spec = spec_lib.WindowSpec(view_size=16, depth_size=8, frames=4, future=4, caption_len=8,
                             num_objects=len(corpus.labels.objects))
  src = source_lib.WindowSource(corpus, "train", spec, window_stride=5)
  entry = corpus.episodes[int(src.episode_ids[0])]
  first_chunk = (entry["offset"] + int(src.starts[0])) // corpus.options.chunk_frames
  chunk = c / entry["shard"] / "video" / "c" / str(first_chunk) / "4" / "0" / "0" / "0"
  chunk.write_bytes(chunk.read_bytes()[:10])
  with pytest.raises(shards.ShardError, match="damaged"):
    src[0]


def test_failing_episodes_are_listed_and_the_rest_shredded(raw_corpus, tmp_path):
  raw = tmp_path / "raw"
  sessions = sorted(p for p in raw_corpus.iterdir() if p.is_dir())[:2]
  for s in sessions:
    shutil.copytree(s, raw / s.name)
  bad = raw / sessions[0].name / "ep1" / "annotation.hdf5"
  with h5py.File(bad, "r+") as f:
    del f["caption"]
    f["caption"] = "not json {"
  summary = shred.run(raw, tmp_path / "out", options=shards.ShredOptions(**SHRED),
                      progress=False)
  assert summary["episodes"] == 3 and summary["failed_episodes"] == 1
  m = json.loads((tmp_path / "out" / shards.MANIFEST_FILE).read_text())
  assert [f["episode"] for f in m["failed"]] == [f"{sessions[0].name}/ep1"]
  assert any("caption_not_json" in r for r in m["failed"][0]["reasons"])
