"""What every objective shares: the context it reads, its interface and the registry.

An objective is one file in this package defining an `Objective` subclass decorated with
`@register("<name>")`, plus one entry `config.objectives.<name>` with at least `weight`
(0 disables it). It owns its head's parameters (under its name in the Pretrainer's tree),
reads the model's output and the window batch from a `Context`, and returns a scalar loss
and scalar metrics. Heads read the trunk; nothing flows back into the trunk's forward pass,
so adding or removing an objective never changes what another one sees (Octo's rule).

Three optional hooks act before the forward pass:
  * `hide(batch, token_counts)` returns per-modality token-keep masks (masked modeling);
  * `needs_target = True` asks the train step for the EMA encoder's output on the next
    window (future-state prediction), passed in as `Context.target`;
  * `side_passes()` asks for extra passes of the trunk over a subset of the modalities, on
    every k-th window of the batch (contrastive alignment of the fused sides of a window),
    handed in as `Context.passes`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping, Optional

import flax
import flax.linen as nn
import jax
import ml_collections

from xefm_jax import registry
from xefm_jax.model.xefm import XEFMOutput

Array = jax.Array


@flax.struct.dataclass
class Context:
  """What an objective reads.

  batch: the window batch (xefm_jax/data/spec.py), batch-major.
  out: the training forward pass of the trunk on `batch` (with `keep` applied).
  keep: {modality: (B, n) bool} token-keep masks the pass used; {} when nothing was hidden.
  target: the EMA encoder's output on batch["next"] (stop-gradient), or None.
  passes: {name: the trunk's output over a subset of modalities, on every k-th window}
    (the objectives' `side_passes`); {} when none was asked for.
  pass_batch: the windows those passes saw (a sub-batch of `batch`), or {}.
  masked_rows: hide() may have hidden tokens in the first `masked_rows` rows of each
    device's block of the batch only (static; 0 in a pass that hides nothing): heads that
    train on unmasked windows run on the rest (`heads.sub_batch`).
  """

  batch: Mapping[str, Any]
  out: XEFMOutput
  keep: Mapping[str, Array]
  target: Optional[XEFMOutput] = None
  passes: Mapping[str, XEFMOutput] = flax.struct.field(default_factory=dict)
  pass_batch: Mapping[str, Any] = flax.struct.field(default_factory=dict)
  masked_rows: int = flax.struct.field(pytree_node=False, default=0)


class Objective(nn.Module):
  """Base of the objectives. `__call__(ctx, train=...) -> (loss, metrics)`.

  config: config.objectives.<name>; model_config: config.model (widths, dtypes);
  data_config: config.data (label and vocabulary sizes, window sizes).
  """

  needs_target: ClassVar[bool] = False
  # False: the loss needs training-only inputs (hidden tokens, caption-blind windows) and is
  # zero in an evaluation pass; the loop reports no val numbers for it.
  scored_in_eval: ClassVar[bool] = True
  config: ml_collections.ConfigDict
  model_config: ml_collections.ConfigDict
  data_config: ml_collections.ConfigDict

  def hide(self, batch: Mapping[str, Any], token_counts: Mapping[str, int]
           ) -> Optional[dict[str, Array]]:
    """Token-keep masks for the forward pass, or None (the default: hide nothing). Only
    the first `masked_rows(batch_size)` rows of each device's block may hide tokens."""
    return None

  def masked_rows(self, batch_size: int) -> int:
    """How many leading rows of each device's block `hide` may mask (0: none)."""
    return 0

  def side_passes(self) -> tuple[int, dict[str, tuple[str, ...]]]:
    """(k, {pass name: modalities}): extra passes over one window in k of the batch (every
    k-th of each device's rows: parallel.sharding.local_rows); (1, {}) by default."""
    return 1, {}

  def predict(self, ctx: Context) -> dict[str, Array]:
    """The head's outputs for evaluation (logits, forecasts, embeddings); {} by default."""
    return {}


OBJECTIVES: registry.Registry = registry.Registry("objective", "xefm_jax.objectives")
register = OBJECTIVES.register
get_objective = OBJECTIVES.get


def enabled(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """Objectives with a positive weight, in name order."""
  return tuple(sorted(n for n, c in config.objectives.items() if c.weight > 0))
