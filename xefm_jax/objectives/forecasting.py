"""Ego-motion and hand-motion forecasting over the future horizon (the `future/*` targets).

Why: the eval suite scores future ego-motion (ADE/FDE in metres at 0.5, 1 and 2 s) and the
hands' 3D joints over the next frames (MPJPE); regressing them from the window makes the
embedding encode where the wearer and the hands are heading, not only what is seen now.

Both come from the `readout` tokens (the window embedding where the model has none) through
one MLP each, for the first `horizon` future frames (0: all F of config.data.future).

  ego-motion  the camera (body) pose of future frame k relative to the last context frame:
              T_rel = T_now^-1 T_k; translation in the now-frame (metres) and rotation as
              the 6D first two columns of R_rel (continuous, Zhou et al. 2019) minus the
              identity's. Regressed as average rates over the elapsed time dt_k (seconds):
              translation / dt_k / speed_scale and (rot6d - I) / dt_k / turn_scale, which
              keeps every horizon near unit scale (a fixed metre scale would make the first
              frames vanish against the last). Valid where both poses are valid.
  hands       future/hands (F, 2, 21, 3) in the pipeline's normalised layout (wrist:
              (w - mean) / std of the manifest's `wrist`; joints 1..20: wrist-relative /
              `hands_local` std), predicted whole from the readout (no residual on the
              current hands from the batch: the readout, part of the window embedding,
              must itself hold where the hands are); masked by future/hands_valid.
Losses are smooth-L1 in those normalised units; metrics include ego ADE/FDE in metres and
the hands' mean joint error in normalised units (MPJPE in metres needs the manifest's
statistics: the eval converts with pipeline.Normaliser.hands_to_metres).

predict(): ego/translation (B, K, 3) metres in the last context frame's body frame,
ego/rotation (B, K, 3, 3), ego/valid (B, K); hands (B, K, 2, 21, 3) in the pipeline's
normalised layout, hands/valid (B, K, 2). K = the horizon in future frames (frame stride
config.data.frame_stride on the 20 fps clock).
"""

from __future__ import annotations

from typing import Any, Mapping

import einops
import jax
import jax.numpy as jnp
import numpy as np

from xefm_jax.data import xperience
from xefm_jax.objectives import base
from xefm_jax.objectives import heads

Array = jax.Array
_IDENTITY_6D = np.eye(3, dtype=np.float32)[:, :2].reshape(-1)  # (6,)


def elapsed_seconds(horizon: int, data_config: Any) -> np.ndarray:
  """(K,) seconds from the last context frame to future frames 1..K."""
  stride = data_config.frame_stride * data_config.get("shard_stride", 1)
  return (np.arange(1, horizon + 1) * stride / xperience.FPS).astype(np.float32)


def ego_targets(batch: Mapping[str, Any], horizon: int) -> tuple[Array, Array, Array]:
  """Future camera motion relative to the last context frame.

  Returns translation (B, K, 3) metres in the now body frame, rot6d - I (B, K, 6), and
  validity (B, K). Invalid poses are replaced by the identity before any arithmetic.
  """
  eye = jnp.eye(4, dtype=jnp.float32)
  now_valid = batch["pose_valid"][:, -1]  # (B,)
  now = jnp.where(now_valid[:, None, None], batch["pose"][:, -1].astype(jnp.float32), eye)
  fut_valid = batch["future"]["pose_valid"][:, :horizon]  # (B, K)
  fut = jnp.where(fut_valid[..., None, None],
                  batch["future"]["pose"][:, :horizon].astype(jnp.float32), eye)
  rot_now, t_now = now[:, :3, :3], now[:, :3, 3]  # (B, 3, 3), (B, 3)
  rel_rot = jnp.einsum("bji,bkjl->bkil", rot_now, fut[..., :3, :3])  # R_now^T R_k
  rel_t = jnp.einsum("bji,bkj->bki", rot_now, fut[..., :3, 3] - t_now[:, None])
  rot6d = einops.rearrange(rel_rot[..., :, :2], "b k i j -> b k (i j)") - _IDENTITY_6D
  valid = fut_valid & now_valid[:, None]
  return (jnp.where(valid[..., None], rel_t, 0.0), jnp.where(valid[..., None], rot6d, 0.0),
          valid)


def rotation_from_6d(x: Array) -> Array:
  """(..., 6) first two columns (row-major (3, 2)) -> (..., 3, 3) by Gram-Schmidt."""
  cols = einops.rearrange(x, "... (i j) -> ... j i", i=3, j=2)  # (..., 2, 3)
  a = heads.l2_normalize(cols[..., 0, :])
  b = cols[..., 1, :] - jnp.sum(a * cols[..., 1, :], -1, keepdims=True) * a
  b = heads.l2_normalize(b)
  return jnp.stack([a, b, jnp.cross(a, b)], axis=-1)


