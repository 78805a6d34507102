"""Tests of the sensor and writer half of the synthetic episode generator.

Most tests run on a hand-made EpisodeSim (`fixture_sim`): a kitchen-like room, a few
objects, a head that walks and turns, and two hands in front of it. Where the world
simulation (data_pipelines/synth/simulate.py) is present, the end-to-end tests also run
the real generator through `synthesize`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import pathlib
import subprocess
import sys
import time

import av
import h5py
import jax.numpy as jnp
import numpy as np
import pytest

from data_pipelines.synth import audio as audio_lib
from data_pipelines.synth import cameras as cameras_lib
from data_pipelines.synth import profiles, quirks, render, writer
from data_pipelines.synth.scene import AudioEvent, EpisodeSim, Primitive, Step
from xefm_jax.data import geometry, xperience

REPO = pathlib.Path(__file__).resolve().parents[1]
HAVE_SIMULATION = all(importlib.util.find_spec(f"data_pipelines.synth.{m}") is not None
                      for m in ("world", "simulate", "language"))
FPS = 20

# ----------------------------------------------------------------------------- fixture

# A canonical right hand, wrist at the origin, fingers along +x, palm facing -z (metres).
_FINGER_BASES = {"thumb": (0.025, -0.035), "index": (0.085, -0.025), "middle": (0.09, 0.0),
                 "ring": (0.085, 0.02), "pinky": (0.075, 0.038)}
_FINGER_LENGTHS = {"thumb": (0.035, 0.03, 0.025), "index": (0.04, 0.025, 0.02),
                   "middle": (0.045, 0.028, 0.022), "ring": (0.042, 0.026, 0.02),
                   "pinky": (0.033, 0.02, 0.018)}


def canonical_hand(curl: np.ndarray) -> np.ndarray:
  """(n, 21, 3) joints of a right hand in its wrist frame; curl (n,) in [0, 1] bends fingers."""
  curl = np.asarray(curl, float)[:, None]
  joints = [np.zeros((len(curl), 3))]
  for name in ("thumb", "index", "middle", "ring", "pinky"):
    x, y = _FINGER_BASES[name]
    p = np.broadcast_to(np.array([x, y, 0.0]), joints[0].shape)
    joints.append(p)
    angle = np.zeros_like(curl)
    for length in _FINGER_LENGTHS[name]:
      angle = angle + curl * 0.6
      if name == "thumb":
        direction = np.concatenate([0.6 * np.cos(angle), np.full_like(angle, -0.8),
                                    -0.5 * np.sin(angle)], -1)
      else:
        direction = np.concatenate([np.cos(angle), np.zeros_like(angle), -np.sin(angle)], -1)
      p = p + length * direction / np.linalg.norm(direction, axis=-1, keepdims=True)
      joints.append(p)
  return np.stack(joints, 1)


def _yaw_pitch(yaw: np.ndarray, pitch: np.ndarray) -> np.ndarray:
  zeros = np.zeros_like(yaw)
  Rz = geometry.axis_angle_to_matrix(np.stack([zeros, zeros, yaw], -1))
  Ry = geometry.axis_angle_to_matrix(np.stack([zeros, pitch, zeros], -1))
  return Rz @ Ry


def fixture_scene() -> tuple[list[Primitive], np.ndarray, list[Primitive]]:
  static = [
      Primitive("floor", "box", (3.0, 3.0, 0.02), (0.6, 0.55, 0.5), "checker", 0.5),
      Primitive("ceiling", "box", (3.0, 3.0, 0.02), (0.9, 0.9, 0.88)),
      Primitive("wall_n", "box", (3.0, 0.05, 1.3), (0.75, 0.7, 0.6), "stripes", 0.3),
      Primitive("wall_s", "box", (3.0, 0.05, 1.3), (0.6, 0.7, 0.75), "noise", 0.2),
      Primitive("wall_e", "box", (0.05, 3.0, 1.3), (0.7, 0.75, 0.6), "stripes", 0.4),
      Primitive("wall_w", "box", (0.05, 3.0, 1.3), (0.7, 0.6, 0.7), "noise", 0.25),
      Primitive("counter", "box", (1.2, 0.3, 0.45), (0.5, 0.35, 0.25), "noise", 0.1),
      Primitive("table", "box", (0.6, 0.4, 0.02), (0.55, 0.4, 0.3), "stripes", 0.05),
      Primitive("table_leg", "cylinder", (0.04, 0.37), (0.3, 0.3, 0.3)),
  ]
  positions = [(0, 0, -0.02), (0, 0, 2.62), (0, 3.0, 1.3), (0, -3.0, 1.3), (3.0, 0, 1.3),
               (-3.0, 0, 1.3), (1.0, 1.5, 0.45), (1.2, -0.8, 0.76), (1.2, -0.8, 0.37)]
  poses = np.stack([geometry.make_se3(np.eye(3), np.array(p, float)) for p in positions])
  objects = [
      Primitive("mug", "cylinder", (0.045, 0.05), (0.9, 0.1, 0.1)),
      Primitive("apple", "sphere", (0.04,), (0.1, 0.8, 0.1)),
      Primitive("kettle", "cylinder", (0.08, 0.1), (0.1, 0.2, 0.9), "checker", 0.04),
      Primitive("cutting_board", "box", (0.2, 0.12, 0.01), (0.8, 0.7, 0.4), "stripes", 0.02),
  ]
  return static, poses, objects


def fixture_sim(num_frames: int = 60, seed: int = 0) -> EpisodeSim:
  """A small deterministic episode: the wearer walks towards a table, turning, hands out."""
  rng = np.random.default_rng(seed)
  n = num_frames
  t = np.arange(n) / FPS
  frame_times = 75_294_505_147_569 + np.round(t * 1e9).astype(np.int64)
  m = n * 10
  imu_times = frame_times[0] + np.round(np.arange(m) / 200.0 * 1e9).astype(np.int64)
  keyframes = np.searchsorted(imu_times, frame_times).clip(0, m - 1)

  yaw = -0.4 + 0.25 * np.sin(0.3 * t)
  pitch = 0.35 + 0.05 * np.sin(0.7 * t)
  head = np.stack([0.2 + 0.05 * t, -0.4 - 0.02 * t, 1.6 + 0.01 * np.sin(2 * t)], -1)
  T_world_body = geometry.make_se3(_yaw_pitch(yaw, pitch), head)

  static, static_poses, objects = fixture_scene()
  k = len(objects)
  object_poses = np.tile(np.eye(4), (n, k, 1, 1))
  object_poses[:, 0, :3, 3] = [1.0, -0.7, 0.83]  # mug on the table
  object_poses[:, 1, :3, 3] = np.stack([1.3 + 0.1 * np.sin(t), -0.9 + 0 * t, 0.82 + 0 * t], -1)
  object_poses[:, 2, :3, 3] = [1.0, 1.4, 1.0]  # kettle on the counter
  object_poses[:, 3, :3, 3] = [1.4, -0.6, 0.79]

  # Hands about 40 cm in front of the chest, palms down, fingers forward.
  hands = np.zeros((n, 2, 21, 3))
  body_yaw = _yaw_pitch(yaw, np.zeros_like(yaw))
  for side, y in ((0, 0.16), (1, -0.16)):
    local = canonical_hand(0.3 + 0.2 * np.sin(t * 2 + side))  # (n, 21, 3)
    if side == 0:
      local = local * np.array([1, -1, 1])  # mirror into a left hand
    anchor = head + np.einsum("nij,j->ni", body_yaw, np.array([0.42, y, -0.38]))
    hands[:, side] = np.einsum("nij,nkj->nki", body_yaw, local) + anchor[:, None]
  hand_visible = np.ones((n, 2), bool)
  hand_visible[n // 3: n // 3 + 5, 0] = False

  def quats(shape):
    q = np.zeros(shape + (4,))
    q[..., 0] = 1
    return q

  eye = np.broadcast_to(np.eye(3), (n, 2, 15, 3, 3)).copy()
  body_kp = head[:, None] + rng.normal(0, 0.3, (1, 52, 3)) - np.array([0, 0, 0.8])
  T_root = geometry.make_se3(body_yaw, head - np.array([0, 0, 0.7]))
  steps = [
      Step("Walk to the table", "walk", None, 0, n // 2, "none", "Walk to table",
           "Walk towards the table."),
      Step("Make tea", "pour", "kettle", n // 2, n, "right", "Pour kettle",
           "Pour water from the kettle into the mug."),
  ]
  events = [AudioEvent("footstep", s, s + 0.15, 0.8, 1.6) for s in np.arange(0, n / FPS / 2, 0.5)]
  events.append(AudioEvent("pour", n / FPS / 2, n / FPS, 0.6, 0.5))
  return EpisodeSim(
      session="0b7e1d3c-fixture", episode=0, place="kitchen", activity="make_tea",
      task_text="Making tea in a small kitchen.", seed=seed,
      frame_times_ns=frame_times, imu_times_ns=imu_times, imu_keyframe_indices=keyframes,
      T_world_body=T_world_body,
      imu_accel=rng.normal(0, 0.1, (m, 3)) + np.array([0, 0, 9.81]),
      imu_gyro=rng.normal(0, 0.01, (m, 3)),
      static=static, static_poses=static_poses, objects=objects, object_poses=object_poses,
      hands_world=hands, hand_visible=hand_visible, mano_hand_pose=eye,
      mano_global_orient_world=np.broadcast_to(np.eye(3), (n, 2, 3, 3)).copy(),
      mano_betas=np.zeros((2, 10)), body_keypoints=body_kp, body_quats=quats((n, 21)),
      hand_quats=quats((n, 2, 15)), body_betas=np.zeros(16), T_world_root=T_root,
      T_world_cpf=T_world_body.copy(), contacts=np.zeros((n, 21)), body_height=1.72,
      steps=steps, relevant_objects=np.ones((n, k), bool),
      interactions=[(f, "The hand reaches for the kettle.") for f in range(0, n, 40)],
      audio_events=events,
  )


FIXTURE_CAPTION = json.dumps({"config": {"segment_sec": 20, "Main Task": "Making tea."},
                              "segments": [], "global_summary": "Tea was made."})
SMALL = profiles.SMALL
NO_QUIRKS = quirks.EpisodeQuirks()


def small_rig(seed: int = 0) -> cameras_lib.Rig:
  return cameras_lib.make_rig(SMALL.fisheye_size, SMALL.stereo_size, SMALL.fisheye_fov_deg,
                              SMALL.stereo_fov_deg, rng=np.random.default_rng(seed))


@pytest.fixture(scope="module")
def device() -> writer.Device:
  return writer.Device("XPR-TEST0001", "xperience-synth-test", small_rig())


@pytest.fixture(scope="module")
def renderer(device) -> render.Renderer:
  return render.Renderer(device.rig, SMALL)


@pytest.fixture(scope="module")
def exact_renderer(device) -> render.Renderer:
  """No image or depth noise: pixels and depths are exact functions of the geometry."""
  return render.Renderer(device.rig, SMALL, noise=False)


@pytest.fixture(scope="module")
def episode(tmp_path_factory, renderer, device) -> pathlib.Path:
  root = tmp_path_factory.mktemp("fixture_episode")
  return writer.write_episode(root, fixture_sim(60), FIXTURE_CAPTION, renderer, device, NO_QUIRKS)


def decode_video(path: pathlib.Path) -> tuple[np.ndarray, float]:
  """All frames (F, H, W, 3) uint8 of an MP4's video stream, and its frame rate."""
  with av.open(str(path)) as c:
    rate = float(c.streams.video[0].average_rate)
    return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)]), rate


