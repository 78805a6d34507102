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
from xefm_jax.data.streams import resample

ROOT = pathlib.Path(__file__).resolve().parents[1]
CLI_SIZES = [f"--{k.replace('_', '-')}={v}" for k, v in SHRED.items()]


def _shred_cli(raw, out, *extra):
  return [sys.executable, str(ROOT / "data_pipelines/shred.py"), "--raw", str(raw), "--out",
          str(out), "--quiet", *CLI_SIZES, *extra]


def _arrays(corpus: pathlib.Path) -> dict[str, np.ndarray]:
  out = {}
  for d in sorted(p for p in corpus.iterdir() if p.name.startswith("shard-")):
    for a in shards.layout().arrays:
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
  resizing and resampling (resample.EpisodeStreams), for every stream."""
  corpus = source_lib.Corpus(shard_corpus)
  spec = spec_lib.WindowSpec(view_size=16, depth_size=8, frames=4, future=6, caption_len=8,
                             num_objects=len(corpus.labels.objects))
  src = source_lib.WindowSource(corpus, "train", spec, window_stride=5)
  i = len(src) // 2
  window = src[i]
  entry = corpus.episodes[int(window["episode"])]
  start = int(window["start"])
  with episode_lib.Episode(raw_corpus / entry["episode"]) as ep:
    es = resample.EpisodeStreams(ep, corpus.options, corpus.labels)
    expect = es.block(start, start + max(src.span_low, src.span_frames))
  checked = set()
  for k in corpus.layout.stream_by_name:
    if k == "frame_time_ns":
      continue
    got = window[k]
    np.testing.assert_array_equal(got, expect[k][:len(got)], err_msg=k)
    checked.add(k)
  assert checked == set(corpus.layout.stream_by_name) - {"frame_time_ns"}
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
  while not any(out.glob("shard-*")) and time.time() < deadline:  # mid-run: one shard done
    time.sleep(0.01)
  time.sleep(random.uniform(0.0, 0.2))  # somewhere in the next shard (~1 s each)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  # the kill landed mid-run: killed by it, some shards complete and not all, no manifest
  planned = len(json.loads((out / shards.PLAN_FILE).read_text())["shards"])
  complete = [d for d in out.glob("shard-*") if shred.is_complete(out, d.name)]
  assert proc.returncode == -signal.SIGKILL, proc.returncode
  assert 0 < len(complete) < planned and not (out / shards.MANIFEST_FILE).exists(), (
      len(complete), planned)
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


def _verify(corpus, *extra):
  return subprocess.run([sys.executable, str(ROOT / "data_pipelines/shred.py"), "--verify",
                         str(corpus), "--quiet", *extra], capture_output=True, text=True)


def _train_shard(corpus: pathlib.Path) -> str:
  return next(s["name"] for s in shards.load_manifest(corpus)["shards"]
              if s["split"] == "train")


def test_verify_passes_an_intact_corpus(shard_corpus):
  for extra in ((), ("--deep",)):
    proc = _verify(shard_corpus, *extra)
    assert proc.returncode == 0 and "as written" in proc.stdout, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1])["problems"] == 0


def test_a_deleted_chunk_is_refused_by_the_reader_and_by_verify(shard_corpus, tmp_path):
  """One chunk file gone (its frames would read as zeros with their flags still set)."""
  c = _copy(shard_corpus, tmp_path)
  name = _train_shard(c)
  record = json.loads((c / name / shards.INDEX_FILE).read_text())["chunks"]["pose"]
  assert record["grid"][0] >= 3
  (c / name / "pose" / "c" / "2" / "0" / "0").unlink()  # frames 32..47
  corpus = source_lib.Corpus(c)  # the manifest alone still reads
  spec = spec_lib.WindowSpec(view_size=16, depth_size=8, frames=4, future=4, caption_len=8,
                             num_objects=len(corpus.labels.objects))
  with pytest.raises(shards.ShardError,
                     match=rf"{name}/pose: 1 of \d+ chunk files are missing, the first c/2/0/0"):
    source_lib.WindowSource(corpus, "train", spec, window_stride=5)
  proc = _verify(c)
  assert proc.returncode == 1
  problems = [line for line in proc.stderr.splitlines() if line.startswith("xefm: ")]
  assert len(problems) == 1 and f"{name}/pose" in problems[0] and "c/2/0/0" in problems[0]
  assert "damaged" in proc.stdout


def test_verify_finds_a_chunk_of_another_size_and_deep_a_corrupt_one(shard_corpus, tmp_path):
  c = _copy(shard_corpus, tmp_path)
  name = _train_shard(c)
  chunk = c / name / "imu" / "c" / "1" / "0" / "0"
  data = chunk.read_bytes()
  chunk.write_bytes(data[:-3])
  proc = _verify(c)
  assert proc.returncode == 1 and f"{name}/imu/c/1/0/0: {len(data) - 3} bytes, written with "\
      f"{len(data)}" in proc.stderr, proc.stderr
  # same size, garbage inside: the listing cannot tell, decoding can
  chunk.write_bytes(data[:16] + bytes(len(data) - 16))
  assert _verify(c).returncode == 0
  deep = _verify(c, "--deep")
  assert deep.returncode == 1 and f"{name}/imu: frames [" in deep.stderr, deep.stderr


def test_a_shard_from_another_shredding_is_refused(shard_corpus, tmp_path):
  c = _copy(shard_corpus, tmp_path)
  name = _train_shard(c)
  index = c / name / shards.INDEX_FILE
  index.write_text(index.read_text().replace('"frames"', '"frames" ', 1))
  proc = _verify(c)
  assert proc.returncode == 1 and "sha256 is not the manifest's" in proc.stderr


def _subset(raw_corpus: pathlib.Path, dst: pathlib.Path, sessions: int) -> pathlib.Path:
  for s in sorted(p for p in raw_corpus.iterdir() if p.is_dir())[:sessions]:
    shutil.copytree(s, dst / s.name)
  return dst


def test_a_foreign_stage0_report_is_refused_and_a_moved_root_accepted(raw_corpus, shard_corpus,
                                                                     tmp_path):
  raw = _subset(raw_corpus, tmp_path / "raw", 2)
  out = tmp_path / "out"
  out.mkdir()
  shutil.copy(shard_corpus / "stage0.json", out / "stage0.json")  # the whole raw corpus'
  proc = subprocess.run(_shred_cli(raw, out), capture_output=True, text=True)
  lines = [line for line in proc.stderr.splitlines() if line.strip()]
  assert proc.returncode == 1 and len(lines) == 1, proc.stderr
  assert lines[0].startswith(f"xefm: {out / 'stage0.json'}: the Stage-0 report was made from "
                             f"another raw root ({raw_corpus})"), lines[0]
  assert "delete it" in lines[0] and not (out / shards.PLAN_FILE).exists()
  # its own report, then the raw root moved: the same corpus, accepted (with the plan that
  # is already on disk too)
  (out / "stage0.json").unlink()
  subprocess.run(_shred_cli(raw, out, "--task-index=0", "--task-count=2"), check=True)
  moved = tmp_path / "moved"
  raw.rename(moved)
  subprocess.run(_shred_cli(moved, out, "--task-index=1", "--task-count=2"), check=True)
  assert (out / shards.MANIFEST_FILE).exists()
  # a file of an episode changed since the report: refused by its checksum
  episode = next(p for p in moved.glob("*/ep*") if p.is_dir())
  (episode / "annotation.hdf5").write_bytes(b"x")
  proc = subprocess.run(_shred_cli(moved, tmp_path / "out2", "--report",
                                   str(out / "stage0.json")), capture_output=True, text=True)
  assert proc.returncode == 1 and "1 episodes differ in their files" in proc.stderr, proc.stderr
