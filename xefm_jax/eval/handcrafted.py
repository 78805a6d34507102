"""Baseline (a): hand-crafted window statistics, computed from the same windows the model sees.

Per modality, a few dozen summary statistics of the kind shallow baselines use (means,
spreads, extremes, speeds, band energies, coarse image and depth grids). They are grouped
by modality with the model's modality names, so a task that restricts its input (motion
side only, no language, ...) restricts the baseline the same way. Computed on the
pipeline's window batches (xefm_jax/data/spec.py), which are the shards after the
documented normalisation: deterministic functions of the shard arrays.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from xefm_jax.data import spec as spec_lib
from xefm_jax.data import stats as stats_lib

EPS = 1e-6


def _moments(x: np.ndarray, axis) -> np.ndarray:
  return np.concatenate([x.mean(axis), x.std(axis), x.min(axis), x.max(axis)], -1)


def imu(batch: Mapping[str, np.ndarray]) -> np.ndarray:
  x = batch["imu"]  # (B, T, S, 6)
  b = len(x)
  flat = x.reshape(b, -1, 6)
  accel_mag = np.linalg.norm(flat[..., :3], axis=-1)  # (B, T S)
  gyro_mag = np.linalg.norm(flat[..., 3:], axis=-1)
  jerk = np.abs(np.diff(flat, axis=1)).mean(1)  # (B, 6)
  return np.concatenate([_moments(flat, 1), jerk, _moments(accel_mag[..., None], 1),
                         _moments(gyro_mag[..., None], 1),
                         batch["imu_valid"].mean(1, keepdims=True)], -1)


def pose(batch: Mapping[str, np.ndarray]) -> np.ndarray:
  steps, valid = stats_lib.pose_steps(batch["pose"].astype(np.float64), batch["pose_valid"])
  trans = steps[..., :3, 3]  # (B, T-1, 3) per-frame motion in the previous body frame
  cos = np.clip((np.trace(steps[..., :3, :3], axis1=-2, axis2=-1) - 1) / 2, -1, 1)
  angle = np.arccos(cos)[..., None]  # (B, T-1, 1) rotation per frame
  trans = np.where(valid[..., None], trans, 0.0)
  angle = np.where(valid[..., None], angle, 0.0)
  speed = np.linalg.norm(trans, axis=-1, keepdims=True)
  height = batch["pose"][:, :, 2, 3]  # (B, T) z of the device in the world
  return np.concatenate([_moments(trans, 1), _moments(speed, 1), _moments(angle, 1),
                         (height[:, -1] - height[:, 0])[:, None],
                         batch["pose_valid"].mean(1, keepdims=True)], -1)


def mocap(batch: Mapping[str, np.ndarray]) -> np.ndarray:
  hands, hv = batch["hands"], batch["hands_valid"]  # (B, T, 2, 21, 3), (B, T, 2)
  wrist = hands[:, :, :, 0]  # (B, T, 2, 3) normalised wrist positions
  spread = np.linalg.norm(hands[:, :, :, 1:], axis=-1).mean(-1)  # (B, T, 2) finger extent
  w = hv[..., None].astype(np.float64)
  n = np.maximum(w.sum(1), 1.0)  # (B, 2, 1)
  wrist_mean = (wrist * w).sum(1) / n  # (B, 2, 3)
  speed = np.linalg.norm(np.diff(wrist, axis=1), axis=-1) * (hv[:, 1:] & hv[:, :-1])
  body = batch["body"]  # (B, T, 52, 3) pelvis-relative, normalised
  key_joints = body[:, :, [15, 20, 21, 10, 11]]  # head, wrists, feet (SMPL-H)
  body_speed = np.linalg.norm(np.diff(body, axis=1), axis=-1).mean((1, 2))
  return np.concatenate([
      wrist_mean.reshape(len(hands), -1), (spread * hv).sum(1) / n[..., 0],
      speed.mean(1), speed.max(1), hv.mean(1),
      key_joints.mean(1).reshape(len(hands), -1), body_speed[:, None],
      batch["body_valid"].mean(1, keepdims=True)], -1)


def audio(batch: Mapping[str, np.ndarray], bands: int = 8) -> np.ndarray:
  x = batch["audio"]  # (B, samples) 16 kHz
  spec = np.abs(np.fft.rfft(x.reshape(len(x), -1, 400), axis=-1)) ** 2  # (B, frames, 201)
  edges = np.geomspace(1, spec.shape[-1], bands + 1).astype(int)
  band = np.stack([spec[..., a:b].sum(-1) for a, b in zip(edges[:-1], edges[1:])], -1)
  logband = np.log(band + EPS)  # (B, frames, bands)
  rms = np.sqrt((x ** 2).mean(1, keepdims=True))
  zcr = (np.diff(np.sign(x), axis=1) != 0).mean(1, keepdims=True)
  return np.concatenate([rms, zcr, logband.mean(1), logband.std(1), logband.max(1)], -1)


def depth(batch: Mapping[str, np.ndarray], grid: int = 2) -> np.ndarray:
  d, conf = batch["depth"], batch["depth_confidence"]  # (B, T, h, w) normalised, [0, 1]
  b, t, h, w = d.shape
  cells = d.reshape(b, t, grid, h // grid, grid, w // grid).mean((1, 3, 5)).reshape(b, -1)
  flat = d.reshape(b, -1)
  q = np.quantile(flat, [0.1, 0.5, 0.9], axis=1).T  # (B, 3)
  motion = np.abs(np.diff(d, axis=1)).mean((1, 2, 3))[:, None]
  return np.concatenate([flat.mean(1, keepdims=True), flat.std(1, keepdims=True), q, cells,
                         motion, conf.mean((1, 2, 3))[:, None],
                         batch["depth_valid"].mean(1, keepdims=True)], -1)


def video_per_view(batch: Mapping[str, np.ndarray], grid: int = 2) -> np.ndarray:
  """(B, V, 3 + 3 + grid^2 x 3 + 2) statistics of each camera view: colour means and
  spreads, a coarse colour grid, frame-to-frame change, validity. A missing view is all
  zeros, so the statistics of a window with views removed are these with rows zeroed."""
  v = batch["video"].astype(np.float32) / 255.0  # (B, V, T, h, w, 3)
  b, nv, t, h, w, _ = v.shape
  color = v.mean((2, 3, 4))  # (B, V, 3)
  spread = v.std((2, 3, 4))
  cells = v.reshape(b, nv, t, grid, h // grid, grid, w // grid, 3).mean((2, 4, 6))
  motion = np.abs(np.diff(v, axis=2)).mean((2, 3, 4, 5))  # (B, V)
  return np.concatenate([color, spread, cells.reshape(b, nv, -1), motion[..., None],
                         batch["video_valid"].astype(np.float32)[..., None]], -1)


def video(batch: Mapping[str, np.ndarray], grid: int = 2) -> np.ndarray:
  per_view = video_per_view(batch, grid)
  return per_view.reshape(len(per_view), -1)


def bag_of_words(ids: np.ndarray, vocab: int) -> np.ndarray:
  """(N, L) caption ids -> (N, vocab) counts; special tokens and ids >= vocab (words the
  train captions never use) are left out."""
  out = np.zeros((len(ids), vocab), np.float64)
  rows = np.repeat(np.arange(len(ids)), ids.shape[1])
  flat = ids.ravel()
  known = (flat > spec_lib.EOS_ID) & (flat < vocab)
  np.add.at(out, (rows[known], flat[known]), 1.0)
  return out


def language(batch: Mapping[str, np.ndarray], vocab_size: int) -> np.ndarray:
  """Bag of words of the window's caption (what a shallow text baseline has)."""
  return bag_of_words(batch["caption"], vocab_size).astype(np.float32)

