"""The collectives of a compiled SPMD program, and which devices each one spans.

    rows = collectives.from_hlo(compiled.as_text())
    collectives.span(row, granule)   # granules (nodes / slices) one group touches, at most

Reads the compiled HLO text (`compiled.as_text()`): every all-gather, reduce-scatter,
all-reduce, all-to-all and collective-permute, its result shape, the JAX op that made it
(metadata op_name) and its device groups, expanded from the three ways HLO prints them:
  * explicit lists: replica_groups={{0,1},{2,3}};
  * iota lists: replica_groups=[2,4]<=[4,2]T(1,0) (iota over the second shape, transposed,
    reshaped to groups x group size);
  * mesh axes: replica_groups=mesh['axis_0'=4,'axis_1'=2], device_ids=([2,4]T(1,0))
    {'axis_0'}: the devices (iota, or the device_ids iota) laid out on that mesh, one
    group per combination of the axes NOT in braces.
The numbers are partition ids: positions in the mesh's flat device list (`use_global_
device_ids`), which `mesh.granule_of` maps to nodes. launch/aot_check.py prints them so a
reader sees which collectives stay inside a node and which cross the network.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Optional

import numpy as np

KINDS = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")
_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2,
                "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8}

_OP = re.compile(r"=\s*(.*?)\s+(" + "|".join(KINDS) + r")(?:-start)?\(")
_ARRAY = re.compile(r"(\w+)\[([\d,]*)\]")
_EXPLICIT = re.compile(r"replica_groups=\{((?:\{[\d,]*\},?)*)\}")
_IOTA = re.compile(r"replica_groups=\[([\d,]+)\]<=\[([\d,]+)\](?:T\(([\d,]+)\))?")
_MESH = re.compile(r"replica_groups=mesh\[([^\]]*)\](?:,\s*device_ids=\(\[([\d,]+)\]"
                   r"(?:T\(([\d,]+)\))?\))?\s*\{([^}]*)\}")
_PAIRS = re.compile(r"source_target_pairs=\{((?:\{\d+,\d+\},?)*)\}")
_OP_NAME = re.compile(r'op_name="([^"]*)"')


@dataclasses.dataclass(frozen=True)
class Collective:
  kind: str
  bytes: int  # of the result, per device
  shape: str  # the result's type as HLO prints it
  groups: Optional[tuple[tuple[int, ...], ...]]  # None: all devices in one group
  op_name: str  # the JAX op that made it (metadata), "" if none


def _ints(text: str) -> list[int]:
  return [int(x) for x in text.split(",") if x]


def _iota(shape: list[int], reshape: list[int], perm: Optional[list[int]]) -> np.ndarray:
  ids = np.arange(math.prod(reshape)).reshape(reshape)
  if perm:
    ids = ids.transpose(perm)
  return ids.reshape(shape)


def groups_of(line: str, num_devices: int) -> Optional[tuple[tuple[int, ...], ...]]:
  """The device groups of one collective instruction's HLO line (None: one group of all)."""
  m = _MESH.search(line)
  if m:
    axes = [(name.strip().strip("'"), int(size)) for name, size in
            (a.split("=") for a in m.group(1).split(","))]
    sizes = [s for _, s in axes]
    devices = (np.arange(math.prod(sizes)) if m.group(2) is None else
               _iota([math.prod(sizes)], _ints(m.group(2)),
                     _ints(m.group(3)) if m.group(3) else None)).reshape(sizes)
    grouped = [a.strip().strip("'") for a in m.group(4).split(",") if a.strip()]
    names = [n for n, _ in axes]
    if any(g not in names for g in grouped):
      raise ValueError(f"unreadable mesh replica groups (sub-axes?): {m.group(0)}")
    inner = [names.index(g) for g in grouped]
    outer = [i for i in range(len(names)) if i not in inner]
    laid = devices.transpose(outer + inner).reshape(
        math.prod(sizes[i] for i in outer), math.prod(sizes[i] for i in inner))
    return tuple(tuple(int(x) for x in row) for row in laid)
  m = _IOTA.search(line)
  if m:
    laid = _iota(_ints(m.group(1)), _ints(m.group(2)),
                 _ints(m.group(3)) if m.group(3) else None)
    return tuple(tuple(int(x) for x in row) for row in laid)
  m = _EXPLICIT.search(line)
  if m:
    groups = tuple(tuple(_ints(g)) for g in re.findall(r"\{([\d,]*)\}", m.group(1)))
    return groups or None  # {}: every device in one group
  m = _PAIRS.search(line)
  if m:
    return tuple(tuple(_ints(p)) for p in re.findall(r"\{(\d+,\d+)\}", m.group(1)))
  return None


