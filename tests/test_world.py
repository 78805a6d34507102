"""The procedural world's structure is real: the acceptance tests of the world simulation.

Each test checks a property a model could learn from the sensors, or that the eval splits
rely on, so each could fail: actions differ in motion, contacts match proximity, hands are
in view at work and out of view walking, the body's rotations drive its keypoints, the IMU
integrates back to the pose, episodes are deterministic and exactly tiled by steps,
sessions hold out activities and objects, walks clear the furniture, and the caption JSON
is well formed and reads back through the project's caption reader.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from data_pipelines.synth import body, language, procedure, simulate, world
from data_pipelines.synth.scene import EpisodeSim
from xefm_jax.data import caption, geometry

SEED = 3


@pytest.fixture(scope="module")
def the_world() -> world.World:
  return world.make_world(SEED)


@pytest.fixture(scope="module")
def sessions(the_world) -> list[world.SessionPlan]:
  return world.plan_sessions(the_world, 12, 2, SEED)


def _session_doing(the_world, sessions, activity: str) -> world.SessionPlan:
  """A planned session that can host `activity`, with episode 0 doing it."""
  for s in sessions:
    if s.place in the_world.activities[activity].places:
      ep = world.EpisodePlan(0, activity, sorted(the_world.places[s.place].stations)[0])
      return dataclasses.replace(s, activities=(activity,), episodes=(ep,))
  raise AssertionError(f"no session can host {activity}")


@pytest.fixture(scope="module")
def episodes(the_world, sessions) -> list[EpisodeSim]:
  """A few minutes of mixed activities: every action occurs."""
  out = []
  for i, activity in enumerate(("make_tea", "prepare_cereal", "cut_vegetables",
                                "clean_table", "pack_box", "sort_laundry")):
    out.append(simulate.simulate_episode(the_world, _session_doing(the_world, sessions, activity),
                                         0, 75.0, SEED + i))
  return out


def _frames_of(sim: EpisodeSim, action: str, margin: int = 0) -> np.ndarray:
  """Frames inside steps of `action`, `margin` frames in from either end."""
  return np.concatenate([np.arange(s.start + margin, s.end - margin) for s in sim.steps
                         if s.action == action] + [np.zeros(0, int)]).astype(int)


def _pool(episodes, fn, action: str, margin: int = 0) -> np.ndarray:
  return np.concatenate([fn(sim)[_frames_of(sim, action, margin)] for sim in episodes])


# ----------------------------------------------------------------------------- (1) actions


def _wrist_speed(sim: EpisodeSim) -> np.ndarray:
  """(N,) speed of the faster wrist, m/s."""
  v = np.gradient(sim.hands_world[:, :, 0], axis=0) * 20.0
  return np.linalg.norm(v, axis=-1).max(1)


def _wrist_accel(sim: EpisodeSim) -> np.ndarray:
  a = np.gradient(np.gradient(sim.hands_world[:, :, 0], axis=0), axis=0) * 400.0
  return np.linalg.norm(a, axis=-1).max(1)


def _imu_energy(sim: EpisodeSim) -> np.ndarray:
  """(N,) spread of the accelerometer's magnitude over the half second around each frame."""
  mag = np.linalg.norm(sim.imu_accel, axis=-1)
  return np.array([mag[max(i - 50, 0):i + 50].std() for i in sim.imu_keyframe_indices])


def test_walk_stir_place_differ_in_simple_statistics(episodes):
  walk, stir, place = (_pool(episodes, _wrist_speed, a, 4) for a in ("walk", "stir", "place"))
  assert min(len(walk), len(stir), len(place)) > 40, "every action should occur"
  assert walk.mean() > 1.6 * stir.mean() and walk.mean() > 0.9
  imu_walk = _pool(episodes, _imu_energy, "walk", 10)
  imu_stir = _pool(episodes, _imu_energy, "stir", 10)  # away from the gaze shift at its start
  assert imu_walk.mean() > 4 * imu_stir.mean()
  acc_stir = _pool(episodes, _wrist_accel, "stir", 8)
  acc_place = _pool(episodes, _wrist_accel, "place", 2)
  assert acc_stir.mean() > 1.8 * acc_place.mean()


# ----------------------------------------------------------------------------- (2) contacts


def _surface_distance(p: np.ndarray, sim: EpisodeSim) -> np.ndarray:
  """(N, K) distance from points p (N, 3) to each object's solid (0 inside)."""
  local = np.einsum("nkji,nkj->nki", sim.object_poses[:, :, :3, :3],
                    p[:, None] - sim.object_poses[:, :, :3, 3])
  out = np.zeros(local.shape[:2])
  for k, o in enumerate(sim.objects):
    q = local[:, k]
    if o.kind == "box":
      out[:, k] = np.linalg.norm(np.maximum(np.abs(q) - np.array(o.size), 0), axis=-1)
    elif o.kind == "sphere":
      out[:, k] = np.maximum(np.linalg.norm(q, axis=-1) - o.size[0], 0)
    else:
      radial = np.maximum(np.linalg.norm(q[:, :2], axis=-1) - o.size[0], 0)
      out[:, k] = np.hypot(radial, np.maximum(np.abs(q[:, 2]) - o.size[1], 0))
  return out


