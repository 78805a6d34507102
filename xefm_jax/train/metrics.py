"""Metric writers, on process 0 only: TensorBoard event files and WORKDIR/metrics.jsonl.

metrics.jsonl holds one JSON object per logged step ({"step": ..., "loss": ..., ...}),
flushed line by line, so `tail -f` and a crashed run both show every finished line. A
resumed run appends: steps between the last checkpoint and a crash appear twice, and the
last occurrence of a step is the one the final parameters descend from. Non-finite values
are written as null (JSON has no NaN).
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


class MetricWriter:
  """`write(step, scalars)` to TensorBoard and metrics.jsonl; a no-op off process 0."""

  def __init__(self, workdir: str | os.PathLike, enabled: Optional[bool] = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self._tb = self._jsonl = None
    if self.enabled:
      from tensorboardX import SummaryWriter  # heavy import, process 0 only
      workdir = pathlib.Path(workdir)
      workdir.mkdir(parents=True, exist_ok=True)
      self._tb = SummaryWriter(str(workdir / "tensorboard"))
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
