"""Future-state prediction in latent space (V-JEPA / BYOL): predict the next window's latent.

Why: forecasting what comes next, in the model's own feature space rather than in pixels,
makes the window embedding carry the dynamics of the activity (where the hands go, what is
about to be touched) without spending capacity on unpredictable appearance. The targets
are the EMA encoder's output on the following window (`ctx.target`, frames W .. 2W-1):
its window embedding and its fused tokens pooled per modality (`modalities`), each layer-
normalised without parameters (V-JEPA) and never differentiated (stop-gradient; the EMA
encoder's parameters are not the trunk's anyway).

A predictor MLP per target reads the `readout` tokens of the current window (the window
embedding where the model has no such readout) and regresses the normalised target with a
smooth-L1 loss. Nothing in the regression alone stops the trivial solution (every window
mapped to one constant, which the EMA target then copies), so a VICReg variance hinge keeps
the per-feature std over the batch of the online counterparts of the targets (this
window's layer-normalised embedding and pooled fused tokens: what the EMA encoder becomes)
above `variance_floor`. Layer normalisation fixes each vector's scale, so the hinge cannot
be met by growing the features instead of spreading the windows.

Without a target (evaluation, or a step that did not compute one) the loss is 0.
predict(): the predicted next-window latents (B, D) in the normalised target space.
"""

from __future__ import annotations

from typing import Mapping, Optional

import jax
import jax.numpy as jnp

from xefm_jax.model import layers
from xefm_jax.model import xefm
from xefm_jax.model.xefm import XEFMOutput
from xefm_jax.objectives import base
from xefm_jax.objectives import heads

Array = jax.Array


@base.register("future_state")
class FutureState(base.Objective):

  needs_target = True

  def setup(self):
    c, m = self.config, self.model_config
    if unknown := set(c.modalities) - set(m.modalities.keys()):
      raise KeyError(f"objectives.future_state.modalities names {sorted(unknown)}, not "
                     f"modalities of the model {tuple(m.modalities.keys())}")
    self.target_names = ("embedding",) + tuple(c.modalities)
    width = {name: xefm.embedding_width(m) if name == "embedding" else m.width
             for name in self.target_names}
    self.predictors = {
        name: heads.MLPHead(width[name], hidden=c.hidden, param_dtype=jnp.dtype(m.param_dtype),
                            out_axis="embed", name=f"predict_{name}")
        for name in self.target_names}

  def _predict(self, ctx: base.Context) -> dict[str, Array]:
    x = heads.readout(ctx.out, self.model_config, self.config.readout)  # (B, D) fp32
    return {name: p(x) for name, p in self.predictors.items()}

  def _latents(self, out: XEFMOutput, keep: Optional[Mapping[str, Array]] = None
               ) -> tuple[dict[str, Array], dict[str, Array]]:
    """Layer-normalised latents (B, D) of a pass (its embedding, its fused tokens pooled per
    modality over the visible ones) and their validity (B,)."""
    keep = keep or {}
    latents = {"embedding": out.embedding}
    valid = {"embedding": jnp.ones(out.embedding.shape[:1], jnp.bool_)}
    for name in self.config.modalities:
      group = out.fused[name]
      mask = group.mask & keep[name] if name in keep else group.mask
      latents[name] = layers.masked_mean(group.tokens, mask)
      valid[name] = mask.any(axis=1)
    return {k: heads.layer_norm(v) for k, v in latents.items()}, valid

  def __call__(self, ctx: base.Context, *, train: bool) -> tuple[Array, dict[str, Array]]:
    c = self.config
    pred = self._predict(ctx)
    if ctx.target is None:
      zero = jnp.zeros((), jnp.float32)
      return zero, {"regression_loss": zero, "variance_loss": zero}
    target, valid = self._latents(ctx.target)
    target = jax.tree.map(jax.lax.stop_gradient, target)
    online, online_valid = self._latents(ctx.out, ctx.keep)
    metrics, regression, variance = {}, [], []
    for name in self.target_names:
      v = valid[name][:, None]
      loss = heads.regression(pred[name], jnp.where(v, target[name], 0.0), v, "smooth_l1",
                              c.beta)
      regression.append(loss)
      variance.append(heads.variance_hinge(online[name], online_valid[name], c.variance_floor))
      cos = jnp.sum(heads.l2_normalize(pred[name]) * heads.l2_normalize(target[name]), -1)
      metrics[f"{name}_loss"] = loss
      metrics[f"{name}_cosine"] = heads.masked_mean(cos, valid[name])
    regression, variance = sum(regression) / len(regression), sum(variance) / len(variance)
    # collapse monitor: per-feature std of the window-embedding target over the batch
    metrics["target_std"] = jnp.mean(jnp.std(target["embedding"], axis=0))
    metrics["online_std"] = jnp.mean(jnp.std(online["embedding"], axis=0))
    metrics["regression_loss"], metrics["variance_loss"] = regression, variance
    return regression + c.variance_weight * variance, metrics

  def predict(self, ctx: base.Context) -> dict[str, Array]:
    return self._predict(ctx)
