"""Sharded initialisation: parameters are born on their shards, never whole on one device.

1. `jax.eval_shape(model.init)` traces the model with abstract inputs: shapes, dtypes and
   the logical names of every parameter, no memory.
2. The names go through the rules to NamedShardings.
3. `jax.jit(init, out_shardings=...)` runs the initialisers with each device computing
   only its own shard (the forward pass that init traces is dead code and removed).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from xefm_jax.data import spec
from xefm_jax.parallel import sharding
from xefm_jax.train import fused_draws

PyTree = Any


def abstract_batch(batch: PyTree) -> PyTree:
  """ShapeDtypeStructs of a batch (arrays, or anything with .shape and .dtype)."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), batch)


def abstract_window_batch(window_spec: spec.WindowSpec, batch_size: int) -> PyTree:
  """ShapeDtypeStructs of a batch of windows straight from the contract (no arrays)."""
  def convert(tree):
    return {k: convert(v) if isinstance(v, dict) else jax.ShapeDtypeStruct(*v)
            for k, v in tree.items()}
  return convert(spec.batch_shapes(window_spec, batch_size))


def abstract_variables(model: nn.Module, batch: PyTree, rng: jax.Array | None = None
                       ) -> PyTree:
  """Boxed (LogicallyPartitioned) variable shapes: nothing is allocated."""
  rng = jax.random.key(0) if rng is None else rng
  return jax.eval_shape(model.init, rng, abstract_batch(batch))


def init_sharded(model: nn.Module, batch: PyTree, mesh: Mesh, rules: sharding.Rules,
                 rng: jax.Array, fused: bool = False) -> tuple[PyTree, PyTree]:
  """Unboxed variables created sharded on `mesh`, and their NamedShardings.

  batch: a batch or its abstract shapes; only shapes matter (parameter shapes follow the
  window's, the values never reach the parameters). fused: the random bits from one flat
  draw (config.train.fused_init_draws; train/fused_draws.py), other values for the key.
  """
  shapes = abstract_batch(batch)
  boxed = abstract_variables(model, shapes, rng)
  shardings = sharding.param_shardings(boxed, mesh, rules)
  sharding.check_divisible(nn.unbox(boxed), sharding.mesh_specs(boxed, rules), mesh)

  def init(key: jax.Array) -> PyTree:
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    return nn.unbox(model.init(key, zeros))

  with sharding.activate(mesh, rules):
    if not fused:
      return jax.jit(init, out_shardings=shardings)(rng), shardings
    return fused_draws.jit_init(init, rng, shardings,
                                NamedSharding(mesh, PartitionSpec())), shardings
