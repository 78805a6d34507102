"""Writes one episode directory in the real Xperience layout from an EpisodeSim.

    <root>/<session_uuid>/ep<k>/
      annotation.hdf5                    every key of xefm_jax/data/xperience.py KEYS
      fisheye_cam0..3.mp4, stereo_left.mp4, stereo_right.mp4
                                         H.264 yuv420p at 20 fps + the same AAC track

The episode is written under a hidden sibling name (`.ep<k>.partial-<pid>`) and renamed
into place when complete, so a reader never sees half an episode; an existing `ep<k>` is
taken as complete and skipped. Frames are rendered, encoded and stored chunk by chunk, so
memory stays bounded for 270 s episodes at the real profile.

Randomness (sensor noise, audio, SLAM map sampling, metadata) comes from the episode's
(seed, session, episode) only, never from the clock, so a re-run writes identical HDF5
arrays and identical decoded frames (in practice identical bytes: x264 and FFmpeg's AAC
encoder are deterministic, and HDF5 datasets carry no timestamps).
"""

from __future__ import annotations

import dataclasses
import datetime
import io
import json
import os
import pathlib
import shutil
import uuid
from typing import Any

import av
import h5py
import numpy as np

from data_pipelines.synth import audio as audio_lib
from data_pipelines.synth import cameras as cameras_lib
from data_pipelines.synth import quirks as quirks_lib
from data_pipelines.synth.render import Renderer, depth_points_world
from data_pipelines.synth.scene import EpisodeSim
from xefm_jax.data import geometry, xperience

GENERATOR = "xefm_jax.synthesize"
MAP_POINT_MIN_CONFIDENCE = 128  # SLAM keeps well-observed surface points only
MAP_POINT_NOISE_M = 0.005
STRING = h5py.string_dtype("utf-8")


@dataclasses.dataclass(frozen=True)
class Device:
  """The headset that recorded a session: its identity and its calibrated rig."""

  device_id: str
  device_version: str
  rig: cameras_lib.Rig


def episode_dir(root: pathlib.Path, session: str, episode: int) -> pathlib.Path:
  """The folder of a session's episode `episode` (0-based in the world): ep1, ep2, ..."""
  return pathlib.Path(root) / session / xperience.episode_dir_name(
      episode + xperience.FIRST_EPISODE_NUMBER)


def episode_key(sim: EpisodeSim) -> list[int]:
  """Entropy that tells an episode from every other of the run: seed, session, episode."""
  return [sim.seed & 0xFFFFFFFF, hash_seed(sim.session), sim.episode]


def _rng(sim: EpisodeSim, purpose: int) -> np.random.Generator:
  """Independent random streams, one per purpose, of one episode."""
  return np.random.default_rng(episode_key(sim) + [purpose])


# ----------------------------------------------------------------------------- HDF5 content


def _slam(sim: EpisodeSim) -> dict[str, np.ndarray]:
  T_body_world = geometry.se3_inverse(sim.T_world_body)
  return {
      "slam/quat_wxyz": geometry.matrix_to_quat(T_body_world[:, :3, :3]),
      "slam/trans_xyz": T_body_world[:, :3, 3],
      "slam/frame_names": np.array([b"%d.jpg" % t for t in sim.frame_times_ns], dtype="S"),
  }


def _hands(sim: EpisodeSim, rig: cameras_lib.Rig) -> dict[str, np.ndarray]:
  """hand_mocap/* in the rectified stereo-left camera frame; zero rows where not tracked
  (as real files store an untracked hand; the `untracked_nan` quirk writes NaN instead)."""
  T_cam_world = rig.stereo.T_c0_b @ geometry.se3_inverse(sim.T_world_body)  # (N, 4, 4)
  n = sim.num_frames
  out = {}
  for side, name in enumerate(xperience.HANDS):
    joints = geometry.transform_points(T_cam_world, sim.hands_world[:, side])  # (N, 21, 3)
    orient = T_cam_world[:, :3, :3] @ sim.mano_global_orient_world[:, side]  # (N, 3, 3)
    fields = {
        "joints_3d": joints,
        "translation": joints[:, 0],  # the wrist: MANO's root joint
        "mano_hand_pose": np.asarray(sim.mano_hand_pose[:, side], np.float64),
        "mano_hand_global_orient": orient.reshape(n, 9),
        "mano_hand_betas": np.tile(sim.mano_betas[side], (n, 1)),
    }
    lost = ~np.asarray(sim.hand_visible[:, side], bool)
    for field, value in fields.items():
      value = np.array(value, np.float64)
      value[lost] = 0.0
      out[f"hand_mocap/{name}_{field}"] = value
  return out


