"""What every modality shares: the tokenizer contract, the registry and the encoder wrapper.

A modality is one file in xefm_jax/modalities/ that defines a `Tokenizer` subclass decorated
with `@register("<name>")`, plus one entry under `config.model.modalities.<name>`. This file
lives with the model (the model builds a `ModalityEncoder` per configured modality) and
imports no modality: the registry imports `xefm_jax.modalities.<name>` on first use, so
imports point modalities -> model only. The file's job
is the modality-specific part (reading its fields of the window, patching, the input
projection, intra-modality positions, and `targets`: what its tokens are reconstructed to,
token for token, so a change of the token layout cannot misalign masked modeling);
`ModalityEncoder` does the rest the same way for all: masking, time embedding, the light
unimodal transformer and the projection to the fusion width.

Masked inputs have no influence: tokenizers replace masked values with zeros using
`jnp.where` before any arithmetic (so NaN runs in tracking cannot leak either), token masks
exclude them from attention, pooling is a masked mean, and norms are per token.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import einops
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from xefm_jax import registry
from xefm_jax.model import layers
from xefm_jax.model.tokens import TokenGroup
from xefm_jax.model.transformer import TransformerStack

Array = jax.Array
Batch = Mapping[str, Any]


@flax.struct.dataclass
class Patches:
  """A tokenizer's output at the encoder width E, before the shared encoder.

  embeddings: (B, n, E) content of each token (what a hidden token must not reveal).
  position: (n, E) or (B, n, E) intra-modality position (view, patch, body part, camera
    intrinsics): kept for hidden tokens, so a masked-modeling target knows where it is.
  mask: (B, n) bool validity.
  time: (n,) or (B, n) token centre in context frames.
  """

  embeddings: Array
  mask: Array
  time: Array
  position: Array | float = 0.0


class Tokenizer(nn.Module):
  """Base of the per-modality tokenizers: `__call__(batch) -> Patches`.

  config: the modality's config entry (patch sizes etc.); width: the encoder width E.
  fields: the window fields (xefm_jax/data/spec.py) the tokenizer reads.
  """

  fields: ClassVar[tuple[str, ...]] = ()
  config: ml_collections.ConfigDict
  width: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def embed(self, x: Array, name: str, input_axis: str = "input") -> Array:
    """Linear projection of flattened input features (..., F) -> (..., E)."""
    return layers.DenseGeneral(self.width, (input_axis, "embed"), use_bias=True,
                               dtype=self.dtype, param_dtype=self.param_dtype, name=name)(x)

  def table(self, name: str, rows: int) -> Array:
    """A learned (rows, E) position table in the compute dtype."""
    return layers.learned_table(self, name, rows, self.width, self.param_dtype).astype(self.dtype)

  @staticmethod
  def targets(batch: Batch, config: ml_collections.ConfigDict) -> tuple[Array, Array]:
    """What each token is reconstructed to (masked modeling), in the token order of
    `__call__`: target (B, n, P) fp32 (or int32 ids (B, n)) and weight (B, n, P) bool (or
    (B, n)), the valid elements. Masked values are zeroed before any arithmetic."""
    raise NotImplementedError


TOKENIZERS: registry.Registry = registry.Registry("modality", "xefm_jax.modalities")
register = TOKENIZERS.register
get_tokenizer = TOKENIZERS.get
registered = TOKENIZERS.names


def check_divisible(what: str, size: int, by: int) -> None:
  if size % by:
    raise ValueError(f"{what} = {size} is not divisible by {by}: change the patch/chunk size "
                     "in config.model.modalities or the window size in config.data")


def chunk_centres(num_chunks: int, frames_per_chunk: int) -> np.ndarray:
  """(num_chunks,) centre, in frames, of consecutive chunks of frames_per_chunk frames."""
  return (np.arange(num_chunks) * frames_per_chunk
          + (frames_per_chunk - 1) / 2).astype(np.float32)


def normalise_patches(x: Array, weight: Array, eps: float = 1e-6) -> Array:
  """Per-token mean/std normalisation over the valid elements of the last axis (MAE's
  norm_pix reconstruction target); invalid elements are zero."""
  w = weight.astype(jnp.float32)
  n = jnp.maximum(jnp.sum(w, -1, keepdims=True), 1.0)
  mean = jnp.sum(x * w, -1, keepdims=True) / n
  var = jnp.sum(jnp.square(x - mean) * w, -1, keepdims=True) / n
  return jnp.where(weight, (x - mean) * jax.lax.rsqrt(var + eps), 0.0)


def chunk_frames(x: Array, frames_per_token: int) -> Array:
  """(B, T, F) per-frame features -> (B, T / c, c * F): the frame chunks of one token."""
  return einops.rearrange(x, "b (t c) f -> b t (c f)", c=frames_per_token)


def frame_chunks(x: Array, valid: Array, frames_per_token: int, what: str
                 ) -> tuple[Array, Array, np.ndarray]:
  """Per-frame features -> one feature vector per chunk of frames, with validity flags.

  x: (B, T, *S, F) per-frame features; valid: (B, T, *S) per-frame validity.
  Returns chunks (B, t, *S, c * (F + 1)) where t = T / c, the invalid frames zeroed and a
  validity flag appended to every frame (a zeroed frame must not read as a real zero
  reading), mask (B, t, *S) = any frame of the chunk valid, and time (t,) chunk centres.
  """
  c = frames_per_token
  check_divisible(f"{what}: frames", x.shape[1], c)
  flag = valid.astype(x.dtype)[..., None]  # (B, T, *S, 1)
  x = jnp.concatenate([jnp.where(valid[..., None], x, 0), flag], axis=-1)  # (B, T, *S, F+1)
  chunks = einops.rearrange(x, "b (t c) ... f -> b t ... (c f)", c=c)
  mask = einops.reduce(valid, "b (t c) ... -> b t ...", "max", c=c)
  return chunks, mask, chunk_centres(x.shape[1] // c, c)


class ModalityEncoder(nn.Module):
  """Tokenizer -> + position + time -> unimodal stack over visible tokens -> fusion width.

  Returns the modality's TokenGroup (tokens at the fusion width `width`; its mask says which
  tokens exist), the pooled unimodal embedding (B, width), a masked mean over the visible
  tokens, and the visible mask (B, n) the trunk attends with.

  keep: (B, n) bool or None. False hides a token for masked modeling, the MAE way: a hidden
    token is neither a key nor a query of any attention in the trunk (its output is zeroed),
    so the trunk computes exactly what it would for a window without that token; the
    masked-modeling decoder adds mask queries at the hidden positions.
  drop: (B,) bool or None. True removes the whole modality of that sample (modality
    dropout): every token becomes invalid.
  """

  config: ml_collections.ConfigDict
  width: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  attention: str | None = None
  time_max_period: float = 10_000.0  # frames; config.model.fusion.time_max_period

  @nn.compact
  def __call__(self, batch: Batch, keep: Array | None = None, drop: Array | None = None,
               deterministic: bool = True) -> tuple[TokenGroup, Array, Array]:
    cfg = self.config
    enc = cfg.encoder
    numerics = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    tokenizer = get_tokenizer(cfg.get("tokenizer", None) or self.name)
    if missing := [f for f in tokenizer.fields if f not in batch]:
      raise KeyError(f"modality {self.name!r} reads window fields {tokenizer.fields}; the batch "
                     f"lacks {missing} (the contract is xefm_jax/data/spec.py)")
    p = tokenizer(config=cfg, width=enc.width, name="tokenizer", **numerics)(batch)
    mask = p.mask  # (B, n) the token exists
    if drop is not None:
      mask = mask & ~drop[:, None]
    visible = mask
    if keep is not None:
      if keep.shape != mask.shape:
        raise ValueError(f"{self.name}: keep mask {keep.shape} != token mask {mask.shape}")
      visible = mask & keep
    x = jnp.where(visible[..., None], p.embeddings.astype(self.dtype), 0)  # (B, n, E)
    x = x + p.position + layers.sinusoidal_embedding(p.time, enc.width,
                                                     self.time_max_period).astype(self.dtype)
    x = layers.constrain(x, layers.ACTIVATION)
    x = TransformerStack(enc, attention=self.attention, name="encoder", **numerics)(
        x, layers.attention_mask(visible), deterministic)
    x = layers.make_norm(enc.norm, name="encoder_norm", **numerics)(x)
    x = layers.DenseGeneral(self.width, ("input", "embed"), name="to_fusion", **numerics)(x)
    x = layers.constrain(jnp.where(visible[..., None], x, 0), layers.ACTIVATION)  # (B, n, D)
    return (TokenGroup(x, mask, jnp.asarray(p.time, jnp.float32)),
            layers.masked_mean(x, visible), visible)
