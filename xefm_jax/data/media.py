"""Decoding the MP4 files of a raw episode with PyAV: probe, video frames, audio samples.

This is the only place that decodes video or audio; the episode reader and the shredder
both call it, so the resize and the audio alignment documented here are the ones every
shard is made with.

Frame indexing: frame k of a file is the k-th frame in presentation order, counted from
the first frame of the video stream (the episode's frame k for a file that covers the
episode). `start`, `stop` and `stride` select `range(start, stop, stride)` of those frames.

Resizing: PyAV's reformatter (swscale) converts to RGB24 and resizes in one pass, with
AREA interpolation when the target is no larger than the source in both dimensions
(the usual downscale, free of aliasing) and BICUBIC otherwise. The YUV->RGB conversion is
swscale's, using the colorspace and range the stream declares (BT.601, limited range when
it declares none).

Audio: the first audio stream is decoded, down-mixed to mono and resampled by
`av.AudioResampler` (swresample's default down-mix and filter). Sample 0 is the audio at the
presentation time of video frame 0: the AAC encoder priming (1024 samples at the start of
the track) is removed by the demuxer's edit list in well-formed files; whatever remains is
trimmed (or silence prepended) from the first decoded frame's pts against the video
stream's start time.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Iterator, Optional, Union

import av
from av.video.reformatter import Interpolation, VideoReformatter
import numpy as np

from xefm_jax import errors

Size = Union[int, tuple[int, int]]  # an int is a square side; a tuple is (height, width)

# An audio track may end a little before the video; a larger shortfall against the
# stream's own declared duration means the file was cut.
_AUDIO_SHORTFALL_S = 0.25


class MediaError(errors.Error):
  """A media file that cannot be read as expected; the message names the file."""


@dataclasses.dataclass(frozen=True)
class MediaInfo:
  """What an MP4's headers say, read without decoding a frame."""

  path: str
  width: int
  height: int
  fps: float
  num_frames: int  # video frames; from the container's sample table (exact for MP4)
  duration_s: float  # of the video stream
  codec: str
  has_audio: bool
  audio_rate: Optional[int]  # Hz, None without audio
  audio_channels: Optional[int]
  audio_duration_s: Optional[float]


def _open(path: Union[str, os.PathLike]) -> av.container.InputContainer:
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise MediaError(f"{path}: file is missing (expected an MP4 file)")
  try:
    return av.open(path, mode="r")
  except (av.FFmpegError, OSError, ValueError) as e:
    raise MediaError(f"{path}: cannot open as a media container ({e}); the file is "
                     "truncated or corrupt (an MP4 needs its moov header)") from e


def _video_stream(container, path: str) -> av.video.stream.VideoStream:
  if not container.streams.video:
    raise MediaError(f"{path}: no video stream (expected one H.264 video stream)")
  return container.streams.video[0]


def _stream_fps(stream, path: str) -> float:
  rate = stream.average_rate or stream.guessed_rate or stream.base_rate
  if not rate or rate <= 0:
    raise MediaError(f"{path}: video stream has no frame rate (expected a constant rate, "
                     "20 fps for Xperience)")
  return float(rate)


def _stream_duration_s(stream, container) -> float:
  if stream.duration is not None and stream.time_base is not None:
    return float(stream.duration * stream.time_base)
  if container.duration is not None:
    return container.duration / 1e6  # container duration is in AV_TIME_BASE (microseconds)
  return 0.0


def probe(path: Union[str, os.PathLike]) -> MediaInfo:
  """Reads the headers of `path`; decodes nothing. Raises MediaError."""
  path = os.fspath(path)
  container = _open(path)
  try:
    v = _video_stream(container, path)
    fps = _stream_fps(v, path)
    duration = _stream_duration_s(v, container)
    num_frames = int(v.frames)
    if num_frames <= 0:  # containers without a sample table (not MP4): estimate
      num_frames = int(round(duration * fps))
    ctx = v.codec_context
    if not ctx.width or not ctx.height:
      raise MediaError(f"{path}: video stream has no frame size in its header")
    audio = container.streams.audio[0] if container.streams.audio else None
    return MediaInfo(
        path=path, width=int(ctx.width), height=int(ctx.height), fps=fps,
        num_frames=num_frames, duration_s=duration, codec=ctx.name,
        has_audio=audio is not None,
        audio_rate=int(audio.sample_rate) if audio is not None else None,
        audio_channels=int(audio.channels) if audio is not None else None,
        audio_duration_s=(_stream_duration_s(audio, container) if audio is not None
                          else None))
  finally:
    container.close()


