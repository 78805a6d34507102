"""Camera pose (SLAM) -> per-frame relative motion -> tokens per time chunk.

World coordinates are arbitrary per episode (SLAM origin, heading), so the model sees what
is invariant: the motion between consecutive frames expressed in the previous body frame
(T_prev^-1 T_t), as rates (per second: x frame_rate), with the rotation in the continuous
6D representation (first two columns of R, Zhou et al. 2019) minus the identity's, and the
direction of world up in the body frame (gravity is observable: roll and pitch are real,
yaw is not).

Config (model.modalities.pose): frames_per_token, frame_rate (context frames per second:
20 / frame_stride, linked to config.data). Tokens: T / frames_per_token.
"""

from __future__ import annotations

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from xefm_jax.model import encoders

_IDENTITY_6D = np.eye(3, dtype=np.float32)[:, :2].reshape(-1)  # (6,)


def relative_motion(pose: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array]:
  """T_world_body (B, T, 4, 4), (B, T) -> motion (B, T, 9) = [rot6d - I, translation] of
  T_{t-1}^-1 T_t, and its validity (B, T) (both frames valid; frame 0 has no predecessor)."""
  pose = jnp.where(valid[..., None, None], pose, jnp.eye(4, dtype=pose.dtype))  # no NaNs
  rot, trans = pose[..., :3, :3], pose[..., :3, 3]  # (B, T, 3, 3), (B, T, 3)
  rot_prev = jnp.concatenate([rot[:, :1], rot[:, :-1]], axis=1)
  trans_prev = jnp.concatenate([trans[:, :1], trans[:, :-1]], axis=1)
  rel_rot = jnp.einsum("btji,btjk->btik", rot_prev, rot)  # R_prev^T R
  rel_trans = jnp.einsum("btji,btj->bti", rot_prev, trans - trans_prev)  # in previous body frame
  rot6d = einops.rearrange(rel_rot[..., :, :2], "b t i j -> b t (i j)") - _IDENTITY_6D
  valid_prev = jnp.concatenate([jnp.zeros_like(valid[:, :1]), valid[:, :-1]], axis=1)
  return jnp.concatenate([rot6d, rel_trans], axis=-1), valid & valid_prev


@encoders.register("pose")
class PoseTokenizer(encoders.Tokenizer):
  """(B, T, 4, 4) T_world_body + (B, T) validity -> one token per chunk of frames."""

  fields = ("pose", "pose_valid")

  @nn.compact
  def __call__(self, batch: encoders.Batch) -> encoders.Patches:
    valid = batch["pose_valid"]  # (B, T)
    pose = batch["pose"].astype(jnp.float32)
    motion, motion_valid = relative_motion(pose, valid)  # (B, T, 9), (B, T)
    motion = jnp.where(motion_valid[..., None], motion * self.config.frame_rate, 0)
    up = jnp.where(valid[..., None], pose[..., 2, :3], 0)  # world z in body frame (B, T, 3)
    frame = jnp.concatenate([motion, up, motion_valid[..., None].astype(jnp.float32)], -1)
    chunks, mask, time = encoders.frame_chunks(frame, valid, self.config.frames_per_token, "pose")
    return encoders.Patches(self.embed(chunks, "pose_embedding"), mask, time)  # (B, t, E)

  @staticmethod
  def targets(batch: encoders.Batch, config) -> tuple[jax.Array, jax.Array]:
    """Per chunk: camera motion rates [rot6d - I, translation] x frame rate and world up in
    the body frame of each frame, (B, t, c 12), and weight."""
    valid = batch["pose_valid"]  # (B, T)
    pose = batch["pose"].astype(jnp.float32)
    motion, motion_valid = relative_motion(pose, valid)  # (B, T, 9), (B, T)
    motion = jnp.where(motion_valid[..., None], motion * config.frame_rate, 0.0)
    up = jnp.where(valid[..., None], jnp.where(valid[..., None, None], pose, 0.0)[..., 2, :3],
                   0.0)  # (B, T, 3)
    x = jnp.concatenate([motion, up], -1)  # (B, T, 12)
    weight = jnp.concatenate([jnp.broadcast_to(motion_valid[..., None], motion.shape),
                              jnp.broadcast_to(valid[..., None], up.shape)], -1)
    c = config.frames_per_token
    return encoders.chunk_frames(x, c), encoders.chunk_frames(weight, c)