def _body(sim: EpisodeSim) -> dict[str, np.ndarray]:
  n = sim.num_frames
  return {
      "full_body_mocap/keypoints": sim.body_keypoints,
      "full_body_mocap/contacts": sim.contacts,
      "full_body_mocap/Ts_world_root": geometry.se3_to_pose7(sim.T_world_root),
      "full_body_mocap/Ts_world_cpf": geometry.se3_to_pose7(sim.T_world_cpf),
      "full_body_mocap/body_quats": sim.body_quats,
      "full_body_mocap/left_hand_quats": sim.hand_quats[:, 0],
      "full_body_mocap/right_hand_quats": sim.hand_quats[:, 1],
      "full_body_mocap/betas": np.tile(sim.body_betas, (n, 1)),
      "full_body_mocap/frame_nums": np.arange(n, dtype=np.int64),
  }


def _clocks(sim: EpisodeSim, quirks: quirks_lib.EpisodeQuirks) -> dict[str, np.ndarray]:
  video_ts = np.asarray(sim.frame_times_ns, np.int64)
  return {
      "imu/device_timestamp_ns": np.asarray(sim.imu_times_ns, np.int64),
      "imu/accel_xyz": np.asarray(sim.imu_accel, np.float64),
      "imu/gyro_xyz": np.asarray(sim.imu_gyro, np.float64),
      "imu/keyframe_indices": np.asarray(sim.imu_keyframe_indices, np.int64),
      "video/device_timestamp": (quirks_lib.timestamps_as_strings(video_ts)
                                 if quirks.string_timestamps else video_ts),
      "video/frame_number": np.arange(sim.num_frames, dtype=np.int64),
      "video/length_sec": np.float64(sim.num_frames / xperience.FPS),
  }


def health_report(sim: EpisodeSim, quirks: quirks_lib.EpisodeQuirks, audio_rate: int) -> str:
  """metadata/health_report: expected rates, frame drops per sensor and file integrity."""
  n = sim.num_frames
  streams = xperience.VIEWS + (quirks_lib.DEPTH_STREAM,)
  frames = {s: (0 if s == quirks.missing_view else quirks.frames_in(s, n)) for s in streams}
  frames.update({"slam": n, "hand_mocap": n, "full_body_mocap": n})
  files = {xperience.ANNOTATION_FILE: "ok"}
  files.update({v + xperience.VIDEO_SUFFIX: ("missing" if v == quirks.missing_view else "ok")
                for v in xperience.VIEWS})
  report = {
      "expected_fps": {**{s: xperience.FPS for s in frames}, "imu": xperience.IMU_RATE_HZ,
                       "audio": float(audio_rate)},
      "frame_counts": {**frames, "imu": int(len(sim.imu_times_ns))},
      "frame_drops": {s: n - c for s, c in frames.items()},
      "file_integrity": files,
      "duration_sec": n / xperience.FPS,
  }
  return json.dumps(report, sort_keys=True)


def _metadata(sim: EpisodeSim, device: Device, quirks: quirks_lib.EpisodeQuirks,
              audio_rate: int) -> dict[str, Any]:
  # A creation time from the seed, not the wall clock: re-runs write identical files.
  created = (datetime.datetime(2025, 1, 1, tzinfo=datetime.timezone.utc)
             + datetime.timedelta(seconds=int(_rng(sim, 7).integers(0, 365 * 86400))))
  return {
      "metadata/body_height": np.float64(sim.body_height),
      "metadata/device_id": device.device_id,
      "metadata/device_version": device.device_version,
      "metadata/time_created": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
      "metadata/health_report": health_report(sim, quirks, audio_rate),
      "metadata/recording_id": str(uuid.uuid5(uuid.NAMESPACE_URL,
                                              f"xefm-synth/{sim.name}")),
  }


def _create(f: h5py.File, name: str, value: Any, compression: str | None) -> h5py.Dataset:
  if isinstance(value, str):
    return f.create_dataset(name, data=value, dtype=STRING)
  value = np.asarray(value)
  kwargs = {}
  if value.ndim and value.size > 1024 and compression:
    kwargs = dict(compression=compression, chunks=True)
  return f.create_dataset(name, data=value, **kwargs)


