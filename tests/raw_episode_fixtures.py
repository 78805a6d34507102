"""Tiny raw episodes for the reader tests: MP4s with a frame counter and a tone, and an
annotation.hdf5 holding every key of xperience.KEYS.

Frames carry their index as 8 binary stripes (white = 1, bit 0 leftmost), which survive
H.264 and downscaling, so tests can check which frames a decode returned. The audio is
silence until `onset_frame`, then a 440 Hz tone, so tests can check sample alignment.
"""

from __future__ import annotations

import fractions
import json
import os
import pathlib
import shutil
from typing import Callable, Optional

import av
import h5py
import numpy as np

from xefm_jax.data import geometry
from xefm_jax.data import xperience

FPS = 20
AUDIO_RATE = 48000
T0_NS = 75294505147569  # device time of frame 0 (a real-looking value)
FRAME_NS = 50_000_000  # 20 fps
IMU_PER_FRAME = 10


def write_mp4(path, num_frames: int, width: int = 64, height: int = 32, *,
              audio: bool = True, onset_frame: int = 10, faststart: bool = False,
              gop: Optional[int] = None, video_delay_frames: int = 0) -> None:
  """libx264 20 fps yuv420p with a frame counter, plus 48 kHz stereo AAC."""
  options = {"movflags": "faststart"} if faststart else {}
  with av.open(os.fspath(path), "w", options=options) as c:
    vs = c.add_stream("libx264", rate=FPS)
    vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
    vs.options = {"preset": "ultrafast", "crf": "18", **({"g": str(gop)} if gop else {})}
    if audio:
      aus = c.add_stream("aac", rate=AUDIO_RATE)
      aus.layout = "stereo"
    for i in range(num_frames):
      img = np.zeros((height, width, 3), np.uint8)
      for b in range(8):
        if (i >> b) & 1:
          img[:, b * width // 8:(b + 1) * width // 8] = 255
      frame = av.VideoFrame.from_ndarray(img, format="rgb24")
      frame.pts, frame.time_base = i + video_delay_frames, fractions.Fraction(1, FPS)
      c.mux(vs.encode(frame))
    c.mux(vs.encode())
    if audio:
      total = int(round((num_frames + video_delay_frames) / FPS * AUDIO_RATE))
      t = np.arange(total) / AUDIO_RATE
      tone = np.where(t >= onset_frame / FPS, 0.5 * np.sin(2 * np.pi * 440 * t), 0.0)
      tone = tone.astype(np.float32)
      for pos in range(0, total, 1024):
        chunk = tone[pos:pos + 1024]
        frame = av.AudioFrame.from_ndarray(np.stack([chunk, chunk]), format="fltp",
                                           layout="stereo")
        frame.sample_rate, frame.pts = AUDIO_RATE, pos
        frame.time_base = fractions.Fraction(1, AUDIO_RATE)
        c.mux(aus.encode(frame))
      c.mux(aus.encode())


def frame_indices(frames: np.ndarray) -> list[int]:
  """Reads the stripe counter back from (T, h, w, 3) frames."""
  w = frames.shape[2]
  out = []
  for f in frames:
    bits = [f[:, b * w // 8:(b + 1) * w // 8].mean() > 127 for b in range(8)]
    out.append(sum(int(bit) << b for b, bit in enumerate(bits)))
  return out


def onset_sample(x: np.ndarray) -> int:
  """First sample where the tone is clearly on."""
  return int(np.argmax(np.abs(x) > 0.3 * np.abs(x).max()))


def truncate(path, fraction: float) -> None:
  data = pathlib.Path(path).read_bytes()
  pathlib.Path(path).write_bytes(data[:int(len(data) * fraction)])


def caption_doc(n: int) -> dict:
  """A two-segment caption in the real style (device times, frame_ bounds)."""
  t = lambda i: T0_NS + i * FRAME_NS  # noqa: E731
  half = n // 2
  return {
      "config": {"segment_sec": 20, "sample_fps": 0.5, "Main Task": "Make tea."},
      "segments": [
          {"segment_id": 0, "start_frame": str(t(0)), "end_frame": f"frame_{half:07d}",
           "Sub Task": "Fill the kettle",
           "Current Action": [{"label": "Open tap", "description": "Hand opens the tap",
                               "start_frame": t(2), "end_frame": t(5)}],
           "sampled_frames": {"Image 1": t(0)},
           "objects": {str(t(0)): ["kettle", "tap"]},
           "interaction": {str(t(0)): "The hand opens the tap."}},
          {"segment_id": 1, "start_frame": f"frame_{half + 1:07d}", "end_frame": t(n - 1),
           "Sub Task": "Boil water",
           "Current Action": [{"label": "Press switch", "description": "",
                               "start_frame": t(half + 1), "end_frame": t(half + 3)}],
           "sampled_frames": {"Image 1": t(half)},
           "objects": {str(t(half)): ["kettle"]},
           "interaction": {str(t(half)): "The kettle heats."}},
      ],
      "global_summary": "Tea is made.",
  }


def annotation_arrays(n: int, seed: int = 0) -> dict[str, object]:
  """Every key of xperience.KEYS with tiny shapes; per-frame keys have n rows."""
  rng = np.random.default_rng(seed)
  m = n * IMU_PER_FRAME
  times = T0_NS + np.arange(n, dtype=np.int64) * FRAME_NS
  a: dict[str, object] = {}
  for i in range(4):
    a[f"calibration/cam{i}/K"] = np.array([100.0 + i, 101.0 + i, 32.0, 16.0])
    a[f"calibration/cam{i}/D"] = np.array([0.01, -0.002, 0.0005, 0.0]) * (i + 1)
    a[f"calibration/cam{i}/model"] = "kannala_brandt"
  a["calibration/cam0/T_c_b"] = geometry.make_se3(
      geometry.axis_angle_to_matrix(np.array([0.1, 0.2, 0.3])), np.array([0.05, 0.0, 0.1]))
  for i in (1, 2, 3):
    a[f"calibration/cam{i}/T_cn_cnm1"] = geometry.make_se3(
        geometry.axis_angle_to_matrix(np.array([0.0, 0.5 * i, 0.0])),
        np.array([0.1 * i, 0.0, 0.0]))
  a["calibration/cam01/K"] = np.array([50.0, 50.0, 32.0, 32.0])
  a["calibration/cam01/T_c0_b"] = geometry.make_se3(
      geometry.axis_angle_to_matrix(np.array([-0.2, 0.0, 0.1])), np.array([0.0, 0.03, 0.0]))
  a["calibration/cam01/baseline"] = np.float64(0.08)
  a["calibration/cam01/model"] = "pinhole"
  a["calibration/fisheye_resolution"] = "64x32"  # real files: sizes are not numeric
  a["calibration/stereo_resolution"] = "64x64"
  a["calibration/rig_name"] = "fixture-rig"
  q = rng.normal(size=(n, 4))
  a["slam/quat_wxyz"] = q / np.linalg.norm(q, axis=-1, keepdims=True)
  a["slam/trans_xyz"] = rng.normal(size=(n, 3))
  a["slam/frame_names"] = np.array([b"%d.jpg" % t for t in times], dtype="S24")
  a["slam/point_cloud"] = rng.normal(size=(5, 3))  # float64, as in real files
  a["depth/depth"] = rng.uniform(0.5, 5.0, size=(n, 8, 8)).astype(np.float32)
  a["depth/confidence"] = rng.integers(0, 256, size=(n, 8, 8), dtype=np.uint8)
  a["depth/scale"] = np.float64(0.5)
  a["depth/depth_min"] = np.float64(0.1)
  a["depth/depth_max"] = np.float64(10.0)
  for side in xperience.HANDS:
    a[f"hand_mocap/{side}_joints_3d"] = rng.normal(size=(n, 21, 3)).astype(np.float32)
    a[f"hand_mocap/{side}_translation"] = rng.normal(size=(n, 3)).astype(np.float32)
    a[f"hand_mocap/{side}_mano_hand_pose"] = np.tile(np.eye(3), (n, 15, 1, 1))
    a[f"hand_mocap/{side}_mano_hand_global_orient"] = np.tile(np.eye(3).ravel(), (n, 1))
    a[f"hand_mocap/{side}_mano_hand_betas"] = np.zeros((n, 10))
  a["full_body_mocap/keypoints"] = rng.normal(size=(n, 52, 3)).astype(np.float32)
  a["full_body_mocap/contacts"] = rng.uniform(0, 1, size=(n, 21)).astype(np.float32)
  pose7 = np.concatenate([np.tile([1.0, 0, 0, 0], (n, 1)), rng.normal(size=(n, 3))], -1)
  a["full_body_mocap/Ts_world_root"] = pose7
  a["full_body_mocap/Ts_world_cpf"] = pose7
  a["full_body_mocap/body_quats"] = np.tile([1.0, 0, 0, 0], (n, 21, 1))
  a["full_body_mocap/left_hand_quats"] = np.tile([1.0, 0, 0, 0], (n, 15, 1))
  a["full_body_mocap/right_hand_quats"] = np.tile([1.0, 0, 0, 0], (n, 15, 1))
  a["full_body_mocap/betas"] = np.zeros((n, 16))
  a["full_body_mocap/frame_nums"] = np.arange(n, dtype=np.int64)
  a["imu/device_timestamp_ns"] = T0_NS + np.arange(m, dtype=np.int64) * (FRAME_NS // 10)
  a["imu/accel_xyz"] = rng.normal(size=(m, 3))
  a["imu/gyro_xyz"] = rng.normal(size=(m, 3))
  a["imu/keyframe_indices"] = np.arange(n, dtype=np.int64) * IMU_PER_FRAME
  a["video/device_timestamp"] = times
  a["video/frame_number"] = np.arange(n, dtype=np.int64)
  a["video/length_sec"] = np.float64(n / FPS)
  a["metadata/body_height"] = np.float64(1.75)
  a["metadata/device_id"] = "dev-0042"
  a["metadata/device_version"] = "v2"
  a["metadata/time_created"] = "2025-01-01T00:00:00Z"
  a["metadata/health_report"] = json.dumps(
      {"fps": {"video": 20.0}, "frame_drops": {"video": 0}, "integrity": "ok"})
  a["metadata/recording_id"] = "rec-7"
  a["caption"] = json.dumps(caption_doc(n))
  return a


def write_annotation(path, arrays: dict[str, object],
                     attrs: Optional[dict[str, dict[str, object]]] = None) -> None:
  """Writes arrays with h5py (str values become variable-length UTF-8 scalars)."""
  with h5py.File(path, "w") as f:
    for name, value in arrays.items():
      if isinstance(value, str):
        f.create_dataset(name, data=value, dtype=h5py.string_dtype("utf-8"))
      else:
        f.create_dataset(name, data=value)
    for name, items in (attrs or {}).items():
      f[name].attrs.update(items)


class EpisodeFactory:
  """Builds episodes under a root, reusing encoded MP4s of the same kind."""

  def __init__(self, root: pathlib.Path):
    self.root = root
    self._cache = root / "_mp4_cache"
    self._cache.mkdir(parents=True, exist_ok=True)

  def mp4(self, num_frames: int, **kwargs) -> pathlib.Path:
    key = f"{num_frames}_" + "_".join(f"{k}{v}" for k, v in sorted(kwargs.items()))
    path = self._cache / f"{key}.mp4"
    if not path.exists():
      write_mp4(path, num_frames, **kwargs)
    return path

  def make(self, name: str, n: int = 40, *, view_frames: Optional[dict[str, int]] = None,
           missing_views: tuple[str, ...] = (),
           mutate: Optional[Callable[[dict], None]] = None,
           attrs: Optional[dict[str, dict[str, object]]] = None) -> pathlib.Path:
    """<root>/session-<name>/ep1 with all keys and views; view_frames overrides lengths."""
    ep = self.root / f"session-{name}" / xperience.episode_dir_name(1)
    ep.mkdir(parents=True)
    arrays = annotation_arrays(n)
    if mutate is not None:
      mutate(arrays)
    write_annotation(ep / xperience.ANNOTATION_FILE, arrays, attrs)
    for view in xperience.VIEWS:
      if view not in missing_views:
        frames = (view_frames or {}).get(view, n)
        shutil.copy(self.mp4(frames), ep / (view + xperience.VIDEO_SUFFIX))
    return ep
