"""Cross-modal contrastive alignment (SigLIP's sigmoid loss): fused sides, a hub, and text.

Why: the eval suite retrieves one side of a window from another (motion + IMU + pose ->
depth / video; a sentence -> its window) by cosine similarity of frozen embeddings. Aligning
each modality's pooled unimodal embedding (`out.embeddings`, before fusion) with the video
one of the same window (ImageBind's hub: every pair shares one anchor, so all modalities
land in one space without M^2 pairs) and the caption with the window embedding trains
exactly that similarity. The sigmoid loss treats every pair as its own binary problem, so
it needs no all-gather softmax normaliser and tolerates masked rows and duplicate captions.

  fused sides  the window embedding of a pass over one side of the window against that of
               a pass over another side (`sides`: the motion side, pose + mocap + IMU, and
               the visual side, video + depth), on one in `side_every` of each device's
               windows (two extra passes of the trunk over only those modalities:
               Pretrainer runs what `side_passes` asks for). This aligns what the suite's
               cross_modal_retrieval and misalignment_detection probe: the fused
               embeddings of the two sides of one window.
  hub pairs    proj_video(e_video) vs proj_m(e_m) for m in `pairs` (pooled unimodal
               embeddings): positives are the same window; a side is valid where its
               modality kept a visible token.
  text-window  a light text tower (word embeddings, one transformer layer, masked mean) over
               the caption ids vs proj_window(the "window" readout), over windows whose pass
               did not see their caption (heads.caption_blind), else the answer would be an
               input; positives are windows with the identical caption. The tower is the
               head's own: the trunk's language embedding of a caption exists only when the
               window saw it (a dropped modality's tokens are masked), so it cannot serve
               as the text side of a window that did not.
Every side has its own projection (norm, an MLP of `hidden` GELU units, `dim` outputs) and
every pair its own learnable log-temperature and bias (SigLIP init: t = 10, b = -10).
Overlapping windows of one episode (stride 5 of 16 frames share 11) are neither positives
nor negatives of each other (heads.overlapping_windows): they show the same thing.

predict(): L2-normalised embeddings (B, dim) per modality (hub space), "text" (the caption
tower) and "window" (the window embedding, projected). Retrieval uses cosine similarity;
for text-to-window retrieval feed windows whose caption is not visible (caption_valid False
or language dropped) on the window side.
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from xefm_jax.data.spec import PAD_ID
from xefm_jax.modalities import language as language_lib
from xefm_jax.model import layers
from xefm_jax.model.transformer import TransformerStack
from xefm_jax.objectives import base
from xefm_jax.objectives import heads

Array = jax.Array


class TextTower(nn.Module):
  """Caption ids (B, L) -> (B, width) masked mean of a small bidirectional encoder."""

  config: Any  # resolved transformer config (heads.stack_config)
  vocab_size: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  attention: Optional[str] = None  # config.model.attention

  @nn.compact
  def __call__(self, ids: Array, valid: Array) -> Array:
    cfg = self.config
    numerics = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    mask = (ids != PAD_ID) & valid[:, None]  # (B, L)
    ids = jnp.where(mask, ids, PAD_ID)
    x = layers.Embed(language_lib.padded_vocab_size(self.vocab_size), cfg.width,
                     name="token_embedding", **numerics)(ids)  # (B, L, W)
    x = x + layers.learned_table(self, "position", ids.shape[1], cfg.width,
                                 self.param_dtype).astype(self.dtype)
    x = TransformerStack(cfg, attention=self.attention, name="encoder", **numerics)(
        x, layers.attention_mask(mask))
    x = layers.make_norm(cfg.norm, name="norm", **numerics)(x)
    return layers.masked_mean(x, mask)  # (B, W) fp32


@base.register("contrastive")
class Contrastive(base.Objective):

  def setup(self):
    c, m = self.config, self.model_config
    names = tuple(m.modalities.keys())
    if c.hub not in names or set(c.pairs) - set(names):
      raise KeyError(f"objectives.contrastive: hub {c.hub!r} and pairs {tuple(c.pairs)} must "
                     f"be modalities of the model {names}")
    self.side_names = tuple(c.sides) if c.side_weight > 0 else ()
    for side, mods in dict(c.sides).items():
      if not mods or set(mods) - set(names):
        raise KeyError(f"objectives.contrastive.sides.{side} = {tuple(mods)}: expected "
                       f"modalities of the model {names}")
    if len(self.side_names) not in (0, 2):
      raise ValueError(f"objectives.contrastive.sides: expected two sides, got {self.side_names}")
    self.pair_names = tuple(p for p in c.pairs if p != c.hub) + ("text",)
    param_dtype = jnp.dtype(m.param_dtype)
    proj = lambda name: heads.MLPHead(c.dim, hidden=c.hidden,  # noqa: E731
                                      param_dtype=param_dtype, out_axis="input", name=name)
    self.projections = {name: proj(f"project_{name}")
                        for name in (c.hub,) + tuple(c.pairs) + ("window",)
                        + tuple(f"side_{s}" for s in self.side_names)}
    text = heads.stack_config(c.text, m.width)
    self.text_tower = TextTower(text, m.modalities.language.vocab_size,
                                dtype=jnp.dtype(m.dtype), param_dtype=param_dtype,
                                attention=m.attention, name="text_tower")
    self.text_projection = proj("project_text")
    num = len(self.pair_names) + (1 if self.side_names else 0)
    self.log_scale = self.param(
        "log_scale", nn.with_logical_partitioning(
            nn.initializers.constant(np.log(c.init_temperature)), ("table",)),
        (num,), param_dtype)
    self.bias = self.param(
        "bias", nn.with_logical_partitioning(nn.initializers.constant(c.init_bias),
                                             ("table",)), (num,), param_dtype)

  def side_passes(self) -> tuple[int, dict[str, tuple[str, ...]]]:
    """(every k-th window, {pass name: modalities}) the Pretrainer encodes besides the main
    pass; empty when the fused-side term is off."""
    c = self.config
    return int(c.side_every), {s: tuple(c.sides[s]) for s in self.side_names}

  def _overlap(self, batch) -> Array:
    d = self.data_config
    return heads.overlapping_windows(batch, int(d.frames) * int(d.frame_stride))

  def _embed(self, ctx: base.Context) -> tuple[dict[str, Array], dict[str, Array]]:
    """L2-normalised embeddings (B, dim) and their validity (B,) per side."""
    c = self.config
    emb, valid = {}, {}
    for name in (c.hub,) + tuple(c.pairs):
      emb[name] = heads.l2_normalize(self.projections[name](ctx.out.embeddings[name]))
      valid[name] = heads.visible(ctx, name).any(axis=1)
    blind = heads.caption_blind(ctx)
    window = heads.readout(ctx.out, self.model_config, "window")
    emb["window"] = heads.l2_normalize(self.projections["window"](window))
    valid["window"] = blind
    caption_valid = ctx.batch["caption_valid"]
    text = self.text_tower(ctx.batch["caption"], caption_valid)
    emb["text"] = heads.l2_normalize(self.text_projection(text))
    valid["text"] = caption_valid & blind
    return emb, valid

  def _sides(self, ctx: base.Context) -> tuple[dict[str, Array], Array]:
    """Projected fused embeddings of the side passes {side: (b, dim)} and their validity."""
    emb, valid = {}, None
    for side in self.side_names:
      out = ctx.passes[side]
      emb[side] = heads.l2_normalize(self.projections[f"side_{side}"](out.embedding))
      has = jnp.zeros(out.embedding.shape[:1], jnp.bool_)
      for g in out.tokens.values():
        has = has | g.mask.any(axis=1)
      valid = has if valid is None else valid & has
    return emb, valid

  def __call__(self, ctx: base.Context, *, train: bool) -> tuple[Array, dict[str, Array]]:
    c = self.config
    emb, valid = self._embed(ctx)
    batch_size = emb["window"].shape[0]
    same_window = jnp.eye(batch_size, dtype=jnp.bool_)
    overlap = self._overlap(ctx.batch)
    ids = ctx.batch["caption"]
    same_caption = jnp.all(ids[:, None, :] == ids[None, :, :], axis=-1)  # (B, B)
    metrics, total, weights = {}, jnp.zeros((), jnp.float32), 0.0
    for i, name in enumerate(self.pair_names):
      if name == "text":
        x, y, positives, w = "text", "window", same_caption, c.text_weight
      else:
        x, y, positives, w = name, c.hub, same_window, 1.0
      loss, acc = heads.sigmoid_contrastive(emb[x], emb[y], positives, valid[x], valid[y],
                                            self.log_scale[i], self.bias[i], overlap)
      total, weights = total + w * loss, weights + w
      metrics[f"{name}_loss"], metrics[f"{name}_top1"] = loss, acc
    if self.side_names:
      side, side_valid = self._sides(ctx)
      a, b = self.side_names
      rows = ctx.passes[a].embedding.shape[0]
      loss, acc = heads.sigmoid_contrastive(
          side[a], side[b], jnp.eye(rows, dtype=jnp.bool_), side_valid, side_valid,
          self.log_scale[-1], self.bias[-1], self._overlap(ctx.pass_batch))
      total, weights = total + c.side_weight * loss, weights + c.side_weight
      metrics["sides_loss"], metrics["sides_top1"] = loss, acc
    metrics["temperature"] = jnp.mean(jnp.exp(self.log_scale))
    metrics["bias"] = jnp.mean(self.bias)
    return total / weights, metrics

  def predict(self, ctx: base.Context) -> dict[str, Array]:
    """{side: (B, dim)} and {side/valid: (B,)} (the side exists: a visible token, a caption;
    every window), plus window/caption_blind (B,): the window did not see its caption."""
    emb, valid = self._embed(ctx)
    blind = valid["window"]
    valid["text"] = ctx.batch["caption_valid"]
    valid["window"] = jnp.ones_like(blind)
    return {**emb, **{f"{k}/valid": v for k, v in valid.items()},
            "window/caption_blind": blind}
