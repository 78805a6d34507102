"""One episode of the procedural world, from plan to everything that happened (EpisodeSim).

procedure.py plans the steps, motion.py moves the body, head, hands and objects, body.py
fits the skeleton, imu.py samples the device's IMU and language.py writes the sentences.
Each stage draws from its own random stream seeded by (seed, session, episode, stage), so
the result is a pure function of (world, session, episode, seconds, seed).
"""

from __future__ import annotations

import numpy as np

from data_pipelines.synth import body as body_lib
from data_pipelines.synth import imu as imu_lib
from data_pipelines.synth import language
from data_pipelines.synth import motion
from data_pipelines.synth import procedure
from data_pipelines.synth import world as world_lib
from data_pipelines.synth.scene import AudioEvent, EpisodeSim

DEVICE_EPOCH_NS = 75_000_000_000_000  # device clocks of real files read about 7.5e13 ns
EPISODE_GAP_NS = 400_000_000_000  # device time between the starts of a session's episodes
FOOTSTEP_GAIN = 0.3


def session_key(session_id: str) -> int:
  """A stable integer from a session id, for seeding."""
  return int(session_id.replace("-", "")[:12], 16)


def _relevant(script: procedure.Script) -> np.ndarray:
  """(N, K) objects involved in each frame's step: acted on, targeted or in hand."""
  index = {name: k for k, name in enumerate(script.objects)}
  out = np.zeros((script.num_frames, len(script.objects)), bool)
  for ps in script.steps:
    for name in (ps.step.obj, ps.target, *ps.held):
      if name in index:
        out[ps.step.start:ps.step.end, index[name]] = True
  return out


def _audio(hands: motion.HandsMotion, path: motion.BodyPath, duration: float,
           rng: np.random.Generator) -> list[AudioEvent]:
  """Sound sources with their distance from the head at onset."""
  n = path.T_world_body.shape[0]
  head = lambda t: path.T_world_body[min(int(round(t * procedure.FPS)), n - 1), :3, 3]
  events = [AudioEvent(kind, t0, t1, gain, float(np.linalg.norm(head(t0) - pos)))
            for kind, t0, t1, gain, pos in hands.events]
  for t, _, pos in path.foot_strikes:
    if 0.0 <= t < duration:
      events.append(AudioEvent("footstep", t, min(t + 0.12, duration),
                               FOOTSTEP_GAIN * float(rng.uniform(0.7, 1.3)),
                               float(np.linalg.norm(head(t) - pos))))
  return sorted(events, key=lambda e: e.start_s)


def simulate_episode(world: world_lib.World, session: world_lib.SessionPlan, episode: int,
                     seconds: float, seed: int) -> EpisodeSim:
  """Everything that happens in episode `episode` of `session`, round(seconds * 20) frames."""
  n = int(round(seconds * procedure.FPS))
  key = [int(seed), session_key(session.session_id), int(episode)]
  stream = lambda stage: np.random.default_rng(key + [stage])
  place = world.places[session.place]
  wearer = session.wearer
  script = procedure.plan_episode(world, session, episode, n, stream(0))
  skel = body_lib.Skeleton.of_height(wearer.body_height)
  path = motion.body_path(script, skel, stream(1))
  hand_scale = wearer.body_height / 1.75 * (1 + 0.02 * wearer.hand_betas[0])
  hands = motion.hands_and_objects(world, place, script, skel, path, hand_scale, stream(2))
  t0 = DEVICE_EPOCH_NS + episode * EPISODE_GAP_NS + int(stream(3).integers(0, 10**11))
  frame_times = imu_lib.frame_times_ns(t0, n)
  imu = imu_lib.simulate_imu(path.head, frame_times, stream(4))
  mocap = body_lib.body_mocap(skel, path.posture, path.T_world_body, hands.wrist_T,
                              hands.joints, hands.finger_pose, hands.contact)
  steps = [ps.step for ps in script.steps]
  return EpisodeSim(
      session=session.session_id, episode=episode, place=session.place,
      activity=script.activity, task_text=script.task_text, seed=int(seed),
      frame_times_ns=frame_times, imu_times_ns=imu.times_ns,
      imu_keyframe_indices=imu.keyframe_indices,
      T_world_body=path.T_world_body, imu_accel=imu.accel, imu_gyro=imu.gyro,
      static=list(place.static), static_poses=place.static_poses.copy(),
      objects=[world.objects[name].primitive() for name in script.objects],
      object_poses=hands.object_poses,
      hands_world=hands.joints, hand_visible=hands.visible,
      mano_hand_pose=hands.finger_pose,
      mano_global_orient_world=hands.wrist_T[:, :, :3, :3].copy(),
      mano_betas=np.tile(np.asarray(wearer.hand_betas), (2, 1)),
      body_keypoints=mocap.keypoints, body_quats=mocap.body_quats, hand_quats=mocap.hand_quats,
      body_betas=np.asarray(wearer.body_betas), T_world_root=mocap.T_world_root,
      T_world_cpf=mocap.T_world_cpf, contacts=mocap.contacts, body_height=wearer.body_height,
      steps=steps, relevant_objects=_relevant(script),
      interactions=language.interactions(steps, hands.visible),
      audio_events=_audio(hands, path, n / procedure.FPS, stream(5)))
