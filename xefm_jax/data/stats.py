"""Normalisation statistics: per-channel moments of shard streams, train split only.

The shredder accumulates `Moments` per episode (count, sum, sum of squares per channel, in
float64, so episodes merge exactly in any order); the manifest keeps the train split's
mean and std per feature; the pipeline and the objectives normalise with them. Features are
the quantities the model sees, not the raw arrays: hand joints relative to the wrist, body
keypoints relative to the pelvis, per-frame camera motion in the previous body frame.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

import numpy as np

PELVIS = 0  # SMPL-H joint 0
STD_FLOOR = 1e-6


@dataclasses.dataclass
class Moments:
  count: float
  total: np.ndarray  # (C,) sum
  squares: np.ndarray  # (C,) sum of squares

  @classmethod
  def of(cls, values: np.ndarray) -> "Moments":
    """values: (n, C) rows of valid samples."""
    v = np.asarray(values, np.float64).reshape(-1, values.shape[-1])
    return cls(float(len(v)), v.sum(0), (v * v).sum(0))

  def __add__(self, other: "Moments") -> "Moments":
    return Moments(self.count + other.count, self.total + other.total,
                   self.squares + other.squares)

  def to_json(self) -> dict:
    return {"count": self.count, "sum": self.total.tolist(), "sumsq": self.squares.tolist()}

  @classmethod
  def from_json(cls, d: Mapping) -> "Moments":
    return cls(float(d["count"]), np.asarray(d["sum"], np.float64),
               np.asarray(d["sumsq"], np.float64))

  def mean_std(self) -> dict[str, list[float]]:
    n = max(self.count, 1.0)
    mean = self.total / n
    var = np.maximum(self.squares / n - mean * mean, 0.0)
    return {"mean": mean.tolist(), "std": np.maximum(np.sqrt(var), STD_FLOOR).tolist(),
            "count": self.count}


def pose_steps(pose: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per-frame camera motion: T_{k-1}^-1 T_k for consecutive frames.

  pose: (..., T, 4, 4) T_world_body -> (..., T-1, 4, 4) and (..., T-1) validity.
  """
  R = pose[..., :-1, :3, :3]
  Rt = np.swapaxes(R, -1, -2)
  rel = np.zeros(pose.shape[:-3] + (pose.shape[-3] - 1, 4, 4), pose.dtype)
  rel[..., :3, :3] = Rt @ pose[..., 1:, :3, :3]
  rel[..., :3, 3] = np.einsum("...ij,...j->...i", Rt, pose[..., 1:, :3, 3] - pose[..., :-1, :3, 3])
  rel[..., 3, 3] = 1
  return rel, valid[..., :-1] & valid[..., 1:]


def features(block: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The normalised quantities of a block of shard frames, valid rows only, (n, C) each."""
  hands, hv = block["hands"], block["hands_valid"]  # (T, 2, 21, 3), (T, 2)
  body, bv = block["body"], block["body_valid"]  # (T, 52, 3), (T,)
  steps, sv = pose_steps(block["pose"].astype(np.float64), block["pose_valid"])
  depth = block["depth"].astype(np.float32)
  return {
      "imu": block["imu"][block["imu_valid"]].reshape(-1, 6),
      "hands_local": (hands[..., 1:, :] - hands[..., :1, :])[hv].reshape(-1, 3),
      "wrist": hands[..., 0, :][hv].reshape(-1, 3),
      "body_local": (body - body[:, PELVIS:PELVIS + 1])[bv].reshape(-1, 3),
      "depth": depth[depth > 0].reshape(-1, 1),
      "pose_step": steps[..., :3, 3][sv].reshape(-1, 3),
  }


def moments(block: Mapping[str, np.ndarray]) -> dict[str, Moments]:
  return {k: Moments.of(v) for k, v in features(block).items()}


def merge(parts: Iterable[Mapping[str, Mapping]]) -> dict[str, dict]:
  """JSON moments of many episodes -> {feature: {"mean", "std", "count"}}."""
  total: dict[str, Moments] = {}
  for part in parts:
    for k, d in part.items():
      m = Moments.from_json(d)
      total[k] = total[k] + m if k in total else m
  return {k: m.mean_std() for k, m in sorted(total.items())}
