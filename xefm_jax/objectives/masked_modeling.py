"""Masked multimodal modeling (4M / MultiMAE): hide tokens across modalities, reconstruct them.

Why: reconstructing one modality's hidden tokens from whatever else is visible makes the
fused tokens carry what the streams share (the video of a grasp from the hand mocap, depth
from video, the IMU from camera motion), which is what the eval suite's cross-modal
reconstruction and missing-modality robustness measure.

Hiding (`hide`, the "masking" rng): a fraction `window_fraction` of the windows is masked,
the first round(window_fraction x rows) of each device's rows (the batch is shuffled, so
these are random windows; a static count keeps the decoder's sub-batch static); in each,
exactly round((1 - mask_ratio) N) of the N token slots of `modalities` stay visible.
Which ones follows a per-sample modality budget w ~ Dirichlet(alpha) (4M): token i of
modality m is kept with weight w_m / n_m by weighted sampling without replacement
(Efraimidis-Spirakis keys log(u) / weight, top-k), so one window keeps mostly video,
another mostly mocap and IMU, and each is asked to reconstruct the rest. Hidden tokens take
no part in the trunk (MAE: neither keys nor queries of any attention, model/encoders.py),
so the trunk's computation on a masked window is that of a window without those tokens.
Supervised heads skip masked windows (heads.supervised_rows).

The decoder (light, MAE-style) runs on the masked windows only (the others have nothing
to reconstruct) and sees only what the trunk saw: every position of every
modality is one decoder token, the projected fused token where visible, else a learned mask
query; both get a learned per-modality position table, the modality embedding and the
sinusoidal time. Tokens attend to visible tokens (and themselves), so a hidden position and
a modality missing altogether are treated alike: `predict` reconstructs a dropped modality
from the others (motion + IMU + pose -> depth / video).

Targets are the tokenizers' own (`Tokenizer.targets` in xefm_jax/modalities/*), token for
token:
  video, depth, audio  per-patch normalised patches (MAE's norm_pix): video pixels
                       (tubelet x patch x patch x 3), depth (tubelet x patch x patch, valid
                       frames only), log-mel patches (patch_time x patch_freq)
  imu, pose, mocap     raw per-frame features of the chunk: normalised IMU samples; camera
                       motion rates [rot6d - I, translation] x frame rate and world up in the
                       body frame; hands in the pipeline's normalised layout (63 features,
                       zero-padded to the body's 156) or pelvis-relative body keypoints
  language             caption word ids (cross-entropy)
The loss is over hidden tokens of existing streams only, per valid element (a dropped
frame inside a chunk is not a target); each modality's mean is weighted by
`modality_weights` and averaged over the modalities with a hidden token in the batch.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from xefm_jax.modalities import language as language_lib
from xefm_jax.model import encoders
from xefm_jax.model import layers
from xefm_jax.model.transformer import TransformerStack
from xefm_jax.objectives import base
from xefm_jax.objectives import heads
from xefm_jax.parallel import sharding

Array = jax.Array


def reconstruction_targets(batch: Mapping[str, Any], model_config: Any, name: str
                           ) -> tuple[Array, Array]:
  """What modality `name`'s tokens are reconstructed to, token by token: its tokenizer's
  `targets` (xefm_jax/modalities/<name>.py), so the layout cannot drift from the tokens."""
  cfg = model_config.modalities[name]
  return encoders.get_tokenizer(cfg.get("tokenizer", None) or name).targets(batch, cfg)


class Decoder(nn.Module):
  """Fused tokens (visible ones) + mask queries -> one decoder state per position.

  tokens (B, N, D), visible (B, N), time (B, N), layout [(modality, n_m)] -> (B, N, Dd).
  """

  config: Any  # resolved transformer config (heads.stack_config)
  modalities: tuple[str, ...]  # every modality of the model, in id order
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  attention: Optional[str] = None  # config.model.attention

  @nn.compact
  def __call__(self, tokens: Array, visible: Array, time: Array,
               layout: list[tuple[str, int]], deterministic: bool = True) -> Array:
    cfg = self.config
    width = cfg.width
    numerics = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = layers.DenseGeneral(width, ("input", "embed"), name="project", **numerics)(tokens)
    query = self.param("mask_query", nn.with_logical_partitioning(layers.EMBED_INIT,
                                                                  ("embed",)),
                       (width,), self.param_dtype)
    x = jnp.where(visible[..., None], x, query.astype(self.dtype))  # (B, N, Dd)
    modality = layers.learned_table(self, "modality_embedding", len(self.modalities), width,
                                    self.param_dtype)
    position = jnp.concatenate(
        [layers.learned_table(self, f"position_{name}", n, width, self.param_dtype)
         + modality[self.modalities.index(name)] for name, n in layout], axis=0)  # (N, Dd)
    x = (x + position.astype(self.dtype)
         + layers.sinusoidal_embedding(time, width).astype(self.dtype))
    x = layers.constrain(x, layers.ACTIVATION)
    x = TransformerStack(cfg, attention=self.attention, name="transformer", **numerics)(
        x, layers.attention_mask(visible), deterministic)
    return layers.make_norm(cfg.norm, name="norm", **numerics)(x)


class Outputs(nn.Module):
  """Per-modality linear read-out of the decoder states: {m: (B, n_m, Dd)} -> (B, n_m, P_m),
  fp32 (P_m from the targets' shapes: the window sizes, e.g. IMU samples per frame, need not
  be in the config)."""

  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, pieces: Mapping[str, Array], sizes: Mapping[str, int]
               ) -> dict[str, Array]:
    return {name: layers.DenseGeneral(
        sizes[name], ("embed", "vocab" if name == "language" else "patch"), use_bias=True,
        param_dtype=self.param_dtype, name=name)(x.astype(jnp.float32))
        for name, x in pieces.items()}


@base.register("masked_modeling")
class MaskedModeling(base.Objective):
  scored_in_eval = False  # evaluation hides no tokens: nothing to reconstruct

  def setup(self):
    c, m = self.config, self.model_config
    self.names = tuple(m.modalities.keys())
    if unknown := set(c.modalities) - set(self.names):
      raise KeyError(f"objectives.masked_modeling.modalities names {sorted(unknown)}, not "
                     f"modalities of the model {self.names}")
    dec = heads.stack_config(c.decoder, m.width)
    numerics = dict(dtype=jnp.dtype(m.dtype), param_dtype=jnp.dtype(m.param_dtype))
    self.decoder = Decoder(dec, self.names, attention=m.attention, name="decoder", **numerics)
    self.outputs = Outputs(param_dtype=numerics["param_dtype"], name="outputs")

  def hide(self, batch: Mapping[str, Any], token_counts: Mapping[str, int]
           ) -> Optional[dict[str, Array]]:
    c = self.config
    names = [n for n in c.modalities if n in token_counts]
    counts = np.array([token_counts[n] for n in names])  # (M,)
    total = int(counts.sum())
    num_visible = int(round((1.0 - c.mask_ratio) * total))
    batch_size = jax.tree.leaves(batch)[0].shape[0]
    k_budget, k_keys = jax.random.split(self.make_rng("masking"))
    budget = jax.random.dirichlet(k_budget, jnp.full((len(names),), c.dirichlet_alpha),
                                  (batch_size,))  # (B, M)
    per_token = jnp.repeat(jnp.maximum(budget, 1e-6) / counts, counts, axis=1,
                           total_repeat_length=total)  # (B, N)
    u = jax.random.uniform(k_keys, (batch_size, total), minval=1e-12)
    keys = jnp.log(u) / per_token  # weighted sampling keys: the largest are kept
    rank = jnp.argsort(jnp.argsort(-keys, axis=1), axis=1)  # (B, N)
    keep = rank < num_visible
    masked = sharding.block_row_mask(batch_size, slice(self.masked_rows(batch_size)),
                                     sharding.batch_shards())  # (B,) static
    keep = keep | ~masked[:, None]
    return dict(zip(names, jnp.split(keep, np.cumsum(counts)[:-1], axis=1)))

  def masked_rows(self, batch_size: int) -> int:
    """Masked windows per device block (base.Objective.masked_rows): at least one."""
    local = batch_size // sharding.batch_shards()
    return min(local, max(1, round(self.config.window_fraction * local)))

  def _targets(self, batch: Mapping[str, Any]) -> dict[str, tuple[Array, Array]]:
    return {name: reconstruction_targets(batch, self.model_config, name)
            for name in self.config.modalities}

  def _reconstruct(self, ctx: base.Context, targets: Mapping[str, tuple[Array, Array]],
                   train: bool, rows: Any = lambda x: x) -> dict[str, Array]:
    """{m: (B, n_m, P_m)} fp32 reconstructions (language: logits over the padded
    vocabulary, the words beyond the vocabulary masked); `rows` (x -> its sub-batch): of
    those rows only."""
    tokens, vis, time, layout = heads.fused_sequence(ctx)
    tokens, vis, time = rows(tokens), rows(vis), rows(time)
    h = self.decoder(tokens, vis, time, layout, deterministic=not train)  # (B, N, Dd)
    pieces = dict(zip([name for name, _ in layout],
                      jnp.split(h, np.cumsum([n for _, n in layout])[:-1], axis=1)))
    sizes = {name: target.shape[-1] for name, (target, _) in targets.items()}
    if "language" in sizes:  # a model without the language stream has no vocabulary
      vocab = self.model_config.modalities.language.vocab_size
      sizes["language"] = language_lib.padded_vocab_size(vocab)
    out = self.outputs({name: pieces[name] for name in sizes}, sizes)
    if "language" in out:
      out["language"] = jnp.where(np.arange(sizes["language"]) < vocab, out["language"], -1e9)
    return out

  def __call__(self, ctx: base.Context, *, train: bool) -> tuple[Array, dict[str, Array]]:
    c = self.config
    rows = heads.sub_batch(ctx, masked=True)  # the windows with hidden tokens (training)
    targets = self._targets(jax.tree.map(rows, dict(ctx.batch)))
    recon = self._reconstruct(ctx, targets, train, rows)
    metrics: dict[str, Array] = {}
    total = jnp.zeros((), jnp.float32)
    weights = jnp.zeros((), jnp.float32)
    for name in c.modalities:
      target, weight = targets[name]
      hidden = rows(ctx.out.fused[name].mask & ~heads.visible(ctx, name))  # (b, n)
      if name == "language":
        logits = recon[name]
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, target)  # (B, n)
        scored = hidden & weight
        loss = heads.masked_mean(ce, scored)
        metrics["language_accuracy"] = heads.masked_mean(
            heads.top1(logits, target), scored)
      else:
        w = weight.astype(jnp.float32)
        err = jnp.sum(jnp.square(recon[name] - target) * w, -1) / jnp.maximum(
            jnp.sum(w, -1), 1.0)  # (B, n) mean squared error per token
        scored = hidden & weight.any(-1)
        loss = heads.masked_mean(err, scored)
      has = jnp.any(scored).astype(jnp.float32)
      lam = c.modality_weights.get(name, 1.0)
      total, weights = total + lam * has * loss, weights + lam * has
      metrics[f"{name}_loss"] = loss
    hidden_frac = [1.0 - jnp.mean(ctx.keep[n].astype(jnp.float32))
                   for n in c.modalities if n in ctx.keep]
    if hidden_frac:
      metrics["hidden_fraction"] = jnp.mean(jnp.stack(hidden_frac))
    return total / jnp.maximum(weights, 1e-6), metrics

  def predict(self, ctx: base.Context) -> dict[str, Array]:
    """Reconstructions at every position of every target modality from the tokens the pass
    saw (drop or hide a modality to reconstruct it from the others), with the targets in the
    same layout: {m: (B, n, P) prediction, m/target: (B, n, P), m/weight: (B, n, P) valid
    elements, m/visible: (B, n)}; for language the prediction is word ids (B, n)."""
    targets = self._targets(ctx.batch)
    recon = self._reconstruct(ctx, targets, train=False)
    out = {}
    for name, pred in recon.items():
      target, weight = targets[name]
      if name == "language":
        pred = jnp.argmax(pred, -1)
      out.update({name: pred, f"{name}/target": target, f"{name}/weight": weight,
                  f"{name}/visible": heads.visible(ctx, name)})
    return out