def test_wrist_contact_means_an_object_is_at_hand(episodes):
  near_c, near_free = [], []
  for sim in episodes:
    for hand in (0, 1):
      d = _surface_distance(sim.hands_world[:, hand, 0], sim).min(1)
      touching = sim.contacts[:, 19 + hand] > 0.5
      near_c.append(d[touching])
      near_free.append(d[~touching])
  near_c, near_free = np.concatenate(near_c), np.concatenate(near_free)
  assert near_c.size > 500 and near_free.size > 500
  assert np.mean(near_c < 0.15) > 0.97, np.percentile(near_c, [50, 90, 99])
  assert np.mean(near_free > 0.08) > 0.7, np.percentile(near_free, [10, 30, 50])
  assert np.median(near_c) < 0.25 * np.median(near_free)


def test_feet_alternate_while_walking_and_stand_still_otherwise(episodes):
  for sim in episodes:
    left, right = sim.contacts[:, 6] > 0.5, sim.contacts[:, 7] > 0.5
    assert np.array_equal(sim.contacts[:, 6], sim.contacts[:, 9])
    assert (left | right).all(), "a walker always has a foot down"
    manip = np.ones(sim.num_frames, bool)
    for s in sim.steps:
      if s.action in ("walk", "turn"):
        manip[s.start:s.end] = False
    assert (left & right)[manip].all(), "standing at work: both feet down"
    for s in sim.steps:
      if s.action == "walk" and s.end - s.start >= 50 and s.end < sim.num_frames:
        mid = slice(s.start + 12, s.end - 12)  # the cruising part of the walk
        single = left[mid] ^ right[mid]
        assert 0.3 < single.mean() < 0.95
        # Each foot lifts about once a second (2 steps a second).
        lifts = np.sum(np.diff(left[mid].astype(int)) == -1)
        seconds = (mid.stop - mid.start) / 20.0
        assert 0.5 * seconds - 1 <= lifts <= 1.5 * seconds + 1


def test_hands_in_view_at_work_and_out_of_view_walking(episodes):
  seen = {a: _pool(episodes, lambda sim: sim.hand_visible.any(1), a, 6).mean()
          for a in ("walk", "pour", "stir", "grasp", "cut", "wipe")}
  assert seen["walk"] < 0.1, seen
  assert min(seen[a] for a in ("pour", "stir", "grasp", "cut", "wipe")) > 0.8, seen


def test_body_quats_drive_the_skeleton(episodes):
  """Forward kinematics of the local rotations from the T pose reproduces every bone."""
  sim = episodes[1]
  skel = body.Skeleton.of_height(sim.body_height)
  rest = body.rest_offsets(skel)
  axes = body.SMPL_AXES  # local rotations are in SMPL's axes
  local = axes @ geometry.quat_to_matrix(sim.body_quats) @ axes.T
  G = [sim.T_world_root[:, :3, :3]]
  for j in range(1, 22):
    G.append(G[body.PARENTS[j]] @ local[:, j - 1])
  kp = sim.body_keypoints
  for c in range(1, 22):
    j = body.PARENTS[c]
    if j == 0:
      continue
    want = kp[:, c] - kp[:, j]
    have = np.einsum("nij,j->ni", G[j], rest[c]) / np.linalg.norm(rest[c])
    cos = np.sum(want * have, -1) / np.linalg.norm(want, axis=-1)
    assert cos.min() > 0.9999, (body.JOINTS[j], body.JOINTS[c])
  np.testing.assert_allclose(G[15], sim.T_world_body[:, :3, :3], atol=1e-9)
  bent = np.degrees(2 * np.arccos(np.clip(np.abs(sim.body_quats[..., 0]), 0, 1)))
  assert (bent.max(0)[[0, 3, 4, 15, 17, 18]] > 20).all(), "legs and arms really rotate"


# ----------------------------------------------------------------------------- (3) IMU


def _gyro_integrate(R0, gyro, dt):
  R = R0.copy()
  for w0, w1 in zip(gyro[:-1], gyro[1:]):
    R = R @ geometry.axis_angle_to_matrix(0.5 * (w0 + w1) * dt)
  return R


