"""The head-mounted camera rig: four fisheye cameras and a rectified stereo pair.

A `Rig` holds every camera's intrinsics and its pose relative to the body (device) frame,
and converts to and from the `calibration/...` keys of annotation.hdf5
(xefm_jax/data/xperience.py). Everything here is plain numpy so the reader can rebuild a
rig from a file without the generator.

Frames: body x forward, y left, z up; cameras x right, y down, z forward (optical axis).
`T_c_b` maps body points into the camera frame.

Layout of the synthetic rig (assumed; the public card gives no mounting):
  cam0 front-left, looking down      cam1 front-right, looking down
  cam2 left side                     cam3 right side
  stereo pair in front, looking forward and slightly down, baseline about 0.064 m.
The four fisheye cameras use the equidistant Kannala-Brandt model with a field of view of
about 150 degrees across the image width; the rectified stereo pair shares one pinhole K.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from xefm_jax.data import geometry

FISHEYE_MODEL = "kannala_brandt"
PINHOLE_MODEL = "pinhole"
RIG_NAME = "xperience-synth-rig"  # calibration/rig_name (assumed: real names unpublished)
NUM_FISHEYE = 4

# Rotation body-from-camera of a camera looking straight ahead: its columns are the camera
# axes in body coordinates (camera x right = body -y, y down = body -z, z forward = body x).
R_BODY_FORWARD_CAMERA = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])

# (position in the body frame in metres, yaw left in degrees, pitch down in degrees)
FISHEYE_MOUNTS = (
    ((0.060, 0.050, 0.010), 25.0, 35.0),  # cam0 front-left-down
    ((0.060, -0.050, 0.010), -25.0, 35.0),  # cam1 front-right-down
    ((0.000, 0.090, 0.000), 90.0, 15.0),  # cam2 left
    ((0.000, -0.090, 0.000), -90.0, 15.0),  # cam3 right
)
STEREO_MOUNT = ((0.070, 0.032, 0.020), 0.0, 20.0)  # the left camera of the pair
STEREO_BASELINE_M = 0.064
# Small equidistant distortion: theta_d stays monotonic up to well past 90 degrees.
FISHEYE_D = (0.015, -0.004, 0.0008, -0.0001)


@dataclasses.dataclass(frozen=True)
class FisheyeCamera:
  width: int
  height: int
  K: np.ndarray  # (4,) fx, fy, cx, cy in pixels
  D: np.ndarray  # (4,) k1..k4
  T_c_b: np.ndarray  # (4, 4) camera from body


@dataclasses.dataclass(frozen=True)
class StereoPair:
  width: int
  height: int
  K: np.ndarray  # (4,) shared rectified pinhole fx, fy, cx, cy
  baseline: float  # metres; the right camera sits at +baseline along the left camera's x
  T_c0_b: np.ndarray  # (4, 4) rectified left camera from body

  @property
  def T_c1_b(self) -> np.ndarray:
    """(4, 4) rectified right camera from body."""
    shift = np.eye(4)
    shift[0, 3] = -self.baseline
    return shift @ self.T_c0_b


@dataclasses.dataclass(frozen=True)
class Rig:
  fisheye: tuple[FisheyeCamera, ...]  # cam0..cam3
  stereo: StereoPair


def mount_rotation(yaw_deg: float, pitch_deg: float, roll_deg: float = 0.0) -> np.ndarray:
  """Body-from-camera rotation for a camera turned left by yaw and down by pitch."""
  yaw = geometry.axis_angle_to_matrix(np.array([0.0, 0.0, np.radians(yaw_deg)]))
  pitch = geometry.axis_angle_to_matrix(np.array([0.0, np.radians(pitch_deg), 0.0]))
  roll = geometry.axis_angle_to_matrix(np.array([0.0, 0.0, np.radians(roll_deg)]))
  return yaw @ pitch @ R_BODY_FORWARD_CAMERA @ roll  # roll turns about the optical axis


def _T_c_b(position: np.ndarray, R_b_c: np.ndarray) -> np.ndarray:
  return geometry.se3_inverse(geometry.make_se3(R_b_c, position))


def equidistant_theta_d(theta: float, D: np.ndarray) -> float:
  t2 = theta * theta
  return theta * (1 + t2 * (D[0] + t2 * (D[1] + t2 * (D[2] + t2 * D[3]))))


def make_rig(fisheye_size: int, stereo_size: int, fisheye_fov_deg: float = 150.0,
             stereo_fov_deg: float = 90.0, rng: np.random.Generator | None = None) -> Rig:
  """The synthetic rig; `rng` perturbs it slightly, as two real devices differ.

  Perturbations: focal lengths by about 1 %, principal points by about 1 % of the size,
  mount angles by about 0.5 degrees, mount positions by about 2 mm, baseline by 0.5 mm.
  """
  def jitter(scale: float, shape=()) -> np.ndarray:
    return np.zeros(shape) if rng is None else rng.normal(0.0, scale, shape)

  D = np.asarray(FISHEYE_D, np.float64)
  # The field of view spans the image width: theta = fov/2 lands on the left/right edges.
  f_fish = (fisheye_size / 2) / equidistant_theta_d(np.radians(fisheye_fov_deg) / 2, D)
  fisheye = []
  for position, yaw, pitch in FISHEYE_MOUNTS:
    f = f_fish * (1 + jitter(0.01))
    K = np.array([f * (1 + jitter(0.002)), f, fisheye_size / 2 + jitter(0.01 * fisheye_size),
                  fisheye_size / 2 + jitter(0.01 * fisheye_size)])
    R = mount_rotation(yaw + jitter(0.5), pitch + jitter(0.5), jitter(0.5))
    pos = np.asarray(position) + jitter(0.002, (3,))
    fisheye.append(FisheyeCamera(fisheye_size, fisheye_size, K, D + jitter(1e-4, (4,)),
                                 _T_c_b(pos, R)))
  position, yaw, pitch = STEREO_MOUNT
  f = (stereo_size / 2) / np.tan(np.radians(stereo_fov_deg) / 2) * (1 + jitter(0.01))
  K = np.array([f, f, stereo_size / 2 + jitter(0.005 * stereo_size),
                stereo_size / 2 + jitter(0.005 * stereo_size)])
  R = mount_rotation(yaw + jitter(0.5), pitch + jitter(0.5), jitter(0.3))
  stereo = StereoPair(stereo_size, stereo_size, K, float(STEREO_BASELINE_M + jitter(5e-4)),
                      _T_c_b(np.asarray(position) + jitter(0.002, (3,)), R))
  return Rig(tuple(fisheye), stereo)


def rig_to_calibration(rig: Rig) -> dict[str, Any]:
  """The `calibration/...` datasets of annotation.hdf5, keyed by their full names: the 23
  datasets of a real file (xperience.py `_cam_keys`), 117 numbers once flattened. Image
  sizes are "WxH" strings, not numeric datasets, as in real files."""
  out: dict[str, Any] = {}
  for i, cam in enumerate(rig.fisheye):
    p = f"calibration/cam{i}/"
    out[p + "K"] = np.asarray(cam.K, np.float64)
    out[p + "D"] = np.asarray(cam.D, np.float64)
    out[p + "model"] = FISHEYE_MODEL
    if i == 0:
      out[p + "T_c_b"] = np.asarray(cam.T_c_b, np.float64)
    else:  # chained: camera i from camera i-1
      prev = rig.fisheye[i - 1].T_c_b
      out[p + "T_cn_cnm1"] = cam.T_c_b @ geometry.se3_inverse(prev)
  st = rig.stereo
  out["calibration/cam01/K"] = np.asarray(st.K, np.float64)
  out["calibration/cam01/T_c0_b"] = np.asarray(st.T_c0_b, np.float64)
  out["calibration/cam01/baseline"] = np.float64(st.baseline)
  out["calibration/cam01/model"] = PINHOLE_MODEL
  sizes = {(c.width, c.height) for c in rig.fisheye}
  if len(sizes) != 1:
    raise ValueError(f"rig_to_calibration: fisheye cameras of different sizes {sorted(sizes)}; "
                     "the file states one fisheye resolution")
  out["calibration/fisheye_resolution"] = "%dx%d" % sizes.pop()
  out["calibration/stereo_resolution"] = f"{st.width}x{st.height}"
  out["calibration/rig_name"] = RIG_NAME
  return out


def _get(calib: Mapping[str, Any], name: str, shape: tuple[int, ...], source: str) -> np.ndarray:
  """calib[name] as float64 of `shape`; accepts keys with or without 'calibration/'."""
  short = name.removeprefix("calibration/")
  for key in (name, short):
    if key in calib:
      value = np.asarray(calib[key][()] if hasattr(calib[key], "shape") else calib[key],
                         np.float64)
      if value.shape != shape:
        raise ValueError(f"{source}: key {name!r} has shape {value.shape}, expected {shape}")
      if not np.all(np.isfinite(value)):
        raise ValueError(f"{source}: key {name!r} holds non-finite values")
      return value
  raise KeyError(f"{source}: missing key {name!r} (expected shape {shape})")


def _size(calib: Mapping[str, Any], prefix: str, resolution_key: str, default: int | None,
          source: str) -> tuple[int, int]:
  """(width, height) of a camera: numeric width/height datasets (older generated files),
  else the "WxH" resolution string, else `default` (real files: the decoded video)."""
  def lookup(name):
    for key in (name, name.removeprefix("calibration/")):
      if key in calib:
        return calib[key]
    return None

  if lookup(f"calibration/{prefix}/width") is not None:
    return tuple(int(_get(calib, f"calibration/{prefix}/{dim}", (), source))
                 for dim in ("width", "height"))
  name = f"calibration/{resolution_key}"
  value = lookup(name)
  if value is not None:
    text = value[()] if hasattr(value, "shape") else value
    text = text.decode() if isinstance(text, bytes) else str(text)
    try:
      w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
      raise ValueError(f"{source}: key {name!r} is {text!r}, expected \"<width>x<height>\"") \
          from None
    return w, h
  if default is None:
    raise KeyError(f"{source}: missing key {name!r} and no image size given")
  return default, default


def rig_from_calibration(calib: Mapping[str, Any], source: str = "calibration",
                         fisheye_size: int | None = None, stereo_size: int | None = None) -> Rig:
  """Inverse of `rig_to_calibration`; `calib` maps key names to arrays (an h5py File works).

  Image sizes come from the optional resolution strings, else from `fisheye_size` /
  `stereo_size` (real files may lack them: the decoded video then tells the size).
  """
  fisheye = []
  T_prev = None
  for i in range(NUM_FISHEYE):
    p = f"calibration/cam{i}/"
    if i == 0:
      T = _get(calib, p + "T_c_b", (4, 4), source)
    else:
      T = _get(calib, p + "T_cn_cnm1", (4, 4), source) @ T_prev
    w, h = _size(calib, f"cam{i}", "fisheye_resolution", fisheye_size, source)
    fisheye.append(FisheyeCamera(w, h, _get(calib, p + "K", (4,), source),
                                 _get(calib, p + "D", (4,), source), T))
    T_prev = T
  w, h = _size(calib, "cam01", "stereo_resolution", stereo_size, source)
  baseline = float(_get(calib, "calibration/cam01/baseline", (), source))
  if baseline <= 0:
    raise ValueError(f"{source}: key 'calibration/cam01/baseline' is {baseline}, "
                     "expected a positive distance in metres")
  stereo = StereoPair(w, h, _get(calib, "calibration/cam01/K", (4,), source), baseline,
                      _get(calib, "calibration/cam01/T_c0_b", (4, 4), source))
  return Rig(tuple(fisheye), stereo)


def depth_intrinsics(rig: Rig, scale: float) -> np.ndarray:
  """(4,) pinhole K of the depth map: the stereo K scaled (xperience.py: depth/scale)."""
  return np.asarray(rig.stereo.K, np.float64) * scale
