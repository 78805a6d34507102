"""The train state, and its creation directly on its shards.

Everything a step reads and writes is one pytree (a flax struct), so the jitted step can
take it with one sharding tree and donate it whole, and Orbax can save and restore it whole.

Creation follows parallel/init.py: the initialisers are traced once (`Initializer`: their
program and the shapes and logical names of its outputs, nothing allocated), the config's
rules turn the names into NamedShardings, and `jax.jit(init, out_shardings=...)` of that same
program makes every device compute only its own shards of the parameters, the optimizer
state and the EMA. The abstract state (ShapeDtypeStructs that carry those shardings) is also
what a restore targets, so a checkpoint written on one mesh is read back onto another.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.extend import core as jax_core
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from xefm_jax.model.xefm import XEFM
from xefm_jax.objectives.pretrainer import Pretrainer
from xefm_jax.parallel import init as init_lib
from xefm_jax.parallel import sharding
from xefm_jax.train import fused_draws

PyTree = Any


@flax.struct.dataclass
class TrainState:
  """step: () int32, batches consumed (applied + skipped updates); the data iterator and
    the per-step rng follow it, so a restored run replays exactly.
  params: {"model": the trunk, "<objective>": its head}, fp32 master weights.
  opt_state: the optax state (its parameter-shaped leaves sharded like the parameters).
  ema: exponential moving average of params["model"]: the target encoder.
  rng: the run's base key as raw key data (uint32, checkpointable); step keys fold in step.
  skipped: () int32, steps whose loss or gradient was not finite (update not applied).
  """

  step: jax.Array
  params: PyTree
  opt_state: PyTree
  ema: PyTree
  rng: jax.Array
  skipped: jax.Array


def target_shapes(config: ml_collections.ConfigDict, batch: PyTree) -> Optional[PyTree]:
  """Shapes of the EMA encoder's output on batch["next"], if an objective needs it."""
  if not Pretrainer(config).needs_target:
    return None
  model = XEFM(config.model)
  return jax.eval_shape(
      lambda b: model.init_with_output(jax.random.key(0), b, method=XEFM.encode_next)[0],
      batch)


def _zeros(shapes: PyTree) -> PyTree:
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def _init_fn(config: ml_collections.ConfigDict, tx: optax.GradientTransformation,
             batch: PyTree):
  """seed key data -> TrainState, its params boxed with their logical names. Only the
  batch's shapes matter: its values never reach the parameters (the forward pass init
  traces is dead code, removed by XLA)."""
  pretrainer = Pretrainer(config)
  batch = init_lib.abstract_batch(batch)
  target = target_shapes(config, batch)
  impl = config.train.rng_impl

  def init(seed: jax.Array) -> TrainState:
    key = jax.random.wrap_key_data(seed, impl=impl)
    k_params, k_mask, k_drop, k_run = jax.random.split(key, 4)
    variables = pretrainer.init({"params": k_params, "masking": k_mask, "dropout": k_drop},
                                _zeros(batch), None if target is None else _zeros(target),
                                train=True)
    params = nn.unbox(variables["params"])
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=variables["params"],
        opt_state=tx.init(params),
        ema=jax.tree.map(jnp.copy, params["model"]),  # its own buffers: donated separately
        rng=jax.random.key_data(k_run),
        skipped=jnp.zeros((), jnp.int32))
  return init


def seed_data(config: ml_collections.ConfigDict) -> jax.Array:
  """The raw key data init starts from (config.seed, config.train.rng_impl)."""
  return jax.random.key_data(jax.random.key(config.seed, impl=config.train.rng_impl))


