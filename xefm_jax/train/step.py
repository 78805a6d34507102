"""The jitted train and eval steps.

    train_step = jit_train_step(make_train_step(config, tx, lr), state_shardings, batch_shardings)
    state, metrics = train_step(state, batch)        # state donated: updated in place

One train step: the EMA encoder's target on batch["next"] (when an objective needs it),
loss and gradients of the Pretrainer (over `config.optim.grad_accum` microbatches), the
optax update, the EMA update, and a guard: when the loss or the gradient norm is not finite,
parameters, optimizer state and EMA stay as they were, `skipped` counts it, and `step`
still advances (it counts batches, so the data and the rng stay aligned with it).

Frozen parameters (config.optim.trainable) are not differentiated: the step takes the
gradient with respect to the trained parameters only and passes the frozen ones in as
constants, so a frozen tower has no backward pass, no gradient buffers and no accumulator;
its zero "gradients" exist only to give the optimizer a full tree (set_to_zero ignores
them, and XLA removes them).

Randomness: the key of step s is fold_in(state.rng, s) (microbatch i: fold_in of that, i),
so a resumed run draws the same masks and dropout as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import NamedSharding, PartitionSpec

from xefm_jax.data import spec as spec_lib
from xefm_jax.model.xefm import XEFM
from xefm_jax.objectives import base as objectives_base
from xefm_jax.objectives.pretrainer import Pretrainer
from xefm_jax.parallel import init as init_lib
from xefm_jax.parallel import sharding
from xefm_jax.train import optimizer
from xefm_jax.train import state as state_lib
from xefm_jax.train.state import TrainState

PyTree = Any
Metrics = dict[str, jax.Array]


def ema_target(config: ml_collections.ConfigDict, ema: PyTree, batch: PyTree) -> PyTree:
  """The EMA encoder's output on batch["next"], with no gradient (future-state target)."""
  out = XEFM(config.model).apply({"params": ema}, batch, method=XEFM.encode_next)
  return jax.lax.stop_gradient(out)


def microbatches(batch: PyTree, k: int, batch_sharding: NamedSharding) -> PyTree:
  """(B, ...) -> (k, B / k, ...) with microbatch i = rows i, i + k, i + 2k, ...

  Strided, not contiguous: every device holds a contiguous block of B / devices rows, so a
  strided split leaves each microbatch spread over all devices (no data moves), where a
  contiguous split would put microbatch i on a few devices only.
  """
  spec = PartitionSpec(None, *batch_sharding.spec)
  split = NamedSharding(batch_sharding.mesh, spec)

  def split_one(x):
    if x.shape[0] % k:
      raise ValueError(f"batch of {x.shape[0]} does not split into grad_accum={k} microbatches")
    x = jnp.swapaxes(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 0, 1)
    return jax.lax.with_sharding_constraint(x, split)
  return jax.tree.map(split_one, batch)


def partition(tree: PyTree, frozen: list[bool]) -> tuple[list, list]:
  """(trained leaves, frozen leaves) of `tree`, by the flat mask `frozen`."""
  leaves = jax.tree.leaves(tree)
  return ([x for x, f in zip(leaves, frozen) if not f],
          [x for x, f in zip(leaves, frozen) if f])


def combine(trained: list, frozen_leaves: list, frozen: list[bool], treedef) -> PyTree:
  """The inverse of `partition`."""
  trained, frozen_leaves = iter(trained), iter(frozen_leaves)
  return jax.tree.unflatten(treedef, [next(frozen_leaves) if f else next(trained)
                                      for f in frozen])


