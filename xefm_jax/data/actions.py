"""The action space for human hands: what a policy export (RLDS, LeRobot) and the policy
objective call an action and a state, with train-only normalisation statistics.

Frame. Everything is stated in the rectified stereo-left camera frame (cam01: x right, y
down, z forward, metres) of the frame the quantity belongs to: the frame hand joints are
stored in (xefm_jax/data/xperience.py). Head motion is not removed (the shards carry no
camera-from-body extrinsic): an action is the hand's motion as the wearer's head camera
sees it, the egocentric convention; the head pose (SLAM, T_world_body) is in the state.

Wrist frame, from the 21 MANO joints (0 wrist, 5 index MCP, 9 middle MCP, 17 pinky MCP):
origin the wrist joint; x along wrist -> middle MCP; z = x cross (pinky MCP -> index MCP),
normalised; y = z cross x. The same rule for both hands (for the left hand the palm normal
is mirrored); a frame whose axes are shorter than 1 mm, or a hand row that is untracked, is
invalid.

Action (one step, from exported frame a to frame b = a + step; left hand then right):
  wrist translation delta  p_b - p_a                     3, m, camera frame
  wrist rotation delta     R_b R_a^T                     3 (rotation vector, rad) or
                                                         6 (first two columns, "rot6d")
  finger joints at b       R_b^T (q_j - p_b), j = 1..20  60 (or the 5 fingertips: 15), m,
                                                         wrist frame
Integrating a chunk from the wrist pose at its first frame: p <- p + dp, R <- dR R; the
joints are then p + R f (`integrate`, `joints_from`).

State (at frame a): per hand wrist position (3, m), wrist rotation (6, rot6d of R_a) and
fingers (as in the action); then the head: T_world_body translation (3, m, world) and
rotation (6, rot6d).

Tracking gaps: a hand's action is valid when the hand is tracked, with a valid frame, at
both a and b; its state when tracked at a; the head's when the SLAM pose is valid. Invalid
entries are zero, `action_mask` (per hand) and `state_mask` (left, right, head) say which,
and normalisation keeps them zero; statistics count valid entries only. No gap is
interpolated.

Rate: actions are `step` corpus frames apart (corpus fps / step, 20 fps at step 1); a
policy predicts `chunk` of them at once (`chunks`). Both come from the config
(`config.data.actions`: chunk, step, rotation, fingers).

Normalisation statistics (mean, std, min, max, q01, q99, count per dimension) come from the
train split's episodes only (`compute_stats` reads no other episode); `write` puts
action_space.json, normalization_stats.json and retargeting_report.json beside an export.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from xefm_jax import errors
from xefm_jax.data import geometry
from xefm_jax.data import xperience

VERSION = "hand-actions-1"
ROTATIONS = {"rotvec": 3, "rot6d": 6}
FINGERS = {"all": tuple(range(1, xperience.NUM_HAND_JOINTS)), "tips": (4, 8, 12, 16, 20)}
JOINT_NAMES = ("wrist",) + tuple(f"{f}{k}" for f in ("thumb", "index", "middle", "ring",
                                                     "pinky") for k in range(1, 5))
WRIST, INDEX_MCP, MIDDLE_MCP, PINKY_MCP = 0, 5, 9, 17
MIN_AXIS_M = 1e-3
STD_FLOOR = 1e-6
SPACE_FILE, STATS_FILE, REPORT_FILE = ("action_space.json", "normalization_stats.json",
                                       "retargeting_report.json")
# What a round trip (actions -> normalised -> de-normalised -> integrated) must reproduce
# over one chunk of 16 steps in float32 (tests/test_actions.py).
TOLERANCE = {"translation_m": 1e-4, "rotation_rad": 1e-4, "joints_m": 2e-4}


class ActionError(errors.Error):
  """An action space or statistics that cannot be used; the message says what is wrong."""


@dataclasses.dataclass(frozen=True)
class ActionSpace:
  """The action space's choices (module docstring); `fps` is the corpus' frame rate."""

  chunk: int = 16
  step: int = 1
  rotation: str = "rotvec"
  fingers: str = "all"
  fps: float = xperience.FPS

  def __post_init__(self):
    if self.rotation not in ROTATIONS:
      raise ActionError(f"actions.rotation {self.rotation!r}: expected one of {list(ROTATIONS)}")
    if self.fingers not in FINGERS:
      raise ActionError(f"actions.fingers {self.fingers!r}: expected one of {list(FINGERS)}")
    if self.chunk < 1 or self.step < 1:
      raise ActionError(f"actions.chunk {self.chunk}, actions.step {self.step}: both must be "
                        ">= 1")

  @classmethod
  def from_config(cls, cfg: Any, fps: float = xperience.FPS) -> "ActionSpace":
    """From `config.data.actions` (or any mapping with chunk, step, rotation, fingers)."""
    return cls(**{k: cfg[k] for k in ("chunk", "step", "rotation", "fingers") if k in cfg},
               fps=fps)

  @property
  def rate_hz(self) -> float:
    return self.fps / self.step

  @property
  def joints(self) -> tuple[int, ...]:
    return FINGERS[self.fingers]

  @property
  def hand_action_dim(self) -> int:
    return 3 + ROTATIONS[self.rotation] + 3 * len(self.joints)

  @property
  def action_dim(self) -> int:
    return 2 * self.hand_action_dim

  @property
  def hand_state_dim(self) -> int:
    return 3 + 6 + 3 * len(self.joints)

  @property
  def state_dim(self) -> int:
    return 2 * self.hand_state_dim + 9

  def action_names(self) -> list[str]:
    rot = (["drx", "dry", "drz"] if self.rotation == "rotvec"
           else [f"dr6d_{i}" for i in range(6)])
    per = ["dx", "dy", "dz", *rot] + [f"{JOINT_NAMES[j]}_{c}" for j in self.joints
                                      for c in "xyz"]
    return [f"{h}.{n}" for h in xperience.HANDS for n in per]

  def state_names(self) -> list[str]:
    per = ["x", "y", "z", *(f"r6d_{i}" for i in range(6))] + [
        f"{JOINT_NAMES[j]}_{c}" for j in self.joints for c in "xyz"]
    return ([f"{h}.{n}" for h in xperience.HANDS for n in per]
            + [f"head.{n}" for n in ("x", "y", "z", *(f"r6d_{i}" for i in range(6)))])

  def action_slices(self) -> dict[str, tuple[int, int]]:
    """Named [start, end) slices of the action vector (GR00T's modality.json)."""
    out, a = {}, 0
    for h in xperience.HANDS:
      for name, n in (("wrist_translation", 3), ("wrist_rotation", ROTATIONS[self.rotation]),
                      ("fingers", 3 * len(self.joints))):
        out[f"{h}_{name}"] = (a, a + n)
        a += n
    return out

  def state_slices(self) -> dict[str, tuple[int, int]]:
    out, a = {}, 0
    for h in xperience.HANDS:
      for name, n in (("wrist_position", 3), ("wrist_rotation", 6),
                      ("fingers", 3 * len(self.joints))):
        out[f"{h}_{name}"] = (a, a + n)
        a += n
    out["head_position"], out["head_rotation"] = (a, a + 3), (a + 3, a + 9)
    return out


# ----------------------------------------------------------------------------- geometry


# The functions that define an action (rot6d, wrist_frames, fingers_in_wrist, hand_poses,
# step_actions) take the array module `xp`: numpy (float64) for the exports, jax.numpy (the
# input's dtype, traceable) for the policy objective's in-graph targets. One definition.


def _as_float(x: Any, xp: Any) -> Any:
  return np.asarray(x, np.float64) if xp is np else xp.asarray(x)


def rot6d(R: np.ndarray, xp: Any = np) -> np.ndarray:
  """(..., 3, 3) -> (..., 6): the first two columns, column by column."""
  return xp.concatenate([R[..., :, 0], R[..., :, 1]], -1)


def rot6d_to_matrix(x: np.ndarray) -> np.ndarray:
  """(..., 6) -> (..., 3, 3) by Gram-Schmidt (Zhou et al. 2019); a degenerate (masked,
  all-zero) entry gives the identity."""
  a, b = x[..., :3], x[..., 3:6]
  na = np.linalg.norm(a, axis=-1, keepdims=True)
  c0 = a / np.maximum(na, 1e-12)
  b = b - np.sum(c0 * b, -1, keepdims=True) * c0
  nb = np.linalg.norm(b, axis=-1, keepdims=True)
  c1 = b / np.maximum(nb, 1e-12)
  R = np.stack([c0, c1, np.cross(c0, c1)], -1)
  return np.where(((na > 1e-12) & (nb > 1e-12))[..., None], R, np.eye(3))


def wrist_frames(joints: np.ndarray, tracked: np.ndarray, xp: Any = np
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(..., 21, 3) joints (metres) and (...) tracked -> rotations (..., 3, 3), positions
  (..., 3) and validity (...) of the wrist frame (module docstring). Invalid frames are
  identity/zero."""
  j = _as_float(joints, xp)
  p = j[..., WRIST, :]
  x = j[..., MIDDLE_MCP, :] - p
  across = j[..., INDEX_MCP, :] - j[..., PINKY_MCP, :]
  z = xp.cross(x, across)
  nx, nz = xp.linalg.norm(x, axis=-1), xp.linalg.norm(z, axis=-1)
  valid = (xp.asarray(tracked, bool) & xp.isfinite(j).all((-1, -2)) & (nx > MIN_AXIS_M)
           & (nz > MIN_AXIS_M ** 2))
  x = x / xp.maximum(nx, 1e-12)[..., None]
  z = z / xp.maximum(nz, 1e-12)[..., None]
  y = xp.cross(z, x)
  R = xp.stack([x, y, z], -1)
  R = xp.where(valid[..., None, None], R, xp.eye(3, dtype=R.dtype))
  return R, xp.where(valid[..., None], p, 0.0), valid


def fingers_in_wrist(joints: np.ndarray, R: np.ndarray, p: np.ndarray,
                     keep: Sequence[int], xp: Any = np) -> np.ndarray:
  """(..., 21, 3) joints -> (..., 3 len(keep)) positions in the wrist frame."""
  q = _as_float(joints, xp)[..., list(keep), :] - p[..., None, :]
  f = xp.einsum("...ji,...kj->...ki", R, q)  # R^T q
  return f.reshape(f.shape[:-2] + (-1,))


def hand_poses(space: ActionSpace, joints: np.ndarray, tracked: np.ndarray, xp: Any = np
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """(..., 21, 3) joints (metres, camera frame) and (...) tracked -> wrist rotation
  (..., 3, 3), position (..., 3), wrist-frame fingers (..., 3J) (zero where invalid) and
  validity (...)."""
  R, p, ok = wrist_frames(joints, tracked, xp)
  fing = fingers_in_wrist(joints, R, p, space.joints, xp)
  return R, p, xp.where(ok[..., None], fing, 0.0), ok


def step_actions(space: ActionSpace, R_a: np.ndarray, p_a: np.ndarray, ok_a: np.ndarray,
                 R_b: np.ndarray, p_b: np.ndarray, fing_b: np.ndarray, ok_b: np.ndarray,
                 xp: Any = np) -> tuple[np.ndarray, np.ndarray]:
  """The action of the step a -> b of each hand (`hand_poses` at both ends): (..., Dh) =
  [p_b - p_a, rotation of R_b R_a^T, fingers at b], zero where not valid at both ends, and
  that validity (...)."""
  ok = ok_a & ok_b
  dp = p_b - p_a
  dR = R_b @ xp.swapaxes(R_a, -1, -2)
  rot = (geometry.matrix_to_axis_angle(dR, xp) if space.rotation == "rotvec"
         else rot6d(dR, xp))
  act = xp.concatenate([dp, rot, fing_b], -1)
  return xp.where(ok[..., None], act, 0.0), ok


def joints_from(R: np.ndarray, p: np.ndarray, fingers: np.ndarray) -> np.ndarray:
  """Wrist pose and wrist-frame fingers -> (..., 1 + K, 3) camera-frame joints (wrist first)."""
  f = fingers.reshape(fingers.shape[:-1] + (-1, 3))
  q = np.einsum("...ij,...kj->...ki", R, f) + p[..., None, :]
  return np.concatenate([p[..., None, :], q], -2)


# ------------------------------------------------------------------------------ arrays


def hand_arrays(space: ActionSpace, hands: np.ndarray, hands_valid: np.ndarray,
                pose: np.ndarray, pose_valid: np.ndarray) -> dict[str, np.ndarray]:
  """State and per-step actions of a stretch of frames already at the action rate.

  hands (T, 2, 21, 3) camera-frame metres, hands_valid (T, 2), pose (T, 4, 4) T_world_body,
  pose_valid (T,). Returns state (T, Ds), state_mask (T, 3), action (T, Da) (row t: the step
  t -> t + 1; the last row is masked), action_mask (T, 2), and the wrist poses R (T, 2, 3, 3),
  p (T, 2, 3), frame_valid (T, 2).
  """
  T = len(hands)
  R, p, fing, ok = hand_poses(space, hands, hands_valid)  # fing (T, 2, 3K)
  head_ok = np.asarray(pose_valid, bool) & np.isfinite(pose).all((-1, -2))
  head = np.concatenate([pose[:, :3, 3], rot6d(pose[:, :3, :3])], -1)
  head = np.where(head_ok[:, None], head, 0.0)
  state_hand = np.concatenate([p, rot6d(R), fing], -1)
  state_hand = np.where(ok[..., None], state_hand, 0.0)
  state = np.concatenate([state_hand.reshape(T, -1), head], -1)
  act = np.zeros((T, 2, space.hand_action_dim))
  a_ok = np.zeros((T, 2), bool)
  act[:-1], a_ok[:-1] = step_actions(space, R[:-1], p[:-1], ok[:-1], R[1:], p[1:], fing[1:],
                                     ok[1:])
  return {"state": state.astype(np.float32),
          "state_mask": np.concatenate([ok, head_ok[:, None]], -1),
          "action": act.reshape(T, -1).astype(np.float32), "action_mask": a_ok,
          "R": R, "p": p, "frame_valid": ok}


def episode_arrays(space: ActionSpace, stored: Mapping[str, np.ndarray]) -> dict[str, Any]:
  """`hand_arrays` of a whole episode read from the shards (Corpus.read_episode with
  hands, pose and flags), at the action rate; `frame_index`: the corpus frames kept."""
  frames = np.arange(0, len(stored["hands"]), space.step)
  out = hand_arrays(space, stored["hands"][frames], stored["hands_valid"][frames],
                    stored["pose"][frames], stored["pose_valid"][frames])
  out["frame_index"] = frames
  return out


EPISODE_ARRAYS = ("hands", "pose", "flags")


def read_episode(corpus: Any, index: int, space: ActionSpace) -> dict[str, Any]:
  """`episode_arrays` of corpus episode `index`."""
  return episode_arrays(space, corpus.read_episode(index, EPISODE_ARRAYS))


def window_arrays(space: ActionSpace, window: Mapping[str, np.ndarray]) -> dict[str, Any]:
  """`hand_arrays` of a raw window (WindowSource: shard units, before normalisation) over
  its low-dimensional span, at the action rate (every `step`-th of the window's frames)."""
  s = slice(None, None, space.step)
  return hand_arrays(space, window["hands"][s], window["hands_valid"][s], window["pose"][s],
                     window["pose_valid"][s])


def chunks(action: np.ndarray, mask: np.ndarray, starts: Sequence[int], chunk: int
           ) -> tuple[np.ndarray, np.ndarray]:
  """(T, Da), (T, 2) -> (len(starts), chunk, Da), (len(starts), chunk, 2); steps past the end
  are masked zeros."""
  T = len(action)
  idx = np.asarray(starts)[:, None] + np.arange(chunk)[None]
  inside = idx < T
  idx = np.minimum(idx, T - 1)
  return (np.where(inside[..., None], action[idx], 0.0).astype(action.dtype),
          mask[idx] & inside[..., None])


def _hand_mask(space: ActionSpace, mask: np.ndarray, per_hand: int) -> np.ndarray:
  """(..., 2) per-hand mask -> (..., 2 per_hand)."""
  return np.repeat(mask, per_hand, axis=-1)


def action_value_mask(space: ActionSpace, action_mask: np.ndarray) -> np.ndarray:
  return _hand_mask(space, action_mask, space.hand_action_dim)


def state_value_mask(space: ActionSpace, state_mask: np.ndarray) -> np.ndarray:
  return np.concatenate([_hand_mask(space, state_mask[..., :2], space.hand_state_dim),
                         np.repeat(state_mask[..., 2:], 9, axis=-1)], -1)


def integrate(space: ActionSpace, R0: np.ndarray, p0: np.ndarray, action: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Wrist poses of both hands after each step of `action` (K, Da) from (2, 3, 3), (2, 3):
  rotations (K, 2, 3, 3), positions (K, 2, 3) and wrist-frame fingers (K, 2, 3J)."""
  a = np.asarray(action, np.float64).reshape(len(action), 2, space.hand_action_dim)
  r = ROTATIONS[space.rotation]
  dp, rot, fing = a[..., :3], a[..., 3:3 + r], a[..., 3 + r:]
  dR = (geometry.axis_angle_to_matrix(rot) if space.rotation == "rotvec"
        else rot6d_to_matrix(rot))
  Rs, ps = [], []
  R, p = np.asarray(R0, np.float64), np.asarray(p0, np.float64)
  for k in range(len(a)):
    R, p = dR[k] @ R, p + dp[k]
    Rs.append(R)
    ps.append(p)
  return np.stack(Rs), np.stack(ps), fing


# ------------------------------------------------------------------------- statistics


def _stats(x: np.ndarray, valid: np.ndarray) -> dict[str, list[float]]:
  """Per-dimension statistics of x (N, D) over its valid entries (N, D)."""
  D = x.shape[1]
  out: dict[str, list] = {k: [] for k in ("mean", "std", "min", "max", "q01", "q99", "count")}
  for d in range(D):
    v = x[valid[:, d], d].astype(np.float64)
    if len(v) == 0:
      vals = dict(mean=0.0, std=1.0, min=0.0, max=0.0, q01=0.0, q99=0.0, count=0)
    else:
      vals = dict(mean=v.mean(), std=v.std(), min=v.min(), max=v.max(),
                  q01=np.quantile(v, 0.01), q99=np.quantile(v, 0.99), count=len(v))
    for k, val in vals.items():
      out[k].append(int(val) if k == "count" else float(val))
  return out


def compute_stats(corpus: Any, space: ActionSpace,
                  read: Optional[Callable[[int], Mapping[str, Any]]] = None) -> dict[str, Any]:
  """Normalisation statistics of action and state over the train split's episodes only
  (valid entries only). read: episode index -> `episode_arrays` (default: from the shards)."""
  read = read or (lambda i: read_episode(corpus, i, space))
  train = corpus.split_episodes("train")
  acts, amask, states, smask = [], [], [], []
  for i in train:
    arr = read(i)
    acts.append(arr["action"])
    amask.append(action_value_mask(space, arr["action_mask"]))
    states.append(arr["state"])
    smask.append(state_value_mask(space, arr["state_mask"]))
  return {"version": VERSION, "split": "train",
          "episodes": [corpus.episodes[i]["episode"] for i in train],
          "action": {"names": space.action_names(),
                     **_stats(np.concatenate(acts), np.concatenate(amask))},
          "state": {"names": space.state_names(),
                    **_stats(np.concatenate(states), np.concatenate(smask))}}


def normalise(x: np.ndarray, valid: np.ndarray, stats: Mapping[str, Any]) -> np.ndarray:
  """(x - mean) / std per dimension where valid (entry-wise mask), zero elsewhere."""
  mean = np.asarray(stats["mean"], np.float32)
  std = np.maximum(np.asarray(stats["std"], np.float32), STD_FLOOR)
  if x.shape[-1] != len(mean):
    raise ActionError(f"normalisation statistics have {len(mean)} dimensions, the values "
                      f"{x.shape[-1]}: the statistics belong to another action space")
  return np.where(valid, (x - mean) / std, 0.0).astype(np.float32)


def denormalise(x: np.ndarray, valid: np.ndarray, stats: Mapping[str, Any]) -> np.ndarray:
  mean = np.asarray(stats["mean"], np.float32)
  std = np.maximum(np.asarray(stats["std"], np.float32), STD_FLOOR)
  return np.where(valid, x * std + mean, 0.0).astype(np.float32)


# ---------------------------------------------------------------------------- reports


def describe(space: ActionSpace) -> dict[str, Any]:
  """action_space.json."""
  rot_unit = "rad (rotation vector)" if space.rotation == "rotvec" else "unitless (rot6d)"
  return {
      "version": VERSION, "embodiment": "human hands (MANO joints), egocentric head camera",
      "hands": list(xperience.HANDS),
      "frame": ("rectified stereo-left camera (cam01) of each frame: x right, y down, "
                "z forward; head motion not removed"),
      "wrist_frame": ("origin wrist joint; x wrist->middle MCP; z = x cross (pinky MCP -> "
                      "index MCP); y = z cross x"),
      "chunk": space.chunk, "step_frames": space.step, "rate_hz": space.rate_hz,
      "corpus_fps": space.fps, "rotation": space.rotation, "fingers": space.fingers,
      "finger_joints": [JOINT_NAMES[j] for j in space.joints],
      "action": {"dim": space.action_dim, "names": space.action_names(),
                 "slices": {k: list(v) for k, v in space.action_slices().items()},
                 "units": {"wrist_translation": "m, camera frame (delta to the next step)",
                           "wrist_rotation": rot_unit + ", R_next R^T, camera frame",
                           "fingers": "m, wrist frame, at the next step"}},
      "state": {"dim": space.state_dim, "names": space.state_names(),
                "slices": {k: list(v) for k, v in space.state_slices().items()},
                "units": {"wrist_position": "m, camera frame", "wrist_rotation": "rot6d",
                          "fingers": "m, wrist frame", "head_position": "m, world (SLAM)",
                          "head_rotation": "rot6d of T_world_body"}},
      "masks": {"action_mask": "per hand: tracked with a valid wrist frame at both ends",
                "state_mask": "left, right, head"},
      "integration": "p <- p + dp; R <- dR R; joints = p + R fingers",
      "normalisation": {"file": STATS_FILE, "kind": "mean/std per dimension",
                        "split": "train episodes only, valid entries only",
                        "std_floor": STD_FLOOR},
      "round_trip_tolerance": TOLERANCE,
  }


def retargeting_report(corpus: Any, space: ActionSpace,
                       arrays: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
  """What was kept, mapped and dropped, and the tracking gaps per split and hand.
  arrays: episode index -> `episode_arrays`, for the episodes exported."""
  gaps: dict[str, dict[str, Any]] = {}
  for i, arr in arrays.items():
    split = corpus.episodes[i]["split"]
    g = gaps.setdefault(split, {h: {"steps": 0, "valid_actions": 0, "gaps": 0,
                                    "gap_steps": 0, "longest_gap": 0}
                                for h in xperience.HANDS})
    for h, hand in enumerate(xperience.HANDS):
      m = arr["action_mask"][:, h]
      runs = _runs(~m)
      g[hand]["steps"] += int(len(m))
      g[hand]["valid_actions"] += int(m.sum())
      g[hand]["gaps"] += len(runs)
      g[hand]["gap_steps"] += int(sum(runs))
      g[hand]["longest_gap"] = max(g[hand]["longest_gap"], max(runs, default=0))
  return {
      "version": VERSION,
      "kept": ["hand_mocap joints (21 MANO joints per hand, stereo-left camera frame)",
               "SLAM head pose (T_world_body)"],
      "mapped": [
          "wrist 6-DoF pose: built from joints wrist, index/middle/pinky MCP (no MANO "
          "global orientation in the shards)",
          f"fingers: {len(space.joints)} joints ({space.fingers}) as positions in the wrist "
          "frame (no joint angles: the shards hold positions)",
          f"wrist motion: per-step deltas ({space.rotation}) every {space.step} frame(s), "
          f"{space.rate_hz:g} Hz"],
      "dropped": ["MANO hand pose rotations, global orientation, betas and translation "
                  "(not in the shards)",
                  *([f"finger joints other than the tips ({15} of 20)"]
                    if space.fingers == "tips" else []),
                  "full-body keypoints and contacts (not part of the hand action)",
                  "head motion inside the action (actions are in the moving camera frame)"],
      "tracking_gaps": {
          "rule": "a hand's step is masked (action_mask False, values 0) unless the hand is "
                  "tracked with a non-degenerate wrist frame at both ends; nothing is "
                  "interpolated; statistics and losses skip masked steps",
          "per_split": gaps},
  }


def _runs(x: np.ndarray) -> list[int]:
  """Lengths of the runs of True in a 1-D bool array."""
  d = np.diff(np.concatenate([[0], x.astype(np.int8), [0]]))
  return [int(n) for n in np.flatnonzero(d == -1) - np.flatnonzero(d == 1)]


def write(out: str | os.PathLike, space: ActionSpace, stats: Mapping[str, Any],
          report: Mapping[str, Any]) -> None:
  """action_space.json, normalization_stats.json, retargeting_report.json in `out`, each
  written under a temporary name and renamed."""
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  for name, obj in ((SPACE_FILE, {**describe(space),
                                  "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}),
                    (STATS_FILE, stats), (REPORT_FILE, report)):
    tmp = out / f".tmp-{os.getpid()}-{name}"
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, out / name)


def load_stats(path: str | os.PathLike, space: ActionSpace) -> dict[str, Any]:
  """normalization_stats.json, checked against the action space."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise ActionError(f"{path}: normalisation statistics not found")
  stats = json.loads(path.read_text(encoding="utf-8"))
  for key, names in (("action", space.action_names()), ("state", space.state_names())):
    if stats.get(key, {}).get("names") != names:
      raise ActionError(f"{path}: '{key}.names' do not match the action space "
                        f"({len(names)} dimensions expected)")
  return stats
