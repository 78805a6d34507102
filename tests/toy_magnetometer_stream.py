"""A toy stream, added by a test only: a 3-axis magnetometer synthesized from the head
orientation (the earth's field, fixed in the world, seen in the body frame), to show that a
modality on the data side is this one file (tests/test_toy_modality.py)."""

from __future__ import annotations

import numpy as np

from xefm_jax.data.streams import base

FIELD_WORLD = np.array([0.22, 0.0, -0.42], np.float32)  # gauss, fixed in the world


class Magnetometer(base.StreamDef):
  name = "magnetometer"
  group = "motion"
  stored = (base.Stream("magnetometer", base.fixed(3), "float32"),
            base.Stream("magnetometer_valid", base.fixed(), "bool"))
  flags = (("magnetometer_valid", "magnetometer_valid", None),)
  valid = ("magnetometer_valid",)
  values = {"magnetometer": "magnetometer_valid"}

  def read(self, es, state, start, stop):
    a, b = es.raw(start, stop)
    pose = es.ep.pose(a, b)
    s = es.options.frame_stride
    rotation, valid = pose.T_world_body[::s, :3, :3], pose.valid[::s]  # body -> world
    field = np.einsum("tji,j->ti", np.where(valid[:, None, None], rotation, 0), FIELD_WORLD)
    return {"magnetometer": field.astype(np.float32), "magnetometer_valid": valid}

  def statistics(self, block):
    return {"magnetometer": block["magnetometer"][block["magnetometer_valid"]]}

  def fields(self, spec, t):
    return {"magnetometer": ((t, 3), np.float32), "magnetometer_valid": ((t,), np.bool_)}

  def inputs(self, raw, sl, sig, spec, stats):
    valid = raw["magnetometer_valid"][:, sl]
    m, s = base.mean_std(stats.stats, "magnetometer")
    x = np.where(valid[..., None], (raw["magnetometer"][:, sl] - m) / s, 0.0)
    return {"magnetometer": x.astype(np.float32), "magnetometer_valid": valid}

  def handcrafted(self, batch, vocab_size):
    x = batch["magnetometer"]  # (B, T, 3)
    return np.concatenate([base.moments(x, 1),
                           batch["magnetometer_valid"].mean(1, keepdims=True)], -1)


MAGNETOMETER = base.register(Magnetometer())
