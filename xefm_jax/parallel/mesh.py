"""The device mesh from the config: axes (data, fsdp, tensor), all `AxisType.Auto`.

data: pure data parallelism (parameters replicated; across slices / slow links).
fsdp: data parallelism with parameters and optimizer state sharded (ZeRO-3).
tensor: Megatron tensor parallelism over heads and MLP (inside a fast NVLink/ICI domain).
Auto axes leave the partitioning of everything between the annotated boundaries to XLA's
sharding propagation (GSPMD), the MaxText model.

Hybrid meshes (MaxText's `dcn_*_parallelism`): `config.mesh.{data,fsdp,tensor}` are the
sizes INSIDE one granule (a GPU node on NVLink, a TPU slice on ICI) and
`config.mesh.dcn.{data,fsdp,tensor}` how many granules each axis spans over the slow
network (InfiniBand / DCN). The mesh axis is their product; the granule is the outer
(slow) factor of each axis, so with ICI (1, 8, 1) and DCN (4, 1, 1) on 4 nodes of 8 GPUs
every fsdp group (the per-layer all-gathers and reduce-scatters) is the 8 GPUs of one node
and only the data axis (one gradient all-reduce per step) crosses nodes. The rules table
(config.logical_axis_rules) still decides which array dimension goes on which axis; this
file only decides which devices make up each axis.
"""

from __future__ import annotations

import collections
import math
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AbstractMesh, AxisType, Mesh

MESH_AXES = ("data", "fsdp", "tensor")


def dcn_shape(mesh_config: ml_collections.ConfigDict) -> tuple[int, ...]:
  """Granules per axis over the slow network, MESH_AXES order (all 1 without `dcn`)."""
  dcn = mesh_config.get("dcn") or {}
  sizes = tuple(int(dcn.get(a, 1)) for a in MESH_AXES)
  if any(s < 1 for s in sizes):
    raise ValueError(f"mesh.dcn {dict(zip(MESH_AXES, sizes))}: sizes must be positive")
  return sizes


def ici_shape(mesh_config: ml_collections.ConfigDict, num_devices: int) -> tuple[int, ...]:
  """Axis sizes inside one granule, MESH_AXES order; one -1 takes whatever the others
  leave of the granule's devices (num_devices / product of the DCN sizes)."""
  sizes = [int(mesh_config[a]) for a in MESH_AXES]
  dcn = dcn_shape(mesh_config)
  granules = math.prod(dcn)
  where = f"mesh {dict(zip(MESH_AXES, sizes))}" + (
      f" inside each of {granules} granules (mesh.dcn {dict(zip(MESH_AXES, dcn))})"
      if granules > 1 else "")
  fill = [i for i, s in enumerate(sizes) if s == -1]
  if len(fill) > 1 or any(s == 0 or s < -1 for s in sizes):
    raise ValueError(f"{where}: sizes must be positive, with at most one -1")
  if num_devices % granules:
    raise ValueError(f"{where}: {num_devices} devices do not split into {granules} granules")
  per_granule = num_devices // granules
  fixed = math.prod(s for s in sizes if s != -1)
  if fill:
    if per_granule % fixed:
      raise ValueError(f"{where}: {per_granule} devices per granule are not divisible by "
                       f"the fixed axes' product {fixed}")
    sizes[fill[0]] = per_granule // fixed
  if math.prod(sizes) != per_granule:
    raise ValueError(f"{where} needs {math.prod(sizes) * granules} devices, "
                     f"have {num_devices}")
  return tuple(sizes)


def mesh_shape(mesh_config: ml_collections.ConfigDict, num_devices: int) -> tuple[int, ...]:
  """Whole axis sizes (ICI x DCN) in MESH_AXES order."""
  return tuple(i * d for i, d in zip(ici_shape(mesh_config, num_devices),
                                     dcn_shape(mesh_config)))


