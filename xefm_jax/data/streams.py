"""One raw episode's streams on the shard clock: the documented resizing and resampling.

The shredder writes exactly what `EpisodeStreams.block` returns, and the round-trip test
compares a window read through the pipeline with the same call on the raw episode, so this
module is the definition of every shard array. Output frame k is raw frame k * frame_stride.

  video/<view>     PyAV area resize to video_size (media.decode_video); a view that is
                   missing or unusable is zeros with video_valid False.
  audio            16 kHz mono (media.decode_audio), the samples of raw frames
                   [k s, (k+1) s), stored as int16 = round(clip(x, -1, 1) * 32767).
  depth            block mean of the known (> 0) depths in each cell when the depth map
                   divides evenly into depth_size cells, else the nearest pixel of each cell
                   centre; confidence likewise (mean of all pixels); depth_valid: more than
                   half of the raw pixels known.
  imu              accel and gyro linearly interpolated at t_k + j / 200 s, j < 10 s, on the
                   device clock; imu_valid where those times lie inside the IMU's span.
  pose, hands, body, contacts   the reader's arrays at frame k, with its validity masks.
  labels           task, subtask and action ids (action class = the label's first word, a
                   verb: "Pour kettle" -> "pour"), boundary where an action starts within
                   raw frames [k s, (k+1) s), transition where an action boundary (an
                   action start after the episode's first frame) lies within
                   +-TRANSITION_RADIUS raw frames of raw frame k s (the suite's
                   transition_detection, from the whole episode's timeline, so no window
                   length changes it), object multi-hot, interaction sentence token ids.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from xefm_jax.data import episode as episode_lib
from xefm_jax.data import labels as labels_lib
from xefm_jax.data import media
from xefm_jax.data import shards
from xefm_jax.data import spec
from xefm_jax.data import xperience

def _block_reduce(x: np.ndarray, size: int, weights: Optional[np.ndarray] = None) -> np.ndarray:
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


class EpisodeStreams:
  """Shard-resolution streams of one open episode, read block by block."""

  def __init__(self, ep: episode_lib.Episode, options: shards.ShredOptions, labels: labels_lib.Labels):
    self.ep, self.options, self.labels = ep, options, labels
    s = options.frame_stride
    self.num_frames = ep.num_frames // s  # output frames; a partial last stride is dropped
    self._raw_frames = self.num_frames * s
    self.times = ep.timestamps_ns()[:self._raw_frames:s]  # (T,) int64
    self._readers: dict[str, media.VideoReader] = {}  # sequential decoders, by view
    self._audio: Optional[np.ndarray] = None
    self._imu = None
    self._timeline = None
    self._sentences: Optional[np.ndarray] = None  # (distinct sentences + 1, L) token ids
    self._transition: Optional[np.ndarray] = None  # (N,) near_boundary of the raw frames

  def _raw(self, start: int, stop: int) -> tuple[int, int]:
    if not 0 <= start <= stop <= self.num_frames:
      raise ValueError(f"{self.ep.name}: frames [{start}, {stop}) of {self.num_frames}")
    return start * self.options.frame_stride, stop * self.options.frame_stride

  def video(self, start: int, stop: int) -> dict[str, np.ndarray]:
    a, b = self._raw(start, stop)
    size, n = self.options.video_size, stop - start
    out, valid = {}, np.zeros((n, len(xperience.VIEWS)), bool)
    for i, view in enumerate(xperience.VIEWS):
      if view in self.ep.views:
        out[f"video/{view}"] = self._frames(view, start, stop, a, b)
        valid[:, i] = True
      else:
        out[f"video/{view}"] = np.zeros((n, size, size, 3), np.uint8)
    out["video_valid"] = valid
    return out

  def _frames(self, view: str, start: int, stop: int, a: int, b: int) -> np.ndarray:
    """Output frames [start, stop) of a view: from the sequential decoder when the blocks
    come in order (the shredder), else by seeking (random access)."""
    reader = self._readers.get(view)
    if reader is None and start == 0:
      reader = self._readers[view] = media.VideoReader(
          self.ep.video_info[view].path, self.options.video_size, self.options.frame_stride)
    if reader is not None and reader.position == start:
      try:
        return reader.read(stop - start)
      except media.MediaError as e:
        raise episode_lib.EpisodeError(str(e)) from e
    return self.ep.video(view, size=self.options.video_size, stride=self.options.frame_stride,
                         start=a, stop=b)

  def close(self) -> None:
    for reader in self._readers.values():
      reader.close()
    self._readers.clear()

  def audio(self, start: int, stop: int) -> dict[str, np.ndarray]:
    per = self.options.audio_per_frame
    if self._audio is None:
      try:
        x = self.ep.audio(spec.AUDIO_RATE_HZ)[:self.num_frames * per]
        x = np.pad(x, (0, self.num_frames * per - len(x)))
        self._audio = np.round(np.clip(x, -1, 1) * 32767).astype(np.int16)
      except episode_lib.EpisodeError:
        self._audio = np.zeros(0, np.int16)  # unavailable: masked
    n = stop - start
    if not len(self._audio):
      return {"audio": np.zeros((n, per), np.int16), "audio_valid": np.zeros(n, bool)}
    return {"audio": self._audio[start * per:stop * per].reshape(n, per),
            "audio_valid": np.ones(n, bool)}

  def depth(self, start: int, stop: int) -> dict[str, np.ndarray]:
    a, b = self._raw(start, stop)
    d = self.ep.depth(a, b)
    depth, conf = d.depth[::self.options.frame_stride], d.confidence[::self.options.frame_stride]
    known = (depth > 0).astype(np.float32)  # (T, H, W)
    size = self.options.depth_size
    return {
        "depth": _block_reduce(depth, size, known).astype(np.float16),
        "depth_confidence": np.round(_block_reduce(conf.astype(np.float32), size)
                                     ).astype(np.uint8),
        "depth_valid": known.mean((1, 2)) > 0.5,
    }

  def motion(self, start: int, stop: int) -> dict[str, np.ndarray]:
    a, b = self._raw(start, stop)
    s = self.options.frame_stride
    pose, hands, body = self.ep.pose(a, b), self.ep.hands(a, b), self.ep.body(a, b)
    return {
        "pose": pose.T_world_body[::s].astype(np.float32), "pose_valid": pose.valid[::s],
        "hands": hands.joints[::s], "hands_valid": hands.valid[::s],
        "body": body.keypoints[::s], "body_valid": body.valid[::s],
        "contacts": body.contacts[::s],
    }

  def imu(self, start: int, stop: int) -> dict[str, np.ndarray]:
    if self._imu is None:
      self._imu = self.ep.imu()
    imu = self._imu
    offsets = np.arange(self.options.imu_per_frame) * int(1e9 / xperience.IMU_RATE_HZ)
    t = (self.times[start:stop, None] + offsets[None]).astype(np.float64)  # (T, S) ns
    ts = imu.timestamps_ns.astype(np.float64)
    base = ts[0]  # interpolate in offsets from the first sample: float64 keeps ns precision
    channels = np.concatenate([imu.accel, imu.gyro], -1)  # (M, 6)
    out = np.stack([np.interp(t - base, ts - base, channels[:, c]) for c in range(6)], -1)
    inside = (t >= ts[0]) & (t <= ts[-1])
    return {"imu": out.astype(np.float32), "imu_valid": inside.all(-1)}

  def language(self, start: int, stop: int) -> dict[str, np.ndarray]:
    if self._timeline is None:
      self._timeline = self.ep.caption()
    tl, lab, s = self._timeline, self.labels, self.options.frame_stride
    a, b = self._raw(start, stop)
    n = stop - start
    frames = np.arange(a, b, s)
    task = lab.ids((tl.task,), lab.tasks)[0]
    subtask_ids = np.append(lab.ids(tl.subtasks, lab.subtasks), -1).astype(np.int32)  # [-1] -> -1
    action_ids = np.append(lab.ids(tuple(labels_lib.action_class(x) for x in tl.action_labels),
                                   lab.actions), -1).astype(np.int32)
    object_index = {o: i for i, o in enumerate(lab.objects)}
    objects = np.zeros((n, len(lab.objects)), bool)
    for row, f in enumerate(frames):
      for o in tl.objects_at(f):
        if o in object_index:
          objects[row, object_index[o]] = True
    starts = tl.action_start[a:b].reshape(n, s).any(-1)
    if self._transition is None:
      self._transition = labels_lib.near_boundary(tl.action_start)
    if self._sentences is None:  # each distinct sentence encoded once, row -1 all PAD
      self._sentences = np.stack(
          [lab.words.encode(x, self.options.caption_len) for x in tl.interactions]
          + [np.zeros(self.options.caption_len, np.int32)])
    captions = self._sentences[tl.interaction[frames]]  # (n, L)
    return {
        "task": np.full(n, task, np.int32),
        "subtask": subtask_ids[tl.subtask[frames]], "action": action_ids[tl.action[frames]],
        "boundary": starts, "transition": self._transition[frames], "objects": objects,
        "caption": captions, "caption_valid": tl.interaction[frames] >= 0,
    }

  def block(self, start: int, stop: int) -> dict[str, np.ndarray]:
    """Every stream of shards.STREAMS for output frames [start, stop)."""
    out = {"frame_time_ns": self.times[start:stop]}
    for part in (self.video, self.audio, self.depth, self.motion, self.imu, self.language):
      out.update(part(start, stop))
    missing = set(shards.STREAM_BY_NAME) ^ set(out)
    assert not missing, f"streams out of sync with shards.STREAMS: {missing}"
    return out
