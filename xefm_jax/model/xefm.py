"""XEFM: the assembled model (modality encoders -> fusion transformer -> readouts).

    model = XEFM(config.model)
    variables = model.init(jax.random.key(0), batch)          # or parallel.init (sharded)
    out = model.apply(variables, batch, method=XEFM.encode)   # a notebook's entry point
    out = model.apply(variables, batch, train=True, keep=keep,
                      rngs={"masking": k1, "dropout": k2})     # the training step's
    target = model.apply(ema_variables, batch, method=XEFM.encode_next)

Randomness is explicit Linen rng streams, used only when train=True:
  "masking"  per-sample modality dropout (rates in config.model.modalities.<name>.dropout)
  "dropout"  residual/MLP dropout (config.model.*.dropout)
With train=False the model is deterministic; an explicit `drop` still applies (missing-
modality robustness evaluations drop each modality in turn this way).
"""

from __future__ import annotations

from typing import Any, Mapping

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from xefm_jax.model.fusion import FusionTransformer
from xefm_jax.model.tokens import TokenGroup
from xefm_jax.modalities.base import ModalityEncoder

Array = jax.Array
Batch = Mapping[str, Any]


@flax.struct.dataclass
class XEFMOutput:
  """Everything downstream (objectives, probes, notebooks) reads from a forward pass.

  tokens: {modality: TokenGroup} unimodal encoder outputs at the fusion width (pre-fusion).
  embeddings: {modality: (B, D)} masked mean of `tokens` over valid, visible tokens.
  fused: {modality: TokenGroup} the fusion transformer's output tokens, same layout/masks.
  readouts: {name: (B, r, D)} readout tokens (config.model.fusion.readouts).
  embedding: (B, D) the window embedding: mean of the `config.model.embedding_readout`
    readout tokens, fp32.
  kept: {modality: (B,) bool} False where modality dropout (or `drop`) removed the
    modality for that sample; a modality can also be absent in the data (its masks).
  """

  tokens: dict[str, TokenGroup]
  embeddings: dict[str, Array]
  fused: dict[str, TokenGroup]
  readouts: dict[str, Array]
  embedding: Array
  kept: dict[str, Array]


def modality_names(model_config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """Configured modalities in id order (ConfigDict keys are sorted: stable ids)."""
  return tuple(model_config.modalities.keys())


class XEFM(nn.Module):
  """The Xperience Embodied Foundation Model. `config` is config.model."""

  config: ml_collections.ConfigDict

  def _numerics(self) -> dict[str, Any]:
    return dict(dtype=jnp.dtype(self.config.dtype), param_dtype=jnp.dtype(self.config.param_dtype),
                attention=self.config.attention)

  def _drop_masks(self, batch_size: int, train: bool,
                  drop: Mapping[str, Array] | None) -> dict[str, Array]:
    """(B,) bool per modality: True = removed for this sample."""
    names = modality_names(self.config)
    drop = dict(drop or {})
    if unknown := set(drop) - set(names):
      raise KeyError(f"drop names unknown modalities {sorted(unknown)}; have {names}")
    out = {}
    for i, name in enumerate(names):
      rate = self.config.modalities[name].get("dropout", 0.0)
      if name in drop:
        out[name] = jnp.broadcast_to(jnp.asarray(drop[name], jnp.bool_), (batch_size,))
      elif train and rate > 0:
        key = jax.random.fold_in(self.make_rng("masking"), i)
        out[name] = jax.random.bernoulli(key, rate, (batch_size,))
      else:
        out[name] = jnp.zeros((batch_size,), jnp.bool_)
    return out

  @nn.compact
  def __call__(self, batch: Batch, *, train: bool = False,
               keep: Mapping[str, Array] | None = None,
               drop: Mapping[str, Array] | None = None) -> XEFMOutput:
    """Encode and fuse one batch of windows.

    batch: the window contract (xefm_jax/data/spec.py), batch-major; only the input fields
      of the configured modalities are read.
    keep: optional {modality: (B, n) bool}; False hides a token's content (masked modeling).
      n per modality: `token_counts(model, batch)`.
    drop: optional {modality: (B,) bool}; True removes the modality for that sample. Where
      not given, training samples it from the "masking" rng at the configured rate.
    """
    cfg = self.config
    names = modality_names(cfg)
    keep = dict(keep or {})
    if unknown := set(keep) - set(names):
      raise KeyError(f"keep names unknown modalities {sorted(unknown)}; have {names}")
    batch_size = jax.tree.leaves(batch)[0].shape[0]
    drops = self._drop_masks(batch_size, train, drop)
    numerics = self._numerics()
    tokens, embeddings = {}, {}
    for name in names:
      tokens[name], embeddings[name] = ModalityEncoder(
          cfg.modalities[name], cfg.width, name=name, **numerics)(
              batch, keep.get(name), drops[name], deterministic=not train)
    fused, readouts = FusionTransformer(cfg.fusion, names, name="fusion", **numerics)(
        tokens, deterministic=not train)
    embedding = jnp.mean(readouts[cfg.embedding_readout].astype(jnp.float32), axis=1)
    return XEFMOutput(tokens=tokens, embeddings=embeddings, fused=fused, readouts=readouts,
                      embedding=embedding, kept={n: ~d for n, d in drops.items()})

  def encode(self, batch: Batch) -> XEFMOutput:
    """Deterministic forward pass of a batch of windows: for notebooks, probes, eval."""
    return self(batch, train=False)

  def encode_next(self, batch: Batch) -> XEFMOutput:
    """Deterministic forward pass of the following windows (`batch["next"]`): the target
    side of future-state prediction, applied with the EMA parameters."""
    return self(batch["next"], train=False)


def token_counts(model: XEFM, batch: Batch) -> dict[str, int]:
  """Tokens per window for each modality, from shapes only (nothing is computed or
  allocated): what a masked-modeling objective sizes its `keep` masks with."""
  shapes = jax.eval_shape(
      lambda b: model.init_with_output(jax.random.key(0), b, method=XEFM.encode)[0], batch)
  return {name: g.mask.shape[1] for name, g in shapes.tokens.items()}
