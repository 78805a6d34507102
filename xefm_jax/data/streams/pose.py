"""Camera pose: T_world_body at each output frame, with the reader's validity; an invalid
frame becomes the identity in a window (the pipeline's fill). Normalisation statistics: the
per-frame camera motion in the previous body frame."""

from __future__ import annotations

import numpy as np

from xefm_jax.data import stats as stats_lib
from xefm_jax.data.streams import base


class Pose(base.StreamDef):
  name = "pose"
  group = "motion"
  stored = (base.Stream("pose", base.fixed(4, 4), "float32"),  # T_world_body
            base.Stream("pose_valid", base.fixed(), "bool"))
  flags = (("pose_valid", "pose_valid", None),)
  valid = ("pose_valid",)
  values = {}  # pose becomes the identity (fill_removed)

  future_fields = ("pose", "pose_valid")

  def fields(self, spec, t):
    return {"pose": ((t, 4, 4), np.float32),  # T_world_body
            "pose_valid": ((t,), np.bool_)}

  def read(self, es, state, start, stop):
    a, b = es.raw(start, stop)
    s = es.options.frame_stride
    pose = es.ep.pose(a, b)
    return {"pose": pose.T_world_body[::s].astype(np.float32), "pose_valid": pose.valid[::s]}

  def statistics(self, block):
    steps, sv = stats_lib.pose_steps(block["pose"].astype(np.float64), block["pose_valid"])
    return {"pose_step": steps[..., :3, 3][sv].reshape(-1, 3)}

  def inputs(self, raw, sl, sig, spec, stats):
    pose_valid = raw["pose_valid"][:, sl]
    return {"pose": np.where(pose_valid[..., None, None], raw["pose"][:, sl],
                             np.eye(4, dtype=np.float32)),
            "pose_valid": pose_valid}

  def future(self, raw, ahead, stats):
    return {"pose": raw["pose"][:, ahead], "pose_valid": raw["pose_valid"][:, ahead]}

  def mask_invalid(self, batch):
    batch["pose"][~batch["pose_valid"]] = np.eye(4, dtype=np.float32)

  def fill_removed(self, batch):
    batch["pose"] = np.broadcast_to(np.eye(4, dtype=batch["pose"].dtype),
                                    batch["pose"].shape).copy()

  def handcrafted(self, batch, vocab_size):
    steps, valid = stats_lib.pose_steps(batch["pose"].astype(np.float64), batch["pose_valid"])
    trans = steps[..., :3, 3]  # (B, T-1, 3) per-frame motion in the previous body frame
    cos = np.clip((np.trace(steps[..., :3, :3], axis1=-2, axis2=-1) - 1) / 2, -1, 1)
    angle = np.arccos(cos)[..., None]  # (B, T-1, 1) rotation per frame
    trans = np.where(valid[..., None], trans, 0.0)
    angle = np.where(valid[..., None], angle, 0.0)
    speed = np.linalg.norm(trans, axis=-1, keepdims=True)
    height = batch["pose"][:, :, 2, 3]  # (B, T) z of the device in the world
    return np.concatenate([base.moments(trans, 1), base.moments(speed, 1),
                           base.moments(angle, 1), (height[:, -1] - height[:, 0])[:, None],
                           batch["pose_valid"].mean(1, keepdims=True)], -1)


POSE = base.register(Pose())
