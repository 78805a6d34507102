"""Depth: the block mean of the known (> 0) depths in each cell when the depth map divides
evenly into depth_size cells, else the nearest pixel of each cell centre; confidence likewise
(the mean of all pixels); depth_valid: more than half of the raw pixels known. Normalised
with the train split's mean and std of the known depths (unknown stays 0)."""

from __future__ import annotations

from typing import Optional

import numpy as np

from xefm_jax.data.streams import base


def block_reduce(x: np.ndarray, size: int, weights: Optional[np.ndarray] = None) -> np.ndarray:
  """(T, H, W) -> (T, size, size): (weighted) block mean, or cell-centre sampling."""
  t, h, w = x.shape
  if h % size == 0 and w % size == 0:
    shape = (t, size, h // size, size, w // size)
    if weights is None:
      return x.reshape(shape).mean((2, 4))
    num = (x * weights).reshape(shape).sum((2, 4))
    den = weights.reshape(shape).sum((2, 4))
    return np.where(den > 0, num / np.maximum(den, 1), 0.0)
  rows = ((np.arange(size) + 0.5) * h / size).astype(int)
  cols = ((np.arange(size) + 0.5) * w / size).astype(int)
  return x[:, rows][:, :, cols]


class Depth(base.StreamDef):
  name = "depth"
  group = "visual"
  stored = (
      base.Stream("depth", lambda o, k: (o.depth_size, o.depth_size), "float16"),  # m, 0 unknown
      base.Stream("depth_confidence", lambda o, k: (o.depth_size, o.depth_size), "uint8"),
      base.Stream("depth_valid", base.fixed(), "bool"),
  )
  flags = (("depth_valid", "depth_valid", None),)
  read_as = base.FRAMES
  valid = ("depth_valid",)
  values = {"depth": "depth_valid", "depth_confidence": "depth_valid"}

  def fields(self, spec, t):
    return {
        "depth": ((t, spec.depth_size, spec.depth_size), np.float32),
        "depth_confidence": ((t, spec.depth_size, spec.depth_size), np.float32),  # in [0, 1]
        "depth_valid": ((t,), np.bool_),
        "depth_intrinsics": ((4,), np.float32),  # fx/w, fy/h, cx/w, cy/h
    }

  def read(self, es, state, start, stop):
    a, b = es.raw(start, stop)
    d = es.ep.depth(a, b)
    s = es.options.frame_stride
    depth, conf = d.depth[::s], d.confidence[::s]
    known = (depth > 0).astype(np.float32)  # (T, H, W)
    size = es.options.depth_size
    return {
        "depth": block_reduce(depth, size, known).astype(np.float16),
        "depth_confidence": np.round(block_reduce(conf.astype(np.float32), size)
                                     ).astype(np.uint8),
        "depth_valid": known.mean((1, 2)) > 0.5,
    }

  def statistics(self, block):
    depth = block["depth"].astype(np.float32)
    return {"depth": depth[depth > 0].reshape(-1, 1)}

  @staticmethod
  def normalise(stats, d: np.ndarray, valid: np.ndarray) -> np.ndarray:
    m, s = base.mean_std(stats, "depth")
    d = d.astype(np.float32)
    out = np.where(d > 0, (d - m[0]) / s[0], 0.0)
    return np.where(valid[..., None, None], out, 0.0).astype(np.float32)

  def inputs(self, raw, sl, sig, spec, stats):
    depth_valid = raw["depth_valid"][:, sl]  # (B, T)
    confidence = raw["depth_confidence"][:, sl].astype(np.float32) / 255.0
    base.zero_masked(confidence, depth_valid)
    return {"depth": self.normalise(stats.stats, raw["depth"][:, sl], depth_valid),
            "depth_confidence": confidence, "depth_valid": depth_valid,
            "depth_intrinsics": raw["depth_intrinsics"]}

  def handcrafted(self, batch, vocab_size, grid: int = 2):
    d, conf = batch["depth"], batch["depth_confidence"]  # (B, T, h, w) normalised, [0, 1]
    b, t, h, w = d.shape
    cells = d.reshape(b, t, grid, h // grid, grid, w // grid).mean((1, 3, 5)).reshape(b, -1)
    flat = d.reshape(b, -1)
    q = np.quantile(flat, [0.1, 0.5, 0.9], axis=1).T  # (B, 3)
    motion = np.abs(np.diff(d, axis=1)).mean((1, 2, 3))[:, None]
    return np.concatenate([flat.mean(1, keepdims=True), flat.std(1, keepdims=True), q, cells,
                           motion, conf.mean((1, 2, 3))[:, None],
                           batch["depth_valid"].mean(1, keepdims=True)], -1)


DEPTH = base.register(Depth())