def _granules(devices: Sequence[Any], count: int) -> tuple[list[list[Any]], str]:
  """The devices split into `count` granules, and what a granule is:
    * TPU slices (`slice_index`), when there are `count` of them;
    * nodes as blocks of consecutive processes, when the process count is a multiple of
      `count` (one process per node, or one per GPU with SLURM's default block
      distribution of ranks over nodes: launch/slurm/train.sbatch);
    * for fake CPU devices in one process (launch/aot_check.py, tests), blocks of
      consecutive device ids.
  Anything else is refused: a DCN axis laid over the wrong devices would put FSDP's
  per-layer traffic on the slow network without a word."""
  slices = collections.defaultdict(list)
  for d in devices:
    slices[getattr(d, "slice_index", None)].append(d)
  if None not in slices and len(slices) == count:
    return [slices[k] for k in sorted(slices)], "slice"
  processes = sorted({d.process_index for d in devices})
  if len(processes) > 1 and len(processes) % count == 0:
    per = len(processes) // count
    rank = {p: i for i, p in enumerate(processes)}
    groups = [[] for _ in range(count)]
    for d in sorted(devices, key=lambda d: (d.process_index, d.id)):
      groups[rank[d.process_index] // per].append(d)
    return groups, f"node ({per} process{'es' if per > 1 else ''})"
  if len(processes) == 1 and devices[0].platform == "cpu":
    ordered = sorted(devices, key=lambda d: d.id)
    size = len(ordered) // count
    return [ordered[i * size:(i + 1) * size] for i in range(count)], "block of device ids"
  raise ValueError(
      f"mesh.dcn asks for {count} nodes or slices, but the {len(devices)} devices are in "
      f"{len(slices)} slice(s) and {len(processes)} process(es); set --config.mesh.dcn.* "
      "to the number of slices or nodes (and the ICI sizes to the devices of one)")


def hybrid_devices(mesh_config: ml_collections.ConfigDict,
                   devices: Sequence[Any]) -> tuple[np.ndarray, str]:
  """The (data, fsdp, tensor) array of devices, and what a granule is.

  One granule: `mesh_utils.create_device_mesh` (topology-aware inside a slice / node).
  Several: each granule laid out the same way, and the granules tiled over the DCN shape,
  as `mesh_utils.create_hybrid_device_mesh` does (called as is for TPU slices; for nodes
  and fake devices the same tiling over the granules `_granules` found, which that function
  cannot group).
  """
  ici, dcn = ici_shape(mesh_config, len(devices)), dcn_shape(mesh_config)
  count = math.prod(dcn)
  if count == 1:
    return mesh_utils.create_device_mesh(ici, list(devices)), "all devices"
  granules, what = _granules(devices, count)
  if what == "slice":
    return mesh_utils.create_hybrid_device_mesh(ici, dcn, list(devices)), what
  blocks = np.empty(dcn, dtype=object)
  for i, index in enumerate(np.ndindex(*dcn)):
    blocks[index] = mesh_utils.create_device_mesh(ici, granules[i])
  return np.block(blocks.tolist()), what


def make_mesh(mesh_config: ml_collections.ConfigDict,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """The mesh over `devices` (default: all), laid out for the topology: `jax.make_mesh`
  without DCN axes, `hybrid_devices` with them."""
  devices = jax.devices() if devices is None else list(devices)
  shape = mesh_shape(mesh_config, len(devices))
  types = (AxisType.Auto,) * len(MESH_AXES)
  if math.prod(dcn_shape(mesh_config)) == 1:
    return jax.make_mesh(shape, MESH_AXES, axis_types=types, devices=devices)
  return Mesh(hybrid_devices(mesh_config, devices)[0], MESH_AXES, axis_types=types)


def abstract_mesh(mesh_config: ml_collections.ConfigDict, num_devices: int) -> AbstractMesh:
  """Sizes and names only, no devices: per-device accounting for a target topology. The
  axes are the hybrid mesh's (ICI x DCN sizes, same names and order), so shardings and
  per-device shapes read from it are those of `make_mesh`."""
  return AbstractMesh(mesh_shape(mesh_config, num_devices), MESH_AXES,
                      axis_types=(AxisType.Auto,) * len(MESH_AXES))


def granule_of(mesh: Mesh | AbstractMesh, mesh_config: ml_collections.ConfigDict
               ) -> np.ndarray:
  """For every device position of the mesh (row-major over its axes, the order of its
  flat device list and of an SPMD program's partition ids), the index of its granule:
  the DCN part of its coordinates. Reads the config's DCN sizes, not device attributes,
  so it holds for fake devices too."""
  shape = tuple(mesh.shape[a] for a in MESH_AXES)
  dcn = dcn_shape(mesh_config)
  ici = tuple(s // d for s, d in zip(shape, dcn))
  coords = np.indices(shape).reshape(len(shape), -1)  # (axes, devices)
  outer = tuple(c // i for c, i in zip(coords, ici))
  return np.ravel_multi_index(outer, dcn)
