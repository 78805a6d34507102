"""What each evaluation task predicts, read off a window batch (xefm_jax/data/spec.py).

One function turns a batch into per-window targets, in physical units where the suite
measures in them (metres), so every feature set (model, hand-crafted, random init) is scored
against exactly the same numbers. Definitions follow ../shared/EVAL_SUITE.md; where the
public contract leaves a choice, the docstring of `window_targets` states ours.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from xefm_jax.data import pipeline
from xefm_jax.data import stats as stats_lib
from xefm_jax.data import xperience
from xefm_jax.objectives import contact as contact_lib
from xefm_jax.objectives import procedure as procedure_lib

NEXT_ACTION_FRAMES = 20  # next_action: the action at t + 20 frames
HAND_HORIZON = 10  # hand_trajectory_forecast: the next 10 frames


def ego_future(pose_now: np.ndarray, future_pose: np.ndarray) -> np.ndarray:
  """Future device positions in the body frame of now: (B, 4, 4), (B, F, 4, 4) -> (B, F, 3)."""
  R = pose_now[:, :3, :3]  # (B, 3, 3)
  d = future_pose[:, :, :3, 3] - pose_now[:, None, :3, 3]  # (B, F, 3) world displacement
  return np.einsum("bji,bfj->bfi", R, d)  # R^T d


def action_phase(action: np.ndarray, boundary: np.ndarray, now: int) -> np.ndarray:
  """Progress in [0, 1] through the current action at frame `now`, NaN where the action's
  start or end is outside the frames given. action, boundary: (B, T)."""
  out = np.full(len(action), np.nan)
  for i in range(len(action)):
    starts = np.flatnonzero(boundary[i, :now + 1])
    ends = np.flatnonzero(boundary[i, now + 1:])
    if len(starts) and len(ends) and action[i, now] >= 0:
      a, b = starts[-1], now + 1 + ends[0]
      out[i] = (now - a) / max(b - a, 1)
  return out


def window_targets(batch: Mapping[str, Any], norm: pipeline.Normaliser, step: int = 1
                   ) -> dict[str, np.ndarray]:
  """Per-window targets of every task (B rows each).

  step: frames of the 20 fps clock between consecutive window frames (frame stride x the
  shredder's stride); horizons given in 20 fps frames are converted with it.

  Our choices where the contract is open:
    * "now" is the window's last context frame; labels of -1 mean unknown.
    * transition_detection: an action boundary within +-10 frames (20 fps) of now, from the
      episode's whole action timeline (the shard's per-frame `transition`, made by the
      shredder), whatever the window's length; an episode's first frame is no boundary.
    * contact_prediction: whether either hand touches something at now (wrist contacts
      19/20). Foot contact ("any body contact") is nearly always on for a standing or
      walking wearer, which makes the public definition trivial (its baseline scores 1.0);
      it is kept as `any_contact` (what the captioning head's JSON `contact` field says).
    * object_relevance: the relevant-object set at now.
    * hand_trajectory_forecast: both hands' 21 joints over the next 10 frames, metres in
      the camera frame; steps where a hand is untracked are masked.
    * ego-motion: future device positions in the body frame of now, metres.
    * motion intensity: the device's mean speed over the window, m/s.
  """
  w = batch["action"].shape[1]
  future = batch["future"]
  fa, fb = future["action"], future["boundary"]
  action_all = np.concatenate([batch["action"], fa], 1)  # (B, W + F)
  boundary_all = np.concatenate([batch["boundary"], fb], 1)
  frames = lambda n: max(1, int(round(n / step)))  # noqa: E731  20 fps frames -> window's
  # the labels the procedure and contact objectives train on
  labels = procedure_lib.targets(batch, frames(NEXT_ACTION_FRAMES))
  contact = contact_lib.targets(batch, 0.5)
  horizon = frames(HAND_HORIZON)
  hands = norm.hands_to_metres(future["hands"][:, :horizon])  # (B, 10, 2, 21, 3)
  hands_valid = future["hands_valid"][:, :horizon]  # (B, 10, 2)
  steps, valid = stats_lib.pose_steps(batch["pose"].astype(np.float64), batch["pose_valid"])
  speed = np.linalg.norm(steps[..., :3, 3], axis=-1) * xperience.FPS / step  # (B, W-1) m/s
  intensity = (speed * valid).sum(1) / np.maximum(valid.sum(1), 1)
  ego = ego_future(batch["pose"][:, -1].astype(np.float64), future["pose"].astype(np.float64))
  ego_valid = future["pose_valid"] & batch["pose_valid"][:, -1:]
  return {
      **{k: np.asarray(labels[k]) for k in ("action", "subtask", "next_action", "transition")},
      "contact": np.asarray(contact["contact"]),
      "any_contact": np.asarray(contact["any_contact"]), "objects": np.asarray(contact["objects"]),
      "hands_future": hands.astype(np.float32), "hands_future_valid": hands_valid,
      "ego_future": ego.astype(np.float32), "ego_future_valid": ego_valid,
      "motion_intensity": intensity.astype(np.float32),
      "action_phase": action_phase(action_all, boundary_all, w - 1).astype(np.float32),
      "caption": batch["caption"], "caption_valid": batch["caption_valid"],
      "task": batch["task"], "episode": batch["episode"], "start": batch["start"],
  }
