"""The Xperience-10M episode format: file names, HDF5 keys, shapes and dtypes.

This module is the single statement of the raw episode layout (see
shared/XPERIENCE_FORMAT.md). The reader (`episode.py`), the synthetic generator
(`data_pipelines/synth/`) and the Stage-0 gate (`data_pipelines/validate.py`) all take
key names, shapes and dtypes from here, so the three cannot drift apart.

Shape symbols:
  N  frames of the episode (every per-frame array has N rows; a few frames of slack
     between streams are a known quirk of real files)
  M  IMU samples (about 10 N at 200 Hz)
  P  SLAM map points
  H, W  depth map height and width
Dtype kinds follow numpy: "f" float, "i" signed int, "u" unsigned int, "S" fixed-length
bytes, "O" variable-length string, "b" bool.

Facts of real files that the generator copies (public probes of real annotation.hdf5 files):
  * episodes are folders `ep1`, `ep2`, ... inside a session folder (numbered from 1);
  * `calibration/` holds 23 datasets whose numeric values flatten to 117 numbers (no
    numeric image sizes);
  * `slam/point_cloud` is float64.

Conventions the public card leaves open and this project fixes (a reader must not rely on
them beyond what is written here; the generator writes them explicitly):
  * `slam/quat_wxyz`, `slam/trans_xyz` are world-to-body: p_body = R(q) p_world + t.
    The dataset attribute `convention` says so ("world_to_body" or "body_to_world");
    a file without it is read as world-to-body, the public default.
  * `depth/scale` is the resolution scale of the depth map against the rectified stereo
    pair (0.5 in real files): the depth intrinsics are `calibration/cam01/K * scale`.
  * Depth is metric (metres), float; confidence is uint8 0-255.
  * IMU accelerometer is specific force in the device (body) frame in m/s^2, gravity
    included (a device at rest reads +9.81 along the body axis pointing up); gyroscope is
    angular rate in the body frame in rad/s.
  * Hand joints (`hand_mocap/*`) are in the rectified stereo-left camera frame (cam01, the
    frame of the depth map) in metres, MANO joint order (wrist first). An untracked hand
    is stored as zeros in every `hand_mocap/<side>_*` field of that frame (real files:
    Ropedia's visualiser tests for all zeros); NaN rows occur too. Readers take a joints
    row that is all zeros or holds a NaN as untracked, and nothing learns from it.
  * Camera frames are x right, y down, z forward; the body (device) frame is x forward,
    y left, z up; the world frame is z up.
"""

from __future__ import annotations

import dataclasses
from typing import Union

FPS = 20.0  # video, depth, pose and mocap clock (public)
IMU_RATE_HZ = 200.0  # approximately (public: 7.2B IMU samples over 720M depth frames)
TIMESTAMP_MIN_NS = 10**8  # frame references at or above this are device times (public)

FISHEYE_VIEWS = ("fisheye_cam0", "fisheye_cam1", "fisheye_cam2", "fisheye_cam3")
STEREO_VIEWS = ("stereo_left", "stereo_right")
VIEWS = FISHEYE_VIEWS + STEREO_VIEWS  # the six MP4 files, in this order everywhere
VIDEO_SUFFIX = ".mp4"
ANNOTATION_FILE = "annotation.hdf5"
EPISODE_DIR_PREFIX = "ep"  # <session_uuid>/ep<k>/, k from 1 in every public episode name
FIRST_EPISODE_NUMBER = 1
OPTIONAL_FILES = ("visualization.rrd",)  # ignored by every reader

NUM_HAND_JOINTS = 21  # MANO order: wrist, then thumb, index, middle, ring, pinky (4 each)
NUM_BODY_KEYPOINTS = 52  # SMPL-H: 22 body joints + 2 x 15 hand joints
NUM_CONTACT_JOINTS = 21  # SMPL body joints without the pelvis
FOOT_CONTACT_JOINTS = (6, 7, 9, 10)  # left/right ankle, left/right foot (public)
HAND_CONTACT_JOINTS = (19, 20)  # left/right wrist in the 21-joint contact order
HANDS = ("left", "right")

Dim = Union[int, str]


@dataclasses.dataclass(frozen=True)
class Key:
  """One HDF5 dataset of annotation.hdf5."""

  name: str
  shape: tuple[Dim, ...]  # () for a scalar
  kind: str  # allowed numpy dtype kinds, e.g. "f", "iu", "S", "O"
  required: bool = True
  doc: str = ""

  @property
  def per_frame(self) -> bool:
    return bool(self.shape) and self.shape[0] == "N"


def _cam_keys() -> list[Key]:
  """The 23 calibration datasets of a real file: 14 arrays, the stereo baseline and 8
  non-numeric scalars. Their numeric values flatten to 117 numbers (public probes); image
  sizes are not numeric datasets, so a reader takes them from the decoded video. The names
  of the non-numeric scalars are not published: ours are the camera model names (5) and,
  as "WxH" strings, the two image sizes plus the rig's name (*assumed*, optional)."""
  keys = []
  for i in range(4):
    keys += [
        Key(f"calibration/cam{i}/K", (4,), "f", doc="fisheye fx, fy, cx, cy (pixels)"),
        Key(f"calibration/cam{i}/D", (4,), "f", doc="equidistant (Kannala-Brandt) k1..k4"),
        Key(f"calibration/cam{i}/model", (), "OS", required=False, doc='"kannala_brandt"'),
    ]
  keys.append(Key("calibration/cam0/T_c_b", (4, 4), "f", doc="camera 0 from body"))
  for i in (1, 2, 3):
    keys.append(Key(f"calibration/cam{i}/T_cn_cnm1", (4, 4), "f",
                    doc=f"camera {i} from camera {i - 1}"))
  keys += [
      Key("calibration/cam01/K", (4,), "f", doc="rectified stereo fx, fy, cx, cy"),
      Key("calibration/cam01/T_c0_b", (4, 4), "f", doc="rectified left camera from body"),
      Key("calibration/cam01/baseline", (), "f", doc="stereo baseline, metres"),
      Key("calibration/cam01/model", (), "OS", required=False, doc='"pinhole"'),
      Key("calibration/fisheye_resolution", (), "OS", required=False, doc='"WxH" string'),
      Key("calibration/stereo_resolution", (), "OS", required=False, doc='"WxH" string'),
      Key("calibration/rig_name", (), "OS", required=False, doc="calibrated rig"),
  ]
  return keys


