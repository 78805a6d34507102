"""Logical axis names -> NamedShardings, by the config's `logical_axis_rules` table.

The model only names axes; this file (and the table in the config) decides placement:
  * parameters: the names attached by `nn.with_logical_partitioning`, via the rules;
  * activations: `nn.with_logical_constraint` inside the model, active under `activate`;
  * the batch: its leading axis over the mesh axes the rules give "activation_batch"
    (data x fsdp), every other axis replicated.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator, Sequence

import flax.linen as nn
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
import numpy as np

Rules = Sequence[tuple[str, Any]]


def rules_from_config(config: Any) -> tuple[tuple[str, Any], ...]:
  """The rules table as a tuple of (logical name, mesh axes) pairs."""
  return tuple((name, tuple(axes) if isinstance(axes, list) else axes)
               for name, axes in config.logical_axis_rules)


@contextlib.contextmanager
def activate(mesh: Mesh, rules: Rules) -> Iterator[None]:
  """Mesh + rules context under which the model's logical constraints take effect.

  Trace (first call of a jitted function) inside it; `jax.set_mesh` also makes the mesh
  the default for jit's sharding arguments.
  """
  with jax.set_mesh(mesh), nn.logical_axis_rules(tuple(rules)):
    yield


def logical_specs(boxed_tree: Any) -> Any:
  """PartitionSpecs of logical names from a tree of `nn.LogicallyPartitioned` (e.g. the
  output of `jax.eval_shape(model.init, ...)`); unboxed leaves get PartitionSpec()."""
  return nn.get_partition_spec(boxed_tree)


def mesh_specs(boxed_tree: Any, rules: Rules) -> Any:
  """PartitionSpecs of mesh axes for every leaf of a boxed tree."""
  return nn.logical_to_mesh(logical_specs(boxed_tree), tuple(rules))


def param_shardings(boxed_tree: Any, mesh: Mesh, rules: Rules) -> Any:
  """NamedShardings for every leaf, in the unboxed tree structure."""
  return nn.logical_to_mesh_sharding(logical_specs(boxed_tree), mesh, tuple(rules))


def check_divisible(variables: Any, specs: Any, mesh: Any) -> None:
  """Fail early, naming the parameter, where a dimension does not split evenly over the mesh
  axes its rule gives it (jit would fail later with a less helpful message).

  variables: arrays or ShapeDtypeStructs; specs: the matching mesh-axis PartitionSpecs;
  mesh: a Mesh or AbstractMesh.
  """
  shapes = jax.tree_util.tree_flatten_with_path(variables)[0]
  spec_leaves = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, PartitionSpec))
  for (path, x), spec in zip(shapes, spec_leaves):
    for dim, axes in zip(x.shape, spec):
      if axes is None:
        continue
      axes = (axes,) if isinstance(axes, str) else tuple(axes)
      size = math.prod(mesh.shape[a] for a in axes)
      if dim % size:
        raise ValueError(f"parameter {jax.tree_util.keystr(path)} of shape {x.shape}: "
                         f"dimension {dim} does not split over mesh axes {axes} (size {size}); "
                         "change the model size, the mesh or config.logical_axis_rules")


def batch_spec(rules: Rules) -> PartitionSpec:
  """The batch axis's placement: whatever the rules say for "activation_batch"."""
  return nn.logical_to_mesh_axes(("activation_batch",), tuple(rules))


def batch_shards() -> int:
  """How many shards the batch axis has under the current mesh and rules context (the
  product of the mesh axes "activation_batch" maps to); 1 outside a mesh."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh is None or mesh.empty:
    return 1
  spec = nn.logical_to_mesh_axes(("activation_batch",), nn.get_logical_axis_rules())[0]
  axes = () if spec is None else (spec,) if isinstance(spec, str) else tuple(spec)
  return math.prod(mesh.shape[a] for a in axes)


def local_rows(x: jax.Array, every: int, shards: int) -> jax.Array:
  """Every `every`-th row of each of the batch's `shards` contiguous blocks (at least one
  per block), so the selection stays on the devices that hold it: a strided slice of the
  global batch would move rows between devices whenever a block holds fewer than `every`
  rows."""
  local = x.shape[0] // shards
  step, count = min(every, local), max(1, local // every)
  blocks = x.reshape((shards, local) + x.shape[1:])  # (shards, local, ...)
  return blocks[:, :step * count:step].reshape((shards * count,) + x.shape[1:])


def block_rows(x: jax.Array, rows: slice, shards: int) -> jax.Array:
  """Rows `rows` (a slice of each block's positions) of each of the batch's `shards`
  contiguous blocks: a static sub-batch that stays on the devices holding it (see
  local_rows)."""
  local = x.shape[0] // shards
  blocks = x.reshape((shards, local) + x.shape[1:])[:, rows]
  return blocks.reshape((shards * blocks.shape[1],) + x.shape[1:])


def block_row_mask(batch_size: int, rows: slice, shards: int) -> np.ndarray:
  """(batch_size,) bool, static: True on the rows `block_rows(x, rows, shards)` takes."""
  mask = np.zeros(batch_size, bool)
  mask[block_rows(np.arange(batch_size), rows, shards)] = True
  return mask


def batch_shardings(batch: Any, mesh: Mesh, rules: Rules) -> Any:
  """NamedSharding for each array of a (nested) batch: leading axis split, rest replicated."""
  sharding = NamedSharding(mesh, batch_spec(rules))
  return jax.tree.map(lambda _: sharding, batch)


def shard_batch(batch: Any, mesh: Mesh, rules: Rules) -> Any:
  """Place a host-local global batch on the mesh (one process; multi-host input goes
  through `jax.make_array_from_process_local_data` in the data pipeline)."""
  return jax.device_put(batch, batch_shardings(batch, mesh, rules))
