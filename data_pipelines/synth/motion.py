"""Continuous-time motion: the wearer's body and head, both hands, and the objects they move.

Head (the device): the pelvis follows the planned root path (standing, turning in place
with a minimum-jerk heading change, walking straight with a smooth speed ramp), bobs and
sways with the steps; at work the trunk bends at the hips (and the knees give a little)
until the object is within reach, and the head sits on the neck with its own yaw, pitch
and roll (gaze towards the object worked on, sweeps when looking around, nods with the
steps, small drift). These are sampled on a 100 Hz grid and joined
by a C2 cubic spline in position and ZYX Euler angles: that spline is the trajectory. The
frame poses are its values at the frame times and the IMU takes its derivatives
(imu.py), so pose, video and IMU agree physically.

Hands (frame rate): each step gives each hand an anchor trajectory, a wrist pose, finger
curls and a contact level, characteristic of the action and placed relative to the object
(reach: minimum-jerk approach with open fingers; grasp: fingers close; lift: rise; pour:
roll of about 90 degrees and back above the target; stir: 4 cm circles at 2 Hz; place:
over, down and open; open/close: an arc about the lid's hinge; wipe: 15 cm strokes at
1.5 Hz; cut: chops at 3 Hz; push: a straight slide; walking: arms swing at the sides).
The hand leaves the previous step's end pose and joins the anchor with a minimum-jerk
blend. A smooth random drift plays the hand's natural jitter. Objects move only while
attached to a hand (grasp to place, or during a push), rigidly with the wrist.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy.interpolate import CubicSpline

from data_pipelines.synth import body as body_lib
from data_pipelines.synth import procedure as procedure_lib
from data_pipelines.synth import world as world_lib
from xefm_jax.data import geometry

FPS = procedure_lib.FPS
KNOT_DT = 0.01  # s between spline knots; frame times fall on knots
PAD_S = 0.2  # knots beyond the first and last frame, so IMU samples there are interpolated
UP = np.array([0.0, 0.0, 1.0])
GRIP_PALM = np.array([0.08, 0.0, -0.025])  # palm centre in the wrist frame, for a 1.75 m adult
VISIBLE_DEG = 55.0  # a hand is tracked when within this angle of the device's forward axis
CURL_OPEN, CURL_REST = 0.08, 0.35

# ----------------------------------------------------------------------------- smooth pieces


def min_jerk(u: np.ndarray) -> np.ndarray:
  """Minimum-jerk profile 0 -> 1 on u in [0, 1]: zero velocity and acceleration at both ends."""
  u = np.clip(u, 0.0, 1.0)
  return u**3 * (10 - 15 * u + 6 * u * u)


def _min_jerk_integral(u: np.ndarray) -> np.ndarray:
  """Integral of min_jerk from 0 to u, for u in [0, 1] (equals 1/2 at u = 1)."""
  return u**4 * (2.5 - 3 * u + u * u)


class Transitions:
  """A scalar channel moved from value to value by minimum-jerk transitions."""

  def __init__(self, value: float):
    self.starts, self.ends, self.values = [-1e9], [-1e9 + 1.0], [value]

  def to(self, t0: float, t1: float, value: float):
    t0 = max(t0, self.ends[-1])
    self.starts.append(t0)
    self.ends.append(max(t1, t0 + 1e-3))
    self.values.append(value)

  def __call__(self, t: np.ndarray) -> np.ndarray:
    starts = np.array(self.starts)
    idx = np.searchsorted(starts, t, side="right") - 1
    v = np.array(self.values)
    prev = v[np.maximum(idx - 1, 0)]
    ends = np.array(self.ends)
    u = np.where(idx > 0, (t - starts[idx]) / (ends[idx] - starts[idx]), 1.0)
    return prev + (v[idx] - prev) * min_jerk(u)


def smooth_noise(rng: np.random.Generator, t: np.ndarray, std, rate_hz: float) -> np.ndarray:
  """(T, D) C2 random drift: Gaussian values on a `rate_hz` grid, cubic-spline joined."""
  std = np.atleast_1d(np.asarray(std, np.float64))
  grid = np.arange(t.min() - 2 / rate_hz, t.max() + 2 / rate_hz, 1 / rate_hz)
  return CubicSpline(grid, rng.normal(size=(grid.size, std.size)) * std)(t)


def euler_to_matrix(euler: np.ndarray) -> np.ndarray:
  """(..., 3) yaw, pitch, roll -> (..., 3, 3) R = Rz(yaw) Ry(pitch) Rx(roll).

  Positive pitch turns the forward (x) axis down; positive roll turns the left (y) axis up.
  """
  y, p, r = np.moveaxis(np.asarray(euler, np.float64), -1, 0)
  cy, sy, cp, sp, cr, sr = np.cos(y), np.sin(y), np.cos(p), np.sin(p), np.cos(r), np.sin(r)
  return np.stack([
      np.stack([cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr], -1),
      np.stack([sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr], -1),
      np.stack([-sp, cp * sr, cp * cr], -1)], -2)


def _rot_y(angle: np.ndarray) -> np.ndarray:
  return euler_to_matrix(np.stack([np.zeros_like(angle), angle, np.zeros_like(angle)], -1))


def _rot(axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
  """(T, 3, 3) rotations by angle (T,) about fixed unit axis (3,)."""
  return geometry.axis_angle_to_matrix(np.asarray(angle)[:, None] * axis[None])


@dataclasses.dataclass(frozen=True)
class HeadTrajectory:
  """The device's C2 trajectory: position and ZYX Euler angles against time (s, episode clock)."""

  spline: CubicSpline  # t -> (x, y, z, yaw, pitch, roll)

  def position(self, t: np.ndarray, nu: int = 0) -> np.ndarray:
    return self.spline(t, nu)[..., :3]

  def euler(self, t: np.ndarray, nu: int = 0) -> np.ndarray:
    return self.spline(t, nu)[..., 3:]

  def pose(self, t: np.ndarray) -> np.ndarray:
    v = self.spline(t)
    return geometry.make_se3(euler_to_matrix(v[..., 3:]), v[..., :3])


# ----------------------------------------------------------------------------- body path