def decode_audio(path: pathlib.Path) -> tuple[np.ndarray, int, str]:
  with av.open(str(path)) as c:
    s = c.streams.audio[0]
    samples = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
    return samples, s.rate, s.codec_context.name


def check_keys(path: pathlib.Path, num_frames: int | None = None, slack: int = 0) -> None:
  """Every key of xperience.KEYS, read back with h5py, at its documented shape and dtype."""
  with h5py.File(path / xperience.ANNOTATION_FILE, "r") as f:
    dims: dict[str, int] = {}
    for key in xperience.KEYS:
      assert key.name in f, f"{path}: missing {key.name}"
      ds = f[key.name]
      assert xperience.shape_matches(key, ds.shape, dims), (key.name, ds.shape, key.shape)
      assert ds.dtype.kind in key.kind, (key.name, ds.dtype, key.kind)
      if key.per_frame and num_frames is not None:
        assert num_frames - slack <= ds.shape[0] <= num_frames, (key.name, ds.shape)


# ----------------------------------------------------------------------------- cameras


def test_rig_calibration_round_trip():
  rig = small_rig(3)
  calib = cameras_lib.rig_to_calibration(rig)
  calib_keys = {k.name for k in xperience.KEYS if k.name.startswith("calibration/")}
  assert set(calib) == calib_keys
  back = cameras_lib.rig_from_calibration(calib)
  for a, b in zip(rig.fisheye + (rig.stereo,), back.fisheye + (back.stereo,)):
    np.testing.assert_allclose(a.K, b.K)
    np.testing.assert_allclose(a.T_c_b if hasattr(a, "T_c_b") else a.T_c0_b,
                               b.T_c_b if hasattr(b, "T_c_b") else b.T_c0_b, atol=1e-12)
    assert (a.width, a.height) == (b.width, b.height)
  np.testing.assert_allclose(back.stereo.T_c1_b[:3, 3] - back.stereo.T_c0_b[:3, 3],
                             [-rig.stereo.baseline, 0, 0], atol=1e-12)
  # Camera axes as documented: stereo looks forward and down, cam2 left, cam3 right.
  forward = lambda T: geometry.se3_inverse(T)[:3, 2]  # the optical axis in the body frame
  assert forward(rig.stereo.T_c0_b)[0] > 0.8 and forward(rig.stereo.T_c0_b)[2] < 0
  assert forward(rig.fisheye[2].T_c_b)[1] > 0.8 and forward(rig.fisheye[3].T_c_b)[1] < -0.8
  del calib["calibration/cam2/T_cn_cnm1"]
  with pytest.raises(KeyError, match="cam2/T_cn_cnm1"):
    cameras_lib.rig_from_calibration(calib, source="x.hdf5")


