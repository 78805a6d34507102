"""Rigid-body and camera geometry in numpy, shared by the reader and the generator
(`matrix_to_quat` and `matrix_to_axis_angle` also take jax.numpy as `xp`, for in-graph
targets: xefm_jax/objectives/policy.py).

Quaternions are (..., 4) w, x, y, z, Hamilton convention, active rotations. SE(3) poses are
(..., 4, 4) homogeneous matrices; `T_a_b` maps points from frame b to frame a.
Camera models follow XPERIENCE_FORMAT.md: the four fisheye cameras use the equidistant
(Kannala-Brandt) model with distortion k1..k4, the rectified stereo pair a pinhole model.
Camera frames are x right, y down, z forward (optical axis).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def quat_normalize(q: np.ndarray) -> np.ndarray:
  return q / np.linalg.norm(q, axis=-1, keepdims=True)


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
  """(..., 4) wxyz -> (..., 3, 3)."""
  q = quat_normalize(np.asarray(q, dtype=np.float64))
  w, x, y, z = np.moveaxis(q, -1, 0)
  return np.stack([
      np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
      np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
      np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
  ], -2)


def matrix_to_quat(R: np.ndarray, xp: Any = np) -> np.ndarray:
  """(..., 3, 3) -> (..., 4) wxyz with w >= 0 (Shepperd's method, batched and branch-free:
  all four candidates, the one of the largest diagonal term kept). xp: numpy (float64) or
  jax.numpy (the array's dtype, traceable)."""
  R = np.asarray(R, dtype=np.float64) if xp is np else xp.asarray(R)
  m = [[R[..., i, j] for j in range(3)] for i in range(3)]
  tr = m[0][0] + m[1][1] + m[2][2]
  diag = xp.stack([tr, m[0][0], m[1][1], m[2][2]], -1)
  # the kept candidate's radicand is >= 1; the others are clamped so they stay finite
  r = [xp.sqrt(xp.maximum(x, 1e-12)) * 2 for x in (
      1.0 + tr, 1.0 + m[0][0] - m[1][1] - m[2][2], 1.0 + m[1][1] - m[0][0] - m[2][2],
      1.0 + m[2][2] - m[0][0] - m[1][1])]
  a, b, c = m[2][1] - m[1][2], m[0][2] - m[2][0], m[1][0] - m[0][1]
  d, e, f = m[0][1] + m[1][0], m[0][2] + m[2][0], m[1][2] + m[2][1]
  cands = xp.stack([
      xp.stack([0.25 * r[0], a / r[0], b / r[0], c / r[0]], -1),
      xp.stack([a / r[1], 0.25 * r[1], d / r[1], e / r[1]], -1),
      xp.stack([b / r[2], d / r[2], 0.25 * r[2], f / r[2]], -1),
      xp.stack([c / r[3], e / r[3], f / r[3], 0.25 * r[3]], -1)], -2)  # (..., 4, 4)
  choice = xp.argmax(diag, -1)[..., None, None]
  q = xp.take_along_axis(cands, choice, axis=-2)[..., 0, :]
  return xp.where(q[..., :1] < 0, -q, q)


def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  aw, ax, ay, az = np.moveaxis(np.asarray(a, np.float64), -1, 0)
  bw, bx, by, bz = np.moveaxis(np.asarray(b, np.float64), -1, 0)
  return np.stack([
      aw * bw - ax * bx - ay * by - az * bz,
      aw * bx + ax * bw + ay * bz - az * by,
      aw * by - ax * bz + ay * bw + az * bx,
      aw * bz + ax * by - ay * bx + az * bw,
  ], -1)


def axis_angle_to_matrix(v: np.ndarray) -> np.ndarray:
  """(..., 3) rotation vectors -> (..., 3, 3) (Rodrigues)."""
  v = np.asarray(v, dtype=np.float64)
  theta = np.linalg.norm(v, axis=-1, keepdims=True)[..., None]  # (..., 1, 1)
  k = v / np.maximum(theta[..., 0], 1e-12)
  K = np.zeros(v.shape[:-1] + (3, 3))
  K[..., 0, 1], K[..., 0, 2] = -k[..., 2], k[..., 1]
  K[..., 1, 0], K[..., 1, 2] = k[..., 2], -k[..., 0]
  K[..., 2, 0], K[..., 2, 1] = -k[..., 1], k[..., 0]
  eye = np.broadcast_to(np.eye(3), K.shape)
  return eye + np.sin(theta) * K + (1 - np.cos(theta)) * (K @ K)


def matrix_to_axis_angle(R: np.ndarray, xp: Any = np) -> np.ndarray:
  """(..., 3, 3) -> (..., 3) rotation vectors, angle in [0, pi]; xp as in matrix_to_quat."""
  q = matrix_to_quat(R, xp)
  s = xp.linalg.norm(q[..., 1:], axis=-1, keepdims=True)
  angle = 2 * xp.arctan2(s, q[..., :1])
  return q[..., 1:] * xp.where(s > 1e-12, angle / xp.maximum(s, 1e-12), 2.0)


def make_se3(R: np.ndarray, t: np.ndarray) -> np.ndarray:
  R, t = np.asarray(R), np.asarray(t)
  T = np.zeros(R.shape[:-2] + (4, 4))
  T[..., :3, :3] = R
  T[..., :3, 3] = t
  T[..., 3, 3] = 1.0
  return T


def se3_inverse(T: np.ndarray) -> np.ndarray:
  R = T[..., :3, :3]
  t = T[..., :3, 3]
  Rt = np.swapaxes(R, -1, -2)
  return make_se3(Rt, -np.einsum("...ij,...j->...i", Rt, t))


def transform_points(T: np.ndarray, p: np.ndarray) -> np.ndarray:
  """Apply (..., 4, 4) to (..., K, 3) points."""
  return np.einsum("...ij,...kj->...ki", T[..., :3, :3], p) + T[..., None, :3, 3]


def pose7_to_se3(p: np.ndarray) -> np.ndarray:
  """(..., 7) qw qx qy qz x y z -> (..., 4, 4)."""
  return make_se3(quat_to_matrix(p[..., :4]), p[..., 4:7])


def se3_to_pose7(T: np.ndarray) -> np.ndarray:
  return np.concatenate([matrix_to_quat(T[..., :3, :3]), T[..., :3, 3]], -1)


# ----------------------------------------------------------------------------- cameras


def fisheye_project(p_cam: np.ndarray, K: np.ndarray, D: np.ndarray) -> np.ndarray:
  """Equidistant (Kannala-Brandt) projection of (..., 3) camera points to (..., 2) pixels.

  theta_d = theta (1 + k1 theta^2 + k2 theta^4 + k3 theta^6 + k4 theta^8), where theta is
  the angle from the optical axis; pixel = (fx x_d + cx, fy y_d + cy).
  """
  x, y, z = p_cam[..., 0], p_cam[..., 1], p_cam[..., 2]
  r = np.hypot(x, y)
  theta = np.arctan2(r, z)
  t2 = theta * theta
  theta_d = theta * (1 + t2 * (D[0] + t2 * (D[1] + t2 * (D[2] + t2 * D[3]))))
  scale = np.where(r > 1e-12, theta_d / np.maximum(r, 1e-12), 1.0 / np.maximum(z, 1e-12))
  return np.stack([K[0] * x * scale + K[2], K[1] * y * scale + K[3]], -1)


def fisheye_unproject(uv: np.ndarray, K: np.ndarray, D: np.ndarray, iters: int = 10) -> np.ndarray:
  """(..., 2) pixels -> (..., 3) unit rays in the camera frame (Newton on theta_d)."""
  mx = (uv[..., 0] - K[2]) / K[0]
  my = (uv[..., 1] - K[3]) / K[1]
  theta_d = np.hypot(mx, my)
  theta = theta_d.copy()
  for _ in range(iters):
    t2 = theta * theta
    f = theta * (1 + t2 * (D[0] + t2 * (D[1] + t2 * (D[2] + t2 * D[3])))) - theta_d
    df = 1 + t2 * (3 * D[0] + t2 * (5 * D[1] + t2 * (7 * D[2] + t2 * 9 * D[3])))
    theta = theta - f / df
  s = np.where(theta_d > 1e-12, np.sin(theta) / np.maximum(theta_d, 1e-12), 1.0)
  return np.stack([mx * s, my * s, np.cos(theta)], -1)


def pinhole_project(p_cam: np.ndarray, K: np.ndarray) -> np.ndarray:
  z = np.maximum(p_cam[..., 2], 1e-9)
  return np.stack([K[0] * p_cam[..., 0] / z + K[2], K[1] * p_cam[..., 1] / z + K[3]], -1)


def pinhole_unproject(uv: np.ndarray, K: np.ndarray) -> np.ndarray:
  """(..., 2) pixels -> (..., 3) rays with z = 1 (so depth along z scales them)."""
  return np.stack([(uv[..., 0] - K[2]) / K[0], (uv[..., 1] - K[3]) / K[1],
                   np.ones(uv.shape[:-1])], -1)


def pixel_grid(width: int, height: int) -> np.ndarray:
  """(height, width, 2) pixel centres (u, v)."""
  u, v = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
  return np.stack([u, v], -1)
