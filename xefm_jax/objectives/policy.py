"""Policy-style targets: chunks of actions in the hand action space (Octo / ACT action heads).

Why: a model that will be fine-tuned into a policy should already map a window to "what the
hands do next" in the action space the policy exports (RLDS, LeRobot) hand to downstream
teams, not only to labels. The target IS that action space (xefm_jax/data/actions.py, one
definition, evaluated here with jax.numpy): per step and hand, the wrist translation delta
(3, m, camera frame), the wrist rotation delta R_b R_a^T (rotation vector, rad, or rot6d, per
config.data.actions.rotation) and the finger joints at the step's end in the wrist frame
(m); `chunk` steps of `step` corpus frames each (config.data.actions), the first starting at
now (the last context frame). Predicting the whole chunk at once (Zhao et al. 2023's action
chunking) from dedicated `readout` tokens (the window embedding where the model has none)
keeps the policy head off the fused tokens the other objectives read.

Metres, not the pipeline's normalised layout: the batch's hands are normalised per axis
(wrist (w - mean) / std of the manifest's `wrist`, joints 1..20 wrist-relative / the
`hands_local` std, two different anisotropic scales). The wrist frame is built from cross
products and unit vectors of joint differences, which an anisotropic scaling does not
preserve (angles change, and the wrist and the fingers are scaled differently), and its
validity thresholds are in millimetres; so the frames are built in metres, converted back
in-graph with the same manifest train statistics the pipeline applied
(pipeline.Normaliser.hands_to_metres; config.data.hand_stats, copied from the manifest by
train.loop.with_corpus_sizes). Only the stds matter (every quantity is a difference of
positions), but the full inverse is applied.

Future frames are config.data.frame_stride stored frames apart, so `step` must be a multiple
of it and the chunk must fit in config.data.future; otherwise the objective refuses the
config.

Normalisation of the loss target (fixed per-dimension scales, no statistics read at train
time; config.objectives.policy): translation delta / (speed_scale m/s x dt), rotation delta
(rotvec, or rot6d minus the identity's) / (turn_scale rad/s x dt), fingers / finger_scale m,
with dt = step / fps the seconds per step. The action space's train statistics
(actions.compute_stats) read every train episode, which the training job does not do; the
per-dimension mean is left to the head's output bias.

Tracking gaps exactly as actions.py: a hand's step is valid when the hand is tracked with a
non-degenerate wrist frame at both ends; invalid entries are zero and out of the loss. Loss:
L1 (or smooth-L1, `loss`) over valid entries.

predict(): action (B, K, Da) in the action space's units (de-normalised), chunk (B, K, Da)
the head's normalised output, valid (B, K, 2) the per-hand step validity of the true chunk.
"""

from __future__ import annotations

from typing import Any, Mapping

import einops
import jax
import jax.numpy as jnp
import numpy as np

from xefm_jax.data import actions as actions_lib
from xefm_jax.data import pipeline
from xefm_jax.objectives import base
from xefm_jax.objectives import heads

Array = jax.Array


def action_space(data_config: Any) -> actions_lib.ActionSpace:
  return actions_lib.ActionSpace.from_config(data_config.actions)


def future_frames(data_config: Any) -> tuple[int, int]:
  """(chunk K, future frames per action step r): action k ends at future frame k r (1-based)."""
  space = action_space(data_config)
  stride = int(data_config.frame_stride)
  if space.step % stride:
    raise actions_lib.ActionError(
        f"config.data.actions.step {space.step} is not a multiple of config.data.frame_stride "
        f"{stride}: the window's future frames hold no frame at the end of every step")
  r = space.step // stride
  if space.chunk * r > data_config.future:
    raise actions_lib.ActionError(
        f"config.data.actions: chunk {space.chunk} x step {space.step} frames needs "
        f"{space.chunk * r} future frames, config.data.future is {data_config.future}")
  return space.chunk, r


def normaliser(data_config: Any) -> pipeline.Normaliser:
  """The pipeline's Normaliser over the manifest's hand statistics in config.data.hand_stats."""
  stats = data_config.get("hand_stats")
  if stats is None:
    raise actions_lib.ActionError(
        "config.data.hand_stats is not set: the policy objective converts the batch's "
        "normalised hands to metres with the manifest's train statistics (wrist, "
        "hands_local); train.loop.with_corpus_sizes copies them from the corpus")
  return pipeline.Normaliser({k: {"mean": stats[k]["mean"], "std": stats[k]["std"]}
                              for k in ("wrist", "hands_local")})


