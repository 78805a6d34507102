"""Motion capture: both hands' 21 joints (stereo-left camera frame) and the SMPL-H body
keypoints (world frame) at each output frame, with the reader's validity, and the per-joint
contact states (targets, never inputs). In a window the hands are the normalised wrist and
the wrist-relative joints, the body pelvis-relative, with the train split's statistics."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from xefm_jax.data import stats as stats_lib
from xefm_jax.data import xperience
from xefm_jax.data.streams import base

Stats = Mapping[str, Mapping[str, Any]]


def normalise_hands(stats: Stats, joints: np.ndarray, valid: np.ndarray) -> np.ndarray:
  """(..., 2, 21, 3) camera-frame metres -> normalised wrist [0] and wrist-relative [1:]."""
  wm, ws = base.mean_std(stats, "wrist")
  _, ls = base.mean_std(stats, "hands_local")
  out = np.concatenate([(joints[..., :1, :] - wm) / ws,
                        (joints[..., 1:, :] - joints[..., :1, :]) / ls], -2)
  return np.where(valid[..., None, None], out, 0.0).astype(np.float32)


def hands_to_metres(stats: Stats, x):
  """Inverse of `normalise_hands` (for MPJPE in metres); works on numpy or jax arrays."""
  wm, ws = base.mean_std(stats, "wrist")
  _, ls = base.mean_std(stats, "hands_local")
  wrist = x[..., :1, :] * ws + wm
  if isinstance(x, np.ndarray):
    return np.concatenate([wrist, wrist + x[..., 1:, :] * ls], -2)
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  return jnp.concatenate([wrist, wrist + x[..., 1:, :] * ls], -2)


def normalise_body(stats: Stats, kp: np.ndarray, valid: np.ndarray) -> np.ndarray:
  _, bs = base.mean_std(stats, "body_local")
  out = (kp - kp[..., stats_lib.PELVIS:stats_lib.PELVIS + 1, :]) / bs
  return np.where(valid[..., None, None], out, 0.0).astype(np.float32)


class Mocap(base.StreamDef):
  name = "mocap"
  group = "motion"
  stored = (
      base.Stream("hands", base.fixed(2, xperience.NUM_HAND_JOINTS, 3), "float32"),
      base.Stream("hands_valid", base.fixed(2), "bool"),
      base.Stream("body", base.fixed(xperience.NUM_BODY_KEYPOINTS, 3), "float32"),
      base.Stream("body_valid", base.fixed(), "bool"),
      base.Stream("contacts", base.fixed(xperience.NUM_CONTACT_JOINTS), "float32"),
  )
  flags = (("hands_valid/left", "hands_valid", 0), ("hands_valid/right", "hands_valid", 1),
           ("body_valid", "body_valid", None))
  valid = ("hands_valid", "body_valid")
  values = {"hands": "hands_valid", "body": "body_valid"}

  future_fields = ("hands", "hands_valid", "body", "body_valid", "contacts")

  def fields(self, spec, t):
    return {
        "hands": ((t, 2, xperience.NUM_HAND_JOINTS, 3), np.float32),  # camera frame; normalised
        "hands_valid": ((t, 2), np.bool_),
        "body": ((t, xperience.NUM_BODY_KEYPOINTS, 3), np.float32),  # pelvis heading frame
        "body_valid": ((t,), np.bool_),
    }

  def target_fields(self, spec, t):
    return {"contacts": ((t, xperience.NUM_CONTACT_JOINTS), np.float32)}

  def read(self, es, state, start, stop):
    a, b = es.raw(start, stop)
    s = es.options.frame_stride
    hands, body = es.ep.hands(a, b), es.ep.body(a, b)
    return {"hands": hands.joints[::s], "hands_valid": hands.valid[::s],
            "body": body.keypoints[::s], "body_valid": body.valid[::s],
            "contacts": body.contacts[::s]}

  def statistics(self, block):
    hands, hv = block["hands"], block["hands_valid"]  # (T, 2, 21, 3), (T, 2)
    body, bv = block["body"], block["body_valid"]  # (T, 52, 3), (T,)
    return {
        "hands_local": (hands[..., 1:, :] - hands[..., :1, :])[hv].reshape(-1, 3),
        "wrist": hands[..., 0, :][hv].reshape(-1, 3),
        "body_local": (body - body[:, stats_lib.PELVIS:stats_lib.PELVIS + 1])[bv].reshape(-1, 3),
    }

  def _motion(self, raw, sl, stats) -> dict[str, np.ndarray]:
    hv, bv = raw["hands_valid"][:, sl], raw["body_valid"][:, sl]
    return {"hands": normalise_hands(stats.stats, raw["hands"][:, sl], hv), "hands_valid": hv,
            "body": normalise_body(stats.stats, raw["body"][:, sl], bv), "body_valid": bv}

  def inputs(self, raw, sl, sig, spec, stats):
    return self._motion(raw, sl, stats)

  def targets(self, raw, sl):
    return {"contacts": raw["contacts"][:, sl]}

  def future(self, raw, ahead, stats):
    return {**self._motion(raw, ahead, stats), **self.targets(raw, ahead)}

  def handcrafted(self, batch, vocab_size):
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


MOCAP = base.register(Mocap())
