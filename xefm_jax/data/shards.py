"""The shard schema, shared by the shredder (writes) and the window source (reads).

A shard corpus is a directory:

  SHARDS/
    plan.json            what will be shredded: options, episodes -> shards, vocabularies
    manifest.json        written once every shard is complete (the only file readers trust)
    shard-00000/         one zarr v3 group per shard, one array per stream, episodes
      zarr.json          concatenated along time, chunked along time, blosc-zstd
      index.json         the shard's episodes: offsets, lengths, provenance, statistics
      video/ depth/ ...

Every array is indexed by frame along axis 0, on the video clock after the shredder's frame
stride. `STREAMS` lists the logical streams with their per-frame shapes (sizes come from
`ShredOptions`); `ARRAYS` how they are stored (`pack` and `unpack` convert).
A shard directory exists only when complete (it is written under `.tmp-<name>-<pid>` and
renamed), so a reader never sees half a shard.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any, Callable, Optional

import numpy as np
import tensorstore as ts

from xefm_jax.data import spec
from xefm_jax.data import xperience

SCHEMA_VERSION = 1
PIPELINE_VERSION = "shred-1"
PLAN_FILE, MANIFEST_FILE, INDEX_FILE = "plan.json", "manifest.json", "index.json"
TMP_PREFIX = ".tmp-"


class ShardError(Exception):
  """A shard corpus that cannot be read as expected; the message names what is wrong."""


@dataclasses.dataclass(frozen=True)
class ShredOptions:
  """What the shredder resamples to; stored in the plan and the manifest."""

  video_size: int = 64  # views resized to video_size x video_size (PyAV area resize)
  depth_size: int = 32  # depth and confidence block-averaged to depth_size x depth_size
  frame_stride: int = 1  # keep every frame_stride-th frame
  caption_len: int = 24  # token ids per caption sentence, BOS/EOS included
  chunk_frames: int = 16  # frames per chunk along time
  episodes_per_shard: int = 4
  vocab_size: int = 6000
  clevel: int = 1  # zstd level: 1 compresses video 1.8x at half the CPU of level 3 (2.2x)

  @property
  def fps(self) -> float:
    return xperience.FPS / self.frame_stride

  @property
  def audio_per_frame(self) -> int:
    return int(round(spec.AUDIO_RATE_HZ / self.fps))

  @property
  def imu_per_frame(self) -> int:
    return spec.IMU_PER_FRAME * self.frame_stride


@dataclasses.dataclass(frozen=True)
class Stream:
  name: str  # logical stream name (what readers and the round-trip test see)
  shape: Callable[[ShredOptions, int], tuple[int, ...]]  # (options, num_objects) -> per frame
  dtype: str  # numpy / zarr v3 data type


def _fixed(*shape: int) -> Callable[[ShredOptions, int], tuple[int, ...]]:
  return lambda o, k: shape


# The logical streams, per frame. Readers get exactly these (see `unpack`).
STREAMS: tuple[Stream, ...] = (
    *(Stream(f"video/{v}", lambda o, k: (o.video_size, o.video_size, 3), "uint8")
      for v in xperience.VIEWS),
    Stream("video_valid", _fixed(len(xperience.VIEWS)), "bool"),  # view decoded this frame
    Stream("frame_time_ns", _fixed(), "int64"),
    Stream("audio", lambda o, k: (o.audio_per_frame,), "int16"),  # 16 kHz PCM, x / 32767
    Stream("audio_valid", _fixed(), "bool"),
    Stream("depth", lambda o, k: (o.depth_size, o.depth_size), "float16"),  # metres, 0 unknown
    Stream("depth_confidence", lambda o, k: (o.depth_size, o.depth_size), "uint8"),
    Stream("depth_valid", _fixed(), "bool"),
    Stream("pose", _fixed(4, 4), "float32"),  # T_world_body
    Stream("pose_valid", _fixed(), "bool"),
    Stream("hands", _fixed(2, xperience.NUM_HAND_JOINTS, 3), "float32"),  # stereo-left frame
    Stream("hands_valid", _fixed(2), "bool"),
    Stream("body", _fixed(xperience.NUM_BODY_KEYPOINTS, 3), "float32"),  # world frame
    Stream("body_valid", _fixed(), "bool"),
    Stream("contacts", _fixed(xperience.NUM_CONTACT_JOINTS), "float32"),
    Stream("imu", lambda o, k: (o.imu_per_frame, 6), "float32"),  # accel xyz, gyro xyz
    Stream("imu_valid", _fixed(), "bool"),
    Stream("task", _fixed(), "int32"),  # label ids: -1 where none / unknown
    Stream("subtask", _fixed(), "int32"),
    Stream("action", _fixed(), "int32"),
    Stream("boundary", _fixed(), "bool"),
    Stream("objects", lambda o, k: (k,), "bool"),
    Stream("caption", lambda o, k: (o.caption_len,), "int32"),  # interaction sentence ids
    Stream("caption_valid", _fixed(), "bool"),
)
STREAM_BY_NAME = {s.name: s for s in STREAMS}

# How the logical streams are stored. A TensorStore read costs about 100 us of CPU
# whatever its size, so the six views are one array (chunked per view, so a subset of views
# reads only its chunks), and the one-value-per-frame flags and label ids are packed into
# one array each, named by column. Everything else is stored as it is.
FLAG_COLUMNS: tuple[str, ...] = (
    tuple(f"video_valid/{v}" for v in xperience.VIEWS)
    + ("audio_valid", "depth_valid", "pose_valid", "hands_valid/left", "hands_valid/right",
       "body_valid", "imu_valid", "caption_valid", "boundary"))
LABEL_COLUMNS: tuple[str, ...] = ("task", "subtask", "action")
_PACKED = {c.split("/")[0] for c in FLAG_COLUMNS} | set(LABEL_COLUMNS)
_FLAG_INDEX = {c: i for i, c in enumerate(FLAG_COLUMNS)}
ARRAYS: tuple[Stream, ...] = (
    Stream("video", lambda o, k: (len(xperience.VIEWS), o.video_size, o.video_size, 3),
           "uint8"),
    Stream("flags", _fixed(len(FLAG_COLUMNS)), "bool"),
    Stream("labels", _fixed(len(LABEL_COLUMNS)), "int32"),
    *(s for s in STREAMS if not s.name.startswith("video/") and s.name not in _PACKED),
)


def pack(block: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Logical streams (T, ...) -> stored arrays (T, ...)."""
  out = {a.name: block[a.name] for a in ARRAYS if a.name in block}
  out["video"] = np.stack([block[f"video/{v}"] for v in xperience.VIEWS], axis=1)
  flags = [block["video_valid"][:, i] for i in range(len(xperience.VIEWS))]
  flags += [block[c] for c in ("audio_valid", "depth_valid", "pose_valid")]
  flags += [block["hands_valid"][:, 0], block["hands_valid"][:, 1]]
  flags += [block[c] for c in ("body_valid", "imu_valid", "caption_valid", "boundary")]
  out["flags"] = np.stack(flags, axis=1)
  out["labels"] = np.stack([block[c] for c in LABEL_COLUMNS], axis=1).astype(np.int32)
  return out