@dataclasses.dataclass(frozen=True, eq=False)  # hashed by identity: jax.jit takes it
class Initializer:
  """The state's initialiser, traced once: `boxed` (the output's ShapeDtypeStructs, params
  boxed with their logical names) gives the abstract state and its shardings, and calling it
  replays the same program (`jaxpr`) for `create` to compile, instead of tracing the model a
  second time (seconds per launch at any size: the trace is Python, not XLA).

  `fused` (config.train.fused_init_draws): the random bits of the parameters come from one
  flat draw, compiled as a program of its own (`draw`; train/fused_draws.py): the tiny
  model's initialiser compiles in a fraction of the time, with other values than the
  per-parameter draws for the same seed."""

  jaxpr: jax_core.ClosedJaxpr
  boxed: TrainState
  impl: str = "threefry2x32"
  fused: bool = False

  @classmethod
  def trace(cls, config: ml_collections.ConfigDict, tx: optax.GradientTransformation,
            batch: PyTree) -> "Initializer":
    seed = jax.ShapeDtypeStruct(seed_data(config).shape, jnp.uint32)
    jaxpr, boxed = jax.make_jaxpr(_init_fn(config, tx, batch), return_shape=True)(seed)
    return cls(jaxpr, boxed, config.train.rng_impl,
               bool(config.train.get("fused_init_draws", False)))

  @functools.cached_property
  def _fused(self) -> fused_draws.FusedDraws:
    return fused_draws.FusedDraws(self.jaxpr)

  def draw(self, seed: jax.Array) -> dict[int, jax.Array]:
    """The flat draws `__call__` reads when `fused`, from the seed's key data."""
    key = jax.random.wrap_key_data(seed, impl=self.impl)
    return self._fused.draw(jax.random.fold_in(key, fused_draws.POOL))

  def __call__(self, seed: jax.Array, flat: Optional[dict[int, jax.Array]] = None
               ) -> TrainState:
    """seed key data -> the TrainState, unboxed (`flat`: `draw(seed)`, computed apart)."""
    if self.fused:
      leaves = self._fused.apply(self.draw(seed) if flat is None else flat, seed)
    else:
      leaves = jax_core.jaxpr_as_fun(self.jaxpr)(seed)
    state = jax.tree.unflatten(jax.tree.structure(self.boxed), leaves)
    return state.replace(params=nn.unbox(state.params))


def _like_params(tree: PyTree, params: PyTree, param_shardings: PyTree,
                 other: NamedSharding) -> PyTree:
  """Shardings for an optimizer state: a leaf that mirrors a parameter (its dict path below
  the state's tuples, named tuples and group dicts ends with the parameter's path; the same
  shape) is sharded like it; anything else (step counts, scalars) gets `other`. Holds for
  any optax chain, masked or partitioned (multi_transform's {group: state} dicts)."""
  def dict_path(path) -> tuple:
    return tuple(k.key for k in path if isinstance(k, jax.tree_util.DictKey))
  shapes = {dict_path(p): x.shape for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}
  by_path = {dict_path(p): s for p, s in
             jax.tree_util.tree_flatten_with_path(param_shardings)[0]}

  def pick(path, leaf):
    full = dict_path(path)
    for i in range(len(full)):
      key = full[i:]
      if key in by_path:
        return by_path[key] if shapes[key] == leaf.shape else other
    return other
  return jax.tree_util.tree_map_with_path(pick, tree)


def abstract_state(config: ml_collections.ConfigDict, tx: optax.GradientTransformation,
                   batch: PyTree, mesh: Mesh, rules: sharding.Rules,
                   init: Optional[Initializer] = None) -> tuple[TrainState, TrainState]:
  """(the state's ShapeDtypeStructs with their shardings, the matching NamedShardings).

  Nothing is allocated: a 7B model's state on a 128-device mesh is described on a laptop
  (launch/aot_check.py), and a restore reads each shard straight onto its device. `init`:
  the initialiser already traced (else traced here).
  """
  boxed = (init or Initializer.trace(config, tx, batch)).boxed
  param_sh = sharding.param_shardings(boxed.params, mesh, rules)
  params = nn.unbox(boxed.params)
  sharding.check_divisible(params, sharding.mesh_specs(boxed.params, rules), mesh)
  replicated = NamedSharding(mesh, PartitionSpec())
  shardings = TrainState(
      step=replicated, params=param_sh,
      opt_state=_like_params(boxed.opt_state, params, param_sh, replicated),
      ema=param_sh["model"], rng=replicated, skipped=replicated)
  shapes = boxed.replace(params=params)
  abstract = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                          shapes, shardings)
  return abstract, shardings


def create(config: ml_collections.ConfigDict, tx: optax.GradientTransformation,
           batch: PyTree, mesh: Mesh, rules: sharding.Rules,
           shardings: Optional[TrainState] = None,
           init: Optional[Initializer] = None) -> TrainState:
  """A fresh state, each device computing only its own shards (`init`: the initialiser
  already traced, e.g. by StepPlan.make)."""
  init = init or Initializer.trace(config, tx, batch)
  if shardings is None:
    _, shardings = abstract_state(config, tx, batch, mesh, rules, init)
  seed = seed_data(config)
  with sharding.activate(mesh, rules):
    if not init.fused:
      return jax.jit(init, out_shardings=shardings)(seed)
    flat = jax.jit(init.draw, out_shardings=NamedSharding(mesh, PartitionSpec()))(seed)
    return jax.jit(init, out_shardings=shardings)(seed, flat)
