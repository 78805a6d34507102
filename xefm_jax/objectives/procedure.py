"""Action and procedure prediction: current action, subtask, next action, transition.

From the "window" readout: the action class and the subtask at the window's last context
frame ("now"), the action class `next_horizon` frames later (the eval suite's next_action:
t + 20 frames), and whether an action boundary lies within +-10 frames of now (the suite's
transition_detection, the shard's per-frame `transition` label: made from the episode's
whole action timeline, so it does not depend on the window's length). Labels of -1 (no
action, or a label unseen in the manifest) are ignored.

Only windows in `heads.supervised_rows` train these heads: a window whose caption was an
input states its own action and subtask ("the left hand is pouring ..."), and a masked
window is not the input the evaluation gives.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp

from xefm_jax.objectives import base
from xefm_jax.objectives import heads

Array = jax.Array


def targets(batch: Mapping[str, Any], next_horizon: int) -> dict[str, Array]:
  """Window-level labels from the per-frame ones (shared with the evaluation suite)."""
  future = batch["future"]
  h = min(next_horizon, future["action"].shape[1])
  return {"action": batch["action"][:, -1], "subtask": batch["subtask"][:, -1],
          "next_action": future["action"][:, h - 1], "transition": batch["transition"][:, -1]}


@base.register("procedure")
class Procedure(base.Objective):

  def setup(self):
    d = self.data_config
    kw = dict(hidden=self.config.hidden, dtype=jnp.float32,
              param_dtype=jnp.dtype(self.model_config.param_dtype))
    self.heads = {"action": heads.MLPHead(d.num_actions, **kw),
                  "subtask": heads.MLPHead(d.num_subtasks, **kw),
                  "next_action": heads.MLPHead(d.num_actions, **kw),
                  "transition": heads.MLPHead(1, **kw)}

  def _logits(self, ctx: base.Context) -> dict[str, Array]:
    x = heads.readout(ctx.out, self.model_config, self.config.readout)  # (B, D) fp32
    logits = {name: head(x) for name, head in self.heads.items()}
    logits["transition"] = logits["transition"][:, 0]
    return logits

  def __call__(self, ctx: base.Context, *, train: bool) -> tuple[Array, dict[str, Array]]:
    logits = self._logits(ctx)
    t = targets(ctx.batch, self.config.next_horizon)
    rows = heads.supervised_rows(ctx)  # (B,)
    metrics, losses = {"supervised_fraction": jnp.mean(rows.astype(jnp.float32))}, []
    for name in ("action", "subtask", "next_action"):
      loss, acc = heads.classification(logits[name], t[name], rows)
      metrics[f"{name}_loss"], metrics[f"{name}_accuracy"] = loss, acc
      losses.append(loss)
    loss, acc = heads.binary(logits["transition"], t["transition"], rows)
    metrics["transition_loss"], metrics["transition_accuracy"] = loss, acc
    losses.append(loss)
    return sum(losses) / len(losses), metrics

  def predict(self, ctx: base.Context) -> dict[str, Array]:
    return self._logits(ctx)