def make_train_step(config: ml_collections.ConfigDict, tx: optax.GradientTransformation,
                    lr: optax.Schedule, shardings: TrainState,
                    batch_sharding: NamedSharding) -> Callable[..., tuple[TrainState, Metrics]]:
  """The step function (not yet jitted): (state, batch) -> (state, metrics)."""
  pretrainer = Pretrainer(config)
  needs_target = pretrainer.needs_target
  k = int(config.optim.grad_accum)
  decay = float(config.train.ema_decay)
  impl = config.train.rng_impl
  treedef = jax.tree.structure(shardings.params)
  frozen = jax.tree.leaves(optimizer.frozen_mask(shardings.params, config.optim))
  trained_shardings = partition(shardings.params, frozen)[0]

  def loss_fn(trained, frozen_leaves, ema, batch, key):
    frozen_leaves = jax.lax.stop_gradient(frozen_leaves)
    params = combine(trained, frozen_leaves, frozen, treedef)
    target = ema_target(config, ema, batch) if needs_target else None
    k_mask, k_drop = jax.random.split(key)
    return pretrainer.apply({"params": params}, batch, target, train=True,
                            rngs={"masking": k_mask, "dropout": k_drop})

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def gradients(params, ema, batch, key) -> tuple[PyTree, Metrics]:
    """Gradients of the whole parameter tree (zeros where frozen) and the metrics."""
    trained, frozen_leaves = partition(params, frozen)

    def full(grads):
      zeros = [jnp.zeros_like(x) for x in frozen_leaves]
      return combine(grads, zeros, frozen, treedef)

    if k == 1:
      (_, metrics), grads = grad_fn(trained, frozen_leaves, ema, batch, key)
      return full(grads), metrics

    def body(acc, xs):
      mb, i = xs
      (_, metrics), grads = grad_fn(trained, frozen_leaves, ema, mb,
                                    jax.random.fold_in(key, i))
      return jax.tree.map(jnp.add, acc, (grads, metrics)), None

    micro = microbatches(batch, k, batch_sharding)
    shapes = jax.eval_shape(grad_fn, trained, frozen_leaves, ema,
                            jax.tree.map(lambda x: x[0], micro), key)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.float32), (shapes[1], shapes[0][1]))
    # the fp32 accumulator (trained parameters only) lives on the parameters' shards
    zeros = (jax.lax.with_sharding_constraint(zeros[0], trained_shardings), zeros[1])
    (grads, metrics), _ = jax.lax.scan(body, zeros, (micro, jnp.arange(k)))
    grads = jax.tree.map(lambda g, p: (g / k).astype(p.dtype), grads, trained)
    return full(grads), jax.tree.map(lambda m: m / k, metrics)

  def update(old: tuple[PyTree, PyTree, PyTree], grads: PyTree
             ) -> tuple[PyTree, PyTree, PyTree]:
    params, opt_state, ema = old
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params["model"])
    return params, opt_state, ema

  def train_step(state: TrainState, batch: PyTree) -> tuple[TrainState, Metrics]:
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng, impl=impl), state.step)
    grads, metrics = gradients(state.params, state.ema, batch, key)
    # The guard reads the loss and the gradients only (one reduction over the gradients,
    # the norm that clipping needs anyway); a non-finite step runs no update at all (the
    # branch not taken is not executed), so no select pass over parameters, optimizer
    # state and EMA is paid on the steps that are fine.
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(grad_norm)
    params, opt_state, ema = jax.lax.cond(
        finite, update, lambda old, _: old, (state.params, state.opt_state, state.ema), grads)
    skipped = (~finite).astype(jnp.int32)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              ema=ema, skipped=state.skipped + skipped)
    # The parameter norm (a full pass over the parameters) is not computed here: the loop
    # asks for it on the steps it logs (`param_norm`), so neither the run's length nor its
    # log interval enters the compiled step (runs of any length share one compiled program)
    metrics = dict(metrics)
    metrics.update(
        lr=lr(state.step - state.skipped),  # the rate this update used (optax's own count)
        grad_norm=grad_norm,
        skipped=skipped.astype(jnp.float32), skipped_total=new_state.skipped)
    return new_state, metrics

  return train_step


@jax.jit
def param_norm(params: PyTree) -> jax.Array:
  """The global L2 norm of the parameters (each device reduces its own shards): the loop
  calls it on the steps it logs."""
  return optax.tree.norm(params)


def jit_train_step(step_fn: Callable, shardings: TrainState, batch_shardings: PyTree):
  """jit with explicit shardings; the state (argument 0) is donated: the new state reuses
  its buffers, so parameters and optimizer state exist once, not twice, in memory."""
  mesh = jax.tree.leaves(shardings)[0].mesh
  return jax.jit(step_fn, in_shardings=(shardings, batch_shardings),
                 out_shardings=(shardings, NamedSharding(mesh, PartitionSpec())),
                 donate_argnums=(0,))


