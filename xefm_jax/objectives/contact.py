"""Contact and affordance: is the body touching something now, which wrist, and which objects
are relevant to what the wearer is doing.

Why: the eval suite's contact_prediction (any body contact) and object_relevance (the
relevant-object set, micro-F1) are probed on frozen window embeddings; supervising them here
makes the embedding carry contact and object state explicitly.

From the window embedding only, at the last context frame ("now"):
  contact     any of the 21 contact joints above `threshold` (binary), and the left and
              right wrist (contact joints 19 and 20, xperience.HAND_CONTACT_JOINTS; binary
              each). `contacts` is a target field, never a model input, and this head reads
              nothing but the embedding, as the eval's "window without contact channels"
              requires.
  objects     the relevant-object multi-hot (sigmoid per object), trained only on windows
              whose pass did not see their caption (heads.caption_blind; the eval asks for
              objects from windows without language, and a caption names them).
predict(): logits: contact (B,), hand_contact (B, 2) (left, right), objects (B, num_objects).
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp

from xefm_jax.data import xperience
from xefm_jax.objectives import base
from xefm_jax.objectives import heads

Array = jax.Array


def targets(batch: Mapping[str, Any], threshold: float) -> dict[str, Array]:
  """Window-level contact and object labels at now (shared with the evaluation suite)."""
  contacts = batch["contacts"][:, -1] > threshold  # (B, 21)
  return {"contact": contacts.any(axis=-1),
          "hand_contact": contacts[:, list(xperience.HAND_CONTACT_JOINTS)],  # (B, 2)
          "objects": batch["objects"][:, -1]}  # (B, num_objects)


@base.register("contact")
class Contact(base.Objective):

  def setup(self):
    kw = dict(param_dtype=jnp.dtype(self.model_config.param_dtype))
    self.heads = {"contact": heads.MLPHead(1, **kw),
                  "hand_contact": heads.MLPHead(2, **kw),
                  "objects": heads.MLPHead(self.data_config.num_objects, **kw)}

  def _logits(self, ctx: base.Context) -> dict[str, Array]:
    x = ctx.out.embedding  # (B, D) fp32
    logits = {name: head(x) for name, head in self.heads.items()}
    logits["contact"] = logits["contact"][:, 0]
    return logits

  def __call__(self, ctx: base.Context, *, train: bool) -> tuple[Array, dict[str, Array]]:
    logits = self._logits(ctx)
    t = targets(ctx.batch, self.config.threshold)
    metrics = {}
    losses = []
    for name in ("contact", "hand_contact"):
      loss, acc = heads.binary(logits[name], t[name])
      metrics[f"{name}_loss"], metrics[f"{name}_accuracy"] = loss, acc
      losses.append(loss)
    blind = heads.caption_blind(ctx)[:, None] if self.config.blind_objects else True
    loss, acc = heads.binary(logits["objects"], t["objects"], blind)
    metrics["objects_loss"], metrics["objects_accuracy"] = loss, acc
    predicted, truth = logits["objects"] > 0, t["objects"]
    tp = jnp.sum(predicted & truth & blind)
    metrics["objects_micro_f1"] = 2 * tp / jnp.maximum(
        jnp.sum(predicted & blind) + jnp.sum(truth & blind), 1)
    losses.append(loss)
    return sum(losses) / len(losses), metrics

  def predict(self, ctx: base.Context) -> dict[str, Array]:
    return self._logits(ctx)
