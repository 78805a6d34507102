"""IMU samples of the head-worn device, from the same spline that gives the frame poses.

Accelerometer: specific force in the body frame, R_world_body^T (a_world - g_world) with
g_world = (0, 0, -9.81), so a device at rest reads +9.81 along its up axis. Gyroscope: the
body-frame angular rate, from the spline's ZYX Euler angles and their derivatives. Both
get white noise and a constant per-episode bias. Timestamps share the device clock with
the frames (frame k at t0 + 50 ms k); the IMU runs at 200 Hz with a phase offset drawn
per episode, and each frame's keyframe is the IMU sample nearest to it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from data_pipelines.synth import motion as motion_lib
from xefm_jax.data import xperience

GRAVITY = np.array([0.0, 0.0, -9.81])  # m/s^2, world
FRAME_NS = int(round(1e9 / xperience.FPS))
SAMPLE_NS = int(round(1e9 / xperience.IMU_RATE_HZ))
ACCEL_NOISE, ACCEL_BIAS = 0.02, 0.02  # m/s^2: white noise std per sample, bias std per axis
GYRO_NOISE, GYRO_BIAS = 0.002, 0.001  # rad/s


@dataclasses.dataclass(frozen=True)
class ImuSamples:
  times_ns: np.ndarray  # (M,) int64 device time
  accel: np.ndarray  # (M, 3) m/s^2, body frame, noisy
  gyro: np.ndarray  # (M, 3) rad/s, body frame, noisy
  keyframe_indices: np.ndarray  # (N,) int64: IMU sample nearest each frame


def frame_times_ns(t0_ns: int, num_frames: int) -> np.ndarray:
  return t0_ns + FRAME_NS * np.arange(num_frames, dtype=np.int64)


def body_rates(euler: np.ndarray, euler_rate: np.ndarray) -> np.ndarray:
  """(..., 3) body-frame angular velocity of R = Rz(yaw) Ry(pitch) Rx(roll)."""
  _, pitch, roll = np.moveaxis(euler, -1, 0)
  dyaw, dpitch, droll = np.moveaxis(euler_rate, -1, 0)
  cp, sp, cr, sr = np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
  return np.stack([droll - dyaw * sp,
                   dpitch * cr + dyaw * cp * sr,
                   -dpitch * sr + dyaw * cp * cr], -1)


def specific_force(head: motion_lib.HeadTrajectory, t: np.ndarray) -> np.ndarray:
  """(T, 3) what an ideal accelerometer on the device reads at times t (s)."""
  R = motion_lib.euler_to_matrix(head.euler(t))
  return np.einsum("tji,tj->ti", R, head.position(t, 2) - GRAVITY)


def angular_rate(head: motion_lib.HeadTrajectory, t: np.ndarray) -> np.ndarray:
  """(T, 3) what an ideal gyroscope on the device reads at times t (s)."""
  return body_rates(head.euler(t), head.euler(t, 1))


def simulate_imu(head: motion_lib.HeadTrajectory, frame_times: np.ndarray,
                 rng: np.random.Generator) -> ImuSamples:
  """IMU samples covering the frames; the head's time 0 is the first frame."""
  t0 = int(frame_times[0])
  first = t0 - int(rng.integers(0, SAMPLE_NS))
  count = -(-(int(frame_times[-1]) - first) // SAMPLE_NS) + 1  # through the last frame
  times = first + SAMPLE_NS * np.arange(count, dtype=np.int64)
  t = (times - t0) / 1e9
  accel_bias = rng.normal(0.0, ACCEL_BIAS, 3)
  gyro_bias = rng.normal(0.0, GYRO_BIAS, 3)
  accel = specific_force(head, t) + accel_bias + rng.normal(0.0, ACCEL_NOISE, (count, 3))
  gyro = angular_rate(head, t) + gyro_bias + rng.normal(0.0, GYRO_NOISE, (count, 3))
  keyframes = np.rint((frame_times - first) / SAMPLE_NS).astype(np.int64)
  return ImuSamples(times, accel, gyro, keyframes)