CALIBRATION_DATASETS = 23  # public: datasets under calibration/ in a real file
CALIBRATION_NUMBERS = 117  # public: their numeric values, flattened


def episode_dir_name(number: int) -> str:
  """The folder of the episode numbered `number` (from FIRST_EPISODE_NUMBER) in a session."""
  if number < FIRST_EPISODE_NUMBER:
    raise ValueError(f"episode number {number}: real sessions number episodes from "
                     f"{EPISODE_DIR_PREFIX}{FIRST_EPISODE_NUMBER}")
  return f"{EPISODE_DIR_PREFIX}{number}"


def _hand_keys() -> list[Key]:
  keys = []
  for side in HANDS:
    p = f"hand_mocap/{side}_"
    keys += [
        Key(p + "joints_3d", ("N", NUM_HAND_JOINTS, 3), "f",
            doc="MANO joints, camera frame, m; an untracked hand is all zeros "
            "(real files), NaN in some: both read as untracked"),
        Key(p + "translation", ("N", 3), "f"),
        Key(p + "mano_hand_pose", ("N", 15, 3, 3), "f", doc="rotation matrices"),
        Key(p + "mano_hand_global_orient", ("N", 9), "f"),
        Key(p + "mano_hand_betas", ("N", 10), "f"),
    ]
  return keys


KEYS: tuple[Key, ...] = tuple(
    _cam_keys()
    + [
        Key("slam/quat_wxyz", ("N", 4), "f", doc="orientation, w first, world-to-body"),
        Key("slam/trans_xyz", ("N", 3), "f"),
        Key("slam/frame_names", ("N",), "SO", doc='b"<device time ns>.jpg"'),
        Key("slam/point_cloud", ("P", 3), "f", required=False, doc="float64 in real files"),
        Key("depth/depth", ("N", "H", "W"), "f", doc="metric depth, m"),
        Key("depth/confidence", ("N", "H", "W"), "u", doc="0-255"),
        Key("depth/scale", (), "f", doc="depth resolution / stereo resolution"),
        Key("depth/depth_min", (), "f"),
        Key("depth/depth_max", (), "f"),
    ]
    + _hand_keys()
    + [
        Key("full_body_mocap/keypoints", ("N", NUM_BODY_KEYPOINTS, 3), "f",
            doc="SMPL-H joints, world frame, z up"),
        Key("full_body_mocap/contacts", ("N", NUM_CONTACT_JOINTS), "f", doc="in [0, 1]"),
        Key("full_body_mocap/Ts_world_root", ("N", 7), "f", doc="qw qx qy qz x y z"),
        Key("full_body_mocap/Ts_world_cpf", ("N", 7), "f", doc="central pupil frame"),
        Key("full_body_mocap/body_quats", ("N", 21, 4), "f", doc="local rotations, wxyz"),
        Key("full_body_mocap/left_hand_quats", ("N", 15, 4), "f"),
        Key("full_body_mocap/right_hand_quats", ("N", 15, 4), "f"),
        Key("full_body_mocap/betas", ("N", 16), "f"),
        Key("full_body_mocap/frame_nums", ("N",), "iu"),
        Key("imu/device_timestamp_ns", ("M",), "iuSO"),
        Key("imu/accel_xyz", ("M", 3), "f", doc="specific force, body frame, m/s^2"),
        Key("imu/gyro_xyz", ("M", 3), "f", doc="angular rate, body frame, rad/s"),
        Key("imu/keyframe_indices", ("N",), "iu", doc="IMU sample index of each frame"),
        Key("video/device_timestamp", ("N",), "iuSO", doc="ns; strings in some files"),
        Key("video/frame_number", ("N",), "iu"),
        Key("video/length_sec", (), "f"),
        Key("metadata/body_height", (), "f"),
        Key("metadata/device_id", (), "OSiu"),
        Key("metadata/device_version", (), "OSiu"),
        Key("metadata/time_created", (), "OSiuf"),
        Key("metadata/health_report", (), "OS", doc="JSON string"),
        Key("metadata/recording_id", (), "OSiu", required=False),
        Key("caption", (), "OS", doc="JSON document, see caption.py"),
    ]
)

KEY_BY_NAME = {k.name: k for k in KEYS}
REQUIRED_KEYS = tuple(k.name for k in KEYS if k.required)


def shape_matches(key: Key, shape: tuple[int, ...], dims: dict[str, int] | None = None) -> bool:
  """Whether `shape` fits the key's pattern; symbolic dims bind on first sight in `dims`."""
  if len(shape) != len(key.shape):
    return False
  dims = {} if dims is None else dims
  for want, got in zip(key.shape, shape):
    if isinstance(want, int):
      if want != got:
        return False
    elif want in dims and want != "N":  # N may differ by a few frames between streams
      if dims[want] != got:
        return False
    else:
      dims.setdefault(want, got)
  return True


def describe_shape(key: Key) -> str:
  return "(" + ", ".join(str(d) for d in key.shape) + ")" if key.shape else "scalar"
