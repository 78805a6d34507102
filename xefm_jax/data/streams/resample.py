"""One raw episode's streams on the shard clock: the documented resizing and resampling.

The shredder writes exactly what `EpisodeStreams.block` returns, and the round-trip test
compares a window read through the pipeline with the same call on the raw episode, so the
registered stream definitions (xefm_jax/data/streams/<name>.py, each documenting its own
resampling) are the definition of every shard array. Output frame k is raw frame
k * frame_stride; frame_time_ns is its device time.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from xefm_jax.data import episode as episode_lib
from xefm_jax.data import labels as labels_lib
from xefm_jax.data import shards
from xefm_jax.data import streams as streams_lib


class EpisodeStreams:
  """Shard-resolution streams of one open episode, read block by block."""

  def __init__(self, ep: episode_lib.Episode, options: shards.ShredOptions,
               labels: labels_lib.Labels):
    self.ep, self.options, self.labels = ep, options, labels
    s = options.frame_stride
    self.num_frames = ep.num_frames // s  # output frames; a partial last stride is dropped
    self._raw_frames = self.num_frames * s
    self.times = ep.timestamps_ns()[:self._raw_frames:s]  # (T,) int64
    self._state: dict[str, dict[str, Any]] = {d.name: {} for d in streams_lib.registered()}
    self._timeline = None

  def raw(self, start: int, stop: int) -> tuple[int, int]:
    """Raw frames [a, b) of output frames [start, stop)."""
    if not 0 <= start <= stop <= self.num_frames:
      raise ValueError(f"{self.ep.name}: frames [{start}, {stop}) of {self.num_frames}")
    return start * self.options.frame_stride, stop * self.options.frame_stride

  def timeline(self):
    """The episode's caption timeline (read once; the language and label streams share
    it)."""
    if self._timeline is None:
      self._timeline = self.ep.caption()
    return self._timeline

  def close(self) -> None:
    for stream in streams_lib.registered():
      stream.close(self._state[stream.name])

  def block(self, start: int, stop: int) -> dict[str, np.ndarray]:
    """Every stream of shards.streams() for output frames [start, stop)."""
    out = {"frame_time_ns": self.times[start:stop]}
    for stream in streams_lib.registered():
      out.update(stream.read(self, self._state[stream.name], start, stop))
    missing = {s.name for s in shards.streams()} ^ set(out)
    assert not missing, f"streams out of sync with their definitions: {missing}"
    return out