def unpack(stored: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Stored arrays -> the logical streams they hold (views where possible; arrays that are
  absent from `stored` are skipped)."""
  out = {k: v for k, v in stored.items() if k not in ("video", "flags", "labels")}
  if "video" in stored:
    for i, v in enumerate(xperience.VIEWS):
      out[f"video/{v}"] = stored["video"][:, i]
  if "flags" in stored:
    f = stored["flags"]
    col = _FLAG_INDEX
    out["video_valid"] = f[:, :len(xperience.VIEWS)]
    out["hands_valid"] = f[:, [col["hands_valid/left"], col["hands_valid/right"]]]
    for c in ("audio_valid", "depth_valid", "pose_valid", "body_valid", "imu_valid",
              "caption_valid", "boundary"):
      out[c] = f[:, col[c]]
  if "labels" in stored:
    for i, c in enumerate(LABEL_COLUMNS):
      out[c] = stored["labels"][:, i]
  return out


def _codecs(dtype: str, clevel: int) -> list[dict]:
  return [{"name": "bytes", "configuration": {"endian": "little"}},
          {"name": "blosc", "configuration": {"cname": "zstd", "clevel": clevel,
                                              "shuffle": "shuffle",
                                              "typesize": np.dtype(dtype).itemsize}}]


def array_spec(path: pathlib.Path, array: Stream, frames: int, options: ShredOptions,
               num_objects: int) -> dict[str, Any]:
  """TensorStore spec creating one stored array of `frames` rows."""
  per_frame = array.shape(options, num_objects)
  chunk = [options.chunk_frames, *per_frame]
  if array.name == "video":
    chunk[1] = 1  # one view per chunk
  return {
      "driver": "zarr3",
      "kvstore": {"driver": "file", "path": str(path / array.name)},
      "metadata": {
          "shape": [frames, *per_frame], "data_type": array.dtype,
          "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": chunk}},
          "codecs": _codecs(array.dtype, options.clevel),
          "fill_value": False if array.dtype == "bool" else 0,
      },
      "create": True, "delete_existing": True,
  }


def open_array(shard_dir: pathlib.Path, name: str,
               context: Optional[ts.Context] = None) -> ts.TensorStore:
  """Open one stored array of a complete shard for reading; a clear error if it is absent."""
  path = shard_dir / name
  if not (path / "zarr.json").is_file():
    raise ShardError(f"{shard_dir}: array '{name}' is missing ({path}/zarr.json not found); "
                     "the shard is incomplete or of another schema")
  try:
    return ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path)}},
                   open=True, read=True, context=context).result()
  except ValueError as e:
    raise ShardError(f"{path}: cannot open as a zarr v3 array ({e})") from None


def read_json(path: pathlib.Path, what: str) -> dict:
  if not path.is_file():
    raise ShardError(f"{path}: {what} is missing")
  try:
    return json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise ShardError(f"{path}: {what} is not JSON ({e})") from None


def dir_bytes(path: pathlib.Path) -> int:
  """Bytes of every file under `path`."""
  return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def write_json_atomic(path: pathlib.Path, obj: Any) -> None:
  """Write beside `path` under a temporary name, then rename over it."""
  tmp = path.with_name(f"{TMP_PREFIX}{path.name}-{os.getpid()}")
  tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
  os.replace(tmp, path)


def check_schema(doc: dict, path: pathlib.Path) -> None:
  version = doc.get("schema_version")
  if version != SCHEMA_VERSION:
    newer = isinstance(version, int) and version > SCHEMA_VERSION
    raise ShardError(
        f"{path}: shard schema version {version!r}, this code reads version {SCHEMA_VERSION}"
        + (" (the corpus is newer than this code: update xefm_jax)" if newer else
           " (re-shred the corpus with data_pipelines/shred.py)"))


def load_manifest(root: str | os.PathLike) -> dict:
  """The manifest of a complete corpus, after checking its schema and every shard's index."""
  root = pathlib.Path(root)
  manifest = read_json(root / MANIFEST_FILE, "the corpus manifest (run data_pipelines/shred.py)")
  check_schema(manifest, root / MANIFEST_FILE)
  for shard in manifest["shards"]:
    shard_dir = root / shard["name"]
    if not shard_dir.is_dir():
      raise ShardError(f"{root / MANIFEST_FILE}: names shard '{shard['name']}', but "
                       f"{shard_dir} does not exist")
    index = read_json(shard_dir / INDEX_FILE, f"the index of shard '{shard['name']}' "
                      "(an incomplete shard)")
    check_schema(index, shard_dir / INDEX_FILE)
    if index.get("frames") != shard["frames"]:
      raise ShardError(f"{shard_dir / INDEX_FILE}: {index.get('frames')} frames, the manifest "
                       f"says {shard['frames']}: the shard does not belong to this manifest")
  return manifest