# ----------------------------------------------------------------------------- render


def test_intersection_kernel_matches_closed_forms():
  """Box, sphere and cylinder at known distances, from outside and from inside."""
  d = np.array([[0.0, 0.0, 1.0], [0.6, 0.0, 0.8]])  # (R, 3) camera-frame unit rays
  def hit(kind, size, at):
    h, q, _ = render.shape_params(Primitive("s", kind, size, (1, 1, 1)))
    T = geometry.make_se3(np.eye(3), np.array(at, float))
    p, _ = render.Renderer._params(np.eye(4)[None, None], T[None, None], h[None, None],
                                   q[None, None])
    comps = [jnp.float32(c) for c in p[0, 0, 0]]
    return np.asarray(render._hit_distance(comps, list(jnp.asarray(d.T, jnp.float32))))
  np.testing.assert_allclose(hit("box", (0.5, 0.5, 0.5), (0, 0, 5))[0], 4.5, rtol=1e-6)
  np.testing.assert_allclose(hit("sphere", (1.0,), (0, 0, 5))[0], 4.0, rtol=1e-6)
  np.testing.assert_allclose(hit("cylinder", (1.0, 2.0), (0, 0, 5))[0], 3.0, rtol=1e-6)  # cap
  beside = hit("cylinder", (1.0, 2.0), (0, 5, 0))  # the rays pass beside its axis
  assert np.isinf(beside).all()
  inside = hit("box", (2.0, 2.0, 2.0), (0, 0, 0))  # from inside a room-like box: the exit
  np.testing.assert_allclose(inside, [2.0, 2.0 / 0.8], rtol=1e-6)
  assert np.isinf(hit("sphere", (1.0,), (0, 0, -5))).all()  # behind the camera


