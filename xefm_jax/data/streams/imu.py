"""IMU: accelerometer and gyroscope linearly interpolated at t_k + j / 200 s, j < 10 s, on the
device clock (imu_per_frame samples per output frame k); imu_valid where those times lie
inside the IMU's span. Read contiguously over the time the window covers (a signal) and
normalised per channel with the train split's statistics."""

from __future__ import annotations

import numpy as np

from xefm_jax.data import xperience
from xefm_jax.data.streams import base


class IMU(base.StreamDef):
  name = "imu"
  group = "motion"
  stored = (base.Stream("imu", lambda o, k: (o.imu_per_frame, 6), "float32"),  # accel, gyro
            base.Stream("imu_valid", base.fixed(), "bool"))
  flags = (("imu_valid", "imu_valid", None),)
  read_as = base.SIGNAL
  valid = ("imu_valid",)
  values = {"imu": "imu_valid"}

  def fields(self, spec, t):
    return {"imu": ((t, spec.imu_samples, 6), np.float32),  # accel xyz, gyro xyz; normalised
            "imu_valid": ((t,), np.bool_)}

  def read(self, es, state, start, stop):
    if "imu" not in state:
      state["imu"] = es.ep.imu()
    imu = state["imu"]
    offsets = np.arange(es.options.imu_per_frame) * int(1e9 / xperience.IMU_RATE_HZ)
    t = (es.times[start:stop, None] + offsets[None]).astype(np.float64)  # (T, S) ns
    ts = imu.timestamps_ns.astype(np.float64)
    first = ts[0]  # interpolate in offsets from the first sample: float64 keeps ns precision
    channels = np.concatenate([imu.accel, imu.gyro], -1)  # (M, 6)
    out = np.stack([np.interp(t - first, ts - first, channels[:, c]) for c in range(6)], -1)
    inside = (t >= ts[0]) & (t <= ts[-1])
    return {"imu": out.astype(np.float32), "imu_valid": inside.all(-1)}

  def statistics(self, block):
    return {"imu": block["imu"][block["imu_valid"]].reshape(-1, 6)}

  def inputs(self, raw, sl, sig, spec, stats):
    b, t = len(raw["imu"]), spec.frames
    imu = raw["imu"][:, sig].reshape(b, t, -1, 6)  # (B, T, s * per, 6)
    imu_valid = raw["imu_valid"][:, sig].reshape(b, t, -1).all(-1)  # (B, T)
    m, s = base.mean_std(stats.stats, "imu")
    imu = np.where(imu_valid[..., None, None], (imu - m) / s, 0.0).astype(np.float32)
    return {"imu": imu, "imu_valid": imu_valid}

  def handcrafted(self, batch, vocab_size):
    x = batch["imu"]  # (B, T, S, 6)
    b = len(x)
    flat = x.reshape(b, -1, 6)
    accel_mag = np.linalg.norm(flat[..., :3], axis=-1)  # (B, T S)
    gyro_mag = np.linalg.norm(flat[..., 3:], axis=-1)
    jerk = np.abs(np.diff(flat, axis=1)).mean(1)  # (B, 6)
    return np.concatenate([base.moments(flat, 1), jerk, base.moments(accel_mag[..., None], 1),
                           base.moments(gyro_mag[..., None], 1),
                           batch["imu_valid"].mean(1, keepdims=True)], -1)


IMU_STREAM = base.register(IMU())
