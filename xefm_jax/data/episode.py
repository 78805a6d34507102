"""Reading one raw Xperience episode: annotation.hdf5, six MP4s and the caption JSON.

`Episode(path)` opens `<session>/ep<k>/` (or its annotation.hdf5) and reads metadata only:
the HDF5 key inventory with shapes and dtypes (h5py, read-only) and each MP4's header
(PyAV, no decoding). Arrays, frames and samples are read on demand by the methods below, so
opening an episode of 2 GiB costs milliseconds and the Stage-0 gate can inspect thousands.

Frames: every per-frame stream (an HDF5 group with per-frame keys, or an MP4) has its own
row count, and real files differ by a few frames. `num_frames` is the count every usable
stream covers (the minimum); per-frame methods take frame ranges within [0, num_frames).
A view is usable when its MP4 exists, its header reads, and it is at most `frame_slack`
frames shorter than the annotation: a view cut much shorter is reported in `view_problems`
and treated as missing (a mask downstream) rather than shortening every other stream.

Errors: anything wrong with the data raises EpisodeError naming the file, the key and what
was expected (media and caption errors are re-raised as EpisodeError). Quirks of real files
are not errors: NaN or all-zero tracking rows become invalid rows, timestamps may be
strings, a view may be missing or short. Key names, shapes and conventions come from
xperience.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any, NamedTuple, Optional, Union

import h5py
import numpy as np

from xefm_jax import errors
from xefm_jax.data import caption as caption_lib
from xefm_jax.data import geometry
from xefm_jax.data import media
from xefm_jax.data import xperience

DEFAULT_FRAME_SLACK = 10  # frames a view may lack against the annotation and still count
_UNIT_QUAT_TOL = 1e-3
_CONVENTIONS = ("world_to_body", "body_to_world")


class EpisodeError(errors.Error):
  """Bad episode data; the message names the file, the key and what was expected."""


class Pose(NamedTuple):
  T_world_body: np.ndarray  # (T, 4, 4) float64; identity where invalid
  valid: np.ndarray  # (T,) bool: finite unit quaternion and finite translation


class Hands(NamedTuple):
  joints: np.ndarray  # (T, 2, 21, 3) float32, [left, right], cam01 frame, m; 0 where invalid
  valid: np.ndarray  # (T, 2) bool


class Body(NamedTuple):
  keypoints: np.ndarray  # (T, 52, 3) float32, SMPL-H joints, world frame; 0 where invalid
  valid: np.ndarray  # (T,) bool
  contacts: np.ndarray  # (T, 21) float32 in [0, 1]; 0 where the body is invalid


class Depth(NamedTuple):
  depth: np.ndarray  # (T, H, W) float32 metres; 0 where unknown (NaN, inf, negative)
  confidence: np.ndarray  # (T, H, W) uint8; 0 where the depth is unknown


class Imu(NamedTuple):
  timestamps_ns: np.ndarray  # (M,) int64 device time
  accel: np.ndarray  # (M, 3) float64 m/s^2, body frame, gravity included
  gyro: np.ndarray  # (M, 3) float64 rad/s, body frame
  keyframe_indices: np.ndarray  # (num_frames,) int64, IMU sample of each frame


@dataclasses.dataclass(frozen=True, eq=False)
class FisheyeCamera:
  K: np.ndarray  # (4,) fx, fy, cx, cy in pixels
  D: np.ndarray  # (4,) Kannala-Brandt k1..k4
  T_cam_body: np.ndarray  # (4, 4) camera from body, resolved through the chain
  width: Optional[int]  # from calibration/camN/width when present
  height: Optional[int]


@dataclasses.dataclass(frozen=True, eq=False)
class StereoCamera:
  """The rectified pair: pinhole, left camera at T_cam_body, right one baseline along +x."""

  K: np.ndarray  # (4,)
  T_cam_body: np.ndarray  # (4, 4) rectified left camera from body
  baseline: float  # metres
  width: Optional[int]
  height: Optional[int]

  @property
  def T_right_body(self) -> np.ndarray:
    # The right camera sits at +baseline along the left camera's x axis.
    return geometry.make_se3(np.eye(3), np.array([-self.baseline, 0.0, 0.0])) @ self.T_cam_body


@dataclasses.dataclass(frozen=True, eq=False)
class DepthCamera:
  """The depth map's pinhole camera: the rectified left camera at `scale` resolution."""

  K: np.ndarray  # (4,) cam01 K * scale
  T_cam_body: np.ndarray  # (4, 4), the rectified left camera's
  scale: float
  width: int  # W of depth/depth
  height: int  # H of depth/depth