def last_hands(batch: Mapping[str, Any]) -> tuple[Array, Array]:
  """The last context frame's hands (B, 2, 21, 3), zero where untracked, and (B, 2)."""
  valid = batch["hands_valid"][:, -1]
  return jnp.where(valid[..., None, None], batch["hands"][:, -1], 0.0), valid


@base.register("forecasting")
class Forecasting(base.Objective):

  def setup(self):
    m = self.model_config
    k = self.horizon
    kw = dict(hidden=self.config.hidden, param_dtype=jnp.dtype(m.param_dtype))
    self.ego_head = heads.MLPHead(k * 9, name="ego", **kw)
    self.hands_head = heads.MLPHead(k * 2 * xperience.NUM_HAND_JOINTS * 3, name="hands", **kw)

  @property
  def horizon(self) -> int:
    future = self.data_config.future
    return min(self.config.horizon or future, future)

  def _forecast(self, ctx: base.Context) -> dict[str, Array]:
    """Raw head outputs in normalised units: ego (B, K, 9) rates, hands (B, K, 2, 21, 3)."""
    x = heads.readout(ctx.out, self.model_config, self.config.readout)  # (B, D) fp32
    ego = einops.rearrange(self.ego_head(x), "b (k f) -> b k f", f=9)
    hands = einops.rearrange(self.hands_head(x), "b (k s j x) -> b k s j x", s=2, x=3,
                             j=xperience.NUM_HAND_JOINTS)
    return {"ego": ego, "hands": hands}

  def _ego_scales(self) -> np.ndarray:
    """(K, 9) normalised rate -> metres and rot6d offsets, per future frame."""
    c = self.config
    dt = elapsed_seconds(self.horizon, self.data_config)[:, None]  # (K, 1)
    return np.concatenate([np.repeat(dt * c.speed_scale, 3, 1),
                           np.repeat(dt * c.turn_scale, 6, 1)], 1).astype(np.float32)

  def __call__(self, ctx: base.Context, *, train: bool) -> tuple[Array, dict[str, Array]]:
    c, k = self.config, self.horizon
    pred = self._forecast(ctx)
    translation, rot6d, ego_valid = ego_targets(ctx.batch, k)
    scales = self._ego_scales()  # (K, 9)
    ego_target = jnp.concatenate([translation, rot6d], -1) / scales  # (B, K, 9)
    ego_loss = heads.regression(pred["ego"], ego_target, ego_valid[..., None], "smooth_l1")
    fut = ctx.batch["future"]
    hands_valid = fut["hands_valid"][:, :k]  # (B, K, 2)
    hands_target = jnp.where(hands_valid[..., None, None], fut["hands"][:, :k], 0.0)
    hands_loss = heads.regression(pred["hands"], hands_target, hands_valid[..., None, None],
                                  "smooth_l1")
    # metres: ADE over valid future frames, FDE at the horizon's last frame
    metres = pred["ego"][..., :3] * scales[:, :3]  # (B, K, 3)
    err = jnp.linalg.norm(metres - translation, axis=-1)  # (B, K)
    joint_err = jnp.linalg.norm(pred["hands"] - hands_target, axis=-1)  # (B, K, 2, 21)
    metrics = {"ego_loss": ego_loss, "hands_loss": hands_loss,
               "ego_ade_m": heads.masked_mean(err, ego_valid),
               "ego_fde_m": heads.masked_mean(err[:, -1], ego_valid[:, -1]),
               "hands_joint_error": heads.masked_mean(joint_err, hands_valid[..., None])}
    loss = (c.ego_weight * ego_loss + c.hands_weight * hands_loss) / (c.ego_weight
                                                                     + c.hands_weight)
    return loss, metrics

  def predict(self, ctx: base.Context) -> dict[str, Array]:
    pred = self._forecast(ctx)
    scaled = pred["ego"] * self._ego_scales()  # (B, K, 9)
    _, _, ego_valid = ego_targets(ctx.batch, self.horizon)
    return {"ego/translation": scaled[..., :3],
            "ego/rotation": rotation_from_6d(scaled[..., 3:] + _IDENTITY_6D),
            "ego/valid": ego_valid,
            "hands": pred["hands"],
            "hands/valid": ctx.batch["future"]["hands_valid"][:, :self.horizon]}
