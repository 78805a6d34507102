"""The tiny model on the motion side only (IMU, hand and body mocap, camera pose), in two
sizes: t1 is configs/local.py:tiny without the visual and language encoders, t0 the same
with one fusion layer at half the width.

t1 is the model of the launcher tests whose subject is the run rather than the model
(preemption and resume, a damaged checkpoint, two processes: tests/test_train.py); without
the visual and language encoders a launch traces and compiles in about half the time (light
objectives, warm compilation cache: 9.5 s of startup instead of 18 s here). t0 and t1 are
the scaling sweep's two-rung ladder (tests/test_sweep.py): they differ in parameters and
model FLOPs while the window (tokens per window) stays the same. The reference run
(conftest.reference) keeps every modality and objective."""

from __future__ import annotations

import ml_collections

from configs import local

MOTION = ("imu", "mocap", "pose")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg not in ("t0", "t1"):
    raise ValueError(f"tests/motion_ladder.py: variant t0 or t1, got {arg!r}")
  c = local.get_config("tiny")
  for name in list(c.model.modalities):
    if name not in MOTION:
      del c.model.modalities[name]
  c.objectives.future_state.modalities = MOTION  # the EMA target of the motion streams
  # group dropout keeps its draw (a resumed run must replay it): two groups of the streams
  c.model.group_dropout.groups = ml_collections.ConfigDict(dict(
      body=("imu", "pose"), hands=("mocap",)))
  if arg == "t0":
    c.model.width = 16
    c.model.fusion.update(num_layers=1, num_heads=2, mlp_dim=32)
  return c
