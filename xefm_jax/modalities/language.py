"""Caption token ids -> a small bidirectional text encoder's tokens.

The caption describes the whole window, so every caption token is placed at the window's
centre in time; word order comes from a learned position table. The vocabulary size comes
from the config, which the manifest fills (config.data.vocab_size); the table is padded to a
multiple of 128 rows so that it shards evenly over any tensor axis.

Config (model.modalities.language): vocab_size, window_centre ((frames - 1) / 2, linked to
config.data). Tokens: caption_len; PAD tokens and invalid captions are masked.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from xefm_jax.data.spec import PAD_ID
from xefm_jax.model import layers
from xefm_jax.model import encoders

VOCAB_MULTIPLE = 128


def padded_vocab_size(vocab_size: int) -> int:
  return -(-vocab_size // VOCAB_MULTIPLE) * VOCAB_MULTIPLE


@encoders.register("language")
class LanguageTokenizer(encoders.Tokenizer):
  """(B, L) int32 caption ids + (B,) validity -> one token per word."""

  fields = ("caption", "caption_valid")

  @nn.compact
  def __call__(self, batch: encoders.Batch) -> encoders.Patches:
    ids, valid = batch["caption"], batch["caption_valid"]  # (B, L), (B,)
    mask = (ids != PAD_ID) & valid[:, None]  # (B, L)
    ids = jnp.where(mask, ids, PAD_ID)
    x = layers.Embed(padded_vocab_size(self.config.vocab_size), self.width, dtype=self.dtype,
                     param_dtype=self.param_dtype, name="token_embedding")(ids)  # (B, L, E)
    length = ids.shape[1]
    time = np.full((length,), self.config.window_centre, np.float32)
    return encoders.Patches(x, mask, time, self.table("word_position", length))

  @staticmethod
  def targets(batch: encoders.Batch, config) -> tuple[jax.Array, jax.Array]:
    """The caption's word ids (B, L) (cross-entropy targets) and weight (B, L)."""
    ids = batch["caption"]  # (B, L)
    valid = (ids != PAD_ID) & batch["caption_valid"][:, None]
    return jnp.where(valid, ids, PAD_ID), valid