@dataclasses.dataclass(frozen=True)
class BodyPath:
  head: HeadTrajectory
  posture: body_lib.Posture  # per frame
  T_world_body: np.ndarray  # (N, 4, 4) device poses at the frames
  foot_strikes: tuple[tuple[float, int, np.ndarray], ...]  # (time s, 0 left / 1 right, xyz)


def _walk_profile(t: np.ndarray, duration: float, dist: float):
  """Distance walked and speed fraction at t (s from the walk's start).

  Speed ramps up and down with min_jerk over `ramp` seconds and cruises in between, so
  position is C3 and the accelerometer sees no jumps.
  """
  ramp = min(procedure_lib.WALK_RAMP_S, duration / 2)
  v = dist / max(duration - ramp, 1e-6)
  t = np.clip(t, 0.0, duration)
  a, b = t / ramp, (duration - t) / ramp
  s = np.where(t < ramp, v * ramp * _min_jerk_integral(np.minimum(a, 1)),
               np.where(t > duration - ramp, dist - v * ramp * _min_jerk_integral(np.minimum(b, 1)),
                        v * (ramp / 2 + t - ramp)))
  w = np.where(t < ramp, min_jerk(a), np.where(t > duration - ramp, min_jerk(b), 1.0))
  return s, w, v


def _crouch(lean):
  """How far the pelvis drops (m) as the trunk bends: the knees give a little too."""
  return 0.12 * lean


def _lean_for(skel: body_lib.Skeleton, root, focus) -> float:
  """How far the trunk bends at the hips (rad) to bring the shoulders within reach of focus."""
  x, y, yaw = root
  R_yaw = body_lib.yaw_matrix(np.array(yaw))
  grip = np.asarray(focus) - R_yaw[:, 0] * 0.05  # the wrist stops short of the object's centre
  reach = 0.95 * (skel.upper_arm + skel.forearm)
  for lean in np.arange(0.05, 0.8, 0.05):
    pelvis = np.array([x, y, skel.pelvis_height - _crouch(lean)])
    shoulder = pelvis + (R_yaw @ _rot_y(np.array(lean)))[:, 2] * (skel.spine3 + skel.shoulder_up)
    if np.linalg.norm(grip - shoulder) <= reach:
      break
  return float(lean)


def _gaze(skel: body_lib.Skeleton, root, focus, lean: float) -> tuple[float, float]:
  """(yaw offset, pitch) that point the device at `focus`, the trunk leaning by `lean`."""
  x, y, yaw = root
  f = np.asarray(focus)
  R_torso = body_lib.yaw_matrix(np.array(yaw)) @ _rot_y(np.array(lean))
  neck = skel.neck(np.array([x, y, skel.pelvis_height - _crouch(lean)]), R_torso)
  pitch = 0.7
  for _ in range(2):  # the device moves as the head pitches: refine once
    dev = skel.device(neck, euler_to_matrix(np.array([yaw, pitch, 0.0])))
    pitch = math.atan2(dev[2] - f[2], max(math.hypot(f[0] - dev[0], f[1] - dev[1]), 0.05))
    pitch = float(np.clip(pitch, 0.15, 1.3))
  yaw_off = (math.atan2(f[1] - dev[1], f[0] - dev[0]) - yaw + math.pi) % (2 * math.pi) - math.pi
  return float(np.clip(yaw_off, -0.7, 0.7)), pitch


def _leans(skel: body_lib.Skeleton, steps) -> list[float | None]:
  """The trunk's lean for each step at a workstation (None while walking or turning).

  It bends further as soon as a step needs it, but straightens only when a step needs
  clearly less, so the trunk does not bob from step to step.
  """
  out: list[float | None] = []
  current = 0.05
  for ps in steps:
    if ps.step.action in ("walk", "turn"):
      current = 0.05  # upright while moving
      out.append(None)
      continue
    if ps.focus is not None:
      need = _lean_for(skel, ps.root_to, ps.focus)
      if need > current or need < current - 0.15:
        current = need
    out.append(current)
  return out


