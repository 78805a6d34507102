"""Normalisation statistics: per-channel moments of shard streams, train split only.

The shredder accumulates `Moments` per episode (count, sum, sum of squares per channel, in
float64, so episodes merge exactly in any order); the manifest keeps the train split's
mean and std per feature; the pipeline and the objectives normalise with them. Features are
the quantities the model sees, not the raw arrays (hand joints relative to the wrist, body
keypoints relative to the pelvis, per-frame camera motion in the previous body frame): each
stream definition says which (`StreamDef.statistics`, xefm_jax/data/streams/).
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


def features(block: Mapping[str, np.ndarray], defs: Iterable) -> dict[str, np.ndarray]:
  """The normalised quantities of a block of shard frames, valid rows only, (n, C) each:
  every stream definition's `statistics` (xefm_jax/data/streams/)."""
  out: dict[str, np.ndarray] = {}
  for stream in defs:
    out.update(stream.statistics(block))
  return out


def moments(block: Mapping[str, np.ndarray], defs: Iterable) -> dict[str, Moments]:
  return {k: Moments.of(v) for k, v in features(block, defs).items()}


def merge(parts: Iterable[Mapping[str, Mapping]]) -> dict[str, dict]:
  """JSON moments of many episodes -> {feature: {"mean", "std", "count"}}."""
  total: dict[str, Moments] = {}
  for part in parts:
    for k, d in part.items():
      m = Moments.from_json(d)
      total[k] = total[k] + m if k in total else m
  return {k: m.mean_std() for k, m in sorted(total.items())}