def test_imu_integrates_back_to_the_pose(episodes):
  dt = 0.005
  g = np.array([0.0, 0.0, -9.81])
  rng = np.random.default_rng(0)
  rot_err, pos_err, pos_err_no_accel = [], [], []
  for sim in episodes[:3]:
    T = sim.T_world_body
    k = sim.imu_keyframe_indices
    for f0 in rng.integers(3, sim.num_frames - 32, 12):
      # Orientation over 1.5 s from the gyroscope alone.
      f1 = f0 + 30
      R = _gyro_integrate(T[f0, :3, :3], sim.imu_gyro[k[f0]:k[f1] + 1], dt)
      rot_err.append(np.linalg.norm(geometry.matrix_to_axis_angle(R.T @ T[f1, :3, :3])))
      # Position over 1 s: initial velocity from the frames, then (R a + g) twice integrated.
      f1 = f0 + 20
      p = T[f0 - 2:f0 + 3, :3, 3]
      v = (p[0] - 8 * p[1] + 8 * p[3] - p[4]) / (12 * 0.05)  # 5-point central difference
      p = np.zeros(3)
      R = T[f0, :3, :3].copy()
      gyro, acc = sim.imu_gyro[k[f0]:k[f1] + 1], sim.imu_accel[k[f0]:k[f1] + 1]
      for j in range(len(acc) - 1):
        a0 = R @ acc[j] + g
        R = R @ geometry.axis_angle_to_matrix(0.5 * (gyro[j] + gyro[j + 1]) * dt)
        a1 = R @ acc[j + 1] + g
        p += v * dt + (2 * a0 + a1) / 6 * dt * dt
        v += 0.5 * (a0 + a1) * dt
      truth = T[f1, :3, 3] - T[f0, :3, 3]
      pos_err.append(np.linalg.norm(p - truth))
      pos_err_no_accel.append(np.linalg.norm((T[f0 + 1, :3, 3] - T[f0 - 1, :3, 3]) / 0.1 - truth))
  rot_err, pos_err = np.array(rot_err), np.array(pos_err)
  assert rot_err.max() < 0.02, rot_err.max()
  assert pos_err.max() < 0.05, np.sort(pos_err)[-3:]
  assert np.mean(pos_err) < 0.3 * np.mean(pos_err_no_accel), "the accelerometer carries signal"


def test_imu_clock_and_gravity(episodes):
  sim = episodes[0]
  t, ft, k = sim.imu_times_ns, sim.frame_times_ns, sim.imu_keyframe_indices
  assert np.all(np.diff(ft) == 50_000_000) and 5e13 < ft[0] < 1e14
  assert np.all(np.diff(t) == 5_000_000) and t[0] <= ft[0] and t[-1] >= ft[-1]
  assert np.abs(t[k] - ft).max() <= 2_500_000
  still = _frames_of(sim, "grasp", 2)
  mean = np.linalg.norm(sim.imu_accel[k[still]], axis=-1).mean()
  assert abs(mean - 9.81) < 0.3, "at rest the accelerometer reads gravity"


# ----------------------------------------------------------------------------- (4), (5)


def _arrays(sim: EpisodeSim) -> dict:
  return {f.name: getattr(sim, f.name) for f in dataclasses.fields(sim)
          if isinstance(getattr(sim, f.name), np.ndarray)}


def test_deterministic_for_a_seed(the_world, sessions):
  a = simulate.simulate_episode(the_world, sessions[1], 1, 12.0, 7)
  b = simulate.simulate_episode(world.make_world(SEED), world.plan_sessions(
      world.make_world(SEED), 12, 2, SEED)[1], 1, 12.0, 7)
  for name, value in _arrays(a).items():
    np.testing.assert_array_equal(value, _arrays(b)[name], err_msg=name)
  assert a.steps == b.steps and a.audio_events == b.audio_events
  assert a.interactions == b.interactions
  c = simulate.simulate_episode(the_world, sessions[1], 1, 12.0, 8)
  assert not np.array_equal(a.T_world_body, c.T_world_body)


@pytest.mark.parametrize("seconds", [0.05, 1.0, 3.33, 17.0])
def test_steps_tile_the_episode(the_world, sessions, seconds):
  n = round(seconds * 20)
  for i, s in enumerate(sessions[:6]):
    sim = simulate.simulate_episode(the_world, s, i % 2, seconds, i)
    assert sim.num_frames == n
    assert sim.steps[0].start == 0 and sim.steps[-1].end == n
    for a, b in zip(sim.steps[:-1], sim.steps[1:]):
      assert a.end == b.start and a.start < a.end
    assert (sim.action_index() >= 0).all()
    for name, value in _arrays(sim).items():
      if name not in ("imu_times_ns", "imu_accel", "imu_gyro", "static_poses", "mano_betas",
                      "body_betas"):
        assert value.shape[0] == n, name
      assert np.isfinite(value).all(), name
    assert sim.object_poses.shape[1] == len(sim.objects)
    assert all(s.action in world.ACTIONS and s.label.split()[0].lower() == s.action
               for s in sim.steps)