def body_path(script: procedure_lib.Script, skel: body_lib.Skeleton,
              rng: np.random.Generator) -> BodyPath:
  """The root, trunk and head over the episode, and the device's spline."""
  n = script.num_frames
  t = np.arange(-PAD_S, (n - 1) / FPS + PAD_S + KNOT_DT / 2, KNOT_DT)
  first = script.steps[0]
  x = np.full(t.shape, first.root_from[0])
  y = np.full(t.shape, first.root_from[1])
  yaw = np.full(t.shape, first.root_from[2])
  phase, weight, length = np.zeros_like(t), np.zeros_like(t), np.zeros_like(t)
  pitch, yaw_off, lean = Transitions(0.2), Transitions(0.0), Transitions(0.05)
  starts = [ps.step.start / FPS for ps in script.steps]
  leans = _leans(skel, script.steps)
  for i, ps in enumerate(script.steps):
    t0, dur = starts[i], (ps.end_planned - ps.step.start) / FPS
    lo = np.searchsorted(t, t0)
    hi = np.searchsorted(t, starts[i + 1]) if i + 1 < len(starts) else t.size
    tt = t[lo:hi] - t0
    (x0, y0, a0), (x1, y1, a1) = ps.root_from, ps.root_to
    x[lo:], y[lo:], yaw[lo:] = x0, y0, a0  # standing still unless moved below
    act = ps.step.action
    if act == "walk":
      dist = math.hypot(x1 - x0, y1 - y0)
      s, w, v = _walk_profile(tt, dur, dist)
      frac = s / max(dist, 1e-9)
      x[lo:hi], y[lo:hi] = x0 + (x1 - x0) * frac, y0 + (y1 - y0) * frac
      yaw[lo:hi] = a0 + (a1 - a0) * min_jerk(tt / dur)
      step_len = dist / max(1, round(dist / (v / 2)))  # about 2 steps a second
      phase[lo:hi], weight[lo:hi], length[lo:hi] = math.pi * s / step_len, w, step_len
      x[hi:], y[hi:], yaw[hi:] = x1, y1, a1
      pitch.to(t0, t0 + min(0.5, dur / 2), float(rng.uniform(0.15, 0.3)))
      yaw_off.to(t0, t0 + min(0.5, dur / 2), 0.0)
      lean.to(t0, t0 + min(0.5, dur / 2), 0.05)
    elif act == "turn":
      yaw[lo:hi] = a0 + (a1 - a0) * min_jerk(tt / dur)
      yaw[hi:] = a1
      lead = math.copysign(min(0.35, abs(a1 - a0) / 3), a1 - a0)  # the head leads the turn
      yaw_off.to(t0, t0 + 0.3 * dur, lead)
      yaw_off.to(t0 + 0.6 * dur, t0 + dur, 0.0)
      pitch.to(t0, t0 + 0.4 * dur, 0.15)
      lean.to(t0, t0 + 0.4 * dur, 0.03)
    elif act == "look":
      amp = float(rng.uniform(0.5, 0.9)) * (1 if rng.random() < 0.5 else -1)
      yaw_off.to(t0, t0 + 0.3 * dur, amp)
      yaw_off.to(t0 + 0.35 * dur, t0 + 0.75 * dur, -0.6 * amp)
      yaw_off.to(t0 + 0.8 * dur, t0 + dur, 0.0)
      pitch.to(t0, t0 + 0.3 * dur, float(rng.uniform(-0.1, 0.1)))
      pitch.to(t0 + 0.8 * dur, t0 + dur, 0.35)
      lean.to(t0, t0 + min(0.8, 0.6 * dur), min(leans[i], 0.15))  # straighten up to look
    else:
      yo, p = _gaze(skel, ps.root_to, ps.focus, leans[i])
      ramp = min(0.6, 0.6 * dur)
      yaw_off.to(t0, t0 + ramp, yo)
      pitch.to(t0, t0 + ramp, p)
      lean.to(t0, t0 + min(0.8, 0.6 * dur), leans[i])
  # Gait: pelvis lowest in double support (phase 0.9 pi, 1.9 pi), swaying over the stance foot.
  bob = -0.015 * skel.height / 1.75 * weight * (1 + np.cos(2 * (phase - 0.9 * math.pi))) / 2
  sway = 0.02 * weight * np.sin(phase - 0.9 * math.pi)
  R_yaw = body_lib.yaw_matrix(yaw)
  lean_t = lean(t)
  pelvis = np.stack([x, y, skel.pelvis_height - _crouch(lean_t) + bob], -1)
  pelvis += R_yaw[:, :, 1] * sway[:, None] + smooth_noise(rng, t, [0.003, 0.003, 0.002], 2.0)
  R_torso = R_yaw @ _rot_y(lean_t)
  neck = skel.neck(pelvis, R_torso)
  drift = smooth_noise(rng, t, [0.012, 0.01, 0.006], 2.0)
  euler = np.stack([
      yaw + yaw_off(t) + 0.02 * weight * np.sin(phase - 0.4 * math.pi),
      pitch(t) + 0.015 * weight * np.cos(2 * (phase - 0.9 * math.pi)),
      0.025 * weight * np.sin(phase - 0.9 * math.pi)], -1) + drift
  R_head = euler_to_matrix(euler)
  device = skel.device(neck, R_head)
  spline = CubicSpline(t, np.concatenate([device, euler], -1))
  frames = np.round((np.arange(n) / FPS - t[0]) / KNOT_DT).astype(int)  # knots at frame times
  posture = body_lib.Posture(
      np.stack([x, y], -1)[frames], yaw[frames], pelvis[frames], R_torso[frames],
      R_head[frames], device[frames], phase[frames], weight[frames], length[frames])
  head = HeadTrajectory(spline)
  return BodyPath(head, posture, head.pose(np.arange(n) / FPS),
                  _foot_strikes(skel, t, x, y, yaw, phase, weight, length))


def _foot_strikes(skel: body_lib.Skeleton, t, x, y, yaw, phase, weight, length):
  """(time, foot, position) where a foot touches down while walking (arrays on knots)."""
  out = []
  for foot in (0, 1):
    cycles = np.floor((phase + foot * math.pi - body_lib.STANCE_START) / (2 * math.pi))
    for k in np.nonzero((np.diff(cycles) > 0) & (weight[1:] > 0.3))[0]:
      k += 1
      fwd = np.array([math.cos(yaw[k]), math.sin(yaw[k]), 0.0])
      left = np.array([-fwd[1], fwd[0], 0.0])
      pos = (np.array([x[k], y[k], skel.ankle_height]) + fwd * 0.6 * length[k]
             + left * (1 if foot == 0 else -1) * skel.hip_width)
      out.append((float(t[k]), foot, pos))
  return tuple(sorted(out, key=lambda e: e[0]))


# ----------------------------------------------------------------------------- hand model

# Canonical right hand in its wrist frame (x towards the fingers, y towards the thumb, z out
# of the back of the hand), metres for a 1.75 m adult. Fingers: thumb, index, middle, ring,
# pinky; joints from the base: thumb CMC, MCP, IP, tip; fingers MCP, PIP, DIP, tip.
_BASE = np.array([[0.025, 0.020, -0.012], [0.090, 0.024, 0.0], [0.095, 0.004, 0.0],
                  [0.089, -0.014, 0.0], [0.080, -0.031, 0.0]])
_BONES = np.array([[0.040, 0.032, 0.028], [0.042, 0.025, 0.021], [0.046, 0.028, 0.023],
                   [0.043, 0.026, 0.021], [0.034, 0.020, 0.019]])
_FLEX = np.array([[0.5, 0.7, 0.9], [1.4, 1.7, 1.2], [1.4, 1.7, 1.2], [1.4, 1.7, 1.2],
                  [1.4, 1.7, 1.2]])  # rad per joint at curl 1


def _finger_frames() -> np.ndarray:
  """(5, 3, 3) each finger's frame in the wrist frame: x along the straight finger, flexing
  is a positive turn about its y axis (towards the palm)."""
  frames = []
  for splay in (None, 0.10, 0.0, -0.08, -0.17):
    if splay is None:  # the thumb points out and forward and curls across the palm
      x = np.array([0.55, 0.75, -0.35])
      x /= np.linalg.norm(x)
      toward = np.array([0.3, -0.75, -0.6])  # where flexing takes the thumb tip
      z = -(toward - x * (toward @ x))
      z /= np.linalg.norm(z)
    else:
      x = np.array([math.cos(splay), math.sin(splay), 0.0])
      z = np.array([0.0, 0.0, 1.0])
    frames.append(np.stack([x, np.cross(z, x), z], -1))
  return np.stack(frames)


