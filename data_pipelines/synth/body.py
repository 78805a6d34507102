"""The wearer's skeleton: SMPL-H keypoints, local rotations and contacts from the motion.

The body is analytic, not a fitted SMPL-H mesh: segment lengths are fixed fractions of the
wearer's height, the trunk is a straight segment from the pelvis to the neck tilted by the
lean, the head follows the device, elbows and knees come from two-bone inverse kinematics,
and the legs follow a gait driven by the distance walked. motion.py uses the same skeleton
to place the device on the neck, so the head camera, the IMU and the keypoints agree.

Conventions: world z up; the root (pelvis) frame is x forward, y left, z up, turned by the
heading only. `body_quats` and `hand_quats` are local rotations in SMPL's own axes (x left,
y up, z forward), relative to the T pose, wxyz.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from xefm_jax.data import geometry

# SMPL body joints (22) and their parents.
JOINTS = ("pelvis", "l_hip", "r_hip", "spine1", "l_knee", "r_knee", "spine2", "l_ankle",
          "r_ankle", "spine3", "l_foot", "r_foot", "neck", "l_collar", "r_collar", "head",
          "l_shoulder", "r_shoulder", "l_elbow", "r_elbow", "l_wrist", "r_wrist")
PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19)
# The child whose direction defines each joint's rotation (-1: a leaf, handled apart).
_CHILD = (-1, 4, 5, 6, 7, 8, 9, 10, 11, 12, -1, -1, 15, 16, 17, -1, 18, 19, 20, 21, -1, -1)
# MANO joints (wrist, thumb, index, middle, ring, pinky x 4) that are SMPL-H's 15 finger
# joints per hand, in SMPL-H order: index, middle, pinky, ring, thumb (3 each, no tips).
SMPLH_FINGER_FROM_MANO = (5, 6, 7, 9, 10, 11, 17, 18, 19, 13, 14, 15, 1, 2, 3)
# SMPL axes (x left, y up, z forward) in the root frame (x forward, y left, z up).
SMPL_AXES = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
T_BODY_CPF = geometry.make_se3(np.eye(3), np.array([-0.02, 0.0, -0.01]))  # assumed offset
STANCE_START = 0.8 * math.pi  # gait phase where a foot lands; it swings over [0, STANCE_START)


# Adult proportions as fractions of the body height.
_FRACTIONS = dict(
    pelvis_height=0.555, hip_width=0.05, hip_drop=0.05, thigh=0.245, shin=0.225,
    ankle_height=0.04, foot_fwd=0.07, foot_drop=0.028, spine1=0.06, spine2=0.13, spine3=0.16,
    torso=0.28, collar_width=0.04, collar_up=0.075, shoulder_width=0.10, shoulder_up=0.085,
    upper_arm=0.16, forearm=0.145, head_fwd=0.01, head_up=0.05, device_fwd=0.05,
    device_up=0.09)


@dataclasses.dataclass(frozen=True)
class Skeleton:
  """A wearer's segment lengths and joint offsets, metres."""

  height: float
  pelvis_height: float  # pelvis joint above the floor, standing
  hip_width: float  # hip joints either side of the pelvis
  hip_drop: float  # hip joints below the pelvis
  thigh: float
  shin: float
  ankle_height: float
  foot_fwd: float  # ankle to the foot joint (ball of the foot)
  foot_drop: float
  spine1: float  # spine joints above the pelvis, along the trunk
  spine2: float
  spine3: float
  torso: float  # pelvis to neck
  collar_width: float
  collar_up: float  # above spine3
  shoulder_width: float
  shoulder_up: float  # above spine3
  upper_arm: float
  forearm: float  # elbow to wrist
  head_fwd: float  # head joint from the neck, in the head frame
  head_up: float
  device_fwd: float  # the device (at the eyes) from the neck, in the head frame
  device_up: float

  @classmethod
  def of_height(cls, height: float) -> Skeleton:
    return cls(height, **{k: f * height for k, f in _FRACTIONS.items()})

  def neck(self, pelvis: np.ndarray, R_torso: np.ndarray) -> np.ndarray:
    return pelvis + R_torso[..., :, 2] * self.torso

  def device(self, neck: np.ndarray, R_head: np.ndarray) -> np.ndarray:
    """Where the head-worn device sits, from the neck and the head orientation."""
    return neck + R_head[..., :, 0] * self.device_fwd + R_head[..., :, 2] * self.device_up


