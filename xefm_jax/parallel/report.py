"""Parameters and bytes per device, per module: what a mesh holds before anything runs.

Works on abstract shapes and an `AbstractMesh`, so a 7B model's layout on a 128-device mesh
can be read on a laptop.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from typing import Any

import flax
import jax
import numpy as np
from jax.sharding import NamedSharding


@dataclasses.dataclass(frozen=True)
class Row:
  module: str
  params: int
  bytes: int  # whole, all shards together
  bytes_per_device: int  # the largest shard on any device


def module_rows(variables: Any, specs: Any, mesh: Any, depth: int = 2) -> list[Row]:
  """One row per module path prefix of `depth` names (below the "params" collection).

  variables: unboxed (abstract) variables {"params": ...}; specs: the matching tree of
  mesh-axis PartitionSpecs; mesh: a Mesh or AbstractMesh.
  """
  leaves = flax.traverse_util.flatten_dict(variables["params"])
  spec_leaves = flax.traverse_util.flatten_dict(specs["params"])
  totals = collections.defaultdict(lambda: [0, 0, 0])
  for path, x in leaves.items():
    shard = NamedSharding(mesh, spec_leaves[path]).shard_shape(x.shape)
    itemsize = np.dtype(x.dtype).itemsize
    row = totals["/".join(path[:depth])]
    row[0] += math.prod(x.shape)
    row[1] += math.prod(x.shape) * itemsize
    row[2] += math.prod(shard) * itemsize
  return [Row(k, *v) for k, v in sorted(totals.items())]


def total(rows: list[Row]) -> Row:
  return Row("total", sum(r.params for r in rows), sum(r.bytes for r in rows),
             sum(r.bytes_per_device for r in rows))


def _human(n: float, unit: str = "") -> str:
  for prefix in ("", "K", "M", "G", "T"):
    if abs(n) < 1000 or prefix == "T":
      return f"{n:.3g}{prefix}{unit}" if prefix else f"{n:.0f}{unit}"
    n /= 1000
  return str(n)


def format_rows(rows: list[Row]) -> str:
  """A markdown table with a total line."""
  lines = ["| module | params | bytes | bytes / device |", "|---|---:|---:|---:|"]
  for r in rows + [total(rows)]:
    lines.append(f"| {r.module} | {_human(r.params)} | {_human(r.bytes, 'B')} | "
                 f"{_human(r.bytes_per_device, 'B')} |")
  return "\n".join(lines)


def count_params(variables: Any) -> int:
  return sum(math.prod(x.shape) for x in jax.tree.leaves(variables["params"]))
