"""Generator profiles: sizes, codecs, storage and quirk rates of synthetic episodes.

`small` makes episodes that tests and laptop runs generate in seconds; `real` matches what
is known of the real corpus (stereo 512x512, depth 256x256 at scale 0.5, fisheye larger,
48 kHz audio, 4-5 minute episodes, uncompressed depth in annotation.hdf5).
"""

from __future__ import annotations

import dataclasses

from data_pipelines.synth.quirks import QuirkRates


@dataclasses.dataclass(frozen=True)
class Profile:
  name: str
  fisheye_size: int  # square fisheye images, pixels
  stereo_size: int  # square rectified stereo images, pixels
  default_seconds: float  # episode length when the caller gives none
  depth_scale: float = 0.5  # depth resolution / stereo resolution (depth/scale)
  fisheye_fov_deg: float = 150.0
  stereo_fov_deg: float = 90.0
  audio_rate: int = 48000
  x264_preset: str = "veryfast"
  x264_crf: int = 23
  x264_threads: int = 1  # 1 keeps the encoder deterministic and off other workers' cores
  gop_frames: int = 40  # keyframe interval: 2 s at 20 fps, so seeking stays cheap
  audio_bitrate: int = 64000
  hdf5_compression: str | None = None  # None (as real files), "gzip" or "lzf"
  chunk_frames: int = 16  # frames culled per call of the jitted renderer
  block_tiles: int = 512  # 8x8 pixel tiles ray cast per call (see render.py)
  max_candidates: int = 32  # solids tested per tile at most, nearest first (see render.py)
  max_solids: int = 240  # static + movable solids of one episode, at most
  depth_min_m: float = 0.1
  depth_max_m: float = 10.0
  point_cloud_size: int = 2000  # SLAM map points, at most
  sensor_noise: float = 2.5 / 255  # per-pixel image noise, std in [0, 1] units
  quirks: QuirkRates = QuirkRates()

  def __post_init__(self):
    for name in ("fisheye_size", "stereo_size"):
      if getattr(self, name) % 16:
        raise ValueError(f"Profile {self.name}: {name} = {getattr(self, name)}; expected a "
                         "multiple of 16 (8x8 render tiles, and depth at half size)")
    depth = self.stereo_size * self.depth_scale
    if depth != int(depth) or int(depth) % 8:
      raise ValueError(f"Profile {self.name}: depth size {depth} (stereo_size * depth_scale) "
                       "must be a whole multiple of 8")

  @property
  def depth_size(self) -> int:
    return int(self.stereo_size * self.depth_scale)


SMALL = Profile(
    name="small",
    fisheye_size=128,
    stereo_size=96,
    default_seconds=10.0,
    x264_preset="ultrafast",
    x264_crf=26,
    hdf5_compression="gzip",
    chunk_frames=32,
    point_cloud_size=500,
    quirks=QuirkRates(hand_nan_runs=0.3, untracked_nan=0.1, missing_view=0.05,
                      short_stream=0.1, string_timestamps=0.1),
)

REAL = Profile(
    name="real",
    fisheye_size=1024,
    stereo_size=512,
    default_seconds=270.0,
    x264_preset="veryfast",
    x264_crf=23,
    x264_threads=0,  # 0 lets x264 choose; one real episode is a long job on its own
    audio_bitrate=96000,
    hdf5_compression=None,
    chunk_frames=4,
    block_tiles=2048,
    point_cloud_size=4000,
    quirks=QuirkRates(hand_nan_runs=0.5, untracked_nan=0.15, missing_view=0.02,
                      short_stream=0.1, string_timestamps=0.05),
)

PROFILES = {p.name: p for p in (SMALL, REAL)}


def get_profile(name: str) -> Profile:
  if name not in PROFILES:
    raise ValueError(f"unknown profile {name!r}; expected one of {sorted(PROFILES)}")
  return PROFILES[name]
