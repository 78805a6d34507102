"""The contract between the world simulation and the sensors that record it.

`simulate_episode` (simulate.py) turns a world, a session and an episode plan into an
`EpisodeSim`: everything that happened, in world coordinates and on the device clock.
The sensor side (render.py, audio.py, writer.py) turns an `EpisodeSim` plus a camera rig
into the files of one episode. Nothing else crosses between the two halves, so a test can
check the world's physics on an EpisodeSim without rendering a pixel, and the renderer can
be tested on a hand-made EpisodeSim.

Frames: world z up (metres); body (device) frame x forward, y left, z up; camera frames
x right, y down, z forward. `T_a_b` maps points from frame b into frame a.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from xefm_jax.data import xperience

PRIMITIVE_KINDS = ("box", "sphere", "cylinder")  # cylinder: vertical axis in its own frame
TEXTURES = ("plain", "checker", "stripes", "noise")


@dataclasses.dataclass(frozen=True)
class Primitive:
  """A renderable solid. Its pose is given separately (static, or per frame)."""

  name: str
  kind: str  # one of PRIMITIVE_KINDS
  size: tuple[float, ...]  # box: half extents (x, y, z); sphere: (r,); cylinder: (r, half_h)
  color: tuple[float, float, float]  # linear RGB in [0, 1]
  texture: str = "plain"  # one of TEXTURES
  texture_scale: float = 0.25  # metres per texture period


@dataclasses.dataclass(frozen=True)
class Step:
  """One action of the episode's procedure, on the frame clock (end exclusive)."""

  subtask: str  # e.g. "Fill the kettle"
  action: str  # verb from world.ACTIONS, e.g. "pour"
  obj: str | None  # object acted on (world.OBJECTS name), None for walk/turn/look
  start: int
  end: int
  hand: str  # "left", "right", "both" or "none"
  label: str  # caption label, verb first: "Pour kettle"
  description: str  # a sentence: "Pour water from the kettle into the mug."


@dataclasses.dataclass
class AudioEvent:
  """A sound source for audio.py, on the episode clock in seconds."""

  kind: str  # "contact", "pour", "stir", "footstep", "wipe", "cut", "open", "close", ...
  start_s: float
  end_s: float
  gain: float  # linear amplitude scale
  distance_m: float  # from the head, for attenuation


@dataclasses.dataclass
class EpisodeSim:
  """Everything that happened in one episode (N frames at 20 fps, M IMU samples)."""

  session: str
  episode: int
  place: str
  activity: str  # the main task id, e.g. "make_tea"
  task_text: str  # the "Main Task" sentence
  seed: int

  # clocks
  frame_times_ns: np.ndarray  # (N,) int64 device time of each video frame
  imu_times_ns: np.ndarray  # (M,) int64
  imu_keyframe_indices: np.ndarray  # (N,) int64, IMU sample nearest each frame

  # the device on the head
  T_world_body: np.ndarray  # (N, 4, 4) float64
  imu_accel: np.ndarray  # (M, 3) specific force in the body frame, m/s^2, noisy
  imu_gyro: np.ndarray  # (M, 3) angular rate in the body frame, rad/s, noisy

  # the scene: static solids and the episode's movable objects
  static: list[Primitive]
  static_poses: np.ndarray  # (S, 4, 4) T_world_solid
  objects: list[Primitive]  # movable objects present in this episode (names: world.OBJECTS)
  object_poses: np.ndarray  # (N, K, 4, 4) T_world_object per frame

  # the wearer
  hands_world: np.ndarray  # (N, 2, 21, 3) MANO joints, world frame, left then right
  hand_visible: np.ndarray  # (N, 2) bool: the tracker would see this hand
  mano_hand_pose: np.ndarray  # (N, 2, 15, 3, 3)
  mano_global_orient_world: np.ndarray  # (N, 2, 3, 3) wrist orientation, world frame
  mano_betas: np.ndarray  # (2, 10)
  body_keypoints: np.ndarray  # (N, 52, 3) SMPL-H joints, world frame
  body_quats: np.ndarray  # (N, 21, 4) wxyz local rotations
  hand_quats: np.ndarray  # (N, 2, 15, 4) wxyz
  body_betas: np.ndarray  # (16,)
  T_world_root: np.ndarray  # (N, 4, 4) pelvis
  T_world_cpf: np.ndarray  # (N, 4, 4) central pupil frame
  contacts: np.ndarray  # (N, 21) in [0, 1]; wrists 19/20, feet 6, 7, 9, 10
  body_height: float

  # what the wearer did and attended to
  steps: list[Step]
  relevant_objects: np.ndarray  # (N, K) bool: objects involved around each frame
  interactions: list[tuple[int, str]]  # (frame, sentence) sampled at 0.5 fps
  audio_events: list[AudioEvent]

  @property
  def name(self) -> str:
    """`<session>/ep<k>`, the episode's folder under the corpus root (ep1 is episode 0)."""
    return f"{self.session}/" + xperience.episode_dir_name(
        self.episode + xperience.FIRST_EPISODE_NUMBER)

  @property
  def num_frames(self) -> int:
    return int(self.frame_times_ns.shape[0])

  @property
  def duration_s(self) -> float:
    return self.num_frames / 20.0

  def action_index(self) -> np.ndarray:
    """(N,) index into `steps` of the step active at each frame (-1 if none)."""
    idx = np.full(self.num_frames, -1, np.int64)
    for i, s in enumerate(self.steps):
      idx[s.start:s.end] = i
    return idx
