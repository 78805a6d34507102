"""The raw-episode reader: lazy opening, every accessor, the quirks of real files, errors."""

import json

import h5py
import numpy as np
import pytest

from raw_episode_fixtures import (FPS, FRAME_NS, T0_NS, EpisodeFactory, frame_indices,
                                  onset_sample, truncate)
from xefm_jax.data import geometry
from xefm_jax.data import xperience
from xefm_jax.data.episode import Episode, EpisodeError

N = 40


@pytest.fixture(scope="module")
def factory(tmp_path_factory):
  return EpisodeFactory(tmp_path_factory.mktemp("episodes"))


@pytest.fixture(scope="module")
def good(factory):
  return factory.make("good", N)


@pytest.fixture
def ep(good):
  with Episode(good) as e:
    yield e


def test_open_reads_metadata_only(good, monkeypatch):
  reads = []
  original = h5py.Dataset.__getitem__

  def counting(self, sel):
    reads.append(self.name)
    return original(self, sel)

  monkeypatch.setattr(h5py.Dataset, "__getitem__", counting)
  monkeypatch.setattr(h5py.Dataset, "read_direct",
                      lambda self, *a, **k: reads.append(self.name))
  with Episode(good) as e:
    assert reads == []  # no dataset was read to open
    assert set(e.keys) == {k.name for k in xperience.KEYS}
    assert e.keys["depth/depth"] == ((N, 8, 8), np.dtype(np.float32))
    e.hands(0, 2)
  assert set(reads) == {"/hand_mocap/left_joints_3d", "/hand_mocap/right_joints_3d"}


def test_inventory(ep, good):
  assert ep.session == "session-good" and ep.name == "session-good/ep1"
  assert ep.path == good
  assert ep.views == xperience.VIEWS and ep.view_problems == {}
  assert ep.num_frames == N and ep.duration_s == N / FPS
  assert ep.frame_counts == {**{g: N for g in ("slam", "depth", "hand_mocap",
                                               "full_body_mocap", "imu", "video")},
                             **{v: N for v in xperience.VIEWS}}
  assert ep.key_problems() == []
  assert Episode(good / xperience.ANNOTATION_FILE).name == ep.name  # the file works too


def test_read_and_clear_errors(ep):
  assert ep.read("slam/trans_xyz", 3, 5).shape == (2, 3)
  assert float(ep.read("depth/scale")) == 0.5
  with pytest.raises(EpisodeError, match=r"annotation.hdf5: key 'nope/x': missing"):
    ep.read("nope/x")
  with pytest.raises(EpisodeError, match=r"key 'slam/trans_xyz': has 40 rows, rows \[0, 41\)"):
    ep.read("slam/trans_xyz", 0, N + 1)
  with pytest.raises(EpisodeError, match="is a scalar"):
    ep.read("depth/scale", 0, 1)
  with pytest.raises(ValueError, match="frames"):
    ep.hands(0, N + 1)


def test_missing_key_names_file_key_and_expectation(factory):
  path = factory.make("nohands", mutate=lambda a: a.pop("hand_mocap/left_joints_3d"))
  with Episode(path) as e:
    assert any("hand_mocap/left_joints_3d' is missing" in p for p in e.key_problems())
    with pytest.raises(EpisodeError, match=r"session-nohands/ep1/annotation.hdf5: key "
                       r"'hand_mocap/left_joints_3d': missing .*\(N, 21, 3\)"):
      e.hands()


def test_wrong_shape_is_a_clear_error(factory):
  path = factory.make("badshape", mutate=lambda a: a.update(
      {"calibration/cam1/K": np.ones(3)}))
  with Episode(path) as e:
    assert any("cam1/K" in p for p in e.key_problems())
    with pytest.raises(EpisodeError, match=r"key 'calibration/cam1/K': has shape \(3,\).*"
                       r"expected \(4\)"):
      e.calibration()


