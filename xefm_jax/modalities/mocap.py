"""Hand and body motion capture -> three tokens per time chunk: left hand, right hand, body.

A hand is its wrist position (camera frame) plus its 20 other joints relative to the wrist:
the articulation (grasp) is then separate from where the hand is, and a tracking glitch of
the wrist does not move every joint feature. Both hands share one projection and differ by a
learned part embedding; each hand and the body have their own validity, so an untracked hand
is masked without hiding the other.

Config (model.modalities.mocap): frames_per_token. Tokens: 3 x T / frames_per_token,
ordered time, then (left, right, body).
"""

from __future__ import annotations

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from xefm_jax.model import encoders

HAND_FEATURES = 21 * 3
BODY_FEATURES = 52 * 3


@encoders.register("mocap")
class MocapTokenizer(encoders.Tokenizer):
  """hands (B, T, 2, 21, 3), hands_valid (B, T, 2), body (B, T, 52, 3), body_valid (B, T)."""

  fields = ("hands", "hands_valid", "body", "body_valid")

  @nn.compact
  def __call__(self, batch: encoders.Batch) -> encoders.Patches:
    c = self.config.frames_per_token
    hands, hands_valid = batch["hands"], batch["hands_valid"]
    hands = jnp.where(hands_valid[..., None, None], hands, 0)  # NaN-safe before the subtraction
    wrist = hands[..., 0, :]  # (B, T, 2, 3)
    fingers = hands[..., 1:, :] - wrist[..., None, :]  # (B, T, 2, 20, 3)
    hand = jnp.concatenate(
        [wrist, einops.rearrange(fingers, "b t s j x -> b t s (j x)")], axis=-1)  # (.., 63)
    hand, hand_mask, time = encoders.frame_chunks(hand, hands_valid, c, "mocap hands")
    hand = self.embed(hand, "hand_embedding")  # (B, t, 2, E)
    body = einops.rearrange(batch["body"], "b t k x -> b t (k x)")  # (B, T, 156)
    body, body_mask, _ = encoders.frame_chunks(body, batch["body_valid"], c, "mocap body")
    body = self.embed(body, "body_embedding")  # (B, t, E)
    x = jnp.concatenate([hand, body[:, :, None]], axis=2)  # (B, t, 3, E)
    mask = jnp.concatenate([hand_mask, body_mask[:, :, None]], axis=2)  # (B, t, 3)
    num_t = x.shape[1]
    position = jnp.broadcast_to(self.table("part_embedding", 3)[None],
                                (num_t, 3, self.width))  # (t, 3, E)
    return encoders.Patches(einops.rearrange(x, "b t p e -> b (t p) e"),
                        einops.rearrange(mask, "b t p -> b (t p)"),
                        np.repeat(time, 3),
                        einops.rearrange(position, "t p e -> (t p) e"))

  @staticmethod
  def targets(batch: encoders.Batch, config) -> tuple[jax.Array, jax.Array]:
    """Per chunk and part (left, right, body): the hands in the pipeline's normalised layout
    (63 features, zero-padded to the body's 156) or the body keypoints, (B, t 3, c 156), and
    weight."""
    hv, bv = batch["hands_valid"], batch["body_valid"]  # (B, T, 2), (B, T)
    hands = jnp.where(hv[..., None, None], batch["hands"].astype(jnp.float32), 0.0)
    hands = einops.rearrange(hands, "b t s j x -> b t s (j x)")  # (B, T, 2, 63)
    hands = jnp.pad(hands, ((0, 0), (0, 0), (0, 0), (0, BODY_FEATURES - HAND_FEATURES)))
    body = jnp.where(bv[..., None, None], batch["body"].astype(jnp.float32), 0.0)
    body = einops.rearrange(body, "b t k x -> b t 1 (k x)")  # (B, T, 1, 156)
    x = jnp.concatenate([hands, body], axis=2)  # (B, T, 3, 156): left, right, body
    is_hand_feature = np.arange(BODY_FEATURES) < HAND_FEATURES
    weight = jnp.concatenate(
        [hv[..., None] & is_hand_feature, jnp.broadcast_to(bv[:, :, None, None], body.shape)],
        axis=2)
    pattern = "b (t c) p f -> b (t p) (c f)"
    c = config.frames_per_token
    return (einops.rearrange(x, pattern, c=c), einops.rearrange(weight, pattern, c=c))
