"""XEFM: the assembled model (modality encoders -> fusion transformer -> readouts).

    model = XEFM(config.model)
    variables = model.init(jax.random.key(0), batch)          # or parallel.init (sharded)
    out = model.apply(variables, batch, method=XEFM.encode)   # a notebook's entry point
    out = model.apply(variables, batch, train=True, keep=keep,
                      rngs={"masking": k1, "dropout": k2})     # the training step's
    target = model.apply(ema_variables, batch, method=XEFM.encode_next)

Randomness is explicit Linen rng streams, used only when train=True:
  "masking"  per-sample modality dropout (rates in config.model.modalities.<name>.dropout)
             and group dropout (config.model.group_dropout)
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
import numpy as np

from xefm_jax.model.encoders import ModalityEncoder
from xefm_jax.model.fusion import FusionTransformer
from xefm_jax.model.tokens import TokenGroup

Array = jax.Array
Batch = Mapping[str, Any]


@flax.struct.dataclass
class XEFMOutput:
  """Everything downstream (objectives, probes, notebooks) reads from a forward pass.

  tokens: {modality: TokenGroup} unimodal encoder outputs at the fusion width (pre-fusion);
    a group's mask says which tokens exist.
  embeddings: {modality: (B, D)} masked mean of `tokens` over valid, visible tokens.
  fused: {modality: TokenGroup} the fusion transformer's output tokens, same layout/masks
    (zero where a token is hidden or missing).
  readouts: {name: (B, r, D)} readout tokens (config.model.fusion.readouts).
  embedding: (B, R D) THE window embedding, fp32: the concatenation, in readout-name order,
    of the mean of each readout group. Every readout is trained by an objective ("window":
    procedure, contact, contrastive, captioning; "future": future-state and forecasting;
    "policy": action chunks), so every dimension of what probes, notebooks and exports read
    is asked to keep something; `window_embedding` is the one definition.
  kept: {modality: (B,) bool} False where modality or group dropout (or `drop`) removed the
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


def window_embedding(readouts: Mapping[str, Array]) -> Array:
  """(B, R D) fp32: the mean of each readout group, concatenated in name order."""
  return jnp.concatenate([jnp.mean(readouts[name].astype(jnp.float32), axis=1)
                          for name in sorted(readouts)], axis=-1)


def embedding_width(model_config: ml_collections.ConfigDict) -> int:
  """R D: the window embedding's width."""
  return len(model_config.fusion.readouts) * int(model_config.width)


