"""The Pretrainer: the trunk (XEFM) plus every enabled objective's head, one Linen module.

    loss, metrics = Pretrainer(config).apply(
        {"params": params}, batch, target, train=True, rngs={"masking": k1, "dropout": k2})

Parameters: {"model": the trunk's, "<objective>": its head's}. The EMA encoder of
future-state prediction is the trunk alone (`params["model"]`), so it is applied outside
this module by the train step and its output handed in as `target`.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from xefm_jax.model import xefm
from xefm_jax.objectives import base
from xefm_jax.parallel import sharding

Array = jax.Array


class Pretrainer(nn.Module):
  config: ml_collections.ConfigDict  # the whole run config

  def setup(self):
    cfg = self.config
    self.model = xefm.XEFM(cfg.model)
    self.heads = {name: base.get_objective(name)(cfg.objectives[name], cfg.model, cfg.data,
                                                 name=name)
                  for name in base.enabled(cfg)}

  @property
  def needs_target(self) -> bool:
    return any(base.get_objective(n).needs_target for n in base.enabled(self.config))

  def _forward(self, batch: Mapping[str, Any], target: Optional[xefm.XEFMOutput],
               train: bool, side_passes: bool = True) -> base.Context:
    keep: dict[str, Array] = {}
    batch_size = jax.tree.leaves(batch)[0].shape[0]
    masked_rows = max((h.masked_rows(batch_size) for h in self.heads.values()), default=0)
    if train and masked_rows:  # a head hides tokens: size its masks
      shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), batch)
      counts = xefm.token_counts(xefm.XEFM(self.config.model, parent=None), shapes)  # unbound
      for head in self.heads.values():
        for name, k in (head.hide(batch, counts) or {}).items():
          keep[name] = keep[name] & k if name in keep else k
    out = self.model(batch, train=train, keep=keep or None)
    passes, sub = {}, {}
    for head in self.heads.values() if side_passes else ():
      every, wanted = head.side_passes()
      if not wanted:
        continue
      shards = sharding.batch_shards()
      sub = jax.tree.map(lambda x: sharding.local_rows(x, every, shards), batch)
      rows = jax.tree.leaves(sub)[0].shape[0]
      for name, mods in wanted.items():  # explicit drops: no dropout sampled in a side pass
        passes[name] = self.model(sub, train=train, modalities=mods,
                                  drop={m: jnp.zeros((rows,), jnp.bool_) for m in mods})
    return base.Context(batch=batch, out=out, keep=keep, target=target, passes=passes,
                        pass_batch=sub, masked_rows=masked_rows if keep else 0)

  def __call__(self, batch: Mapping[str, Any], target: Optional[xefm.XEFMOutput] = None, *,
               train: bool = True) -> tuple[Array, dict[str, Array]]:
    """Weighted sum of the enabled objectives' losses, and every metric (fp32 scalars)."""
    return self._losses(self._forward(batch, target, train), self.heads, train)

  def _losses(self, ctx: base.Context, heads: Mapping[str, base.Objective], train: bool
              ) -> tuple[Array, dict[str, Array]]:
    total = jnp.zeros((), jnp.float32)
    metrics: dict[str, Array] = {}
    for name, head in heads.items():
      loss, m = head(ctx, train=train)
      loss = loss.astype(jnp.float32)
      total = total + self.config.objectives[name].weight * loss
      metrics[f"{name}/loss"] = loss
      metrics.update({f"{name}/{k}": v.astype(jnp.float32) for k, v in m.items()})
    metrics["loss"] = total
    return total, metrics

  def evaluate(self, batch: Mapping[str, Any], target: Optional[xefm.XEFMOutput] = None, *,
               predict: tuple[str, ...] = ()) -> tuple[tuple[Array, dict[str, Array]],
                                                      dict[str, Any]]:
    """One deterministic forward pass for validation: ((loss, metrics) of the objectives
    scored in evaluation, {name: head.predict} of the heads named in `predict`). The
    objectives not scored in evaluation (their loss needs training-only inputs) are not
    run at all, and the predictions reuse the same pass."""
    ctx = self._forward(batch, target, train=False)
    scored = {n: h for n, h in self.heads.items() if base.get_objective(n).scored_in_eval}
    return self._losses(ctx, scored, False), {n: self.heads[n].predict(ctx) for n in predict}

  def predict(self, batch: Mapping[str, Any]) -> dict[str, Any]:
    """Deterministic pass: the trunk's output and every head's predictions (evaluation)."""
    ctx = self._forward(batch, None, train=False, side_passes=False)
    return {"out": ctx.out, **{name: head.predict(ctx) for name, head in self.heads.items()}}
