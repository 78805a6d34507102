"""The Stage-0 gate: every corruption fails with its reason, healthy episodes beside it pass.

Each corruption is made from a generated episode (copied under its own session), so the
gate sees real files in the real layout with exactly one thing wrong.
"""

import json
import pathlib
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

from data_pipelines import synthesize
from data_pipelines import validate
from data_pipelines.synth import quirks as quirks_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _rewrite(ann: pathlib.Path, key: str, value) -> None:
  with h5py.File(ann, "r+") as f:
    attrs = dict(f[key].attrs)
    del f[key]
    f.create_dataset(key, data=value)
    f[key].attrs.update(attrs)


def _nan_pose(ep):
  with h5py.File(ep / "annotation.hdf5", "r+") as f:
    f["slam/quat_wxyz"][...] = np.nan


def _not_json(ep):
  _rewrite(ep / "annotation.hdf5", "caption", "{this is not json")


def _caption_out_of_range(ep):
  ann = ep / "annotation.hdf5"
  with h5py.File(ann, "r") as f:
    doc = json.loads(f["caption"][()])
  doc["segments"][0].pop("end_frame_name", None)
  doc["segments"][0]["end_frame"] = "frame_9999999"
  _rewrite(ann, "caption", json.dumps(doc))


def _truncate(path: pathlib.Path, fraction: float = 0.5):
  data = path.read_bytes()
  path.write_bytes(data[:int(len(data) * fraction)])


def _drop_key(ep):
  with h5py.File(ep / "annotation.hdf5", "r+") as f:
    del f["imu/gyro_xyz"]


def _bad_shape(ep):
  ann = ep / "annotation.hdf5"
  with h5py.File(ann, "r") as f:
    t = f["slam/trans_xyz"][()]
  _rewrite(ann, "slam/trans_xyz", t[:, :2])


def _imu_backwards(ep):
  with h5py.File(ep / "annotation.hdf5", "r+") as f:
    ts = f["imu/device_timestamp_ns"][()]
    ts[len(ts) // 2] = ts[len(ts) // 2 - 5]
    f["imu/device_timestamp_ns"][...] = ts


def _short_depth(ep):
  ann = ep / "annotation.hdf5"
  with h5py.File(ann, "r") as f:
    d, c = f["depth/depth"][()], f["depth/confidence"][()]
  _rewrite(ann, "depth/depth", d[:-20])
  _rewrite(ann, "depth/confidence", c[:-20])


CORRUPTIONS = {
    "missing_annotation": (lambda ep: (ep / "annotation.hdf5").unlink(), "annotation_missing"),
    "truncated_hdf5": (lambda ep: _truncate(ep / "annotation.hdf5", 0.3),
                       "annotation_unreadable"),
    "missing_key": (_drop_key, "key_missing"),
    "wrong_shape": (_bad_shape, "key_shape"),
    "all_nan_pose": (_nan_pose, "pose_invalid"),
    "caption_not_json": (_not_json, "caption_not_json"),
    "caption_out_of_range": (_caption_out_of_range, "caption_out_of_range"),
    "truncated_mp4": (lambda ep: _truncate(ep / "fisheye_cam1.mp4", 0.5), "video_corrupt"),
    "missing_required_view": (lambda ep: (ep / "stereo_left.mp4").unlink(), "view_missing"),
    "imu_not_increasing": (_imu_backwards, "imu_timestamps"),
    "frame_count_mismatch": (_short_depth, "frame_count_mismatch"),
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  """One healthy generated episode copied into a session per corruption, plus healthy ones."""
  gen = tmp_path_factory.mktemp("gen")
  [ep] = synthesize.synthesize(gen, sessions=1, episodes_per_session=1, seconds=3.0, seed=7,
                               quirks=quirks_lib.QuirkRates.none(), progress=False)
  raw = tmp_path_factory.mktemp("raw")
  for name, (corrupt, _) in CORRUPTIONS.items():
    dst = raw / f"session-{name}" / "ep1"
    shutil.copytree(ep, dst)
    corrupt(dst)
  for k in range(2):
    shutil.copytree(ep, raw / "session-healthy" / f"ep{k + 1}")
  optional = raw / "session-optional-view" / "ep1"
  shutil.copytree(ep, optional)
  (optional / "fisheye_cam3.mp4").unlink()  # a missing view nobody requires: a warning
  return raw


@pytest.fixture(scope="module")
def report(corpus):
  cfg = validate.GateConfig(require_views=("stereo_left",))
  return validate.validate_root(corpus, cfg, workers=2, progress=False)


def _row(report, session):
  return next(e for e in report["episodes"] if e["session"] == session)


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corruption_fails_with_its_reason(report, name):
  row = _row(report, f"session-{name}")
  code = CORRUPTIONS[name][1]
  assert row["status"] == "fail"
  assert any(r.startswith(code + ":") for r in row["reasons"]), row["reasons"]


def test_healthy_episodes_pass(report):
  for k in range(2):
    row = next(e for e in report["episodes"] if e["episode"] == f"session-healthy/ep{k + 1}")
    assert row["status"] == "pass", row["reasons"]
    assert row["valid_fraction"]["pose"] == 1.0
    assert row["frames"]["stereo_left"] == row["num_frames"] == 60
    assert row["audio"]["available"] and row["activity"]


def test_optional_missing_view_is_a_warning(report):
  row = _row(report, "session-optional-view")
  assert row["status"] == "pass"
  assert any(w.startswith("view_missing:") and "fisheye_cam3" in w for w in row["warnings"])
  assert "fisheye_cam3" not in row["views"]


def test_reasons_name_file_and_key(report):
  row = _row(report, "session-missing_key")
  assert any("annotation.hdf5" in r and "imu/gyro_xyz" in r for r in row["reasons"])


def test_report_carries_splits_without_leakage(report):
  assert not any(report["splits"]["leakage"].values())
  assert {e["split"] for e in report["episodes"]} <= {"train", "val", "test"}
  summary = report["summary"]
  assert summary["failed"] == len(CORRUPTIONS)
  assert summary["passed"] == 3


def _cli(*args):
  return subprocess.run([sys.executable, str(ROOT / "data_pipelines/validate.py"), *args],
                        capture_output=True, text=True, cwd=ROOT)


def test_cli_exit_codes(corpus, tmp_path):
  healthy = tmp_path / "healthy"
  shutil.copytree(corpus / "session-healthy", healthy / "session-healthy")
  out = _cli("--raw", str(healthy), "--report", str(tmp_path / "ok.json"), "--quiet")
  assert out.returncode == 0, out.stderr
  assert "2/2 episodes pass" in out.stdout
  assert json.loads((tmp_path / "ok.json").read_text())["summary"]["passed"] == 2

  bad = _cli("--raw", str(corpus), "--report", str(tmp_path / "bad.json"), "--workers", "2",
             "--require-views", "stereo_left", "--quiet")
  assert bad.returncode == 1
  assert "caption_not_json" in bad.stdout

  assert _cli("--raw", str(tmp_path / "nowhere"), "--report", "x.json").returncode == 2
  assert _cli("--raw", str(healthy), "--report", "x.json", "--workers", "0").returncode == 2
  assert _cli("--raw", str(healthy)).returncode == 2