_FRAMES = _finger_frames()
_MIRROR = np.diag([1.0, -1.0, 1.0])  # the left hand is the right hand mirrored across y
# MANO pose order (index, middle, pinky, ring, thumb) in terms of our finger order.
MANO_POSE_FINGERS = (1, 2, 4, 3, 0)


def hand_joints(wrist_T: np.ndarray, curl: np.ndarray, side: int, scale: float) -> np.ndarray:
  """(T, 21, 3) MANO joints in the world from wrist poses (T, 4, 4) and curls (T, 5)."""
  ang = np.cumsum(curl[:, :, None] * _FLEX[None], -1)  # (T, 5, 3) bone angles from straight
  bone = np.stack([np.cos(ang), np.zeros_like(ang), -np.sin(ang)], -1)  # finger frame
  bone = np.einsum("fij,tfbj->tfbi", _FRAMES, bone) * _BONES[None, :, :, None] * scale
  local = _BASE[None, :, None] * scale + np.concatenate(
      [np.zeros(bone[:, :, :1].shape), np.cumsum(bone, 2)], 2)  # (T, 5, 4, 3)
  local = np.concatenate([np.zeros((curl.shape[0], 1, 3)), local.reshape(-1, 20, 3)], 1)
  if side == 0:
    local = local @ _MIRROR
  return geometry.transform_points(wrist_T, local)


def finger_rotations(curl: np.ndarray, side: int) -> np.ndarray:
  """(T, 15, 3, 3) joint rotations relative to the parent bone, in the wrist frame, MANO
  pose order; the flat hand is the rest pose."""
  T = curl.shape[0]
  out = np.zeros((T, 5, 3, 3, 3))
  for k, f in enumerate(MANO_POSE_FINGERS):
    axis = _FRAMES[f][:, 1]
    if side == 0:
      axis = -(_MIRROR @ axis)  # mirrored rotations turn the other way about the image axis
    for j in range(3):
      out[:, k, j] = _rot(axis, curl[:, f] * _FLEX[f, j])
  return out.reshape(T, 15, 3, 3)


# ----------------------------------------------------------------------------- grips


def _frame_xz(x: np.ndarray, z: np.ndarray) -> np.ndarray:
  """Rotation with first axis x and third axis as close to z as possible ((..., 3) each)."""
  x = x / np.linalg.norm(x, axis=-1, keepdims=True)
  z = z - x * np.sum(z * x, -1, keepdims=True)
  z = z / np.linalg.norm(z, axis=-1, keepdims=True)
  return np.stack([x, np.cross(z, x), z], -1)


def side_grip_R(a: np.ndarray, side: int) -> np.ndarray:
  """Fingers along a (horizontal), thumb up, palm towards the midline of the body."""
  dorsal = np.cross(a, UP) if side == 1 else np.cross(UP, a)
  return _frame_xz(a, dorsal)


def top_grip_R(a: np.ndarray) -> np.ndarray:
  """Fingers along a, palm down."""
  return _frame_xz(a, np.broadcast_to(UP, np.shape(a)))


def _extent(spec: world_lib.ObjectSpec, R_obj: np.ndarray, d: np.ndarray) -> float:
  """Half extent of an object along horizontal unit direction d."""
  if spec.kind != "box":
    return spec.size[0]
  local = R_obj.T @ d
  return float(abs(local[0]) * spec.size[0] + abs(local[1]) * spec.size[1])


def grip_pose(spec: world_lib.ObjectSpec, T_obj: np.ndarray, a: np.ndarray, side: int,
              scale: float, both: bool) -> np.ndarray:
  """T_world_wrist holding the object; a: horizontal approach direction (wearer -> object)."""
  c, R_obj = T_obj[:3, 3], T_obj[:3, :3]
  palm = GRIP_PALM * scale
  if both:  # one hand on each side of a big object, palms inwards
    left = np.cross(UP, a)
    sign = 1.0 if side == 0 else -1.0
    R = side_grip_R(a, side)
    palm_c = c + sign * left * (_extent(spec, R_obj, left) + 0.01)
  elif spec.grip in ("top", "handle"):
    R = top_grip_R(a)
    palm_c = c + UP * (spec.half_height + 0.012)
  else:
    R = side_grip_R(a, side)
    palm_c = c + R[:, 2] * (_extent(spec, R_obj, R[:, 2]) + 0.005)
  return geometry.make_se3(R, palm_c - R @ palm)


def grip_curl(spec: world_lib.ObjectSpec, both: bool) -> np.ndarray:
  """(5,) finger curls that close the hand on this object."""
  if both or spec.grip == "top":
    c = 0.3
  elif spec.grip == "handle":
    c = 0.8
  else:
    c = float(np.clip(0.95 - 3.5 * spec.radius, 0.45, 0.85))
  return np.array([0.8 * c, c, c, c, c])


# ----------------------------------------------------------------------------- hands


@dataclasses.dataclass(frozen=True)
class HandsMotion:
  wrist_T: np.ndarray  # (N, 2, 4, 4) left, right
  curl: np.ndarray  # (N, 2, 5)
  contact: np.ndarray  # (N, 2) in [0, 1]
  joints: np.ndarray  # (N, 2, 21, 3) MANO joints, world
  finger_pose: np.ndarray  # (N, 2, 15, 3, 3) in the wrist frame, MANO pose order
  visible: np.ndarray  # (N, 2) bool
  object_poses: np.ndarray  # (N, K, 4, 4)
  events: tuple[tuple[str, float, float, float, np.ndarray], ...]  # kind, t0, t1, gain, xyz


@dataclasses.dataclass
class _Anchor:
  """Where a hand wants to be over a step; _HandSim.blend joins it from the last pose."""

  p: np.ndarray  # (T, 3) wrist position
  R: np.ndarray  # (T, 3, 3) wrist orientation
  curl: np.ndarray  # (T, 5)
  contact: np.ndarray  # (T,)
  tau: float  # blend length, as a fraction of the planned step