def _target_size(size: Optional[Size], width: int, height: int) -> tuple[int, int]:
  """(height, width) of the output frames."""
  if size is None:
    return height, width
  if isinstance(size, (int, np.integer)):
    h = w = int(size)
  else:
    h, w = (int(s) for s in size)
  if h <= 0 or w <= 0:
    raise ValueError(f"size must be positive, got {size!r}")
  return h, w


def _interpolation(out_hw: tuple[int, int], width: int, height: int) -> Interpolation:
  if out_hw[0] <= height and out_hw[1] <= width:
    return Interpolation.AREA
  return Interpolation.BICUBIC


class _SeekMismatch(Exception):
  """Frame timestamps after a seek do not give a consistent frame index."""


def _frames_from(container, stream, start: int, fps: float) -> Iterator[tuple[int, av.VideoFrame]]:
  """(index, frame) pairs from a keyframe at or before `start`, found by seeking.

  The index of the first decoded frame comes from its pts; every later frame must advance
  the pts by one frame period, else _SeekMismatch (the caller then decodes from the
  beginning, where indices are counted, not computed).
  """
  tb = stream.time_base
  t0 = stream.start_time or 0
  target = t0 + int(math.floor(start / fps / tb))
  container.seek(target, stream=stream, backward=True, any_frame=False)
  expected = None
  for frame in container.decode(stream):
    if frame.pts is None:
      raise _SeekMismatch()
    index = int(round(float((frame.pts - t0) * tb) * fps))
    if expected is None:
      if not 0 <= index <= start:
        raise _SeekMismatch()
    elif index != expected:
      raise _SeekMismatch()
    yield index, frame
    expected = index + 1


def _decode_into(out: np.ndarray, frames: Iterator[tuple[int, av.VideoFrame]], start: int,
                 stop: int, stride: int, interp: Interpolation) -> int:
  """Writes the selected frames into `out` (T, h, w, 3); returns how many were written."""
  reformatter = VideoReformatter()  # keeps one swscale context for the whole stream
  h, w = out.shape[1:3]
  written = 0
  for index, frame in frames:
    if index >= stop:
      break  # stop decoding as soon as the range is covered
    if index < start or (index - start) % stride:
      continue
    rgb = reformatter.reformat(frame, width=w, height=h, format="rgb24",
                               interpolation=interp)
    out[written] = rgb.to_ndarray()  # (h, w, 3) uint8
    written += 1
  return written


def decode_video(path: Union[str, os.PathLike], size: Optional[Size] = None, stride: int = 1,
                 start: int = 0, stop: Optional[int] = None, *, threads: int = 0) -> np.ndarray:
  """Frames `range(start, stop, stride)` of the file as (T, h, w, 3) uint8 RGB.

  Args:
    path: an MP4 (any container FFmpeg reads).
    size: output size, an int (square) or (height, width); None keeps the file's size.
    stride: keep every stride-th frame from `start`.
    start, stop: frame range; stop=None means the end of the stream.
    threads: decoder threads, 0 lets FFmpeg choose (frame and slice threading).
  Raises:
    MediaError: the file is missing, truncated or corrupt, or the range is beyond its end.
    ValueError: bad arguments.
  """
  path = os.fspath(path)
  if stride < 1 or start < 0 or (stop is not None and stop < start):
    raise ValueError(f"bad frame selection start={start}, stop={stop}, stride={stride}")
  info = probe(path)
  stop = info.num_frames if stop is None else stop
  if stop > info.num_frames:
    raise MediaError(f"{path}: frames up to {stop} requested, the video stream has "
                     f"{info.num_frames}")
  out_hw = _target_size(size, info.width, info.height)
  out = np.empty((len(range(start, stop, stride)),) + out_hw + (3,), np.uint8)
  if not len(out):
    return out
  interp = _interpolation(out_hw, info.width, info.height)

  def run(seek: bool) -> int:
    container = _open(path)
    try:
      stream = _video_stream(container, path)
      stream.thread_type = "AUTO"
      stream.codec_context.thread_count = threads
      if seek:
        frames = _frames_from(container, stream, start, info.fps)
      else:
        frames = enumerate(container.decode(stream))
      return _decode_into(out, frames, start, stop, stride, interp)
    except av.FFmpegError as e:
      raise MediaError(f"{path}: decoding failed ({e}); the file is truncated or "
                       "corrupt") from e
    finally:
      container.close()

  written = None
  if start > 0:  # seek to the keyframe before `start` rather than decode the prefix
    try:
      written = run(seek=True)
    except _SeekMismatch:
      written = None
  if written is None:
    written = run(seek=False)
  if written < len(out):
    raise MediaError(f"{path}: the video stream ended early: {written} of {len(out)} "
                     f"requested frames decoded (frames {start}..{stop - 1}, stride "
                     f"{stride}; the header says {info.num_frames} frames); the file is "
                     "truncated or corrupt")
  return out


