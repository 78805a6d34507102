"""The optimizer (config.optim): AdamW with linear warmup and cosine decay, global-norm
clipping, and weight decay on kernels only.

Gradient accumulation is not an optax wrapper here: `optax.MultiSteps` would make every
microbatch a separate call of the jitted step (a dispatch, a NaN check, a data fetch each),
keep a persistent accumulator in the optimizer state (checkpointed, sharded, a full copy of
the parameters), and make "step" mean a microbatch in logs and schedules. Instead the train
step splits its global batch into `config.optim.grad_accum` microbatches and sums their
gradients in a `lax.scan` (train/step.py): one call per optimizer step, the accumulator a
temporary of the step, activations of one microbatch alive at a time.
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
import optax

PyTree = Any


def schedule(optim: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Learning rate per optimizer update: 0 -> peak over warmup, then cosine to
  peak * end_lr_fraction over decay_steps (-1: the rest of the run), then flat."""
  warmup = int(optim.warmup_steps)
  decay = int(optim.decay_steps) if optim.decay_steps > 0 else max(total_steps - warmup, 1)
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=optim.learning_rate, warmup_steps=warmup,
      decay_steps=warmup + decay, end_value=optim.learning_rate * optim.end_lr_fraction)


def decay_mask(params: PyTree) -> PyTree:
  """True where weight decay applies: projection kernels. Norm scales, biases, embedding and
  learned tables (positions, modalities, readouts, mask tokens) are left alone: decaying
  them pulls scales towards 0 and rarely-seen table rows towards nothing, for no benefit."""
  def is_kernel(path, _):
    last = path[-1]
    return getattr(last, "key", getattr(last, "name", None)) == "kernel"
  return jax.tree_util.tree_map_with_path(is_kernel, params)


def make(optim: ml_collections.ConfigDict, total_steps: int
         ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The gradient transformation and its learning-rate schedule (for logging)."""
  lr = schedule(optim, total_steps)
  parts = []
  if optim.clip_norm > 0:
    parts.append(optax.clip_by_global_norm(optim.clip_norm))
  parts.append(optax.adamw(lr, b1=optim.b1, b2=optim.b2, eps=optim.eps,
                           weight_decay=optim.weight_decay, mask=decay_mask))
  return optax.chain(*parts), lr
