"""Multi-view video -> tubelet tokens.

All views share one tubelet projection (the six cameras see the same world through similar
optics; sharing keeps the encoder light and lets a view missing at training be handled
by any other); a learned view embedding says which camera a token came from. A missing view
(`video_valid` False) has its pixels replaced by zeros before the projection and its tokens
masked. Frames arrive as uint8 (4x less host-to-device traffic) and are scaled here.

Config (model.modalities.video): tubelet (frames per token), patch (pixels per side).
Tokens: V views x (T / tubelet) x (size / patch)^2, ordered view, time, row, column.
"""

from __future__ import annotations

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from xefm_jax.model import encoders


@encoders.register("video")
class VideoTokenizer(encoders.Tokenizer):
  """(B, V, T, H, W, 3) uint8 + (B, V) view validity -> tubelet Patches."""

  fields = ("video", "video_valid")

  def pixels(self, batch: encoders.Batch) -> tuple[jax.Array, jax.Array]:
    """Frames (B, V, T, H, W, 3) in [-1, 1], zero where a view is missing, and the view
    validity (B, V); the sizes checked against the tubelet and patch sizes."""
    video, valid = batch["video"], batch["video_valid"]  # (B, V, T, H, W, 3), (B, V)
    _, _, t, h, w, _ = video.shape
    encoders.check_divisible("video: frames", t, self.config.tubelet)
    encoders.check_divisible("video: height", h, self.config.patch)
    encoders.check_divisible("video: width", w, self.config.patch)
    x = video.astype(self.dtype) * (2.0 / 255.0) - 1.0  # [-1, 1]
    return jnp.where(valid[:, :, None, None, None, None], x, 0), valid

  @nn.compact
  def __call__(self, batch: encoders.Batch) -> encoders.Patches:
    x, valid = self.pixels(batch)
    tt, p = self.config.tubelet, self.config.patch
    x = einops.rearrange(x, "b v (t tt) (h ph) (w pw) c -> b v t (h w) (tt ph pw c)",
                         tt=tt, ph=p, pw=p)  # (B, V, t, S, tt*p*p*3)
    x = self.embed(x, "patch_embedding", input_axis="patch")  # (B, V, t, S, E)
    return self.tubelets(x, valid)

  def tubelets(self, x: jax.Array, valid: jax.Array) -> encoders.Patches:
    """Token contents (B, V, t, S, E) -> Patches with view and spatial embeddings, masks
    and tubelet centres, ordered view, time, row, column."""
    _, v, num_t, num_s, _ = x.shape
    tt = self.config.tubelet
    position = (self.table("view_embedding", v)[:, None, None, :]
                + self.table("spatial_position", num_s)[None, None, :, :])  # (V, 1, S, E)
    position = jnp.broadcast_to(position, (v, num_t, num_s, self.width))
    mask = jnp.broadcast_to(valid[:, :, None, None], x.shape[:-1])  # (B, V, t, S)
    time = np.broadcast_to(encoders.chunk_centres(num_t, tt)[None, :, None], (v, num_t, num_s))
    return encoders.Patches(
        embeddings=einops.rearrange(x, "b v t s e -> b (v t s) e"),
        mask=einops.rearrange(mask, "b v t s -> b (v t s)"),
        time=time.reshape(-1),
        position=einops.rearrange(position, "v t s e -> (v t s) e"))

  @staticmethod
  def targets(batch: encoders.Batch, config) -> tuple[jax.Array, jax.Array]:
    """Per-tubelet normalised pixels (MAE's norm_pix), (B, V t S, tt p p 3), and weight."""
    valid = batch["video_valid"]  # (B, V)
    x = batch["video"].astype(jnp.float32) * (2.0 / 255.0) - 1.0  # (B, V, T, H, W, 3)
    x = jnp.where(valid[:, :, None, None, None, None], x, 0.0)
    x = einops.rearrange(x, "b v (t tt) (h ph) (w pw) c -> b (v t h w) (tt ph pw c)",
                         tt=config.tubelet, ph=config.patch, pw=config.patch)
    weight = jnp.repeat(valid, x.shape[1] // valid.shape[1], axis=1)[..., None]  # (B, n, 1)
    weight = jnp.broadcast_to(weight, x.shape)
    return encoders.normalise_patches(x, weight), weight