@dataclasses.dataclass(frozen=True, eq=False)
class Calibration:
  fisheye: dict[str, FisheyeCamera]  # by view name, xperience.FISHEYE_VIEWS order
  stereo: StereoCamera
  depth: DepthCamera


def _kind_ok(spec: xperience.Key, dtype: np.dtype) -> bool:
  # Integers stored where floats are specified read losslessly enough; accept them.
  return dtype.kind in spec.kind or (spec.kind == "f" and dtype.kind in "iu")


def _text(value: Any) -> str:
  """An HDF5 string scalar (bytes, str, numpy or 0-d array) as str."""
  if isinstance(value, np.ndarray):
    value = value.item() if value.size == 1 else value
  if isinstance(value, (bytes, np.bytes_)):
    return bytes(value).decode("utf-8", errors="replace").rstrip("\x00")
  return str(value)


class Episode:
  """One raw episode directory, opened lazily. Use as a context manager or close().

  Attributes (all from headers, set on opening):
    path: the episode directory; session, name: "<session>" and "<session>/ep<k>".
    keys: HDF5 dataset name -> (shape, dtype).
    frame_counts: per-frame stream -> rows: HDF5 groups with per-frame keys ("slam",
      "depth", "hand_mocap", "full_body_mocap", "imu" (keyframe_indices), "video") and
      every view whose MP4 header reads (from the container, no decoding).
    num_frames, duration_s: frames every usable stream covers, and their duration.
    views: usable views, in xperience.VIEWS order.
    view_problems: view -> why it is not usable (missing, unreadable, short).
    video_info: view -> media.MediaInfo of each MP4 whose header reads.
  """

  def __init__(self, path: Union[str, os.PathLike], *,
               frame_slack: int = DEFAULT_FRAME_SLACK):
    path = pathlib.Path(path)
    if path.name == xperience.ANNOTATION_FILE:
      path = path.parent
    self.path = path
    self.session = path.parent.name
    self.name = f"{self.session}/{path.name}"
    self.annotation_path = path / xperience.ANNOTATION_FILE
    self._file = None
    if not self.annotation_path.is_file():
      raise EpisodeError(f"{self.annotation_path}: file is missing (expected the episode's "
                         "annotation.hdf5)")
    try:
      # locking=False: read-only, and HDF5 locks fail on some cluster file systems.
      self._file = h5py.File(self.annotation_path, "r", locking=False)
    except OSError as e:
      raise EpisodeError(f"{self.annotation_path}: cannot open as HDF5 ({e})") from e
    try:
      self._inventory(frame_slack)
    except BaseException:
      self.close()
      raise

  def _inventory(self, frame_slack: int) -> None:
    """Key shapes, per-stream frame counts and usable views, from headers only."""
    path = self.path
    self.keys: dict[str, tuple[tuple[int, ...], np.dtype]] = {}

    def visit(name, obj):
      if isinstance(obj, h5py.Dataset):  # shape and dtype come from the header only
        self.keys[name] = (tuple(obj.shape), obj.dtype)

    self._file.visititems(visit)

    # Rows of each per-frame HDF5 stream: the group's per-frame keys, shortest one.
    self.frame_counts: dict[str, int] = {}
    for key in xperience.KEYS:
      if key.per_frame and key.name in self.keys and self.keys[key.name][0]:
        group = key.name.split("/")[0]
        rows = self.keys[key.name][0][0]
        self.frame_counts[group] = min(rows, self.frame_counts.get(group, rows))
    annotation_frames = min(self.frame_counts.values(), default=None)

    self.video_info: dict[str, media.MediaInfo] = {}
    self.view_problems: dict[str, str] = {}
    for view in xperience.VIEWS:
      file = path / (view + xperience.VIDEO_SUFFIX)
      if not file.is_file():
        self.view_problems[view] = f"{file}: file is missing"
        continue
      try:
        info = media.probe(file)
      except media.MediaError as e:
        self.view_problems[view] = str(e)
        continue
      self.video_info[view] = info
      self.frame_counts[view] = info.num_frames
      if annotation_frames is not None and info.num_frames < annotation_frames - frame_slack:
        self.view_problems[view] = (
            f"{file}: short video stream, {info.num_frames} frames against "
            f"{annotation_frames} in annotation.hdf5 (more than {frame_slack} frames short)")
    self.views: tuple[str, ...] = tuple(
        v for v in xperience.VIEWS if v in self.video_info and v not in self.view_problems)
    counts = [c for s, c in self.frame_counts.items() if s not in xperience.VIEWS]
    counts += [self.frame_counts[v] for v in self.views]
    self.num_frames: int = min(counts, default=0)
    self.duration_s: float = self.num_frames / xperience.FPS

  # ------------------------------------------------------------------ lifecycle

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None

  def __enter__(self) -> Episode:
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def __repr__(self) -> str:
    return (f"Episode({self.name!r}, num_frames={self.num_frames}, views={len(self.views)}, "
            f"keys={len(self.keys)})")

  # ------------------------------------------------------------------ raw access

  def _error(self, key: str, expected: str) -> EpisodeError:
    return EpisodeError(f"{self.annotation_path}: key '{key}': {expected}")

  def _dataset(self, key: str) -> h5py.Dataset:
    if self._file is None:
      raise EpisodeError(f"{self.annotation_path}: the episode is closed")
    if key not in self.keys:
      spec = xperience.KEY_BY_NAME.get(key)
      want = f"expected {xperience.describe_shape(spec)} {spec.doc}".strip() if spec else ""
      raise self._error(key, f"missing from the file ({want or 'not an Xperience key'})")
    return self._file[key]

  def _load(self, key: str, ds: h5py.Dataset, sel) -> np.ndarray:
    try:
      return ds[sel]
    except (OSError, RuntimeError, ValueError) as e:
      raise self._error(key, f"cannot be read ({e}); the file is corrupt") from e

  def read(self, key: str, start: Optional[int] = None, stop: Optional[int] = None):
    """Rows [start, stop) of a dataset as stored (a scalar dataset takes no range)."""
    ds = self._dataset(key)
    if ds.shape == ():
      if start is not None or stop is not None:
        raise self._error(key, "is a scalar, a row range was requested")
      return self._load(key, ds, ())
    rows = ds.shape[0]
    start = 0 if start is None else int(start)
    stop = rows if stop is None else int(stop)
    if not 0 <= start <= stop <= rows:
      raise self._error(key, f"has {rows} rows, rows [{start}, {stop}) were requested")
    return self._load(key, ds, np.s_[start:stop])

  def _checked(self, key: str) -> h5py.Dataset:
    """The dataset, after checking its shape and dtype against xperience.KEYS."""
    ds = self._dataset(key)
    spec = xperience.KEY_BY_NAME[key]
    if not xperience.shape_matches(spec, ds.shape) or not _kind_ok(spec, ds.dtype):
      raise self._error(key, f"has shape {ds.shape} and dtype {ds.dtype}, expected "
                        f"{xperience.describe_shape(spec)} of kind '{spec.kind}'")
    return ds

  def _frames(self, start: Optional[int], stop: Optional[int]) -> tuple[int, int]:
    start = 0 if start is None else int(start)
    stop = self.num_frames if stop is None else int(stop)
    if not 0 <= start <= stop <= self.num_frames:
      raise ValueError(f"{self.name}: frames [{start}, {stop}) requested, the episode has "
                       f"{self.num_frames}")
    return start, stop

  def _per_frame(self, key: str, start: int, stop: int, dtype=None) -> np.ndarray:
    self._checked(key)
    x = self.read(key, start, stop)
    return x if dtype is None else x.astype(dtype, copy=False)

  def _scalar(self, key: str) -> float:
    self._checked(key)
    value = np.asarray(self.read(key), np.float64)
    if value.size != 1 or not np.isfinite(value).all():
      raise self._error(key, f"is {value!r}, expected a finite number")
    return float(value.item())

  def _vector(self, key: str) -> np.ndarray:
    self._checked(key)
    x = np.asarray(self.read(key), np.float64)
    if not np.isfinite(x).all():
      raise self._error(key, f"holds non-finite values {x.tolist()}, expected finite numbers")
    return x

  def _image_size(self, camera: str, resolution_key: str) -> tuple[Optional[int], Optional[int]]:
    """(width, height) of a camera when the file states it, else (None, None): numeric
    `calibration/<camera>/width|height` (older generated files) or a "WxH" string under
    `calibration/<resolution_key>`. Real files hold no numeric sizes (the decoded video
    tells them), so nothing may depend on this."""
    w_key, h_key = f"calibration/{camera}/width", f"calibration/{camera}/height"
    if w_key in self.keys and h_key in self.keys:
      return tuple(int(np.asarray(self.read(k)).item()) for k in (w_key, h_key))
    key = f"calibration/{resolution_key}"
    if key not in self.keys:
      return None, None
    text = self.read(key)
    text = text.decode() if isinstance(text, bytes) else str(text)
    try:
      w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
      raise self._error(key, f'is {text!r}, expected "<width>x<height>"') from None
    return w, h

  def key_problems(self) -> list[str]:
    """Required keys missing and keys whose shape or dtype disagree with xperience.KEYS."""
    problems, dims = [], {}
    for spec in xperience.KEYS:
      if spec.name not in self.keys:
        if spec.required:
          problems.append(f"{self.annotation_path}: key '{spec.name}' is missing")
        continue
      shape, dtype = self.keys[spec.name]
      if not xperience.shape_matches(spec, shape, dims) or not _kind_ok(spec, dtype):
        problems.append(f"{self.annotation_path}: key '{spec.name}' has shape {shape} and "
                        f"dtype {dtype}, expected {xperience.describe_shape(spec)} of kind "
                        f"'{spec.kind}'")
    return problems

  # ------------------------------------------------------------------ time

  def _times(self, key: str) -> np.ndarray:
    """(R,) int64 device times of a key stored as ints, floats or strings ("<ns>[.jpg]")."""
    raw = np.asarray(self.read(key))
    if raw.ndim != 1:
      raise self._error(key, f"has shape {raw.shape}, expected (rows,) device times")
    if raw.dtype.kind in "iu":
      return raw.astype(np.int64)
    if raw.dtype.kind == "f":
      if not np.isfinite(raw).all():
        raise self._error(key, "holds non-finite values, expected device times in ns")
      return np.round(raw).astype(np.int64)
    out = np.empty(len(raw), np.int64)
    for i, value in enumerate(raw):
      text = _text(value).strip()
      stem = text.rsplit(".", 1)[0] if text.lower().endswith((".jpg", ".png")) else text
      try:
        out[i] = int(stem)
      except ValueError:
        raise self._error(key, f"row {i} is {text!r}, expected a device time in ns "
                          "(an integer, or '<ns>.jpg')") from None
    return out

  def _all_timestamps(self) -> np.ndarray:
    """(R,) int64 device time of every row of the timestamp stream (R >= num_frames)."""
    reasons = []
    for key in ("video/device_timestamp", "slam/frame_names"):
      if key not in self.keys:
        reasons.append(f"'{key}' is missing")
        continue
      try:
        return self._times(key)
      except EpisodeError as e:
        reasons.append(str(e))
    raise EpisodeError(f"{self.annotation_path}: no frame timestamps: " + "; ".join(reasons))

  def timestamps_ns(self) -> np.ndarray:
    """(num_frames,) int64 device time of each frame.

    From video/device_timestamp (ints or strings), else the stems of slam/frame_names.
    """
    times = self._all_timestamps()
    if len(times) < self.num_frames:
      raise EpisodeError(f"{self.annotation_path}: {len(times)} timestamps, expected at "
                         f"least {self.num_frames}")
    return times[:self.num_frames]

  # ------------------------------------------------------------------ geometry

  def _convention(self) -> str:
    for key in ("slam/quat_wxyz", "slam/trans_xyz", "slam"):
      if key in self._file and "convention" in self._file[key].attrs:
        value = _text(self._file[key].attrs["convention"]).strip().lower()
        if value not in _CONVENTIONS:
          raise self._error(key, f"attribute convention={value!r}, expected one of "
                            f"{_CONVENTIONS}")
        return value
    return "world_to_body"  # the public default

  def pose(self, start: Optional[int] = None, stop: Optional[int] = None) -> Pose:
    """Device pose per frame, honouring the `convention` attribute (default world-to-body)."""
    start, stop = self._frames(start, stop)
    q = self._per_frame("slam/quat_wxyz", start, stop, np.float64)  # (T, 4) wxyz
    t = self._per_frame("slam/trans_xyz", start, stop, np.float64)  # (T, 3)
    with np.errstate(invalid="ignore", over="ignore"):
      norm = np.linalg.norm(q, axis=-1)
      valid = (np.isfinite(q).all(-1) & np.isfinite(t).all(-1)
               & (np.abs(norm - 1.0) < _UNIT_QUAT_TOL))
    q = np.where(valid[:, None], q, [1.0, 0.0, 0.0, 0.0])
    t = np.where(valid[:, None], t, 0.0)
    T = geometry.make_se3(geometry.quat_to_matrix(q), t)  # (T, 4, 4)
    if self._convention() == "world_to_body":  # stored T_body_world
      T = geometry.se3_inverse(T)
    return Pose(T, valid)

  def calibration(self) -> Calibration:
    """Camera models: four fisheyes (extrinsics chained from cam0), stereo and depth.

    Known release error, not corrected here: some releases swap cam0 and cam2 extrinsics.
    """
    fisheye = {}
    T = self._vector("calibration/cam0/T_c_b")  # (4, 4) cam0 from body
    for i, view in enumerate(xperience.FISHEYE_VIEWS):
      if i:  # camera i from body = (camera i from camera i-1) (camera i-1 from body)
        T = self._vector(f"calibration/cam{i}/T_cn_cnm1") @ T
      width, height = self._image_size(f"cam{i}", "fisheye_resolution")
      fisheye[view] = FisheyeCamera(
          K=self._vector(f"calibration/cam{i}/K"), D=self._vector(f"calibration/cam{i}/D"),
          T_cam_body=T, width=width, height=height)
    K = self._vector("calibration/cam01/K")
    T_left = self._vector("calibration/cam01/T_c0_b")
    width, height = self._image_size("cam01", "stereo_resolution")
    stereo = StereoCamera(K=K, T_cam_body=T_left,
                          baseline=self._scalar("calibration/cam01/baseline"),
                          width=width, height=height)
    scale = self._scalar("depth/scale")
    if scale <= 0:  # Ropedia's loader needs it non-zero too
      raise self._error("depth/scale", f"is {scale}, expected a positive resolution scale")
    _, h, w = self._checked("depth/depth").shape
    depth = DepthCamera(K=K * scale, T_cam_body=T_left, scale=scale, width=w, height=h)
    return Calibration(fisheye=fisheye, stereo=stereo, depth=depth)

  # ------------------------------------------------------------------ per-frame streams

  def hands(self, start: Optional[int] = None, stop: Optional[int] = None) -> Hands:
    """MANO joints of both hands; a row with NaN or all zeros is untracked (zeroed)."""
    start, stop = self._frames(start, stop)
    joints = np.stack([
        self._per_frame(f"hand_mocap/{side}_joints_3d", start, stop, np.float32)
        for side in xperience.HANDS], axis=1)  # (T, 2, 21, 3)
    valid = np.isfinite(joints).all((-1, -2)) & (joints != 0).any((-1, -2))  # (T, 2)
    joints[~valid] = 0.0
    return Hands(joints, valid)

  def body(self, start: Optional[int] = None, stop: Optional[int] = None) -> Body:
    """SMPL-H keypoints and contacts; a row with NaN or all zeros is invalid (zeroed)."""
    start, stop = self._frames(start, stop)
    kp = self._per_frame("full_body_mocap/keypoints", start, stop, np.float32)  # (T, 52, 3)
    valid = np.isfinite(kp).all((-1, -2)) & (kp != 0).any((-1, -2))  # (T,)
    kp[~valid] = 0.0
    contacts = self._per_frame("full_body_mocap/contacts", start, stop, np.float32)  # (T, 21)
    contacts = np.clip(np.nan_to_num(contacts, nan=0.0), 0.0, 1.0)
    contacts[~valid] = 0.0
    return Body(kp, valid, contacts)

  def depth(self, start: Optional[int] = None, stop: Optional[int] = None) -> Depth:
    """Metric depth and its confidence; unknown depth (NaN, inf, < 0) reads 0, confidence 0."""
    start, stop = self._frames(start, stop)
    d = self._per_frame("depth/depth", start, stop, np.float32)  # (T, H, W)
    conf = self._per_frame("depth/confidence", start, stop)  # (T, H, W)
    if conf.shape != d.shape:
      raise self._error("depth/confidence", f"has frames of {conf.shape[1:]}, expected "
                        f"{d.shape[1:]} like depth/depth")
    conf = np.clip(conf, 0, 255).astype(np.uint8, copy=False)
    with np.errstate(invalid="ignore"):
      unknown = ~(np.isfinite(d) & (d >= 0))
    d[unknown] = 0.0
    conf[unknown] = 0
    return Depth(d, conf)

  def imu(self) -> Imu:
    """All IMU samples and the IMU sample index of each frame."""
    for key in ("imu/accel_xyz", "imu/gyro_xyz", "imu/keyframe_indices"):
      self._checked(key)
    ts = self._times("imu/device_timestamp_ns")  # (M,)
    accel = self.read("imu/accel_xyz").astype(np.float64)  # (M, 3)
    gyro = self.read("imu/gyro_xyz").astype(np.float64)  # (M, 3)
    if not len(ts) == len(accel) == len(gyro):
      raise self._error("imu/accel_xyz", f"IMU arrays disagree: {len(ts)} timestamps, "
                        f"{len(accel)} accel and {len(gyro)} gyro rows, expected M of each")
    keyframes = self.read("imu/keyframe_indices", 0, self.num_frames).astype(np.int64)
    return Imu(ts, accel, gyro, keyframes)

  # ------------------------------------------------------------------ media

  def _usable(self, view: str) -> media.MediaInfo:
    if view not in xperience.VIEWS:
      raise ValueError(f"unknown view {view!r}, expected one of {xperience.VIEWS}")
    if view not in self.views:
      raise EpisodeError(f"{self.name}: view '{view}' is not usable: "
                         f"{self.view_problems.get(view, 'unknown reason')}")
    return self.video_info[view]

  def video(self, view: str, size: Optional[media.Size] = None, stride: int = 1,
            start: int = 0, stop: Optional[int] = None) -> np.ndarray:
    """Frames range(start, stop, stride) of one view, (T, h, w, 3) uint8 RGB.

    size: int (square) or (height, width), resized by media.decode_video's documented rule.
    """
    info = self._usable(view)
    start, stop = self._frames(start, stop)
    try:
      return media.decode_video(info.path, size=size, stride=stride, start=start, stop=stop)
    except media.MediaError as e:
      raise EpisodeError(str(e)) from e

  def audio(self, rate: int = 16000) -> np.ndarray:
    """(round(num_frames / 20 * rate),) float32 mono; sample 0 is at frame 0.

    Read from the first usable view (xperience.VIEWS order) that has an audio track.
    """
    for view in self.views:
      if self.video_info[view].has_audio:
        n = int(round(self.num_frames / xperience.FPS * rate))
        try:
          return media.decode_audio(self.video_info[view].path, rate=rate, num_samples=n)
        except media.MediaError as e:
          raise EpisodeError(str(e)) from e
    raise EpisodeError(f"{self.path}: no usable MP4 with an audio track (expected AAC in "
                       f"each of {xperience.VIEWS})")

  # ------------------------------------------------------------------ language, metadata

  def caption(self, *, small_int_base: int = 1,
              slack_frames: int = caption_lib.DEFAULT_SLACK_FRAMES
              ) -> caption_lib.CaptionTimeline:
    """The caption JSON resolved to per-frame labels (caption.py states the rules)."""
    self._checked("caption")
    text = self.read("caption")
    if isinstance(text, np.ndarray):
      text = text.item()
    try:
      times = self._all_timestamps()
    except EpisodeError:
      times = None  # device-time references then fail with a clear CaptionError
    try:
      return caption_lib.parse_caption(
          text, times, source=f"{self.annotation_path}: key 'caption'",
          num_frames=self.num_frames, small_int_base=small_int_base,
          slack_frames=slack_frames)
    except caption_lib.CaptionError as e:
      raise EpisodeError(str(e)) from e

  def metadata(self) -> dict[str, Any]:
    """The `metadata/*` scalars as Python values (strings decoded)."""
    out = {}
    for key in sorted(self.keys):
      if key.startswith("metadata/"):
        value = self.read(key)
        if isinstance(value, np.ndarray) and value.ndim == 0:
          value = value.item()
        if isinstance(value, (bytes, np.bytes_)):
          value = _text(value)
        elif isinstance(value, np.generic):
          value = value.item()
        out[key.split("/", 1)[1]] = value
    return out

  def health_report(self) -> dict[str, Any]:
    """The recorder's health report (`metadata/health_report`, a JSON object)."""
    key = "metadata/health_report"
    text = _text(self.read(key))
    try:
      report = json.loads(text)
    except json.JSONDecodeError as e:
      raise self._error(key, f"is not JSON ({e}), expected a JSON object") from e
    if not isinstance(report, dict):
      raise self._error(key, f"is a JSON {type(report).__name__}, expected an object")
    return report
