"""The temporal fusion transformer: all modalities' tokens and the readouts in one sequence.

Each token gets a learned modality embedding and a sinusoidal embedding of its time (in
context frames, shared by every modality, so "frame 7 of the video" and "frame 7 of the IMU"
line up). Readout tokens (Octo) are learned queries appended to the sequence: they attend
to every valid token, and no token attends to them, so adding or changing heads never
changes the fused tokens. One combined boolean mask carries padding, missing streams,
dropped modalities and the readout rule (per-token flags: `layers.attention_mask`).

This is where most parameters live: the window's token count, not encoder depth, sets the
cost.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from xefm_jax.model import layers
from xefm_jax.model.tokens import TokenGroup
from xefm_jax.model.transformer import TransformerStack

Array = jax.Array


class FusionTransformer(nn.Module):
  """groups {modality: TokenGroup (B, n_m, D)} -> (fused groups, readouts {name: (B, r, D)}).

  config: config.model.fusion (a transformer config plus `readouts` {name: count} and
    `time_max_period`).
  modalities: every configured modality in id order (rows of the modality embedding), so a
    modality keeps its id whichever subset a call passes.
  """

  config: ml_collections.ConfigDict
  modalities: tuple[str, ...]
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  attention: str | None = None

  @nn.compact
  def __call__(self, groups: Mapping[str, TokenGroup], deterministic: bool = True
               ) -> tuple[dict[str, TokenGroup], dict[str, Array]]:
    cfg = self.config
    names = tuple(groups)
    batch, width = groups[names[0]].tokens.shape[0], groups[names[0]].tokens.shape[-1]
    modality_table = layers.learned_table(self, "modality_embedding", len(self.modalities),
                                          width, self.param_dtype).astype(self.dtype)
    xs, valid = [], []
    for name in names:
      g = groups[name]
      time = jnp.broadcast_to(g.time, g.mask.shape)  # (B, n)
      xs.append(g.tokens.astype(self.dtype) + modality_table[self.modalities.index(name)]
                + layers.sinusoidal_embedding(time, width, cfg.time_max_period
                                              ).astype(self.dtype))
      valid.append(g.mask)
    sizes = [x.shape[1] for x in xs]
    readouts = dict(cfg.readouts)  # {name: count}, sorted by name
    for name, count in readouts.items():
      table = layers.learned_table(self, f"readout_{name}", count, width, self.param_dtype)
      xs.append(jnp.broadcast_to(table.astype(self.dtype)[None], (batch, count, width)))
      valid.append(jnp.ones((batch, count), jnp.bool_))
    num_tokens = sum(sizes)
    attendable = np.arange(num_tokens + sum(readouts.values())) < num_tokens  # (L,)
    x = layers.constrain(jnp.concatenate(xs, axis=1), layers.ACTIVATION)  # (B, L, D)
    valid = jnp.concatenate(valid, axis=1)  # (B, L)
    mask = layers.attention_mask(valid, attendable)  # readable: valid, not readouts
    x = TransformerStack(cfg, dtype=self.dtype, param_dtype=self.param_dtype,
                         attention=self.attention, name="transformer")(x, mask, deterministic)
    x = layers.make_norm(cfg.norm, dtype=self.dtype, param_dtype=self.param_dtype,
                         name="final_norm")(x)
    x = layers.constrain(x, layers.ACTIVATION)
    pieces = jnp.split(x, np.cumsum(sizes + list(readouts.values()))[:-1], axis=1)
    fused = {
        name: TokenGroup(jnp.where(groups[name].mask[..., None], piece, 0),
                         groups[name].mask, groups[name].time)
        for name, piece in zip(names, pieces)}
    return fused, dict(zip(readouts, pieces[len(names):]))