def _visible_projections(cam: render.RenderCamera, T_cam_world: np.ndarray, points: np.ndarray,
                         margin: float = 3.0):
  """Pixels (u, v) of world points that land inside the image (and image circle)."""
  p = geometry.transform_points(T_cam_world, points)  # (F, K, 3)
  uv = cam.project(p)
  ok = (p[..., 2] > 0.05) & (uv[..., 0] > margin) & (uv[..., 1] > margin)
  ok &= (uv[..., 0] < cam.width - margin) & (uv[..., 1] < cam.height - margin)
  if cam.model == "fisheye":
    theta = np.arctan2(np.linalg.norm(p[..., :2], axis=-1), p[..., 2])
    ok &= theta < cam.max_theta - 0.05
  return uv, ok


def _render_all(renderer, sim):
  chunks = list(renderer.render(sim))
  views = {v: np.concatenate([c.views[v] for c in chunks]) for v in xperience.VIEWS}
  depth = np.concatenate([c.depth for c in chunks])
  return views, depth


def test_objects_appear_where_they_project(exact_renderer):
  sim = fixture_sim(40)
  sim.hands_world = sim.hands_world - np.array([0.0, 0.0, 5.0])  # hands out of every view
  views, depth = _render_all(exact_renderer, sim)
  centres = sim.object_poses[:, :, :3, 3]  # (N, K, 3)
  dominant = {"mug": 0, "apple": 1, "kettle": 2}
  hits = {name: [0, 0] for name in dominant}
  for ci, cam in enumerate(exact_renderer.cams[:-1]):
    T_cam_world = cam.T_c_b @ geometry.se3_inverse(sim.T_world_body)
    uv, ok = _visible_projections(cam, T_cam_world, centres)
    for k, obj in enumerate(sim.objects):
      if obj.name not in dominant:
        continue
      for f in np.nonzero(ok[:, k])[0]:
        u, v = uv[f, k].astype(int)
        rgb = views[cam.name][f, v, u].astype(int)
        hits[obj.name][0] += 1
        hits[obj.name][1] += int(np.argmax(rgb) == dominant[obj.name])
  for name, (seen, right) in hits.items():
    assert seen >= 10, f"{name} projects into too few views ({seen})"
    assert right >= 0.95 * seen, f"{name}: its colour at {right} of {seen} projections"
  # The depth map agrees: the mug's centre is just behind the surface seen at its pixel
  # (by less than the mug's bounding radius, 0.067 m, plus half a depth pixel).
  dcam = exact_renderer.depth_camera
  T_cam_world = dcam.T_c_b @ geometry.se3_inverse(sim.T_world_body)
  uv, ok = _visible_projections(dcam, T_cam_world, centres[:, :1])
  z = geometry.transform_points(T_cam_world, centres[:, :1])[..., 2]
  f = np.nonzero(ok[:, 0])[0]
  assert len(f) > 5
  u, v = uv[f, 0].astype(int).T
  gap = z[f, 0] - depth[f, v, u]
  assert (gap > -0.005).all() and (gap < 0.08).all(), gap