# ----------------------------------------------------------------------------- (6) splits


def test_sessions_hold_out_activities_and_objects(the_world, sessions):
  seen = {a: sum(a in s.activities for s in sessions) for a in the_world.activities}
  assert all(n > 1 for n in seen.values()), seen
  assert all(2 <= len(s.activities) <= 3 for s in sessions)
  variants = {tuple(sorted((c, v) for c, v in s.variants.items())) for s in sessions}
  assert len(variants) == len(sessions)
  used = [{n for c in s.variants for n in s.variants[c]} for s in sessions]
  assert any(obj not in u for u in used for obj in world.OBJECTS), "some objects sit out"
  assert len({s.session_id for s in sessions}) == len(sessions)
  for s in sessions[:3]:  # a session's episodes share the place and the wearer
    sims = [simulate.simulate_episode(the_world, s, e, 2.0, 0) for e in range(2)]
    assert {x.place for x in sims} == {s.place}
    assert {x.body_height for x in sims} == {s.wearer.body_height}
    np.testing.assert_array_equal(sims[0].body_betas, sims[1].body_betas)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_walks_between_stations_clear_the_furniture(seed):
  for place in world.make_world(seed).places.values():
    stands = [st.stand for st in place.stations.values()]
    for i, a in enumerate(stands):
      for b in stands[i + 1:]:
        assert world.path_clearance(place, a, b) > 0.12, place.name


def test_every_activity_runs_everywhere_it_fits(the_world, sessions):
  for name, act in the_world.activities.items():
    session = _session_doing(the_world, sessions, name)
    script = procedure.plan_episode(the_world, session, 0, 20 * 240, np.random.default_rng(1))
    subtasks = {ps.step.subtask for ps in script.steps}
    assert {s.name for s in act.setup + act.body} <= subtasks, name  # setup and body all ran
    assert len({world.ACTIONS.index(ps.step.action) for ps in script.steps}) >= 5


# ----------------------------------------------------------------------------- (7) caption


def test_caption_json_forms(episodes):
  sim = episodes[0]
  text = language.caption_json(sim, np.random.default_rng(0), mixed_forms=True)
  doc = json.loads(text)
  assert doc["config"]["Main Task"] == sim.task_text
  assert doc["config"]["segment_sec"] == 20 and doc["config"]["sample_fps"] == 0.5
  assert doc["config"]["total_tokens"] == sum(s["tokens_in"] + s["tokens_out"]
                                              for s in doc["segments"])
  bounds = [s[k] for s in doc["segments"] for k in ("start_frame", "end_frame")]
  assert any(isinstance(b, int) and b >= 10**8 for b in bounds)
  assert any(isinstance(b, str) and b.isdigit() and int(b) >= 10**8 for b in bounds)
  assert any(isinstance(b, str) and b.startswith("frame_") and len(b) == 13 for b in bounds)
  assert any("start_frame_name" in s and "end_frame_name" in s for s in doc["segments"])
  times = set(int(t) for t in sim.frame_times_ns)
  frames = []
  for s in doc["segments"]:
    assert s["Sub Task"] and s["Current Action"] and s["sampled_frames"]
    for a in s["Current Action"]:
      assert int(a["start_frame"]) in times and int(a["end_frame"]) in times
      assert int(a["start_frame"]) <= int(a["end_frame"])
    assert set(s["objects"]) == set(s["interaction"]) == {str(t) for t in
                                                          s["sampled_frames"].values()}
    for b in ("start_frame", "end_frame"):
      v = s[b]
      frames.append(int(v[6:]) - 1 if str(v).startswith("frame_") else
                    int(np.searchsorted(sim.frame_times_ns, int(v))))
  assert frames[0] == 0 and frames[-1] == sim.num_frames - 1  # segments tile the episode
  assert all(b == a + 1 for a, b in zip(frames[1::2], frames[2::2]))
  assert max(b - a + 1 for a, b in zip(frames[::2], frames[1::2])) <= 400
  assert any("hand" in objs for s in doc["segments"] for objs in s["objects"].values())
  # The project's reader recovers the episode's subtask and action of every frame.
  timeline = caption.parse_caption(text, sim.frame_times_ns)
  steps = [sim.steps[i] for i in sim.action_index()]
  assert [timeline.subtasks[i] for i in timeline.subtask] == [s.subtask for s in steps]
  assert [timeline.action_labels[i] for i in timeline.action] == [s.label for s in steps]
  plain = json.loads(language.caption_json(sim, np.random.default_rng(0), mixed_forms=False))
  assert all(isinstance(s[k], int) for s in plain["segments"] for k in ("start_frame",
                                                                         "end_frame"))