def _check_keys(f: h5py.File, path: pathlib.Path) -> None:
  """Every key of xperience.KEYS is present with its pattern's rank and dtype kind."""
  dims: dict[str, int] = {}
  for key in xperience.KEYS:
    if key.name not in f:
      raise RuntimeError(f"{path}: the writer did not write {key.name!r} "
                         f"(xperience.KEYS lists it: {xperience.describe_shape(key)})")
    ds = f[key.name]
    if not xperience.shape_matches(key, ds.shape, dims) or ds.dtype.kind not in key.kind:
      raise RuntimeError(f"{path}: {key.name!r} written as {ds.shape} {ds.dtype}, expected "
                         f"{xperience.describe_shape(key)} of kind {key.kind!r}")


# ----------------------------------------------------------------------------- video


def encode_aac(samples: np.ndarray, rate: int, bit_rate: int) -> bytes:
  """An in-memory MP4 holding the track as AAC: encoded once, remuxed into every view
  (encoding it six times cost more than the small profile's whole video encoding)."""
  buf = io.BytesIO()
  with av.open(buf, "w", format="mp4") as container:
    stream = container.add_stream("aac", rate=rate)
    stream.layout = "mono"
    stream.bit_rate = bit_rate
    frame = av.AudioFrame.from_ndarray(samples[None], format="flt", layout="mono")
    frame.sample_rate = rate
    frame.pts = 0
    for packet in list(stream.encode(frame)) + list(stream.encode(None)):
      container.mux(packet)
  return buf.getvalue()


class _Mp4:
  """One view's MP4: H.264 frames as they are rendered, AAC packets interleaved by time."""

  def __init__(self, path: pathlib.Path, width: int, height: int, profile, aac: bytes):
    self.container = av.open(str(path), "w")
    self.video = self.container.add_stream("libx264", rate=int(xperience.FPS))
    self.video.width, self.video.height, self.video.pix_fmt = width, height, "yuv420p"
    self.video.codec_context.gop_size = profile.gop_frames
    self.video.codec_context.thread_count = profile.x264_threads
    self.video.options = {"preset": profile.x264_preset, "crf": str(profile.x264_crf)}
    self._aac = av.open(io.BytesIO(aac), "r")
    source = self._aac.streams.audio[0]
    self.audio = self.container.add_stream_from_template(source)
    self._packets = (p for p in self._aac.demux(source) if p.dts is not None)
    self._pending = None

  def add_frames(self, frames: np.ndarray, first: int) -> None:
    """(F, H, W, 3) uint8 RGB frames numbered first, first + 1, ..."""
    for i, rgb in enumerate(frames):
      frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
      frame.pts = first + i
      for packet in self.video.encode(frame):
        self.container.mux(packet)

  def add_audio_until(self, seconds: float | None) -> None:
    """Muxes the AAC packets that start before `seconds` (None: all the rest)."""
    while True:
      packet = self._pending or next(self._packets, None)
      self._pending = None
      if packet is None:
        return
      if seconds is not None and packet.pts * packet.time_base >= seconds:
        self._pending = packet
        return
      packet.stream = self.audio
      self.container.mux(packet)

  def close(self) -> None:
    for packet in self.video.encode(None):
      self.container.mux(packet)
    self.add_audio_until(None)
    self.container.close()
    self._aac.close()

  def abort(self) -> None:
    """Releases the files after a failure; what was written is about to be deleted."""
    for c in (self.container, self._aac):
      try:
        c.close()
      except Exception:  # a half-written file may not close cleanly: it is discarded anyway
        pass


# ----------------------------------------------------------------------------- episode


def write_episode(root: pathlib.Path, sim: EpisodeSim, caption: str, renderer: Renderer,
                  device: Device, quirks: quirks_lib.EpisodeQuirks | None = None) -> pathlib.Path:
  """Writes `<root>/<sim.name>/` (ep1 for episode 0) atomically; returns its path.

  An existing episode directory is complete by construction and is left as it is.
  `renderer` must be built for `device.rig`.
  """
  final = episode_dir(root, sim.session, sim.episode)
  if final.exists():
    return final
  final.parent.mkdir(parents=True, exist_ok=True)
  tmp = final.parent / f".{final.name}.partial-{os.getpid()}"
  if tmp.exists():  # left by a run of this process id that died: start over
    shutil.rmtree(tmp)
  tmp.mkdir()
  try:
    _write_contents(tmp, sim, caption, renderer, device, quirks or quirks_lib.EpisodeQuirks())
    os.rename(tmp, final)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return final


