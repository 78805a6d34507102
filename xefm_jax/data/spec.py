"""The window contract: what one training example holds, field by field.

The Grain pipeline (`pipeline.py`) produces exactly these fields from the shards, the model
(`xefm_jax/model`, `xefm_jax/modalities`) and the objectives consume them, and tests and
benchmarks build fake windows from the same spec. A window is W context frames sampled at
`frame_stride` (the frame clock is 20 fps), plus:
  * `future/*`: the next F frames (same stride) of the low-dimensional streams, the targets
    of forecasting and procedure objectives;
  * `next/*`: every input stream of the following window (frames W .. 2W-1), the input of
    the EMA target encoder of future-state prediction (present when `next_window`).

Shapes are per example (no batch axis). Sensor arrays are float32 and already normalised by
the pipeline with the manifest's train-split statistics; video stays uint8 (4x less host to
device traffic) and is scaled on device by the video encoder. A `*_valid` mask is False where
the stream or view is missing, dropped, or untracked: a masked value is zero and must not
influence any output.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from xefm_jax.data import xperience

AUDIO_RATE_HZ = 16_000
IMU_PER_FRAME = 10  # IMU samples per frame: 200 Hz / 20 fps
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3  # caption token ids, fixed in every vocabulary


@dataclasses.dataclass(frozen=True)
class WindowSpec:
  """The sizes that fix every shape of a window (from the data config + manifest)."""

  views: tuple[str, ...] = xperience.VIEWS
  view_size: int = 64  # video frames are view_size x view_size
  depth_size: int = 32
  frames: int = 16  # W, context frames
  frame_stride: int = 1
  shard_stride: int = 1  # frames the shredder already skipped (the corpus' frame_stride)
  future: int = 40  # F, future frames of low-dim streams
  next_window: bool = True
  caption_len: int = 24
  # label and vocabulary sizes come from the shard manifest; these defaults size the model
  # when no corpus is at hand (model summaries, ahead-of-time compiles)
  num_objects: int = 64
  num_actions: int = 32
  num_subtasks: int = 128
  num_tasks: int = 32
  vocab_size: int = 6000  # caption word vocabulary, PAD/UNK/BOS/EOS included
  # extracted video features (xefm_jax/data/features.py) read instead of pixels: their name
  # under SHARDS/features/ ("" for pixels) and their per-view, per-frame shape (S, D),
  # which the corpus knows (Corpus.window_spec)
  video_features: str = ""
  feature_shape: tuple[int, ...] = ()

  @classmethod
  def from_config(cls, data_cfg: Any) -> "WindowSpec":
    fields = {f.name for f in dataclasses.fields(cls)}
    kw = {k: data_cfg[k] for k in fields if k in data_cfg}
    if "views" in kw:
      kw["views"] = tuple(kw["views"])
    kw["video_features"] = kw.get("video_features") or ""
    return cls(**kw)

  @property
  def audio_samples(self) -> int:
    """Contiguous 16 kHz samples covering the window's span of time."""
    return int(self.frames * self.frame_stride * self.shard_stride * AUDIO_RATE_HZ
               / xperience.FPS)

  @property
  def imu_samples(self) -> int:
    """IMU samples per context frame (covering the time until the next sampled frame)."""
    return IMU_PER_FRAME * self.frame_stride * self.shard_stride


def _fields(s: WindowSpec, t: int, inputs: bool) -> dict[str, tuple[tuple[int, ...], Any]]:
  """The model's input streams (inputs) or the per-frame targets over t frames, each
  stream's as its definition says (xefm_jax/data/streams/, in registration order)."""
  # imported here: the stream definitions use this module's constants
  from xefm_jax.data import streams  # pylint: disable=g-import-not-at-top
  out: dict[str, tuple[tuple[int, ...], Any]] = {}
  for stream in streams.registered():
    out.update(stream.fields(s, t) if inputs else stream.target_fields(s, t))
  return out


def _input_fields(s: WindowSpec, t: int) -> dict[str, tuple[tuple[int, ...], Any]]:
  return _fields(s, t, inputs=True)


def _target_fields(s: WindowSpec, t: int) -> dict[str, tuple[tuple[int, ...], Any]]:
  return _fields(s, t, inputs=False)


def future_fields() -> tuple[str, ...]:
  """The fields of `future/*`: each stream's `future_fields`."""
  from xefm_jax.data import streams  # pylint: disable=g-import-not-at-top
  return tuple(f for stream in streams.registered() for f in stream.future_fields)


def window_fields(s: WindowSpec) -> dict[str, Any]:
  """Nested dict of (shape, dtype) for one window."""
  fields: dict[str, Any] = {**_input_fields(s, s.frames), **_target_fields(s, s.frames)}
  fields.update({
      "task": ((), np.int32),  # main-task (activity) id
      "episode": ((), np.int32),  # index into the manifest's episodes
      "start": ((), np.int32),  # first context frame within the episode
  })
  ahead = {**_input_fields(s, s.future), **_target_fields(s, s.future)}
  fields["future"] = {k: ahead[k] for k in future_fields()}
  if s.next_window:
    fields["next"] = _input_fields(s, s.frames)
  return fields


def batch_shapes(s: WindowSpec, batch_size: int) -> dict[str, Any]:
  """The same tree with a leading batch axis, as `jax.ShapeDtypeStruct`-like tuples."""
  def add(tree):
    return {k: add(v) if isinstance(v, dict) else ((batch_size,) + v[0], v[1])
            for k, v in tree.items()}
  return add(window_fields(s))


def fake_window(s: WindowSpec, rng: np.random.Generator) -> dict[str, Any]:
  """A random window that satisfies the contract (tests, benchmarks, shape checks)."""
  def make(tree):
    out = {}
    for k, v in tree.items():
      if isinstance(v, dict):
        out[k] = make(v)
        continue
      shape, dtype = v
      if dtype == np.uint8:
        out[k] = rng.integers(0, 256, shape, dtype=np.uint8)
      elif dtype == np.bool_:
        out[k] = np.ones(shape, np.bool_) if k.endswith("_valid") else rng.random(shape) < 0.2
      elif dtype == np.int32:
        hi = {"action": s.num_actions, "subtask": s.num_subtasks, "task": s.num_tasks,
              "caption": s.vocab_size}.get(k, 100)
        out[k] = rng.integers(0, hi, shape, dtype=np.int32)
      elif k == "pose":
        out[k] = np.broadcast_to(np.eye(4, dtype=np.float32), shape).copy()
        out[k][..., :3, 3] = rng.normal(size=shape[:-2] + (3,)).astype(np.float32)
      else:
        out[k] = rng.normal(size=shape).astype(np.float32)
    return out
  w = make(window_fields(s))
  w["caption"][0] = BOS_ID
  return w


def fake_batch(s: WindowSpec, batch_size: int, seed: int = 0) -> dict[str, Any]:
  rng = np.random.default_rng(seed)
  windows = [fake_window(s, rng) for _ in range(batch_size)]
  def stack(trees):
    return {k: stack([t[k] for t in trees]) if isinstance(trees[0][k], dict)
            else np.stack([t[k] for t in trees]) for k in trees[0]}
  return stack(windows)
