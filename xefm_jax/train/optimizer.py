"""The optimizer (config.optim): AdamW with linear warmup and cosine decay, global-norm
clipping, weight decay on kernels only, and per-group trainability.

Trainability (config.optim.trainable, big_vision's `schedule` / `lr_mults` in one table):
(regex, rule) pairs matched against parameter paths ("model/video/encoder/..."), the first
full match deciding. "frozen" parameters go to `optax.set_to_zero` inside an
`optax.multi_transform`: AdamW never sees them, so no moments are allocated for them, and
the train step does not differentiate them at all (train/step.py `partition`); "full" and
learning-rate scales get an AdamW each on the same schedule, scaled. With no rule (the
default) the optimizer is the plain chain, so checkpoints of earlier runs still restore.

Gradient accumulation is not an optax wrapper here: `optax.MultiSteps` would make every
microbatch a separate call of the jitted step (a dispatch, a NaN check, a data fetch each),
keep a persistent accumulator in the optimizer state (checkpointed, sharded, a full copy of
the parameters), and make "step" mean a microbatch in logs and schedules. Instead the train
step splits its global batch into `config.optim.grad_accum` microbatches and sums their
gradients in a `lax.scan` (train/step.py): one call per optimizer step, the accumulator a
temporary of the step, activations of one microbatch alive at a time.
"""

from __future__ import annotations

import re
from typing import Any

from absl import logging
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


FROZEN, FULL = "frozen", "full"


def param_name(path) -> str:
  """A parameter's path as the regexes see it: "model/video/encoder/layers_0/mlp/wi/kernel"."""
  parts = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
  return "/".join(parts)


def trainable_rules(optim: ml_collections.ConfigDict) -> tuple[tuple[re.Pattern, Any], ...]:
  """config.optim.trainable compiled and checked: (pattern, "frozen" | "full" | scale)."""
  rules = []
  for i, entry in enumerate(tuple(optim.get("trainable", ()) or ())):
    where = f"config.optim.trainable[{i}]"
    if not (isinstance(entry, (tuple, list)) and len(entry) == 2 and isinstance(entry[0], str)):
      raise ValueError(f"{where}: is {entry!r}, expected a (regex, rule) pair")
    regex, rule = entry
    try:
      pattern = re.compile(regex)
    except re.error as e:
      raise ValueError(f"{where}: {regex!r} is not a regular expression ({e})") from None
    if isinstance(rule, bool) or not (rule in (FROZEN, FULL) or (
        isinstance(rule, (int, float)) and rule > 0)):
      raise ValueError(f"{where}: rule {rule!r} for {regex!r}, expected 'frozen', 'full' or "
                       "a learning-rate scale > 0")
    rules.append((pattern, FULL if rule == 1 else rule))
  return tuple(rules)


def _label(rule: Any) -> str:
  return rule if isinstance(rule, str) else f"lr_x{float(rule):g}"


def labels(params: PyTree, rules: tuple[tuple[re.Pattern, Any], ...]) -> PyTree:
  """The group of every parameter: "frozen", "full" or "lr_x<scale>"."""
  def one(path, _):
    name = param_name(path)
    for pattern, rule in rules:
      if pattern.fullmatch(name):
        return _label(rule)
    return FULL
  return jax.tree_util.tree_map_with_path(one, params)


def frozen_mask(params: PyTree, optim: ml_collections.ConfigDict) -> PyTree:
  """True where a parameter is frozen by config.optim.trainable."""
  return jax.tree.map(lambda label: label == FROZEN, labels(params, trainable_rules(optim)))


def describe(params: PyTree, optim: ml_collections.ConfigDict) -> dict[str, int]:
  """Parameters per group (sizes), for the log; warns about rules that match nothing (a
  typo, or a head whose objective is disabled in this run)."""
  rules = trainable_rules(optim)
  names = [param_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  for pattern, rule in rules:
    if not any(pattern.fullmatch(n) for n in names):
      logging.warning("config.optim.trainable: %r (%s) matches no parameter",
                      pattern.pattern, rule)
  sizes: dict[str, int] = {}
  for label, x in zip(jax.tree.leaves(labels(params, rules)), jax.tree.leaves(params)):
    sizes[label] = sizes.get(label, 0) + int(x.size)
  return sizes


def make(optim: ml_collections.ConfigDict, total_steps: int
         ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The gradient transformation and its learning-rate schedule (for logging)."""
  lr = schedule(optim, total_steps)
  rules = trainable_rules(optim)

  def adamw(scale: float) -> optax.GradientTransformation:
    rate = lr if scale == 1 else (lambda count: lr(count) * scale)
    return optax.adamw(rate, b1=optim.b1, b2=optim.b2, eps=optim.eps,
                       weight_decay=optim.weight_decay, mask=decay_mask)

  parts = []
  if optim.clip_norm > 0:  # frozen gradients are zero: the norm is the trained ones'
    parts.append(optax.clip_by_global_norm(optim.clip_norm))
  if all(rule == FULL for _, rule in rules):
    parts.append(adamw(1.0))
  else:
    groups = {FULL: adamw(1.0), FROZEN: optax.set_to_zero()}
    for _, rule in rules:
      if not isinstance(rule, str):
        groups[_label(rule)] = adamw(float(rule))
    parts.append(optax.multi_transform(groups, lambda tree: labels(tree, rules)))
  return optax.chain(*parts), lr