def _write_contents(out: pathlib.Path, sim: EpisodeSim, caption: str, renderer: Renderer,
                    device: Device, quirks: quirks_lib.EpisodeQuirks) -> None:
  prof = renderer.profile
  if not isinstance(caption, str):
    raise TypeError(f"caption of {sim.name}: expected a JSON string, "
                    f"got {type(caption).__name__}")
  h5_path = out / xperience.ANNOTATION_FILE
  with h5py.File(h5_path, "w", track_order=True) as f:
    points = _record(f, out, sim, renderer, quirks)
    values: dict[str, Any] = {
        **cameras_lib.rig_to_calibration(device.rig),
        **_slam(sim),
        "slam/point_cloud": points.astype(np.float64),  # float64 in real files
        "depth/scale": np.float64(prof.depth_scale),
        "depth/depth_min": np.float64(prof.depth_min_m),
        "depth/depth_max": np.float64(prof.depth_max_m),
        **_hands(sim, device.rig),
        **_body(sim),
        **_clocks(sim, quirks),
        **_metadata(sim, device, quirks, prof.audio_rate),
        "caption": caption,
    }
    quirks_lib.apply_hand_quirks(quirks, values, sim.hand_visible)
    for name, value in values.items():
      ds = _create(f, name, value, prof.hdf5_compression)
      if name in ("slam/quat_wxyz", "slam/trans_xyz"):
        ds.attrs["convention"] = "world_to_body"
    _check_keys(f, h5_path)


def _record(f: h5py.File, out: pathlib.Path, sim: EpisodeSim, renderer: Renderer,
            quirks: quirks_lib.EpisodeQuirks) -> np.ndarray:
  """Renders the episode chunk by chunk into the MP4s and depth/*; returns the SLAM map
  (P, 3): world points sampled from confident depth, as a visual SLAM map holds points of
  surfaces it has observed."""
  prof, dcam, n = renderer.profile, renderer.depth_camera, sim.num_frames
  aac = encode_aac(audio_lib.episode_audio(sim, prof.audio_rate, _rng(sim, 1)),
                   prof.audio_rate, prof.audio_bitrate)
  n_depth = quirks.frames_in(quirks_lib.DEPTH_STREAM, n)
  shape = (n_depth, dcam.height, dcam.width)
  chunks = (1, dcam.height, dcam.width) if prof.hdf5_compression else None
  depth = f.create_dataset("depth/depth", shape, np.float32, chunks=chunks,
                           compression=prof.hdf5_compression)
  conf = f.create_dataset("depth/confidence", shape, np.uint8, chunks=chunks,
                          compression=prof.hdf5_compression)
  map_rng = _rng(sim, 2)
  T_world_depth = sim.T_world_body @ geometry.se3_inverse(dcam.T_c_b)
  per_chunk = -(-2 * prof.point_cloud_size * prof.chunk_frames // n)
  points = []
  videos = {}
  try:
    for view, cam in zip(xperience.VIEWS, renderer.cams):
      if view != quirks.missing_view:
        videos[view] = _Mp4(out / (view + xperience.VIDEO_SUFFIX), cam.width, cam.height,
                            prof, aac)
    noise_seed = int(_rng(sim, 3).integers(0, 2**32))
    for chunk in renderer.render(sim, noise_seed, skin_seed=hash_seed(sim.session)):
      s, e = chunk.start, chunk.start + len(chunk.depth)
      for view, mp4 in videos.items():
        mp4.add_frames(chunk.views[view][:max(0, quirks.frames_in(view, n) - s)], s)
        mp4.add_audio_until(e / xperience.FPS)
      if s < n_depth:
        depth[s:min(e, n_depth)] = chunk.depth[:n_depth - s]
        conf[s:min(e, n_depth)] = chunk.confidence[:n_depth - s]
      fi, vi, ui = np.nonzero(chunk.confidence >= MAP_POINT_MIN_CONFIDENCE)
      pick = map_rng.permutation(len(fi))[:per_chunk]
      mask = np.zeros(chunk.confidence.shape, bool)
      mask[fi[pick], vi[pick], ui[pick]] = True
      points.append(depth_points_world(chunk.depth_exact, mask, dcam.K, T_world_depth[s:e]))
  except BaseException:
    for mp4 in videos.values():
      mp4.abort()
    raise
  for mp4 in videos.values():
    mp4.close()
  points = np.concatenate(points)
  points = points[map_rng.permutation(len(points))[:prof.point_cloud_size]]
  return points + map_rng.normal(0, MAP_POINT_NOISE_M, points.shape)


def hash_seed(text: str) -> int:
  """A stable 32-bit seed from a string (Python's hash() changes between processes)."""
  return int.from_bytes(uuid.uuid5(uuid.NAMESPACE_OID, text).bytes[:4], "little")
