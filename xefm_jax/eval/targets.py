"""What each evaluation task predicts, read off a window batch (xefm_jax/data/spec.py).

One function turns a batch into per-window targets, in physical units where the suite
measures in them (metres), so every feature set (model, hand-crafted, random init) is scored
against exactly the same numbers. Definitions follow ../shared/EVAL_SUITE.md; where the
public contract leaves a choice, the docstring of `window_targets` states ours.
"""

from __future__ import annotations

import collections
import hashlib
from typing import Any, Mapping, Optional

import numpy as np

from xefm_jax.data import pipeline
from xefm_jax.data import source as source_lib
from xefm_jax.data import stats as stats_lib
from xefm_jax.data import xperience
from xefm_jax.objectives import contact as contact_lib
from xefm_jax.objectives import procedure as procedure_lib

NEXT_ACTION_FRAMES = 20  # next_action: the action at t + 20 frames
HAND_HORIZON = 10  # hand_trajectory_forecast: the next 10 frames
FORECAST_FRAMES = 100  # tasks 13, 14, 17: labels 5 s (100 frames) after now
TRANSITION_CAP = 200  # time_to_transition: frames to the next boundary, capped at 200


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


def label_class(*parts: Any) -> int:
  """One class id for a combination of labels (a sentence's token ids; an action with its
  object set): 62 bits of a hash of the values, so the same combination has the same id in
  every split and run without a vocabulary of combinations (one a split never saw is a
  class of its own, like an unseen label)."""
  h = hashlib.blake2b(digest_size=8)
  for p in parts:
    h.update(np.ascontiguousarray(np.asarray(p, np.int64)).tobytes() + b"|")
  return int.from_bytes(h.digest(), "little") >> 2


class EpisodeLabels:
  """Whole episodes' per-frame labels from the shards (the last `cache` episodes kept):
  the horizons of tasks 13-20 (5 s, up to 10 s) reach past a window's own future frames.

  labels(i) -> {"action", "subtask" (T,) int32, "boundary" (T,) bool, "objects" (T, K)
  bool} of corpus episode i on the shard clock; `stride` is 20 fps frames per shard frame.
  """

  def __init__(self, corpus: source_lib.Corpus, cache: int = 16):
    self.corpus, self.stride, self.size = corpus, corpus.options.frame_stride, cache
    self._cache: collections.OrderedDict[int, dict[str, np.ndarray]] = (
        collections.OrderedDict())

  def __call__(self, episode: int) -> dict[str, np.ndarray]:
    if episode not in self._cache:
      stored = self.corpus.read_episode(episode, ("labels", "objects", "flags"))
      self._cache[episode] = {k: stored[k] for k in ("action", "subtask", "boundary",
                                                     "objects")}
      if len(self._cache) > self.size:
        self._cache.popitem(last=False)
    self._cache.move_to_end(episode)
    return self._cache[episode]


def horizon_targets(labels: EpisodeLabels, episode: np.ndarray, now: np.ndarray
                    ) -> dict[str, np.ndarray]:
  """Targets of tasks 13-20 beyond the window: episode (B,) corpus episode ids, now (B,)
  shard frames. A horizon past the episode's end is unknown (-1, invalid, NaN)."""
  h = max(1, round(FORECAST_FRAMES / labels.stride))  # shard frames
  cap = max(1, round(TRANSITION_CAP / labels.stride))
  b = len(episode)
  action, subtask = np.full(b, -1, np.int32), np.full(b, -1, np.int32)
  objects, objects_valid = None, np.zeros(b, bool)
  to_boundary = np.full(b, np.nan, np.float32)
  for i in range(b):
    ep, t = labels(int(episode[i])), int(now[i])
    n = len(ep["action"])
    if objects is None:
      objects = np.zeros((b, ep["objects"].shape[1]), bool)
    if t + h < n:
      action[i], subtask[i] = ep["action"][t + h], ep["subtask"][t + h]
      objects[i], objects_valid[i] = ep["objects"][t + h], True
    ahead = np.flatnonzero(ep["boundary"][t + 1:t + cap + 1])  # an action starts there
    if len(ahead):
      to_boundary[i] = (ahead[0] + 1) * labels.stride
    elif t + cap < n:  # none within the cap, and the episode goes on past it
      to_boundary[i] = cap * labels.stride
  return {"action_5s": action, "subtask_5s": subtask,
          "objects_5s": objects if objects is not None else np.zeros((0, 0), bool),
          "objects_5s_valid": objects_valid, "time_to_transition": to_boundary}


def window_targets(batch: Mapping[str, Any], norm: pipeline.Normaliser, step: int = 1,
                   episodes: Optional[EpisodeLabels] = None) -> dict[str, np.ndarray]:
  """Per-window targets of every task (B rows each).

  step: frames of the 20 fps clock between consecutive window frames (frame stride x the
  shredder's stride); horizons given in 20 fps frames are converted with it.
  episodes: the corpus' per-episode labels, for the targets past the window's future
  frames (tasks 13, 14, 17, 20: `horizon_targets`); without it those are left out.

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
    * tasks 13, 14, 17 (action_5s, subtask_5s, objects_5s): the label at now + 100 frames.
    * interaction_text_prediction: the interaction sentence at now as a class
      (`label_class` of its token ids; -1 where it has none).
    * action_object_relation: (action at now, its object set at now) as a class; -1 where
      there is no action.
    * imu_to_hand_pose: both hands' 21 joints at now, metres in the camera frame (an
      untracked hand is masked).
    * time_to_transition: 20 fps frames from now to the next action start, capped at 200;
      unknown (NaN) where the episode ends first.
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
  action_now, objects_now = np.asarray(labels["action"]), np.asarray(contact["objects"])
  interaction = np.array([label_class(c) if ok else -1 for c, ok in
                          zip(batch["caption"], batch["caption_valid"])], np.int64)
  action_objects = np.array([label_class([a], np.flatnonzero(o)) if a >= 0 else -1
                             for a, o in zip(action_now, objects_now)], np.int64)
  extra = {}
  if episodes is not None:
    now = batch["start"] + (step // episodes.stride) * (w - 1)  # shard frames
    extra = horizon_targets(episodes, batch["episode"], now)
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
      "interaction": interaction, "action_objects": action_objects,
      "hands_now": norm.hands_to_metres(batch["hands"][:, -1]).astype(np.float32),
      "hands_now_valid": batch["hands_valid"][:, -1], **extra,
  }
