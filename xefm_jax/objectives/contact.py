"""Contact and affordance: is a hand touching something now, which one, and which objects
are relevant to what the wearer is doing.

Why: the eval suite's contact_prediction (hand contact: any-body contact is trivially on
for a wearer standing on the floor, so the suite scores the hands) and object_relevance
(the relevant-object set, micro-F1) are probed on frozen window embeddings; supervising them
here makes the embedding carry contact and object state explicitly.

From the "window" readout only, at the last context frame ("now"):
  contact     the left and right wrist (contact joints 19 and 20,
              xperience.HAND_CONTACT_JOINTS; binary each) above `threshold`; `contacts` is
              a target field, never a model input, as the eval's "window without contact
              channels" requires.
  objects     the relevant-object multi-hot (sigmoid per object).
Only windows in `heads.supervised_rows` train these heads (a caption names the objects).
predict(): logits: hand_contact (B, 2) (left, right), contact (B,) (either hand: the
larger of the two), objects (B, num_objects).
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
  """Window-level contact and object labels at now (shared with the evaluation suite).
  any_contact (any of the 21 joints, feet included) is kept for the captioning JSON."""
  contacts = batch["contacts"][:, -1] > threshold  # (B, 21)
  hand = contacts[:, list(xperience.HAND_CONTACT_JOINTS)]  # (B, 2)
  return {"any_contact": contacts.any(axis=-1), "hand_contact": hand,
          "contact": hand.any(axis=-1), "objects": batch["objects"][:, -1]}


@base.register("contact")
class Contact(base.Objective):

  def setup(self):
    kw = dict(hidden=self.config.hidden, param_dtype=jnp.dtype(self.model_config.param_dtype))
    self.heads = {"hand_contact": heads.MLPHead(2, **kw),
                  "objects": heads.MLPHead(self.data_config.num_objects, **kw)}

  def _logits(self, ctx: base.Context) -> dict[str, Array]:
    x = heads.readout(ctx.out, self.model_config, self.config.readout)  # (B, D) fp32
    logits = {name: head(x) for name, head in self.heads.items()}
    logits["contact"] = jnp.max(logits["hand_contact"], axis=-1)
    return logits

  def __call__(self, ctx: base.Context, *, train: bool) -> tuple[Array, dict[str, Array]]:
    logits = self._logits(ctx)
    t = targets(ctx.batch, self.config.threshold)
    rows = heads.supervised_rows(ctx)[:, None]  # (B, 1)
    metrics = {"supervised_fraction": jnp.mean(rows.astype(jnp.float32))}
    contact_loss, acc = heads.binary(logits["hand_contact"], t["hand_contact"], rows)
    metrics["hand_contact_loss"], metrics["hand_contact_accuracy"] = contact_loss, acc
    objects_loss, acc = heads.binary(logits["objects"], t["objects"], rows)
    metrics["objects_loss"], metrics["objects_accuracy"] = objects_loss, acc
    predicted, truth = logits["objects"] > 0, t["objects"]
    tp = jnp.sum(predicted & truth & rows)
    metrics["objects_micro_f1"] = 2 * tp / jnp.maximum(
        jnp.sum(predicted & rows) + jnp.sum(truth & rows), 1)
    return (contact_loss + objects_loss) / 2, metrics

  def predict(self, ctx: base.Context) -> dict[str, Array]:
    return self._logits(ctx)
