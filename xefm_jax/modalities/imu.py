"""IMU -> 1-D patch tokens over time.

Each token covers `frames_per_token` context frames of accelerometer and gyroscope samples
(IMU_PER_FRAME x frame_stride samples per frame, 6 channels, already normalised by the
pipeline), flattened with a per-frame validity flag so a dropped frame never reads as a
sensor at rest.

Config (model.modalities.imu): frames_per_token. Tokens: T / frames_per_token.
"""

from __future__ import annotations

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from xefm_jax.model import encoders


@encoders.register("imu")
class IMUTokenizer(encoders.Tokenizer):
  """(B, T, S, 6) + (B, T) validity -> one token per chunk of frames."""

  fields = ("imu", "imu_valid")

  @nn.compact
  def __call__(self, batch: encoders.Batch) -> encoders.Patches:
    imu = einops.rearrange(batch["imu"], "b t s c -> b t (s c)")  # (B, T, S*6)
    chunks, mask, time = encoders.frame_chunks(imu, batch["imu_valid"],
                                           self.config.frames_per_token, "imu")
    return encoders.Patches(self.embed(chunks, "imu_embedding"), mask, time)  # (B, t, E)

  @staticmethod
  def targets(batch: encoders.Batch, config) -> tuple[jax.Array, jax.Array]:
    """The normalised samples of each chunk, (B, t, c S 6), and weight (valid frames)."""
    valid = batch["imu_valid"]  # (B, T)
    x = einops.rearrange(batch["imu"].astype(jnp.float32), "b t s c -> b t (s c)")
    x = jnp.where(valid[..., None], x, 0.0)
    weight = jnp.broadcast_to(valid[..., None], x.shape)
    c = config.frames_per_token
    return encoders.chunk_frames(x, c), encoders.chunk_frames(weight, c)
