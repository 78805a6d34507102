"""A two-rung size ladder at the test corpus' sizes (configs/local.py:tiny), for the scaling
sweep's end-to-end test (tests/test_sweep.py): t0 is the tiny model with one fusion layer,
t1 the tiny model (two layers, twice the width), so the two sizes differ in parameters and
model FLOPs while the window (tokens per window) stays the same."""

from __future__ import annotations

import ml_collections

from configs import local


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg not in ("t0", "t1"):
    raise ValueError(f"tests/sweep_ladder.py: variant t0 or t1, got {arg!r}")
  c = local.get_config("tiny")
  if arg == "t0":
    c.model.width = 16
    c.model.fusion.update(num_layers=1, num_heads=2, mlp_dim=32)
  return c
