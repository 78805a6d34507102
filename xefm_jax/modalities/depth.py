"""Depth + confidence -> tubelet tokens conditioned on the camera intrinsics.

Depth is metric and its meaning depends on the camera: the same pixel offset is a different
angle under another focal length. The four normalised intrinsics (fx/w, fy/h, cx/w, cy/h)
are projected and added to every token's position, so the encoder can tell cameras apart
and a hidden token still knows the geometry it sits in.

Config (model.modalities.depth): tubelet (frames per token), patch (pixels per side).
Tokens: (T / tubelet) x (size / patch)^2, ordered time, row, column.
"""

from __future__ import annotations

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from xefm_jax.model import encoders


@encoders.register("depth")
class DepthTokenizer(encoders.Tokenizer):
  """(B, T, H, W) depth and confidence, (B, T) validity, (B, 4) intrinsics -> Patches."""

  fields = ("depth", "depth_confidence", "depth_valid", "depth_intrinsics")

  @nn.compact
  def __call__(self, batch: encoders.Batch) -> encoders.Patches:
    valid = batch["depth_valid"]  # (B, T)
    x = jnp.stack([batch["depth"], batch["depth_confidence"]], axis=-1)  # (B, T, H, W, 2)
    _, t, h, w, _ = x.shape
    tt, p = self.config.tubelet, self.config.patch
    encoders.check_divisible("depth: frames", t, tt)
    encoders.check_divisible("depth: height", h, p)
    encoders.check_divisible("depth: width", w, p)
    x = jnp.where(valid[:, :, None, None, None], x, 0)
    x = einops.rearrange(x, "b (t tt) (h ph) (w pw) c -> b t (h w) (tt ph pw c)",
                         tt=tt, ph=p, pw=p)  # (B, t, S, tt*p*p*2)
    flags = einops.rearrange(valid.astype(x.dtype), "b (t tt) -> b t 1 tt", tt=tt)
    flags = jnp.broadcast_to(flags, x.shape[:-1] + (tt,))  # (B, t, S, tt)
    x = self.embed(jnp.concatenate([x, flags], axis=-1), "patch_embedding", input_axis="patch")
    num_t, num_s = t // tt, (h // p) * (w // p)
    intrinsics = jnp.where(valid.any(axis=1, keepdims=True), batch["depth_intrinsics"], 0)
    camera = self.embed(intrinsics, "intrinsics_embedding")  # (B, E)
    position = (self.table("spatial_position", num_s)[None, None, :, :]
                + camera[:, None, None, :])  # (B, 1, S, E)
    position = jnp.broadcast_to(position, x.shape)  # (B, t, S, E)
    mask = einops.reduce(valid, "b (t tt) -> b t", "max", tt=tt)  # (B, t)
    mask = jnp.broadcast_to(mask[:, :, None], (mask.shape[0], num_t, num_s))
    time = np.repeat(encoders.chunk_centres(num_t, tt), num_s)
    return encoders.Patches(einops.rearrange(x, "b t s e -> b (t s) e"),
                        einops.rearrange(mask, "b t s -> b (t s)"), time,
                        einops.rearrange(position, "b t s e -> b (t s) e"))

  @staticmethod
  def targets(batch: encoders.Batch, config) -> tuple[jax.Array, jax.Array]:
    """Per-tubelet normalised depth of the valid frames, (B, t S, tt p p), and weight."""
    valid = batch["depth_valid"]  # (B, T)
    x = jnp.where(valid[:, :, None, None], batch["depth"].astype(jnp.float32), 0.0)
    v = jnp.broadcast_to(valid[:, :, None, None], x.shape)  # (B, T, H, W)
    pattern = "b (t tt) (h ph) (w pw) -> b (t h w) (tt ph pw)"
    kw = dict(tt=config.tubelet, ph=config.patch, pw=config.patch)
    x, weight = einops.rearrange(x, pattern, **kw), einops.rearrange(v, pattern, **kw)
    return encoders.normalise_patches(x, weight), weight