def action_targets(batch: Mapping[str, Any], data_config: Any) -> tuple[Array, Array]:
  """The true action chunk (B, K, 2, Dh) in the action space's units, zero where invalid,
  and its validity (B, K, 2), from the batch's current and future hands."""
  space = action_space(data_config)
  k, r = future_frames(data_config)
  norm = normaliser(data_config)
  fut = batch["future"]
  idx = np.arange(1, k + 1) * r - 1  # future frame at the end of each step
  ends = norm.hands_to_metres(fut["hands"][:, idx].astype(jnp.float32))  # (B, K, 2, 21, 3)
  ends_ok = fut["hands_valid"][:, idx]  # (B, K, 2)
  now = norm.hands_to_metres(batch["hands"][:, -1:].astype(jnp.float32))  # (B, 1, 2, 21, 3)
  # the poses of now and every step's end once; step k runs from pose k to pose k + 1
  R, p, f, ok = actions_lib.hand_poses(
      space, jnp.concatenate([now, ends], 1),
      jnp.concatenate([batch["hands_valid"][:, -1:], ends_ok], 1), jnp)
  act, ok = actions_lib.step_actions(space, R[:, :-1], p[:, :-1], ok[:, :-1], R[:, 1:],
                                     p[:, 1:], f[:, 1:], ok[:, 1:], jnp)
  return jax.lax.stop_gradient(act), ok


@base.register("policy")
class Policy(base.Objective):

  def setup(self):
    self.space = action_space(self.data_config)
    self.chunk, _ = future_frames(self.data_config)
    self.head = heads.MLPHead(self.chunk * self.space.action_dim, hidden=self.config.hidden,
                              param_dtype=jnp.dtype(self.model_config.param_dtype))

  def _scales(self) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension offset and scale (Dh,) of one hand's action (module docstring)."""
    c, s = self.config, self.space
    dt = 1.0 / s.rate_hz
    nrot = actions_lib.ROTATIONS[s.rotation]
    offset = np.zeros(s.hand_action_dim, np.float32)
    if s.rotation == "rot6d":
      offset[3:9] = actions_lib.rot6d(np.eye(3))
    scale = np.concatenate([np.full(3, c.speed_scale * dt), np.full(nrot, c.turn_scale * dt),
                            np.full(3 * len(s.joints), c.finger_scale)]).astype(np.float32)
    return offset, scale

  def _chunk(self, ctx: base.Context) -> Array:
    x = heads.readout(ctx.out, self.model_config, self.config.readout)  # (B, D) fp32
    return einops.rearrange(self.head(x), "b (k h d) -> b k h d", k=self.chunk, h=2)

  def __call__(self, ctx: base.Context, *, train: bool) -> tuple[Array, dict[str, Array]]:
    pred = self._chunk(ctx)  # (B, K, 2, Dh) normalised
    act, valid = action_targets(ctx.batch, self.data_config)
    offset, scale = self._scales()
    target = jnp.where(valid[..., None], (act - offset) / scale, 0.0)
    mask = valid[..., None]
    loss = heads.regression(pred, target, mask, self.config.loss)
    r = 3 + actions_lib.ROTATIONS[self.space.rotation]
    metres = pred[..., :3] * scale[:3]
    return loss, {
        "translation_l1": heads.regression(pred[..., :3], target[..., :3], mask, "l1"),
        "rotation_l1": heads.regression(pred[..., 3:r], target[..., 3:r], mask, "l1"),
        "fingers_l1": heads.regression(pred[..., r:], target[..., r:], mask, "l1"),
        "translation_error_m": heads.masked_mean(
            jnp.linalg.norm(metres - act[..., :3], axis=-1), valid),
        "valid_fraction": jnp.mean(valid.astype(jnp.float32))}

  def predict(self, ctx: base.Context) -> dict[str, Array]:
    pred = self._chunk(ctx)
    offset, scale = self._scales()
    _, valid = action_targets(ctx.batch, self.data_config)
    b = pred.shape[0]
    return {"action": (pred * scale + offset).reshape(b, self.chunk, -1),
            "chunk": pred.reshape(b, self.chunk, -1), "valid": valid}