def _bytes(result_type: str) -> int:
  return sum(_DTYPE_BYTES.get(dtype, 4) * math.prod(_ints(dims))
             for dtype, dims in _ARRAY.findall(result_type))


def from_hlo(text: str, num_devices: int) -> list[Collective]:
  """Every collective instruction of an HLO module's text (async pairs counted once)."""
  rows = []
  for line in text.splitlines():
    m = _OP.search(line)
    if not m:
      continue
    name = _OP_NAME.search(line)
    arrays = _ARRAY.findall(m.group(1))
    shape = (f"{arrays[0][0]}[{arrays[0][1]}]" if len(arrays) == 1 else
             f"{len(arrays)} arrays")
    rows.append(Collective(m.group(2), _bytes(m.group(1)), shape,
                           groups_of(line, num_devices), name.group(1) if name else ""))
  return rows


def span(row: Collective, granule: np.ndarray) -> int:
  """The most granules (nodes, slices) any one of the collective's groups touches: 1 means
  it stays on the fast links."""
  if row.groups is None:
    return len(set(granule.tolist()))
  return max(len({int(granule[d]) for d in g}) for g in row.groups)


def where(op_name: str) -> str:
  """The model path of an op_name, without jit/jvp/transpose wrappers and the scan's
  plumbing: "model/fusion/transformer/layers/attention/query/dot_general"."""
  parts = [p for p in op_name.split("/")
           if p and not re.match(r"^(jit|jvp|transpose|vmap|remat|checkpoint|pjit)\(", p)
           and p not in ("while", "body", "closed_call", "cond", "branch", "checkpoint",
                         "rematted_computation")]
  parts = [re.sub(r"^(?:jvp|transpose)\((.*)\)$", r"\1", p) for p in parts]
  backward = "transpose(" in op_name
  return ("backward: " if backward else "") + "/".join(parts)


def axes_of(row: Collective, shape: tuple[int, ...], names: tuple[str, ...]) -> tuple[str, ...]:
  """The mesh axes along which the devices of the collective's groups differ (the axes it
  communicates over); partition ids are row-major positions in a mesh of `shape`."""
  if row.groups is None:
    return tuple(n for n, s in zip(names, shape) if s > 1)
  varying = set()
  for g in row.groups:
    coords = np.array(np.unravel_index(np.array(g), shape))  # (axes, group)
    varying |= {i for i in range(len(shape)) if len(set(coords[i].tolist())) > 1}
  return tuple(names[i] for i in sorted(varying))


def report(rows: list[Collective], shape: tuple[int, ...], names: tuple[str, ...],
           granule: np.ndarray, layer_pattern: str = r"fusion/transformer/layers(_0)?/"
           ) -> tuple[str, dict]:
  """A printable summary (per kind and mesh axes: count, MiB per device, granules a group
  spans), the collectives of one layer of the fusion stack (op names matching
  `layer_pattern`), and the same as a dict for the JSON line."""
  summary: dict[tuple[str, tuple[str, ...]], list] = {}
  layer: dict[tuple, int] = {}
  for r in rows:
    axes = axes_of(r, shape, names)
    nodes = span(r, granule)
    s = summary.setdefault((r.kind, axes), [0, 0, 0])
    s[0], s[1], s[2] = s[0] + 1, s[1] + r.bytes, max(s[2], nodes)
    w = where(r.op_name)
    if re.search(layer_pattern, w):
      key = (r.kind, ",".join(axes), r.shape, nodes, w)
      layer[key] = layer.get(key, 0) + 1
  granules = len(set(granule.tolist()))
  lines = [f"collectives per step (compiled HLO; {granules} granules of "
           f"{len(granule) // max(granules, 1)} devices):",
           f"  {'kind':<20}{'over mesh axes':<22}{'count':>6}{'MiB/device':>12}  granules per group"]
  for (kind, axes), (count, size, nodes) in sorted(summary.items()):
    lines.append(f"  {kind:<20}{','.join(axes) or '-':<22}{count:>6}{size / 2**20:>12.1f}  "
                 f"{nodes} ({'inside one' if nodes == 1 else 'ACROSS'})")
  lines.append("one layer of the fusion stack (the scanned body; forward, backward and "
               "rematerialised):")
  for (kind, axes, shape_, nodes, w), count in sorted(layer.items(), key=lambda kv: kv[0][4]):
    lines.append(f"  {count:>2} x {kind:<16}{axes:<13}{shape_:<22}"
                 f"{'inside' if nodes == 1 else 'ACROSS':<7}{w}")
  as_dict = {f"{kind} over {','.join(axes) or '-'}": {"count": c, "bytes": b, "granules": n}
             for (kind, axes), (c, b, n) in sorted(summary.items())}
  return "\n".join(lines), as_dict