def test_timestamps_int_strings_and_fallback(factory, ep):
  want = T0_NS + np.arange(N) * FRAME_NS
  np.testing.assert_array_equal(ep.timestamps_ns(), want)
  as_bytes = factory.make("tsbytes", mutate=lambda a: a.update(
      {"video/device_timestamp": np.array([b"%d" % t for t in want], "S20")}))
  with Episode(as_bytes) as e:
    np.testing.assert_array_equal(e.timestamps_ns(), want)
  as_str = factory.make("tsstr", mutate=lambda a: a.update(
      {"video/device_timestamp": np.array([str(t) for t in want], dtype=object).astype(
          h5py.string_dtype())}))
  with Episode(as_str) as e:
    assert e.timestamps_ns().dtype == np.int64
    np.testing.assert_array_equal(e.timestamps_ns(), want)
  garbage = factory.make("tsgarbage", mutate=lambda a: a.update(
      {"video/device_timestamp": np.array([b"n/a"] * N)}))
  with Episode(garbage) as e:  # falls back to the stems of slam/frame_names
    np.testing.assert_array_equal(e.timestamps_ns(), want)
  neither = factory.make("tsnone", mutate=lambda a: (
      a.pop("video/device_timestamp"), a.update({"slam/frame_names": np.array([b"x.jpg"] * N)})))
  with Episode(neither) as e:
    with pytest.raises(EpisodeError, match=r"no frame timestamps.*'video/device_timestamp' "
                       r"is missing.*slam/frame_names.*'x.jpg'"):
      e.timestamps_ns()


def test_pose_conventions_and_validity(factory, ep):
  q = ep.read("slam/quat_wxyz")
  t = ep.read("slam/trans_xyz")
  T, valid = ep.pose()
  assert T.shape == (N, 4, 4) and T.dtype == np.float64 and valid.all()
  # World-to-body storage: p_body = R p_world + t, so T_world_body maps that back.
  p_world = np.array([0.3, -1.0, 2.0])
  p_body = geometry.quat_to_matrix(q[7]) @ p_world + t[7]
  np.testing.assert_allclose(geometry.transform_points(T[7], p_body[None])[0], p_world,
                             atol=1e-9)

  def corrupt(a):
    a["slam/quat_wxyz"][3] = np.nan
    a["slam/quat_wxyz"][4] *= 2.0  # not a unit quaternion

  path = factory.make("b2w", mutate=corrupt,
                      attrs={"slam/quat_wxyz": {"convention": "body_to_world"}})
  with Episode(path) as e:
    T2, valid2 = e.pose()
    assert valid2.tolist() == [i not in (3, 4) for i in range(N)]
    np.testing.assert_array_equal(T2[3], np.eye(4))
    np.testing.assert_allclose(T2[7, :3, :3], geometry.quat_to_matrix(q[7]))
    np.testing.assert_allclose(T2[7, :3, 3], t[7])
  bad = factory.make("badconv", attrs={"slam/quat_wxyz": {"convention": "sideways"}})
  with Episode(bad) as e, pytest.raises(EpisodeError, match="convention='sideways'"):
    e.pose()


def test_calibration(ep, factory):
  cal = ep.calibration()
  a = {k: ep.read(k) for k in ep.keys if k.startswith("calibration/")}
  T = a["calibration/cam0/T_c_b"]
  for i, view in enumerate(xperience.FISHEYE_VIEWS):
    if i:
      T = a[f"calibration/cam{i}/T_cn_cnm1"] @ T
    cam = cal.fisheye[view]
    np.testing.assert_allclose(cam.T_cam_body, T)
    np.testing.assert_array_equal(cam.K, a[f"calibration/cam{i}/K"])
    assert (cam.width, cam.height) == (64, 32)
  assert list(cal.fisheye) == list(xperience.FISHEYE_VIEWS)
  assert cal.stereo.baseline == pytest.approx(0.08)
  np.testing.assert_allclose(cal.depth.K, a["calibration/cam01/K"] * 0.5)
  assert (cal.depth.width, cal.depth.height) == (8, 8)
  # A point on the left camera's optical axis sits baseline to the left in the right camera.
  p_body = geometry.transform_points(geometry.se3_inverse(cal.stereo.T_cam_body),
                                     np.array([[0.0, 0.0, 1.0]]))
  np.testing.assert_allclose(geometry.transform_points(cal.stereo.T_right_body, p_body),
                             [[-0.08, 0.0, 1.0]], atol=1e-12)
  zero = factory.make("zeroscale", mutate=lambda a: a.update({"depth/scale": np.float64(0)}))
  with Episode(zero) as e, pytest.raises(EpisodeError, match="'depth/scale': is 0.0"):
    e.calibration()