def gather_views(group: TokenGroup, views: Array, num_views: int) -> TokenGroup:
  """Keep the video tokens of camera views `views` (k,) only; video tokens are ordered
  (view, time, patch), so the rest of a view's tokens need not be computed by fusion."""
  def pick(x: Array, axis: int) -> Array:  # (..., V * n, ...) -> (..., k * n, ...)
    shape = x.shape
    x = x.reshape(shape[:axis] + (num_views, shape[axis] // num_views) + shape[axis + 1:])
    x = jnp.take(x, views, axis=axis)
    return x.reshape(shape[:axis] + (-1,) + shape[axis + 1:])
  time = jnp.asarray(group.time)  # (n,) or (B, n)
  return TokenGroup(pick(group.tokens, 1), pick(group.mask, 1), pick(time, time.ndim - 1))


class XEFM(nn.Module):
  """The Xperience Embodied Foundation Model. `config` is config.model."""

  config: ml_collections.ConfigDict

  def _numerics(self) -> dict[str, Any]:
    return dict(dtype=jnp.dtype(self.config.dtype), param_dtype=jnp.dtype(self.config.param_dtype),
                attention=self.config.attention)

  def _drop_masks(self, names: tuple[str, ...], batch_size: int, train: bool,
                  drop: Mapping[str, Array] | None) -> dict[str, Array]:
    """(B,) bool per modality: True = removed for this sample.

    In training, two kinds of dropout are sampled from the "masking" rng: per modality at
    its configured rate, and per window, with probability config.group_dropout.rate, every
    modality outside one group chosen uniformly (e.g. the motion side or the visual side:
    the evaluation's input variants, so they are not out of distribution). An explicit
    `drop` entry replaces both for its modality.
    """
    all_names = modality_names(self.config)
    drop = dict(drop or {})
    if unknown := set(drop) - set(all_names):
      raise KeyError(f"drop names unknown modalities {sorted(unknown)}; have {all_names}")
    grouped = {n: jnp.zeros((batch_size,), jnp.bool_) for n in names}
    gd = self.config.get("group_dropout")
    if train and gd is not None and gd.rate > 0 and len(gd.groups):
      groups = list(gd.groups.values())
      member = np.array([[n in g for n in names] for g in groups])  # (G, M) static
      k_on, k_which = jax.random.split(jax.random.fold_in(self.make_rng("masking"),
                                                          len(all_names)))
      on = jax.random.bernoulli(k_on, gd.rate, (batch_size,))
      which = jax.random.randint(k_which, (batch_size,), 0, len(groups))
      outside = ~jnp.asarray(member)[which]  # (B, M)
      grouped = {n: on & outside[:, i] for i, n in enumerate(names)}
    out = {}
    for name in names:
      rate = self.config.modalities[name].get("dropout", 0.0)
      if name in drop:
        out[name] = jnp.broadcast_to(jnp.asarray(drop[name], jnp.bool_), (batch_size,))
      elif train and rate > 0:
        key = jax.random.fold_in(self.make_rng("masking"), all_names.index(name))
        out[name] = jax.random.bernoulli(key, rate, (batch_size,)) | grouped[name]
      else:
        out[name] = grouped[name]
    return out

  @nn.compact
  def __call__(self, batch: Batch, *, train: bool = False,
               keep: Mapping[str, Array] | None = None,
               drop: Mapping[str, Array] | None = None,
               modalities: tuple[str, ...] | None = None,
               views: Array | None = None) -> XEFMOutput:
    """Encode and fuse one batch of windows.

    batch: the window contract (xefm_jax/data/spec.py), batch-major; only the input fields
      of the encoded modalities are read.
    keep: optional {modality: (B, n) bool}; False hides a token from the trunk (masked
      modeling). n per modality: `token_counts(model, batch)`.
    drop: optional {modality: (B,) bool}; True removes the modality for that sample. Where
      not given, training samples it (see `_drop_masks`).
    modalities: encode only these (a subset of the configured ones, any order). A modality
      left out costs nothing, where a dropped one is computed and masked; the output is the
      same as dropping the others (a masked token influences nothing), up to rounding.
    views: (k,) int indices into the batch's camera views: only those views' video tokens
      enter fusion (the single-view evaluation variants), or None for all.
    """
    cfg = self.config
    all_names = modality_names(cfg)
    names = all_names if modalities is None else tuple(n for n in all_names if n in modalities)
    if modalities is not None and (unknown := set(modalities) - set(all_names)):
      raise KeyError(f"modalities {sorted(unknown)} are not configured; have {all_names}")
    keep = dict(keep or {})
    if unknown := set(keep) - set(names):
      raise KeyError(f"keep names modalities {sorted(unknown)} that are not encoded ({names})")
    batch_size = jax.tree.leaves(batch)[0].shape[0]
    drops = self._drop_masks(names, batch_size, train, drop)
    numerics = self._numerics()
    period = cfg.fusion.time_max_period
    tokens, embeddings, attend = {}, {}, {}
    for name in names:
      group, embeddings[name], visible = ModalityEncoder(
          cfg.modalities[name], cfg.width, name=name, time_max_period=period, **numerics)(
              batch, keep.get(name), drops[name], deterministic=not train)
      seen = TokenGroup(group.tokens, visible, group.time)  # what fusion attends with
      if name == "video" and views is not None:
        num_views = batch["video_valid"].shape[1]
        group, seen = (gather_views(g, views, num_views) for g in (group, seen))
      tokens[name], attend[name] = group, seen
    fused, readouts = FusionTransformer(cfg.fusion, all_names, name="fusion", **numerics)(
        attend, deterministic=not train)
    fused = {n: TokenGroup(g.tokens, tokens[n].mask, g.time) for n, g in fused.items()}
    return XEFMOutput(tokens=tokens, embeddings=embeddings, fused=fused, readouts=readouts,
                      embedding=window_embedding(readouts), kept={n: ~d for n, d in drops.items()})

  def encode(self, batch: Batch) -> XEFMOutput:
    """Deterministic forward pass of a batch of windows: for notebooks, probes, eval."""
    return self(batch, train=False)

  def encode_next(self, batch: Batch) -> XEFMOutput:
    """Deterministic forward pass of the following windows (`batch["next"]`): the target
    side of future-state prediction, applied with the EMA parameters."""
    return self(batch["next"], train=False)


_TOKEN_COUNTS: dict[tuple, dict[str, int]] = {}


def token_counts(model: XEFM, batch: Batch) -> dict[str, int]:
  """Tokens per window for each modality, from shapes only (nothing is computed or
  allocated): what a masked-modeling objective sizes its `keep` masks with. Memoised per
  (model config, batch shapes): the abstract init it takes traces every encoder, seconds of
  Python that every trace of a train step would otherwise repeat."""
  leaves, treedef = jax.tree.flatten(batch)
  key = (model.config.to_json_best_effort(sort_keys=True), str(treedef),
         tuple((tuple(x.shape), str(x.dtype)) for x in leaves))
  if key not in _TOKEN_COUNTS:
    shapes = jax.eval_shape(
        lambda b: model.init_with_output(jax.random.key(0), b, method=XEFM.encode)[0], batch)
    _TOKEN_COUNTS[key] = {name: g.mask.shape[1] for name, g in shapes.tokens.items()}
  return dict(_TOKEN_COUNTS[key])