@dataclasses.dataclass(frozen=True)
class Posture:
  """The trunk and legs per frame, as motion.py drives them (N frames)."""

  root_xy: np.ndarray  # (N, 2) the walked path on the floor, without sway
  root_yaw: np.ndarray  # (N,)
  pelvis: np.ndarray  # (N, 3) with bob and sway
  R_torso: np.ndarray  # (N, 3, 3) heading, then lean forward
  R_head: np.ndarray  # (N, 3, 3) = the device orientation R_world_body
  device: np.ndarray  # (N, 3) = the device position
  gait_phase: np.ndarray  # (N,) pi per step; left foot swings for phase mod 2 pi < STANCE_START
  gait_weight: np.ndarray  # (N,) walking speed / cruising speed, 0 standing
  step_length: np.ndarray  # (N,) m, of the current walk


def yaw_matrix(yaw: np.ndarray) -> np.ndarray:
  c, s = np.cos(yaw), np.sin(yaw)
  z, o = np.zeros_like(yaw), np.ones_like(yaw)
  return np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1),
                   np.stack([z, z, o], -1)], -2)


def shoulders(skel: Skeleton, posture: Posture) -> np.ndarray:
  """(N, 2, 3) left and right shoulder joints."""
  spine3 = posture.pelvis + posture.R_torso[:, :, 2] * skel.spine3
  side = posture.R_torso[:, :, 1]
  up = posture.R_torso[:, :, 2] * skel.shoulder_up
  return np.stack([spine3 + up + side * skel.shoulder_width,
                   spine3 + up - side * skel.shoulder_width], 1)


def two_bone_ik(root: np.ndarray, end: np.ndarray, l1: float, l2: float,
                pole: np.ndarray) -> np.ndarray:
  """(N, 3) middle joint (elbow, knee) bent towards `pole`; out-of-reach ends straighten."""
  d = end - root
  dist = np.linalg.norm(d, axis=-1, keepdims=True)
  e = d / np.maximum(dist, 1e-9)
  dist = np.clip(dist, abs(l1 - l2) + 1e-4, l1 + l2 - 1e-4)
  a = (l1 * l1 - l2 * l2 + dist * dist) / (2 * dist)
  h = np.sqrt(np.maximum(l1 * l1 - a * a, 0.0))
  p = pole - e * np.sum(pole * e, -1, keepdims=True)
  p /= np.maximum(np.linalg.norm(p, axis=-1, keepdims=True), 1e-9)
  return root + e * a + p * h