def test_hands_nan_runs_and_zero_rows(factory):
  def quirks(a):
    a["hand_mocap/left_joints_3d"][5:15] = np.nan  # a NaN run
    a["hand_mocap/right_joints_3d"][20:23] = 0.0  # untracked as zeros
    a["hand_mocap/right_joints_3d"][30, 4] = np.nan  # one bad joint spoils the row

  with Episode(factory.make("hands", mutate=quirks)) as e:
    joints, valid = e.hands()
    assert joints.shape == (N, 2, 21, 3) and joints.dtype == np.float32
    assert valid.shape == (N, 2)
    assert np.flatnonzero(~valid[:, 0]).tolist() == list(range(5, 15))
    assert np.flatnonzero(~valid[:, 1]).tolist() == [20, 21, 22, 30]
    assert np.isfinite(joints).all() and not joints[~valid].any()
    np.testing.assert_array_equal(joints[0, 0], e.read("hand_mocap/left_joints_3d", 0, 1)[0])
    j2, v2 = e.hands(4, 6)
    assert j2.shape == (2, 2, 21, 3) and v2[:, 0].tolist() == [True, False]


def test_body_depth_imu(factory):
  def quirks(a):
    a["full_body_mocap/keypoints"][2] = np.nan
    a["full_body_mocap/contacts"][1, 0] = 1.5
    a["depth/depth"][0, 0, 0] = np.nan
    a["depth/depth"][0, 0, 1] = -1.0
    ts = a["imu/device_timestamp_ns"]
    a["imu/device_timestamp_ns"] = np.array([b"%d" % x for x in ts])

  with Episode(factory.make("misc", mutate=quirks)) as e:
    kp, valid, contacts = e.body(0, 4)
    assert kp.shape == (4, 52, 3) and contacts.shape == (4, 21)
    assert valid.tolist() == [True, True, False, True] and not kp[2].any()
    assert contacts.max() <= 1.0 and contacts[1, 0] == 1.0
    depth, conf = e.depth(0, 2)
    assert depth.shape == conf.shape == (2, 8, 8)
    assert depth.dtype == np.float32 and conf.dtype == np.uint8
    assert depth[0, 0, :2].tolist() == [0.0, 0.0] and conf[0, 0, :2].tolist() == [0, 0]
    imu = e.imu()
    assert imu.timestamps_ns.dtype == np.int64 and imu.timestamps_ns.shape == (10 * N,)
    assert imu.accel.shape == imu.gyro.shape == (10 * N, 3)
    assert imu.keyframe_indices.shape == (N,)
    assert imu.timestamps_ns[imu.keyframe_indices[3]] == T0_NS + 3 * FRAME_NS


def test_stream_counts_differ_by_a_few_frames(factory):
  def ragged(a):
    for k in ("depth/depth", "depth/confidence"):
      a[k] = a[k][:N - 2]
    for side in xperience.HANDS:
      a[f"hand_mocap/{side}_joints_3d"] = np.concatenate(
          [a[f"hand_mocap/{side}_joints_3d"], np.zeros((3, 21, 3), np.float32)])

  path = factory.make("ragged", mutate=ragged, view_frames={"stereo_right": N - 3})
  with Episode(path) as e:
    assert e.frame_counts["depth"] == N - 2 and e.frame_counts["hand_mocap"] == N
    assert e.frame_counts["stereo_right"] == N - 3
    assert e.num_frames == N - 3 and "stereo_right" in e.views
    assert e.depth().depth.shape[0] == N - 3 and e.hands().joints.shape[0] == N - 3
    assert e.timestamps_ns().shape == (N - 3,)
    assert e.audio().shape == (round((N - 3) / FPS * 16000),)


