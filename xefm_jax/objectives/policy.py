"""Policy-style targets: action chunks of the wrists and fingers (Octo / ACT action heads).

Why: a model that will be fine-tuned into a policy should already map a window to "what the
hands do next" in an action space, not only to labels. The action space is the hands
themselves: for the next K future frames, each wrist's displacement from its position at
now (the last context frame) and the finger joints relative to their wrist. Predicting the
whole chunk at once (Zhao et al. 2023's action chunking) from dedicated `readout` tokens (the
window embedding where the model has none) keeps the policy head off the fused tokens that
the other objectives read.

Normalisation (exactly the pipeline's, i.e. the manifest's train-split statistics; no
other scale is applied):
  wrist    (w_{t+k} - w_t) / std_wrist, per axis: the difference of the pipeline's
           normalised wrists (index 0 of `hands`, (w - mean_wrist) / std_wrist), so the
           mean cancels and the unit is one train-split wrist std per axis;
  fingers  joints 1..20 of future/hands as they are: (j - w_{t+k}) / std_hands_local.
Valid where the hand is tracked both at now and at frame t + k (per hand and frame). Loss:
L1 (or smooth-L1, `loss`) over valid entries. The head predicts the whole chunk from its
readout (no residual on now's fingers from the batch: the readout, part of the window
embedding, must itself hold the grasp).

predict(): chunk (B, K, 2, 21, 3) in the layout above ([..., 0, :] the normalised wrist
displacement, [..., 1:, :] the fingers), hands (B, K, 2, 21, 3) the same chunk in the
pipeline's normalised `hands` layout (wrist = now's wrist + displacement), valid (B, K, 2).
"""

from __future__ import annotations

from typing import Any, Mapping

import einops
import jax
import jax.numpy as jnp

from xefm_jax.data import xperience
from xefm_jax.objectives import base
from xefm_jax.objectives import heads
from xefm_jax.objectives.forecasting import last_hands

Array = jax.Array


def action_chunk(batch: Mapping[str, Any], chunk: int) -> tuple[Array, Array]:
  """Target chunk (B, K, 2, 21, 3) and validity (B, K, 2) (see the module docstring)."""
  now, now_valid = last_hands(batch)  # (B, 2, 21, 3), (B, 2)
  fut = batch["future"]
  valid = fut["hands_valid"][:, :chunk] & now_valid[:, None]  # (B, K, 2)
  hands = jnp.where(valid[..., None, None], fut["hands"][:, :chunk], 0.0)
  wrist = hands[..., :1, :] - now[:, None, :, :1, :]  # (B, K, 2, 1, 3)
  target = jnp.concatenate([wrist, hands[..., 1:, :]], axis=-2)
  return jnp.where(valid[..., None, None], target, 0.0), valid


@base.register("policy")
class Policy(base.Objective):

  def setup(self):
    self.head = heads.MLPHead(self.chunk * 2 * xperience.NUM_HAND_JOINTS * 3,
                              hidden=self.config.hidden,
                              param_dtype=jnp.dtype(self.model_config.param_dtype))

  @property
  def chunk(self) -> int:
    return min(self.config.chunk, self.data_config.future)

  def _chunk(self, ctx: base.Context) -> Array:
    x = heads.readout(ctx.out, self.model_config, self.config.readout)  # (B, D) fp32
    return einops.rearrange(self.head(x), "b (k s j x) -> b k s j x", s=2, x=3,
                            j=xperience.NUM_HAND_JOINTS)  # (B, K, 2, 21, 3)

  def __call__(self, ctx: base.Context, *, train: bool) -> tuple[Array, dict[str, Array]]:
    pred = self._chunk(ctx)
    target, valid = action_chunk(ctx.batch, self.chunk)
    mask = valid[..., None, None]
    loss = heads.regression(pred, target, mask, self.config.loss)
    wrist_err = jnp.linalg.norm(pred[..., 0, :] - target[..., 0, :], axis=-1)  # (B, K, 2)
    return loss, {
        "wrist_l1": heads.regression(pred[..., :1, :], target[..., :1, :], mask, "l1"),
        "fingers_l1": heads.regression(pred[..., 1:, :], target[..., 1:, :], mask, "l1"),
        "final_wrist_error": heads.masked_mean(wrist_err[:, -1], valid[:, -1]),
        "valid_fraction": jnp.mean(valid.astype(jnp.float32))}

  def predict(self, ctx: base.Context) -> dict[str, Array]:
    pred = self._chunk(ctx)
    now, _ = last_hands(ctx.batch)
    hands = jnp.concatenate([pred[..., :1, :] + now[:, None, :, :1, :], pred[..., 1:, :]],
                            axis=-2)
    _, valid = action_chunk(ctx.batch, self.chunk)
    return {"chunk": pred, "hands": hands, "valid": valid}
