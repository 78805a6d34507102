"""The toy magnetometer's tokenizer (tests/toy_magnetometer_stream.py), added by a test only:
one token per chunk of frames of the 3 normalised channels, with a per-frame validity flag."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from xefm_jax.model import encoders


@encoders.register("magnetometer")
class MagnetometerTokenizer(encoders.Tokenizer):
  """(B, T, 3) + (B, T) validity -> one token per chunk of frames."""

  fields = ("magnetometer", "magnetometer_valid")

  @nn.compact
  def __call__(self, batch: encoders.Batch) -> encoders.Patches:
    chunks, mask, time = encoders.frame_chunks(batch["magnetometer"],
                                               batch["magnetometer_valid"],
                                               self.config.frames_per_token, "magnetometer")
    return encoders.Patches(self.embed(chunks, "magnetometer_embedding"), mask, time)

  @staticmethod
  def targets(batch: encoders.Batch, config) -> tuple[jax.Array, jax.Array]:
    """The normalised channels of each chunk, (B, t, c 3), and weight (valid frames)."""
    valid = batch["magnetometer_valid"]  # (B, T)
    x = jnp.where(valid[..., None], batch["magnetometer"].astype(jnp.float32), 0.0)
    weight = jnp.broadcast_to(valid[..., None], x.shape)
    c = config.frames_per_token
    return encoders.chunk_frames(x, c), encoders.chunk_frames(weight, c)