def test_missing_and_short_views(factory):
  path = factory.make("views", missing_views=("fisheye_cam1",),
                      view_frames={"fisheye_cam3": 12})
  with Episode(path) as e:
    assert e.views == ("fisheye_cam0", "fisheye_cam2", "stereo_left", "stereo_right")
    assert "missing" in e.view_problems["fisheye_cam1"]
    assert "short video stream, 12 frames" in e.view_problems["fisheye_cam3"]
    assert e.num_frames == N  # a short view is masked, it does not cut the episode
    with pytest.raises(EpisodeError, match="'fisheye_cam1' is not usable.*missing"):
      e.video("fisheye_cam1")
    with pytest.raises(ValueError, match="unknown view"):
      e.video("cam7")


def test_video(ep):
  frames = ep.video("stereo_left", size=(16, 32), stride=4, start=2, stop=19)
  assert frames.shape == (5, 16, 32, 3) and frames.dtype == np.uint8
  assert frame_indices(frames) == [2, 6, 10, 14, 18]
  assert frame_indices(ep.video("fisheye_cam2")) == list(range(N))


def test_truncated_mp4s(factory):
  path = factory.make("cut")
  truncate(path / "fisheye_cam0.mp4", 0.5)  # header lost: the view is unusable
  with Episode(path) as e:
    assert "fisheye_cam0" not in e.views
    assert "fisheye_cam0.mp4: cannot open" in e.view_problems["fisheye_cam0"]
    with pytest.raises(EpisodeError, match="fisheye_cam0.mp4.*truncated or corrupt"):
      e.video("fisheye_cam0")
  fast = factory.make("cutfast")
  (fast / "stereo_left.mp4").write_bytes(factory.mp4(N, faststart=True).read_bytes())
  truncate(fast / "stereo_left.mp4", 0.5)  # header intact: found when decoding
  with Episode(fast) as e:
    assert "stereo_left" in e.views
    with pytest.raises(EpisodeError, match="stereo_left.mp4.*ended early"):
      e.video("stereo_left")


def test_audio(ep):
  x = ep.audio()
  assert x.shape == (round(N / FPS * 16000),) and x.dtype == np.float32
  assert abs(onset_sample(x) - 10 / FPS * 16000) <= 24  # tone starts at frame 10
  assert ep.audio(rate=8000).shape == (round(N / FPS * 8000),)


def test_caption(ep, factory):
  tl = ep.caption()
  assert tl.num_frames == N and tl.task == "Make tea."
  assert [(s.start, s.stop) for s in tl.segments] == [(0, N // 2), (N // 2, N)]
  assert [(a.label, a.start, a.stop) for a in tl.actions] == [
      ("Open tap", 2, 6), ("Press switch", N // 2 + 1, N // 2 + 4)]
  assert tl.objects_at(N - 1) == ("kettle",)

  def outside(a):
    d = json.loads(a["caption"])
    d["segments"][1]["Current Action"][0]["end_frame"] = T0_NS + 400 * FRAME_NS
    a["caption"] = json.dumps(d)

  with Episode(factory.make("capout", mutate=outside)) as e:
    with pytest.raises(EpisodeError, match=r"annotation.hdf5: key 'caption': segment 1 .*"
                       r"end_frame.*outside the episode"):
      e.caption()
  with Episode(factory.make("capbad", mutate=lambda a: a.update({"caption": "{oops"}))) as e:
    with pytest.raises(EpisodeError, match="key 'caption'.*not JSON"):
      e.caption()


def test_metadata_and_health_report(ep):
  meta = ep.metadata()
  assert meta["device_id"] == "dev-0042" and meta["body_height"] == 1.75
  assert set(meta) == {"body_height", "device_id", "device_version", "time_created",
                       "health_report", "recording_id"}
  assert ep.health_report()["integrity"] == "ok"


def test_missing_annotation_and_closed_episode(tmp_path, good):
  with pytest.raises(EpisodeError, match="annotation.hdf5: file is missing"):
    Episode(tmp_path)
  (tmp_path / "annotation.hdf5").write_bytes(b"not hdf5")
  with pytest.raises(EpisodeError, match="cannot open as HDF5"):
    Episode(tmp_path)
  e = Episode(good)
  e.close()
  with pytest.raises(EpisodeError, match="closed"):
    e.pose()