class VideoReader:
  """Sequential frames of one file, decoded once, handed out in consecutive runs.

  The shredder walks a long episode block by block: `read(n)` returns the next n frames
  (frame stride applied) without holding the whole stream in memory, and the decoder never
  seeks or decodes a frame twice.
  """

  def __init__(self, path: Union[str, os.PathLike], size: Optional[Size] = None,
               stride: int = 1, *, threads: int = 0):
    self.path = os.fspath(path)
    self.info = probe(self.path)
    self.stride = stride
    self._hw = _target_size(size, self.info.width, self.info.height)
    self._interp = _interpolation(self._hw, self.info.width, self.info.height)
    self._container = _open(self.path)
    stream = _video_stream(self._container, self.path)
    stream.thread_type = "AUTO"
    stream.codec_context.thread_count = threads
    self._frames = enumerate(self._container.decode(stream))
    self._reformatter = VideoReformatter()
    self.position = 0  # output frames handed out so far

  def read(self, n: int) -> np.ndarray:
    """The next n output frames, (n, h, w, 3) uint8."""
    out = np.empty((n,) + self._hw + (3,), np.uint8)
    written = 0
    try:
      while written < n:
        index, frame = next(self._frames)
        if index % self.stride:
          continue
        out[written] = self._reformatter.reformat(
            frame, width=self._hw[1], height=self._hw[0], format="rgb24",
            interpolation=self._interp).to_ndarray()
        written += 1
    except StopIteration:
      raise MediaError(f"{self.path}: the video stream ended early: frame "
                       f"{(self.position + written) * self.stride} of {self.info.num_frames} "
                       "in the header; the file is truncated or corrupt") from None
    except av.FFmpegError as e:
      raise MediaError(f"{self.path}: decoding failed ({e}); the file is truncated or "
                       "corrupt") from e
    self.position += n
    return out

  def close(self) -> None:
    self._container.close()


def decode_audio(path: Union[str, os.PathLike], rate: int = 16000,
                 num_samples: Optional[int] = None) -> np.ndarray:
  """The first audio stream as float32 mono at `rate` Hz, (S,).

  Sample 0 is the presentation time of the first video frame (time 0 without video).
  With num_samples, the result is zero-padded or cut to exactly that length.
  Raises MediaError for a missing audio stream or a truncated or corrupt file.
  """
  path = os.fspath(path)
  if rate <= 0:
    raise ValueError(f"rate must be positive, got {rate}")
  container = _open(path)
  try:
    if not container.streams.audio:
      raise MediaError(f"{path}: no audio stream (expected an AAC track)")
    stream = container.streams.audio[0]
    stream.thread_type = "AUTO"
    video = container.streams.video[0] if container.streams.video else None
    t_zero = 0.0
    if video is not None and video.start_time is not None:
      t_zero = float(video.start_time * video.time_base)
    declared_s = _stream_duration_s(stream, container)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
    chunks = []
    t_first = None
    decoded = 0  # native samples, to tell a cut file from a short track
    native_rate = stream.sample_rate
    for frame in container.decode(stream):
      if t_first is None:
        if frame.pts is not None:
          t_first = float(frame.pts * frame.time_base)
        elif stream.start_time is not None:
          t_first = float(stream.start_time * stream.time_base)
        else:
          t_first = 0.0
      decoded += frame.samples
      native_rate = frame.sample_rate
      chunks += [o.to_ndarray().reshape(-1) for o in resampler.resample(frame)]
    chunks += [o.to_ndarray().reshape(-1) for o in resampler.resample(None)]
  except av.FFmpegError as e:
    raise MediaError(f"{path}: audio decoding failed ({e}); the file is truncated or "
                     "corrupt") from e
  finally:
    container.close()
  if native_rate and declared_s - decoded / native_rate > _AUDIO_SHORTFALL_S:
    raise MediaError(f"{path}: the audio stream ended early: {decoded / native_rate:.3f} s "
                     f"decoded, the header says {declared_s:.3f} s; the file is truncated "
                     "or corrupt")
  x = np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(
      0, np.float32)  # (S,)
  # Align: the first decoded sample plays at t_first; sample 0 must be t_zero.
  offset = int(round(((t_first or 0.0) - t_zero) * rate))
  if offset > 0:
    x = np.concatenate([np.zeros(offset, np.float32), x])
  elif offset < 0:
    x = x[-offset:]
  if num_samples is not None:
    if len(x) >= num_samples:
      x = x[:num_samples]
    else:
      x = np.concatenate([x, np.zeros(num_samples - len(x), np.float32)])
  return x