def test_hands_appear_where_they_project(exact_renderer):
  sim = fixture_sim(40)
  views, _ = _render_all(exact_renderer, sim)
  palms = render.hand_solids(sim.hands_world)[0][:, :, 0, :3, 3]  # (N, 2, 3) palm centres
  cam = exact_renderer.cams[xperience.VIEWS.index("stereo_left")]
  uv, ok = _visible_projections(cam, cam.T_c_b @ geometry.se3_inverse(sim.T_world_body), palms)
  assert ok.sum() > 40
  f, side = np.nonzero(ok)
  u, v = uv[f, side].astype(int).T
  rgb = views["stereo_left"][f, v, u].astype(int)
  skin = (rgb[:, 0] > rgb[:, 1]) & (rgb[:, 1] > rgb[:, 2])
  assert skin.mean() > 0.95, rgb[~skin][:5]


def test_depth_equals_ray_plane_distance_on_the_floor(exact_renderer, renderer):
  sim = fixture_sim(40)
  _, depth = _render_all(exact_renderer, sim)
  dcam = exact_renderer.depth_camera
  rays = geometry.pinhole_unproject(geometry.pixel_grid(dcam.width, dcam.height), dcam.K)
  T_world_cam = sim.T_world_body @ geometry.se3_inverse(dcam.T_c_b)  # (N, 4, 4)
  dirs = np.einsum("nij,hwj->nhwi", T_world_cam[:, :3, :3], rays)  # z = 1 in the camera
  origin = T_world_cam[:, :3, 3]
  s = -origin[:, 2, None, None] / np.minimum(dirs[..., 2], -1e-9)  # z-depth to the plane z = 0
  floor_pt = origin[:, None, None, :2] + s[..., None] * dirs[..., :2]
  on_floor = (dirs[..., 2] < -1e-3) & (np.abs(floor_pt) < 2.9).all(-1) & (s < SMALL.depth_max_m)
  valid = on_floor & (depth > 0)
  assert valid.mean() > 0.2
  # Nothing is seen through the floor, and where the floor is seen its depth is exact.
  assert (depth[valid] <= s[valid] * (1 + 1e-4)).all()
  exact = np.abs(depth[valid] - s[valid]) <= 1e-4 * s[valid]
  assert exact.mean() > 0.3
  # With sensor noise, depth stays close, and the noise grows with range.
  _, noisy = _render_all(renderer, sim)
  floor = valid & (np.abs(depth - s) <= 1e-4 * s) & (noisy > 0)
  err = (noisy - depth)[floor]
  assert np.median(np.abs(err)) < 0.03 and np.abs(err).max() < 0.5
  near = s[floor] < np.median(s[floor])
  assert err[~near].std() > 1.5 * err[near].std()


def test_actions_sound_different():
  sim = fixture_sim(200)
  rate = 48000
  track = audio_lib.episode_audio(sim, rate, np.random.default_rng(0))
  assert track.dtype == np.float32 and track.shape == (10 * rate,)
  assert np.abs(track).max() <= audio_lib.PEAK

  def high_to_low(x):
    power = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / rate)
    return power[f > 1000].sum() / power[f < 300].sum()

  foot = high_to_low(track[: 4 * rate])  # footsteps only in the first half
  pour = high_to_low(track[6 * rate:])  # pouring in the second
  assert pour > 100 * foot, (pour, foot)
  # Room tone alone is quiet.
  quiet = dataclasses.replace(fixture_sim(40), audio_events=[])
  silent = audio_lib.episode_audio(quiet, rate, np.random.default_rng(0))
  assert np.sqrt(np.mean(silent ** 2)) < 0.01


# ----------------------------------------------------------------------------- writer


