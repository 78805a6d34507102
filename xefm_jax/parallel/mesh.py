"""The device mesh from the config: axes (data, fsdp, tensor), all `AxisType.Auto`.

data: pure data parallelism (parameters replicated; across slices / slow links).
fsdp: data parallelism with parameters and optimizer state sharded (ZeRO-3).
tensor: Megatron tensor parallelism over heads and MLP (inside a fast NVLink/ICI domain).
Auto axes leave the partitioning of everything between the annotated boundaries to XLA's
sharding propagation (GSPMD), the MaxText model.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import ml_collections
from jax.sharding import AbstractMesh, AxisType, Mesh

MESH_AXES = ("data", "fsdp", "tensor")


def mesh_shape(mesh_config: ml_collections.ConfigDict, num_devices: int) -> tuple[int, ...]:
  """Axis sizes in MESH_AXES order; one -1 takes whatever the others leave."""
  sizes = [int(mesh_config[a]) for a in MESH_AXES]
  fill = [i for i, s in enumerate(sizes) if s == -1]
  if len(fill) > 1 or any(s == 0 or s < -1 for s in sizes):
    raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))}: sizes must be positive, "
                     "with at most one -1")
  fixed = math.prod(s for s in sizes if s != -1)
  if fill:
    if num_devices % fixed:
      raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))}: {num_devices} devices are not "
                       f"divisible by the fixed axes' product {fixed}")
    sizes[fill[0]] = num_devices // fixed
  if math.prod(sizes) != num_devices:
    raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, "
                     f"have {num_devices}")
  return tuple(sizes)


def make_mesh(mesh_config: ml_collections.ConfigDict,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """The mesh over `devices` (default: all), laid out by `jax.make_mesh` for the topology."""
  devices = jax.devices() if devices is None else list(devices)
  shape = mesh_shape(mesh_config, len(devices))
  return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                       devices=devices)


def abstract_mesh(mesh_config: ml_collections.ConfigDict, num_devices: int) -> AbstractMesh:
  """Sizes and names only, no devices: per-device accounting for a target topology."""
  return AbstractMesh(mesh_shape(mesh_config, num_devices), MESH_AXES,
                      axis_types=(AxisType.Auto,) * len(MESH_AXES))