def make_eval_step(config: ml_collections.ConfigDict) -> Callable[..., dict[str, Any]]:
  """(params, ema, batch) -> {"metrics": val losses and metrics of the objectives scored in
  evaluation (no dropout, no masking; the EMA target as in training), "retrieval": {text,
  window, caption, caption_valid} or absent}.

  One forward pass of the trunk (`Pretrainer.evaluate`): the objectives not scored in
  evaluation are not run, and the retrieval embeddings (the contrastive objective's
  `predict` outputs, normalised; only when it is enabled) come from the same pass.
  """
  pretrainer = Pretrainer(config)
  scored = [n for n in objectives_base.enabled(config)
            if objectives_base.get_objective(n).scored_in_eval]
  needs_target = any(objectives_base.get_objective(n).needs_target for n in scored)
  with_retrieval = "contrastive" in scored

  def eval_step(params, ema, batch):
    target = ema_target(config, ema, batch) if needs_target else None
    (_, metrics), predictions = pretrainer.apply(
        {"params": params}, batch, target, predict=("contrastive",) if with_retrieval else (),
        method=Pretrainer.evaluate)
    out: dict[str, Any] = {"metrics": metrics}
    if with_retrieval:
      p = predictions["contrastive"]
      out["retrieval"] = {"text": p["text"].astype(jnp.float32),
                          "window": p["window"].astype(jnp.float32),
                          "caption": batch["caption"], "caption_valid": batch["caption_valid"]}
    return out
  return eval_step


def jit_eval_step(eval_fn: Callable, shardings: TrainState, batch_shardings: PyTree):
  """Outputs replicated: a few scalars and (B, D) embeddings every process can read."""
  mesh = jax.tree.leaves(shardings)[0].mesh
  return jax.jit(eval_fn, in_shardings=(shardings.params, shardings.ema, batch_shardings),
                 out_shardings=NamedSharding(mesh, PartitionSpec()))


@dataclasses.dataclass(frozen=True)
class StepPlan:
  """Everything a train step is compiled from, as abstract shapes with their shardings
  (shared by the loop, launch/aot_check.py and benchmarks/mfu.py)."""

  config: ml_collections.ConfigDict
  mesh: jax.sharding.Mesh
  rules: Any
  tx: optax.GradientTransformation
  lr: optax.Schedule
  abstract: TrainState  # ShapeDtypeStructs carrying their shardings
  shardings: TrainState
  init: state_lib.Initializer  # traced once: the abstract state's and create's
  batch_shapes: PyTree
  batch_sharding: NamedSharding
  batch_shardings: PyTree

  @classmethod
  def make(cls, config: ml_collections.ConfigDict, window: spec_lib.WindowSpec,
           mesh: jax.sharding.Mesh, rules: Any) -> "StepPlan":
    batch_shapes = init_lib.abstract_window_batch(window, config.data.batch_size)
    tx, lr = optimizer.make(config.optim, config.train.steps)
    init = state_lib.Initializer.trace(config, tx, batch_shapes)
    abstract, shardings = state_lib.abstract_state(config, tx, batch_shapes, mesh, rules, init)
    return cls(config, mesh, rules, tx, lr, abstract, shardings, init, batch_shapes,
               NamedSharding(mesh, sharding.batch_spec(rules)),
               sharding.batch_shardings(batch_shapes, mesh, rules))

  def create_state(self) -> TrainState:
    """A fresh state on its shards, from the initialiser this plan traced."""
    return state_lib.create(self.config, self.tx, self.batch_shapes, self.mesh, self.rules,
                            self.shardings, self.init)

  def trace(self) -> Any:
    """The jitted train step traced from abstract arguments: `.jaxpr` is its program
    (flops.step_model_flops reads it), `.lower().compile()` the executable."""
    abstract_batch = jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=self.batch_sharding),
        self.batch_shapes)
    with sharding.activate(self.mesh, self.rules):
      step = jit_train_step(make_train_step(self.config, self.tx, self.lr, self.shardings,
                                            self.batch_sharding),
                            self.shardings, self.batch_shardings)
      return step.trace(self.abstract, abstract_batch)

  def lower(self) -> Any:
    """The jitted train step lowered from abstract arguments (`.compile()` it)."""
    with sharding.activate(self.mesh, self.rules):
      return self.trace().lower()