def test_episode_has_every_key_at_its_shape(episode):
  assert sorted(p.name for p in episode.iterdir()) == sorted(
      [xperience.ANNOTATION_FILE] + [v + xperience.VIDEO_SUFFIX for v in xperience.VIEWS])
  check_keys(episode, num_frames=60)
  sim = fixture_sim(60)
  with h5py.File(episode / xperience.ANNOTATION_FILE, "r") as f:
    q = f["slam/quat_wxyz"][()]
    np.testing.assert_allclose(np.linalg.norm(q, axis=-1), 1.0, atol=1e-9)
    assert f["slam/quat_wxyz"].attrs["convention"] == "world_to_body"
    T_body_world = geometry.make_se3(geometry.quat_to_matrix(q), f["slam/trans_xyz"][()])
    np.testing.assert_allclose(geometry.se3_inverse(T_body_world), sim.T_world_body, atol=1e-9)
    assert f["slam/frame_names"][0] == b"%d.jpg" % sim.frame_times_ns[0]
    assert f["depth/depth"].dtype == np.float32 and f["depth/confidence"].dtype == np.uint8
    assert f["depth/depth"].shape == (60, SMALL.depth_size, SMALL.depth_size)
    assert f["depth/scale"][()] == SMALL.depth_scale
    depth, conf = f["depth/depth"][()], f["depth/confidence"][()]
    assert ((depth == 0) == (conf == 0)).all()
    assert np.mean(conf[(depth > 0) & (depth < 1.5)]) > np.mean(conf[depth > 3.0])
    assert f["imu/accel_xyz"].dtype == np.float64 and f["imu/device_timestamp_ns"].dtype == np.int64
    assert f["video/device_timestamp"].dtype == np.int64
    assert f["video/length_sec"][()] == 3.0
    cloud = f["slam/point_cloud"][()]
    assert 100 <= len(cloud) <= SMALL.point_cloud_size
    assert cloud[:, 2].min() > -0.1 and cloud[:, 2].max() < 2.7  # inside the room
    # Hands: the rectified left camera's frame, zeros exactly where the tracker lost them.
    T_c_world = cameras_lib.rig_from_calibration(f).stereo.T_c0_b @ geometry.se3_inverse(
        sim.T_world_body)
    joints = f["hand_mocap/left_joints_3d"][()]
    lost = ~sim.hand_visible[:, 0]
    assert (joints[lost] == 0).all() and np.isfinite(joints).all()
    assert (joints[~lost] != 0).any((-1, -2)).all()
    assert (f["hand_mocap/left_mano_hand_pose"][()][lost] == 0).all()
    np.testing.assert_allclose(
        joints[~lost], geometry.transform_points(T_c_world, sim.hands_world[:, 0])[~lost],
        atol=1e-9)
    report = json.loads(f["metadata/health_report"][()])
    assert report["expected_fps"]["fisheye_cam0"] == 20 and report["expected_fps"]["imu"] == 200
    assert set(report["frame_drops"].values()) == {0}
    assert json.loads(f["caption"][()]) == json.loads(FIXTURE_CAPTION)
    assert isinstance(f["metadata/device_id"][()], bytes)


def test_episode_has_the_known_facts_of_real_files(episode):
  """Facts of real annotation.hdf5 files from public probes (XPERIENCE_FORMAT.md): 23
  calibration datasets whose numeric values flatten to 117 numbers (feature builders that
  flatten the calibration must get the real 8,546-d vectors), float64 SLAM map, folders ep1
  onwards, untracked hands as zeros (no NaN unless a quirk writes it)."""
  with h5py.File(episode / xperience.ANNOTATION_FILE, "r") as f:
    calib = []
    f["calibration"].visititems(
        lambda name, obj: calib.append(obj) if isinstance(obj, h5py.Dataset) else None)
    numeric = [np.asarray(ds[()]).ravel() for ds in calib if ds.dtype.kind in "fiub"]
    assert len(calib) == xperience.CALIBRATION_DATASETS == 23
    assert len(calib) - len(numeric) == 8  # non-numeric scalars: model names, resolutions
    assert sum(x.size for x in numeric) == xperience.CALIBRATION_NUMBERS == 117
    assert [ds.name for ds in calib if ds.dtype.kind in "iu"] == []  # no numeric image sizes
    assert f["slam/point_cloud"].dtype == np.float64
    for side in xperience.HANDS:
      assert np.isfinite(f[f"hand_mocap/{side}_joints_3d"][()]).all()
  assert episode.name == xperience.episode_dir_name(1) == "ep1"
  with pytest.raises(ValueError, match="ep1"):
    xperience.episode_dir_name(0)


def test_videos_decode_at_20fps_with_aac(episode):
  sizes = {v: (SMALL.fisheye_size,) * 2 for v in xperience.FISHEYE_VIEWS}
  sizes.update({v: (SMALL.stereo_size,) * 2 for v in xperience.STEREO_VIEWS})
  for view in xperience.VIEWS:
    path = episode / (view + xperience.VIDEO_SUFFIX)
    frames, fps = decode_video(path)
    assert frames.shape == (60, *sizes[view], 3) and fps == 20.0
    with av.open(str(path)) as c:
      v = c.streams.video[0]
      assert v.codec_context.name == "h264" and v.codec_context.pix_fmt == "yuv420p"
    samples, rate, codec = decode_audio(path)
    assert codec == "aac" and rate == 48000
    assert abs(len(samples) - 3 * 48000) <= 1024  # one AAC frame of padding at most