def foot_offset(phase: np.ndarray, length: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Foot position along the walk relative to the pelvis, and its lift, for one foot.

  Stance (phase in [STANCE_START, 2 pi)): the foot stays put while the pelvis advances
  `length` per pi of phase. Swing: a cubic Hermite that leaves and lands with the same
  relative velocity, so the foot's world velocity is zero at lift-off and touch-down.
  """
  phi = np.mod(phase, 2 * math.pi)
  reach = 0.6 * length
  stance = reach - (phi - STANCE_START) * length / math.pi
  u = np.clip(phi / STANCE_START, 0, 1)
  slope = -length / math.pi * STANCE_START
  swing = ((2 * u**3 - 3 * u**2 + 1) * -reach + (u**3 - 2 * u**2 + u) * slope
           + (-2 * u**3 + 3 * u**2) * reach + (u**3 - u**2) * slope)
  in_swing = phi < STANCE_START
  return np.where(in_swing, swing, stance), np.where(in_swing, 0.08 * np.sin(math.pi * u)**2, 0.0)


def _swing_rotation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """(N, 3, 3) smallest rotations taking unit vectors a to b."""
  v = np.cross(a, b)
  c = np.sum(a * b, -1)
  s = np.linalg.norm(v, axis=-1)
  angle = np.arctan2(s, c)
  axis = v / np.maximum(s, 1e-12)[:, None]
  # Antiparallel vectors: any axis perpendicular to a.
  alt = np.cross(a, np.where(np.abs(a[:, :1]) < 0.9, [[1.0, 0, 0]], [[0, 1.0, 0]]))
  alt /= np.linalg.norm(alt, axis=-1, keepdims=True)
  axis = np.where((s < 1e-9)[:, None] & (c < 0)[:, None], alt, axis)
  return geometry.axis_angle_to_matrix(axis * angle[:, None])


def rest_offsets(skel: Skeleton) -> np.ndarray:
  """(22, 3) joint offsets from the parent in the T pose, root frame."""
  s = skel
  off = np.zeros((22, 3))
  for side, sign in ((0, 1.0), (1, -1.0)):
    off[1 + side] = (0, sign * s.hip_width, -s.hip_drop)
    off[4 + side] = (0, 0, -s.thigh)
    off[7 + side] = (0, 0, -s.shin)
    off[10 + side] = (s.foot_fwd, 0, -s.foot_drop)
    off[13 + side] = (0, sign * s.collar_width, s.collar_up)
    off[16 + side] = (0, sign * (s.shoulder_width - s.collar_width), s.shoulder_up - s.collar_up)
    off[18 + side] = (0, sign * s.upper_arm, 0)
    off[20 + side] = (0, sign * s.forearm, 0)
  off[3] = (0, 0, s.spine1)
  off[6] = (0, 0, s.spine2 - s.spine1)
  off[9] = (0, 0, s.spine3 - s.spine2)
  off[12] = (0, 0, s.torso - s.spine3)
  off[15] = (s.head_fwd, 0, s.head_up)
  return off


# Wrist frames (x towards the fingers, z out of the back of the hand) in the T pose: arms
# out sideways, palms down. Columns are the wrist axes in the root frame.
_REST_WRIST = np.stack([
    np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]),  # left: fingers +y
    np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]),  # right: fingers -y
])
# The same wrist axes in SMPL's axes, to express finger rotations in SMPL-H's convention.
_WRIST_IN_SMPL = np.einsum("ji,hjk->hik", SMPL_AXES, _REST_WRIST)


@dataclasses.dataclass(frozen=True)
class BodyMocap:
  keypoints: np.ndarray  # (N, 52, 3)
  body_quats: np.ndarray  # (N, 21, 4)
  hand_quats: np.ndarray  # (N, 2, 15, 4)
  T_world_root: np.ndarray  # (N, 4, 4)
  T_world_cpf: np.ndarray  # (N, 4, 4)
  contacts: np.ndarray  # (N, 21)


def body_mocap(skel: Skeleton, posture: Posture, T_world_body: np.ndarray,
               wrist_T: np.ndarray, hand_joints: np.ndarray, finger_pose: np.ndarray,
               hand_contact: np.ndarray) -> BodyMocap:
  """SMPL-H keypoints, rotations and contacts.

  wrist_T: (N, 2, 4, 4) wrist poses (left, right); hand_joints: (N, 2, 21, 3) MANO joints;
  finger_pose: (N, 2, 15, 3, 3) finger rotations in the wrist frame (MANO pose order);
  hand_contact: (N, 2) in [0, 1].
  """
  n = posture.pelvis.shape[0]
  s = skel
  R_yaw = yaw_matrix(posture.root_yaw)  # (N, 3, 3)
  fwd, left = R_yaw[:, :, 0], R_yaw[:, :, 1]
  up = np.array([0.0, 0.0, 1.0])
  Rt = posture.R_torso
  kp = np.zeros((n, 22, 3))
  kp[:, 0] = posture.pelvis
  for k, name in ((3, "spine1"), (6, "spine2"), (9, "spine3")):
    kp[:, k] = posture.pelvis + Rt[:, :, 2] * getattr(s, name)
  kp[:, 12] = s.neck(posture.pelvis, Rt)
  kp[:, 15] = kp[:, 12] + posture.R_head[:, :, 0] * s.head_fwd + posture.R_head[:, :, 2] * s.head_up
  sh = shoulders(s, posture)
  contacts = np.zeros((n, 21))
  for side, sign in ((0, 1.0), (1, -1.0)):
    kp[:, 1 + side] = posture.pelvis + left * sign * s.hip_width - up * s.hip_drop
    kp[:, 13 + side] = kp[:, 9] + Rt[:, :, 2] * s.collar_up + Rt[:, :, 1] * sign * s.collar_width
    kp[:, 16 + side] = sh[:, side]
    kp[:, 20 + side] = wrist_T[:, side, :3, 3]
    pole = -up + 0.5 * sign * left - 0.3 * fwd
    kp[:, 18 + side] = two_bone_ik(kp[:, 16 + side], kp[:, 20 + side], s.upper_arm, s.forearm,
                                   pole)
    # Legs: the left foot swings first, the right half a stride later.
    phase = posture.gait_phase + side * math.pi
    along, lift = foot_offset(phase, posture.step_length)
    w = posture.gait_weight
    ankle = np.concatenate([posture.root_xy, np.zeros((n, 1))], -1)
    ankle += fwd * (along * w)[:, None] + left * sign * s.hip_width
    ankle[:, 2] = s.ankle_height + lift * w
    kp[:, 7 + side] = ankle
    kp[:, 10 + side] = ankle + fwd * s.foot_fwd - up * s.foot_drop
    kp[:, 4 + side] = two_bone_ik(kp[:, 1 + side], ankle, s.thigh, s.shin, fwd)
    in_swing = (np.mod(phase, 2 * math.pi) < STANCE_START) & (w > 0.25)
    contacts[:, 6 + side] = contacts[:, 9 + side] = np.where(in_swing, 0.0, 1.0)
    contacts[:, 19 + side] = hand_contact[:, side]
  fingers = hand_joints[:, :, SMPLH_FINGER_FROM_MANO]  # (N, 2, 15, 3)
  keypoints = np.concatenate([kp, fingers[:, 0], fingers[:, 1]], 1)

  body_quats = _local_rotations(s, kp, R_yaw, posture.R_head, wrist_T[:, :, :3, :3])
  hand_R = np.einsum("hij,nhfjk,hlk->nhfil", _WRIST_IN_SMPL, finger_pose, _WRIST_IN_SMPL)
  T_root = geometry.make_se3(R_yaw, posture.pelvis)
  return BodyMocap(keypoints, body_quats, geometry.matrix_to_quat(hand_R), T_root,
                   T_world_body @ T_BODY_CPF, contacts)


def _local_rotations(skel: Skeleton, kp: np.ndarray, R_root: np.ndarray, R_head: np.ndarray,
                     R_wrist: np.ndarray) -> np.ndarray:
  """(N, 21, 4) local joint rotations (joints 1..21), wxyz in SMPL axes.

  Each joint's global rotation is its parent's followed by the swing that turns the rest
  bone to the bone it drives, so no twist is invented. The head takes the device
  orientation, the wrists the hand orientation; the feet (leaves) stay rigid.
  """
  rest = rest_offsets(skel)
  n = kp.shape[0]
  G = np.zeros((n, 22, 3, 3))
  G[:, 0] = R_root
  for j in range(1, 22):
    Gp = G[:, PARENTS[j]]
    c = _CHILD[j]
    if c >= 0:
      want = kp[:, c] - kp[:, j]
      want /= np.maximum(np.linalg.norm(want, axis=-1, keepdims=True), 1e-9)
      have = Gp @ (rest[c] / np.linalg.norm(rest[c]))
      G[:, j] = _swing_rotation(have, want) @ Gp
    elif j == 15:
      G[:, j] = R_head
    elif j in (20, 21):
      G[:, j] = R_wrist[:, j - 20] @ _REST_WRIST[j - 20].T
    else:
      G[:, j] = Gp
  parents = np.array(PARENTS[1:])
  local = np.swapaxes(G[:, parents], -1, -2) @ G[:, 1:]  # (N, 21, 3, 3)
  local = SMPL_AXES.T @ local @ SMPL_AXES
  return geometry.matrix_to_quat(local)