@dataclasses.dataclass(frozen=True)
class _Span:
  """The frames of one step and where they fall in its planned duration."""

  f: np.ndarray  # (T,) frame indices
  u: np.ndarray  # (T,) fraction of the planned step, in [0, 1)
  t: np.ndarray  # (T,) seconds from the step's start
  frames: int  # planned length in frames (the recording may cut the step short)

  @property
  def seconds(self) -> float:
    return self.frames / FPS

  @property
  def size(self) -> int:
    return self.f.size

  @classmethod
  def of(cls, ps: procedure_lib.PlannedStep) -> _Span:
    f = np.arange(ps.step.start, ps.step.end)
    frames = ps.end_planned - ps.step.start
    return cls(f, (f - ps.step.start) / frames, (f - ps.step.start) / FPS, frames)


def _const(v: np.ndarray, n: int) -> np.ndarray:
  """(n, ...) copies of v."""
  return np.broadcast_to(v, (n,) + np.shape(v)).copy()


class _HandSim:
  """Steps through the script moving both hands and whatever they hold."""

  def __init__(self, world: world_lib.World, place: world_lib.Place,
               script: procedure_lib.Script, skel: body_lib.Skeleton, path: BodyPath,
               scale: float, rng: np.random.Generator):
    self.world, self.script, self.skel, self.path, self.scale = world, script, skel, path, scale
    self.rng = rng
    self.tops = {name: st.top for name, st in place.stations.items()}
    n, k = script.num_frames, len(script.objects)
    self.index = {name: i for i, name in enumerate(script.objects)}
    self.obj_T = np.broadcast_to(script.initial_poses, (n, k, 4, 4)).copy()
    self.wrist_T = np.zeros((n, 2, 4, 4))
    self.curl = np.zeros((n, 2, 5))
    self.contact = np.zeros((n, 2))
    # Per hand, the jitter-free (p, R, curl) at the end of the last step: blends start there.
    self.nominal: list[tuple[np.ndarray, np.ndarray, np.ndarray] | None] = [None, None]
    self.attached: dict[int, tuple[int, np.ndarray]] = {}  # hand -> (object, T_wrist_obj)
    self.events: list[tuple[str, float, float, float, np.ndarray]] = []
    t = np.arange(n) / FPS
    self.jitter_p = smooth_noise(rng, t, [0.004] * 6, 2.5).reshape(n, 2, 3)
    self.jitter_r = smooth_noise(rng, t, [0.03] * 6, 2.0).reshape(n, 2, 3)
    self.jitter_c = smooth_noise(rng, t, [0.03] * 10, 3.0).reshape(n, 2, 5)
    self.shoulders = body_lib.shoulders(skel, path.posture)  # (N, 2, 3)
    self.reach = 0.98 * (skel.upper_arm + skel.forearm)

  def spec(self, name: str) -> world_lib.ObjectSpec:
    return self.world.objects[name]

  def _held_objects(self) -> dict[int, int]:
    return {obj: hand for hand, (obj, _) in self.attached.items()}

  def _approach(self, ps: procedure_lib.PlannedStep, name: str | None) -> np.ndarray:
    """(3,) horizontal unit direction from the wearer to object `name` (else forward)."""
    x, y, yaw = ps.root_to
    if name is not None:
      target = self.obj_T[ps.step.start, self.index[name], :2, 3]
      d = np.array([target[0] - x, target[1] - y, 0.0])
      if np.linalg.norm(d) > 0.05:
        return d / np.linalg.norm(d)
    return np.array([math.cos(yaw), math.sin(yaw), 0.0])

  # --------------------------------------------------------------------------- anchors

  def _rest(self, span: _Span, side: int, walking: bool) -> _Anchor:
    """An idle hand: swinging from the shoulder against the legs while walking, else by the
    hip (so a trunk bent over a counter does not push the hand into it)."""
    f = span.f
    post = self.path.posture
    R_yaw = body_lib.yaw_matrix(post.root_yaw[f])
    fwd, left = R_yaw[:, :, 0], R_yaw[:, :, 1]
    sign = 1.0 if side == 0 else -1.0
    if walking:
      swing = 0.3 * post.gait_weight[f] * np.sin(post.gait_phase[f] - 1.3 * math.pi) * sign
      alpha = (0.12 + swing)[:, None]
      down = fwd * np.sin(alpha) - UP * np.cos(alpha)
      p = self.shoulders[f, side] + down * 0.93 * self.reach + left * sign * 0.06
    else:
      down = -UP + 0.2 * fwd
      p = post.pelvis[f] + fwd * 0.06 + left * sign * 0.12 * self.skel.height - UP * 0.06
    R = _frame_xz(down, sign * left)  # palm towards the thigh, thumb forward
    return _Anchor(p, R, np.full((span.size, 5), CURL_REST), np.zeros(span.size),
                   min(0.6 * FPS / span.frames, 1.0))

  def _hold(self, span: _Span, side: int, ps: procedure_lib.PlannedStep,
            present: bool) -> _Anchor:
    """The held object kept in front: presented over the surface for work, or carried."""
    f = span.f
    post = self.path.posture
    obj, T_wo = self.attached[side]
    big = self.spec(self.script.objects[obj]).grip == "both"
    R_yaw = body_lib.yaw_matrix(post.root_yaw[f])
    fwd, left = R_yaw[:, :, 0], R_yaw[:, :, 1]
    sign = 1.0 if side == 0 else -1.0
    floor = post.root_xy[f] @ np.eye(2, 3)  # (T, 3) under the pelvis
    if present:
      ahead, up = procedure_lib.PRESENT_AT
      c = floor + fwd * ahead + left * sign * 0.06
      c[:, 2] = self.tops[ps.station] + up
    else:
      c = floor + fwd * 0.3 + left * sign * (0.0 if big else 0.18)
      c[:, 2] = post.pelvis[f, 2] + 0.1
    _, R_prev, c_prev = self.nominal[side]
    # Keep the wrist's orientation relative to the body: the object turns with the wearer.
    R = R_yaw @ (body_lib.yaw_matrix(np.array(post.root_yaw[f[0]])).T @ R_prev)
    return _Anchor(c - R @ T_wo[:3, 3], R, _const(c_prev, span.size), np.ones(span.size),
                   min(0.6 * FPS / span.frames, 1.0))

  def _act(self, span: _Span, side: int, ps: procedure_lib.PlannedStep) -> _Anchor:
    """The acting hand's anchor for every action on an object."""
    action, name = ps.step.action, ps.step.obj
    spec = self.spec(name)
    k = self.index[name]
    n, u = span.size, span.u
    both = ps.assist in ("follow", "mirror")
    # Towards the object while it rests; with it in hand, towards what it is used on.
    a = self._approach(ps, ps.target if k in self._held_objects() else name)
    if action in ("reach", "grasp"):
      G = grip_pose(spec, self.obj_T[span.f[0], k], a, side, self.scale, both)
      p, R = _const(G[:3, 3], n), _const(G[:3, :3], n)
      if action == "reach":
        return _Anchor(p, R, np.full((n, 5), CURL_OPEN), np.zeros(n), 1.0)
      closed = grip_curl(spec, both)
      curl = CURL_OPEN + (closed - CURL_OPEN) * min_jerk((u - 0.2) / 0.5)[:, None]
      return _Anchor(p, R, curl, np.clip((u - 0.45) / 0.2, 0, 1), 0.5)
    if action in ("open", "close"):
      return self._lid(span, side, ps, both)
    if action == "push":
      return self._push(span, side, ps, a)
    p0, R0, c0 = self.nominal[side]
    hold_curl = _const(c0, n)
    T_wo = self.attached[side][1]
    if action == "lift":
      p = p0 + UP * (self.rng.uniform(0.15, 0.25) * min_jerk(u))[:, None]
      return _Anchor(p, _const(R0, n), hold_curl, np.ones(n), 0.3)
    if action == "place":  # over the spot, down, fingers open, let go
      W = procedure_lib.object_pose(*ps.dest) @ geometry.se3_inverse(T_wo)
      p = W[:3, 3] + UP * (0.06 * (1 - min_jerk((u - 0.35) / 0.4)))[:, None]
      curl = hold_curl + (CURL_OPEN - hold_curl) * min_jerk((u - 0.82) / 0.18)[:, None]
      return _Anchor(p, _const(W[:3, :3], n), curl, (u < 0.85).astype(float), 0.75)
    if action == "pour":
      # Roll about the forearm (the wrist's x axis), tipping the object's top towards the
      # palm side; the wrist is placed so that at full roll the opening is over the target.
      tgt = self.spec(ps.target)
      c = self.obj_T[span.f[0], self.index[ps.target], :3, 3]
      full = 1.5 if side == 0 else -1.5
      x_axis = np.array([1.0, 0.0, 0.0])
      R_full = R0 @ _rot(x_axis, np.array([full]))[0]
      mouth = T_wo[:3, :3] @ np.array([0.0, 0.0, spec.half_height]) + T_wo[:3, 3]
      p = c + UP * (tgt.half_height + 0.05) - R_full @ mouth
      roll = full * (min_jerk((u - 0.2) / 0.25) - min_jerk((u - 0.72) / 0.23))
      return _Anchor(_const(p, n), R0 @ _rot(x_axis, roll), hold_curl, np.ones(n), 0.25)
    if action in ("stir", "cut", "wipe"):
      return self._tool(span, ps, a, T_wo, hold_curl)
    raise ValueError(f"no hand motion for {action}")

  def _tool(self, span: _Span, ps: procedure_lib.PlannedStep, a: np.ndarray,
            T_wo: np.ndarray, hold_curl: np.ndarray) -> _Anchor:
    """Stir, cut or wipe with the held tool, relative to the target or the surface."""
    n, t = span.size, span.t
    env = min_jerk(t / 0.3) * min_jerk((span.seconds - t) / 0.3)  # strokes fade in and out
    tool = self.spec(ps.step.obj)
    if ps.on_surface:
      top = self.tops[ps.station]
      base = _const(np.array([*ps.focus[:2], top + tool.half_height]), n)
    else:
      tgt = self.spec(ps.target)
      base = self.obj_T[span.f, self.index[ps.target], :3, 3] + UP * (tgt.half_height
                                                                       + tool.half_height)
    left = np.cross(UP, a)
    if ps.step.action == "stir":  # 4 cm circles at 2 Hz, the tool tipped into the vessel
      R = top_grip_R(a) @ _rot_y(np.array(1.0))
      w = 2 * math.pi * 2.0 * t
      circle = 0.04 * (np.cos(w)[:, None] * a + np.sin(w)[:, None] * left)
      tool_c = base + UP * 0.02 + circle * env[:, None]
    elif ps.step.action == "cut":  # 3.5 cm chops at 3 Hz, working slowly along
      R = top_grip_R(a) @ _rot_y(np.array(0.35))
      chop = 0.035 * (1 - np.cos(2 * math.pi * 3.0 * t)) / 2
      tool_c = base + UP * (0.01 + chop * env)[:, None] - a * (0.01 * t)[:, None]
    else:  # wipe: 15 cm strokes side to side at 1.5 Hz, drifting slowly back and forth
      R = top_grip_R(a)
      stroke = 0.075 * np.sin(2 * math.pi * 1.5 * t) * env
      drift = 0.05 * np.sin(2 * math.pi * 0.2 * t) * env
      amp = 1.0 if ps.on_surface else 0.5  # a dish is smaller than a table
      tool_c = base + amp * (stroke[:, None] * left + drift[:, None] * a)
    return _Anchor(tool_c - R @ T_wo[:3, 3], _const(R, n), hold_curl, np.ones(n),
                   min(0.35 / span.seconds, 0.5))

  def _lid(self, span: _Span, side: int, ps: procedure_lib.PlannedStep,
           both: bool) -> _Anchor:
    """An arc about the lid's hinge: the far top edge, or the side edges of a big box.

    Lids are not modelled: the object itself does not change.
    """
    k = self.index[ps.step.obj]
    spec = self.spec(ps.step.obj)
    a = self._approach(ps, None if k in self._held_objects() else ps.step.obj)
    T_obj = self.obj_T[span.f, k]  # (T, 4, 4): a presented object moves with the other hand
    top = T_obj[:, :3, 3] + UP * (spec.half_height + 0.01)
    left = np.cross(UP, a)
    if both:  # flaps hinged on the left and right top edges, opened outwards
      sign = 1.0 if side == 0 else -1.0
      hinge = top + sign * left * _extent(spec, T_obj[0, :3, :3], left)
      start = top + sign * left * 0.03
      axis = -sign * a
    else:
      ext = _extent(spec, T_obj[0, :3, :3], a)
      hinge, start, axis = top + a * ext, top - a * ext * 0.5, left
    prog = min_jerk((span.u - 0.3) / 0.5)
    angle = 1.9 * (prog if ps.step.action == "open" else 1 - prog)
    palm_c = hinge + np.einsum("tij,tj->ti", _rot(axis, angle), start - hinge)
    R = _rot(axis, 0.5 * angle) @ top_grip_R(a)  # the wrist turns less than the lid
    # The hand holds the lid where it meets the object: the first part of opening, the
    # last part of closing.
    u = span.u
    near = (u >= 0.25) & (u < 0.45) if ps.step.action == "open" else (u >= 0.65) & (u < 0.85)
    return _Anchor(palm_c - R @ (GRIP_PALM * self.scale), R, np.full((span.size, 5), 0.5),
                   near.astype(float), 0.3)

  def _push(self, span: _Span, side: int, ps: procedure_lib.PlannedStep,
            a: np.ndarray) -> _Anchor:
    """Palm against the object's side, then a straight slide to its destination."""
    k = self.index[ps.step.obj]
    T_obj = self.obj_T[span.f[0], k]
    c = T_obj[:3, 3]
    d = np.array([ps.dest[0] - c[0], ps.dest[1] - c[1], 0.0])
    dn = d / max(np.linalg.norm(d), 1e-9)
    R = side_grip_R(a, side)
    palm_c = c - dn * (_extent(self.spec(ps.step.obj), T_obj[:3, :3], dn) + 0.01)
    p = palm_c - R @ (GRIP_PALM * self.scale) + d * min_jerk((span.u - 0.3) / 0.5)[:, None]
    contact = ((span.u >= 0.3) & (span.u < 0.85)).astype(float)
    return _Anchor(p, _const(R, span.size), np.full((span.size, 5), 0.25), contact, 0.3)

  def _follow(self, span: _Span, side: int, ps: procedure_lib.PlannedStep) -> _Anchor:
    """Second hand on a big object: its grip, wherever the object is."""
    carried = self.attached.get(1 - side)
    name = self.script.objects[carried[0]] if carried else ps.step.obj
    k = self.index[name]
    spec = self.spec(name)
    # In hand the object keeps its heading relative to the body, so the body's forward
    # axis stands for the approach direction of the grip made when it was picked up.
    a = self._approach(ps, None if carried else name)
    G = grip_pose(spec, self.obj_T[span.f[0], k], a, side, self.scale, True)
    W = self.obj_T[span.f, k] @ (geometry.se3_inverse(self.obj_T[span.f[0], k]) @ G)
    on_it = ps.step.obj == name
    reaching = on_it and ps.step.action == "reach"
    curl = np.full(5, CURL_OPEN) if reaching else grip_curl(spec, True)
    contact = np.zeros(span.size) if reaching else np.ones(span.size)
    if on_it and ps.step.action == "grasp":
      contact = np.clip((span.u - 0.45) / 0.2, 0, 1)
    if on_it and ps.step.action == "place":
      contact = (span.u < 0.85).astype(float)
    return _Anchor(W[:, :3, 3], W[:, :3, :3], _const(curl, span.size), contact,
                   1.0 if reaching else 0.4)

  def _support(self, span: _Span, side: int, ps: procedure_lib.PlannedStep) -> _Anchor:
    """The other hand steadies the object worked on: presents it if held, else rests on it."""
    if side in self.attached:
      return self._hold(span, side, ps, present=True)
    k = self.index[ps.target]
    a = self._approach(ps, ps.target)
    sign = 1.0 if side == 0 else -1.0
    R = top_grip_R(a)
    palm_c = (self.obj_T[span.f[0], k, :3, 3] + sign * np.cross(UP, a) * 0.05
              + UP * (self.spec(ps.target).half_height + 0.012))
    return _Anchor(_const(palm_c - R @ (GRIP_PALM * self.scale), span.size),
                   _const(R, span.size), np.full((span.size, 5), 0.45),
                   np.clip((span.u - 0.3) / 0.1, 0, 1), 0.35)

  # --------------------------------------------------------------------------- stepping

  def blend(self, span: _Span, side: int, anchor: _Anchor):
    """Join the anchor from the previous end pose; clamp to the arm's reach; add jitter."""
    f = span.f
    if self.nominal[side] is None:
      p, R, c = anchor.p, anchor.R, anchor.curl
    else:
      p0, R0, c0 = self.nominal[side]
      delta = geometry.matrix_to_axis_angle(anchor.R[0].T @ R0)
      # Far moves take longer: at least enough time for a peak speed near 1.5 m/s.
      gap = (0.15 + np.linalg.norm(p0 - anchor.p[0]) / 0.8 + np.linalg.norm(delta) / 4) * FPS
      tau = max(min(max(anchor.tau * span.frames, gap), span.frames), 1.0)
      keep = 1 - min_jerk((f - f[0] + 1) / tau)  # (T,) share of the old pose left
      p = anchor.p + keep[:, None] * (p0 - anchor.p[0])
      c = anchor.curl + keep[:, None] * (c0 - anchor.curl[0])
      R = anchor.R @ geometry.axis_angle_to_matrix(keep[:, None] * delta[None])
    # Arms have a length: a wrist target out of reach stops at the end of the arm.
    sh = self.shoulders[f, side]
    d = p - sh
    dist = np.linalg.norm(d, axis=-1, keepdims=True)
    p = sh + d * np.minimum(1.0, self.reach / np.maximum(dist, 1e-9))
    self.nominal[side] = (p[-1].copy(), R[-1].copy(), c[-1].copy())
    jp, jr = self.jitter_p[f, side], self.jitter_r[f, side]
    self.wrist_T[f, side] = geometry.make_se3(R @ geometry.axis_angle_to_matrix(jr), p + jp)
    self.curl[f, side] = np.clip(c + self.jitter_c[f, side], 0, 1)
    self.contact[f, side] = anchor.contact
    if side in self.attached:  # what the hand holds goes with it
      k, T_wo = self.attached[side]
      self.obj_T[f, k] = self.wrist_T[f, side] @ T_wo

  def _release(self, side: int, frame: int, dest: tuple[float, float, float, float]):
    """The object in this hand settles upright on its surface and stays from `frame` on
    (the wrist's jitter would otherwise leave it tilted by a degree or two)."""
    k, T_wo = self.attached.pop(side)
    T = self.wrist_T[frame - 1, side] @ T_wo
    yaw = math.atan2(T[1, 0], T[0, 0])
    self.obj_T[frame:, k] = procedure_lib.object_pose(T[0, 3], T[1, 3], dest[2], yaw)

  def _modes(self, ps: procedure_lib.PlannedStep) -> dict[int, str]:
    """What each hand does in a step: act, support, follow, mirror, hold or rest."""
    acting = None if ps.acting is None else (0 if ps.acting == "left" else 1)
    modes = {}
    for side in (0, 1):
      if side == acting:
        modes[side] = "act"
      elif acting is not None and ps.assist is not None:
        modes[side] = ps.assist
      elif ps.held[side] is not None and side not in self.attached:
        modes[side] = "follow"  # the second hand on a big object being carried
      elif ps.held[side] is not None:
        modes[side] = "hold"
      else:
        modes[side] = "rest"
    return modes

  def step(self, ps: procedure_lib.PlannedStep):
    span = _Span.of(ps)
    modes = self._modes(ps)
    # A hand that presents or steadies goes first, so the acting hand finds the object
    # where it is; a follower goes last, after the object has moved.
    rank = {"support": 0, "hold": 0, "rest": 0, "act": 1, "mirror": 1, "follow": 2}
    for side in sorted((0, 1), key=lambda h: rank[modes[h]]):
      mode = modes[side]
      if mode == "act":
        anchor = self._act(span, side, ps)
      elif mode == "mirror":
        anchor = self._lid(span, side, ps, both=True)
      elif mode == "follow":
        anchor = self._follow(span, side, ps)
      elif mode == "support":
        anchor = self._support(span, side, ps)
      elif mode == "hold":
        anchor = self._hold(span, side, ps, present=False)
      else:
        anchor = self._rest(span, side, walking=ps.step.action == "walk")
      self.blend(span, side, anchor)
      if mode == "act":
        self._events_and_attachments(ps, span, side)

  def _events_and_attachments(self, ps: procedure_lib.PlannedStep, span: _Span, side: int):
    """Sound sources of the step, and objects taken into or let go from the hand."""
    a = ps.step.action
    s, planned = ps.step.start, ps.end_planned
    t0, dur = s / FPS, span.seconds
    k = self.index[ps.step.obj]
    n = self.script.num_frames
    pos = lambda frac: self.obj_T[min(s + int(frac * span.frames), n - 1), k, :3, 3]
    gain = float(self.rng.uniform(0.4, 0.8))
    if a == "grasp":
      self.events.append(("contact", t0 + 0.55 * dur, t0 + 0.55 * dur + 0.08, gain, pos(0.55)))
      if ps.step.end == planned:  # held from the next frame on
        last = ps.step.end - 1
        self.attached[side] = (k, geometry.se3_inverse(self.wrist_T[last, side])
                               @ self.obj_T[last, k])
    elif a == "place":
      release = s + int(math.ceil(0.85 * span.frames))
      if release < ps.step.end:
        self._release(side, release, ps.dest)
        self.events.append(("contact", release / FPS, release / FPS + 0.08, gain + 0.2,
                            self.obj_T[release, k, :3, 3]))
    elif a == "pour":
      self.events.append(("pour", t0 + 0.42 * dur, t0 + 0.75 * dur, 0.5, pos(0.5)))
    elif a in ("stir", "cut", "wipe"):
      g = {"stir": 0.25, "cut": 0.6, "wipe": 0.3}[a]
      self.events.append((a, t0 + 0.1 * dur, t0 + 0.95 * dur, g, pos(0.5)))
    elif a in ("open", "close"):
      self.events.append((a, t0 + 0.75 * dur, t0 + 0.75 * dur + 0.15, gain, pos(0.75)))
    elif a == "push":  # the object slides with the palm over the middle of the step
      lo, hi = s + int(0.3 * span.frames), s + int(0.85 * span.frames)
      self.events.append(("slide", lo / FPS, hi / FPS, 0.3, pos(0.5)))
      rows = np.arange(lo, min(hi, ps.step.end))
      if rows.size:
        shift = self.wrist_T[rows, side, :3, 3] - self.wrist_T[lo, side, :3, 3]
        shift[:, 2] = 0.0  # along its surface
        start_T = self.obj_T[lo, k].copy()
        self.obj_T[rows, k] = start_T
        self.obj_T[rows, k, :3, 3] += shift
        self.obj_T[rows[-1] + 1:, k] = self.obj_T[rows[-1], k]

  def run(self) -> HandsMotion:
    for ps in self.script.steps:
      self.step(ps)
    n = self.script.num_frames
    joints = np.stack([hand_joints(self.wrist_T[:, h], self.curl[:, h], h, self.scale)
                       for h in (0, 1)], 1)
    finger_pose = np.stack([finger_rotations(self.curl[:, h], h) for h in (0, 1)], 1)
    T_wb = self.path.T_world_body
    rel = joints.mean(2) - T_wb[:, None, :3, 3]  # (N, 2, 3) hand centre from the device
    fwd = T_wb[:, None, :3, 0]
    cos = np.sum(rel * fwd, -1) / np.maximum(np.linalg.norm(rel, axis=-1), 1e-9)
    visible = cos > math.cos(math.radians(VISIBLE_DEG))
    duration = n / FPS
    events = tuple((kind, t0, min(t1, duration), g, p) for kind, t0, t1, g, p in self.events
                   if t0 < duration)
    return HandsMotion(self.wrist_T, self.curl, self.contact, joints, finger_pose, visible,
                       self.obj_T, events)


def hands_and_objects(world: world_lib.World, place: world_lib.Place,
                      script: procedure_lib.Script, skel: body_lib.Skeleton, path: BodyPath,
                      hand_scale: float, rng: np.random.Generator) -> HandsMotion:
  """Both hands and the objects over the episode (frame rate)."""
  return _HandSim(world, place, script, skel, path, hand_scale, rng).run()