def test_write_is_atomic_and_skips_complete_episodes(tmp_path, renderer, device, monkeypatch):
  sim = fixture_sim(10)
  def broken(*args, **kwargs):
    raise RuntimeError("disk full")
  with monkeypatch.context() as m:
    m.setattr(writer, "health_report", broken)  # fails after the videos are written
    with pytest.raises(RuntimeError, match="disk full"):
      writer.write_episode(tmp_path, sim, FIXTURE_CAPTION, renderer, device)
  session = tmp_path / sim.session
  assert list(session.iterdir()) == []  # no episode, no partial directory left behind
  path = writer.write_episode(tmp_path, sim, FIXTURE_CAPTION, renderer, device)
  assert path == session / "ep1" and (path / xperience.ANNOTATION_FILE).exists()
  stamp = (path / xperience.ANNOTATION_FILE).stat().st_mtime_ns
  # A complete episode is not touched again (no renderer needed to skip it).
  assert writer.write_episode(tmp_path, sim, FIXTURE_CAPTION, None, device) == path
  assert (path / xperience.ANNOTATION_FILE).stat().st_mtime_ns == stamp
  assert sorted(p.name for p in session.iterdir()) == ["ep1"]


def _h5_arrays(path: pathlib.Path) -> dict[str, np.ndarray]:
  out = {}
  with h5py.File(path / xperience.ANNOTATION_FILE, "r") as f:
    f.visititems(lambda name, obj: out.__setitem__(name, obj[()])
                 if isinstance(obj, h5py.Dataset) else None)
  return out


def assert_same_episode(a: pathlib.Path, b: pathlib.Path) -> bool:
  """Identical HDF5 arrays and decoded frames; returns whether the files are byte-identical."""
  xa, xb = _h5_arrays(a), _h5_arrays(b)
  assert xa.keys() == xb.keys()
  for name in xa:
    np.testing.assert_array_equal(xa[name], xb[name], err_msg=name)
  for view in xperience.VIEWS:
    fa, fb = a / (view + xperience.VIDEO_SUFFIX), b / (view + xperience.VIDEO_SUFFIX)
    assert fa.exists() == fb.exists()
    if fa.exists():
      np.testing.assert_array_equal(decode_video(fa)[0], decode_video(fb)[0], err_msg=view)
  digest = lambda d: {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in d.iterdir()}
  return digest(a) == digest(b)


def test_writing_is_deterministic(tmp_path, episode, device):
  # A fresh renderer too: nothing may depend on state left from earlier episodes.
  again = writer.write_episode(tmp_path, fixture_sim(60), FIXTURE_CAPTION,
                               render.Renderer(device.rig, SMALL), device, NO_QUIRKS)
  identical = assert_same_episode(episode, again)
  print(f"fixture episode files byte-identical across runs: {identical}")


def test_quirks_are_written_as_real_files_have_them(tmp_path, renderer, device):
  n = 40
  q = quirks.EpisodeQuirks(hand_nan_runs=((1, 5, 9),), missing_view="fisheye_cam2",
                           short_streams=(("stereo_left", 2),), string_timestamps=True)
  path = writer.write_episode(tmp_path, fixture_sim(n), FIXTURE_CAPTION, renderer, device, q)
  assert not (path / "fisheye_cam2.mp4").exists()
  assert decode_video(path / "stereo_left.mp4")[0].shape[0] == n - 2
  assert decode_video(path / "stereo_right.mp4")[0].shape[0] == n
  check_keys(path, num_frames=n)
  with h5py.File(path / xperience.ANNOTATION_FILE, "r") as f:
    ts = f["video/device_timestamp"][()]
    assert ts.dtype.kind == "S" and int(ts[3]) == fixture_sim(n).frame_times_ns[3]
    assert np.isnan(f["hand_mocap/right_joints_3d"][5:9]).all()
    untracked = ~fixture_sim(n).hand_visible[:, 0]  # real files: an untracked hand is zeros
    assert untracked.any() and (f["hand_mocap/left_joints_3d"][untracked] == 0).all()
    assert (f["hand_mocap/left_translation"][untracked] == 0).all()
    assert np.isfinite(f["hand_mocap/left_joints_3d"][()]).all()
    assert (f["hand_mocap/left_joints_3d"][~untracked] != 0).any((-1, -2)).all()
    report = json.loads(f["metadata/health_report"][()])
    assert report["file_integrity"]["fisheye_cam2.mp4"] == "missing"
    assert report["frame_drops"]["stereo_left"] == 2 and report["frame_drops"]["fisheye_cam2"] == n


def test_untracked_nan_quirk_writes_nan_rows(tmp_path, renderer, device):
  n = 40
  q = quirks.EpisodeQuirks(untracked_nan=True)
  path = writer.write_episode(tmp_path, fixture_sim(n), FIXTURE_CAPTION, renderer, device, q)
  untracked = ~fixture_sim(n).hand_visible[:, 0]
  with h5py.File(path / xperience.ANNOTATION_FILE, "r") as f:
    left = f["hand_mocap/left_joints_3d"][()]
  assert np.isnan(left[untracked]).all() and np.isfinite(left[~untracked]).all()


