"""Metric writers, on process 0 only: TensorBoard event files and WORKDIR/metrics.jsonl.

metrics.jsonl holds one JSON object per logged step ({"step": ..., "loss": ..., ...}),
flushed line by line, so `tail -f` and a crashed run both show every finished line. A
resumed run first drops the rows past the step it restored (they are replayed, so no step
appears twice) and appends; TensorBoard's view is cut the same way (the event files'
purge step). Non-finite values are written as null (JSON has no NaN).
"""

from __future__ import annotations

import json
import math
import os
import pathlib
from typing import Any, Mapping, Optional

import jax


def _clean(value: Any) -> Any:
  value = float(value) if hasattr(value, "__float__") and not isinstance(value, int) else value
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def truncate_jsonl(path: pathlib.Path, last_step: int) -> int:
  """Drops the rows of `path` whose step is past `last_step` (and any torn last line),
  atomically (temporary file + rename); returns how many were dropped."""
  if not path.exists():
    return 0
  keep, dropped = [], 0
  for line in path.read_text(encoding="utf-8").splitlines():
    try:
      row = json.loads(line)
    except json.JSONDecodeError:  # a line cut by a kill
      dropped += 1
      continue
    if int(row.get("step", 0)) <= last_step:
      keep.append(line + "\n")
    else:
      dropped += 1
  if dropped:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text("".join(keep), encoding="utf-8")
    os.replace(tmp, path)
  return dropped


class MetricWriter:
  """`write(step, scalars)` to TensorBoard and metrics.jsonl; a no-op off process 0."""

  def __init__(self, workdir: str | os.PathLike, enabled: Optional[bool] = None,
               resume_step: int = 0):
    """resume_step: the step the run starts from (0: fresh); rows of later steps, left by a
    run that died after its last checkpoint, are dropped."""
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self._tb = self._jsonl = None
    if self.enabled:
      from tensorboardX import SummaryWriter  # heavy import, process 0 only
      workdir = pathlib.Path(workdir)
      workdir.mkdir(parents=True, exist_ok=True)
      truncate_jsonl(workdir / "metrics.jsonl", resume_step)
      # TensorBoard hides the events of steps >= purge_step written before this restart
      self._tb = SummaryWriter(str(workdir / "tensorboard"), purge_step=resume_step + 1)
      self._jsonl = open(workdir / "metrics.jsonl", "a", encoding="utf-8")

  def write(self, step: int, scalars: Mapping[str, Any]) -> None:
    if not self.enabled:
      return
    row = {"step": int(step), **{k: _clean(v) for k, v in scalars.items()}}
    # one write() of a whole line: a reader never sees half a line
    self._jsonl.write(json.dumps(row, allow_nan=False) + "\n")
    self._jsonl.flush()
    for name, value in row.items():
      if name != "step" and isinstance(value, (int, float)):
        self._tb.add_scalar(name, value, step)
    self._tb.flush()

  def close(self) -> None:
    if self.enabled:
      self._jsonl.close()
      self._tb.close()