def test_quirk_draws_are_deterministic_and_follow_rates():
  rates = quirks.QuirkRates(0.5, 0.5, 0.5, 0.5, 0.5)
  draw = lambda seed: quirks.draw_quirks(rates, np.random.default_rng(seed), 200)
  assert all(draw(s) == draw(s) for s in range(5))
  assert quirks.draw_quirks(quirks.QuirkRates.none(), np.random.default_rng(0), 200) == NO_QUIRKS
  every = quirks.draw_quirks(quirks.QuirkRates(1, 1, 1, 1, 1), np.random.default_rng(0), 200)
  assert every.hand_nan_runs and every.untracked_nan and every.missing_view
  assert every.string_timestamps
  many = [draw(s) for s in range(200)]
  assert 60 < sum(d.missing_view is not None for d in many) < 140
  with pytest.raises(ValueError, match="missing_view"):
    quirks.QuirkRates(missing_view=1.5)


# ----------------------------------------------------------------------------- end to end

needs_simulation = pytest.mark.skipif(not HAVE_SIMULATION,
                                      reason="the world simulation half is not there yet")


@needs_simulation
def test_synthesize_sessions_end_to_end(tmp_path):
  from data_pipelines.synthesize import synthesize

  start = time.time()
  paths = synthesize(tmp_path / "a", sessions=2, episodes_per_session=2, seconds=1.0, seed=5,
                     quirks=quirks.QuirkRates.none(), progress=False)
  print(f"synthesize: 4 small episodes of 1 s in {time.time() - start:.1f} s")
  assert len(paths) == 4 and len({p.parent for p in paths}) == 2
  # Real sessions number their episodes from ep1 (every public episode name).
  assert sorted({p.name for p in paths}) == ["ep1", "ep2"]
  for p in paths:
    check_keys(p, num_frames=20)
    assert len(list(p.glob("*.mp4"))) == 6
  world = json.loads((tmp_path / "a" / "world.json").read_text())
  assert [s["session_id"] for s in world["sessions"]] == sorted(
      {p.parent.name for p in paths}, key=[p.parent.name for p in paths].index)
  assert all(len(s["episodes"]) == 2 for s in world["sessions"])
  # A second run keeps what is there; the same seed elsewhere writes the same episodes.
  stamps = [(p / xperience.ANNOTATION_FILE).stat().st_mtime_ns for p in paths]
  assert synthesize(tmp_path / "a", 2, 2, 1.0, 5, quirks=quirks.QuirkRates.none(),
                    progress=False) == paths
  assert [(p / xperience.ANNOTATION_FILE).stat().st_mtime_ns for p in paths] == stamps
  again = synthesize(tmp_path / "b", 2, 2, 1.0, 5, quirks=quirks.QuirkRates.none(),
                     progress=False)
  assert [p.relative_to(tmp_path / "b") for p in again] == [
      p.relative_to(tmp_path / "a") for p in paths]
  print(f"end-to-end episode byte-identical: {assert_same_episode(paths[-1], again[-1])}")


@needs_simulation
def test_profile_quirks_keep_episodes_readable(tmp_path):
  from data_pipelines.synthesize import synthesize

  rates = quirks.QuirkRates(1.0, 1.0, 0.5, 1.0, 0.5)
  for p in synthesize(tmp_path, 1, 3, 1.0, 11, quirks=rates, progress=False):
    check_keys(p, num_frames=20, slack=3)
    with h5py.File(p / xperience.ANNOTATION_FILE, "r") as f:
      report = json.loads(f["metadata/health_report"][()])
    files = {v: (p / (v + xperience.VIDEO_SUFFIX)).exists() for v in xperience.VIEWS}
    for view, present in files.items():
      assert present == (report["file_integrity"][view + ".mp4"] == "ok")
      if present:
        assert decode_video(p / (view + ".mp4"))[0].shape[0] == 20 - report["frame_drops"][view]


@needs_simulation
def test_command_line(tmp_path):
  script = REPO / "data_pipelines" / "synthesize.py"
  run = lambda *args: subprocess.run([sys.executable, str(script), *args], cwd=REPO,
                                     capture_output=True, text=True, timeout=600)
  bad = run("--out", str(tmp_path), "--sessions", "0", "--episodes-per-session", "1",
            "--seconds", "1", "--seed", "0")
  assert bad.returncode == 2 and "--sessions" in bad.stderr
  assert run("--sessions", "1").returncode == 2
  ok = run("--out", str(tmp_path / "out"), "--sessions", "1", "--episodes-per-session", "1",
           "--seconds", "0.5", "--seed", "0", "--workers", "1")
  assert ok.returncode == 0, ok.stderr
  assert "1 episodes" in ok.stderr and "bytes" in ok.stderr
  episodes = list((tmp_path / "out").glob("*/ep1"))
  assert len(episodes) == 1
  check_keys(episodes[0], num_frames=10, slack=3)
