"""The shard schema, shared by the shredder (writes) and the window source (reads).

A shard corpus is a directory:

  SHARDS/
    plan.json            what will be shredded: options, episodes -> shards, vocabularies
    manifest.json        written once every shard is complete (the only file readers trust)
    shard-00000/         one zarr v3 group per shard, one array per stream, episodes
      zarr.json          concatenated along time, chunked along time, blosc-zstd
      index.json         the shard's episodes: offsets, lengths, provenance, statistics,
                         and the integrity record: every array's chunk grid and the bytes
                         of each chunk file as written
      video/ depth/ ...  <array>/zarr.json and <array>/c/<i>/<j>/... (one file per chunk)

Every array is indexed by frame along axis 0, on the video clock after the shredder's frame
stride. The stream definitions (xefm_jax/data/streams/) give the logical streams with their
per-frame shapes (sizes come from `ShredOptions`); `Layout` how they are stored (`pack` and
`unpack` convert).
A shard directory exists only when complete (it is written under `.tmp-<name>-<pid>` and
renamed), so a reader never sees half a shard.

Integrity: a zarr array reads a missing chunk file as its fill value, so a shard damaged
after it was written (an interrupted rsync, a half-synced bucket) would read zeros with their
valid flags still set. `check_shard` compares a shard with what was written: the sha256 of
its index.json against the manifest's, every array's chunk files and their sizes against
the index's record, and the shard's bytes against the manifest's (`Corpus.verify` runs it
before a split is read; `python data_pipelines/shred.py --verify SHARDS` over a corpus, and
with `--deep` decodes every chunk as well).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import pathlib
from typing import Any, Callable, Optional, Sequence

import numpy as np
import tensorstore as ts

from xefm_jax import errors
from xefm_jax.data import spec
from xefm_jax.data import streams as streams_lib
from xefm_jax.data import xperience

# 2: the integrity record (index "chunks", manifest "index_sha256");
# 3: the per-frame `transition` label (a flags column)
SCHEMA_VERSION = 3
PIPELINE_VERSION = "shred-1"
PLAN_FILE, MANIFEST_FILE, INDEX_FILE = "plan.json", "manifest.json", "index.json"
TMP_PREFIX = ".tmp-"


class ShardError(errors.Error):
  """A shard corpus that cannot be read as expected; the message names what is wrong."""


def _damaged(root: pathlib.Path) -> str:
  """What to do about a corpus damaged after it was written."""
  return (f"copy the corpus again or re-shred it, then check it with "
          f"`python data_pipelines/shred.py --verify {root}`")


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


Stream = streams_lib.base.Stream
# Streams of every corpus, whatever its stream definitions.
CORE: tuple[Stream, ...] = (Stream("frame_time_ns", streams_lib.base.fixed(), "int64"),)


class Layout:
  """How the streams of a corpus are stored: the logical streams of its stream definitions
  (xefm_jax/data/streams/, in registration order) and the arrays that hold them.

  A TensorStore read costs about 100 us of CPU whatever its size, so the six views are one
  array (chunked per view, so a subset of views reads only its chunks), and the
  one-value-per-frame flags and label ids of every stream are packed into one array each,
  named by column in registration order. Everything else is stored as it is. The built-in
  streams give the layout of shards.SCHEMA_VERSION; a corpus shredded with an added stream
  lists its streams in the manifest ("streams"), and its flags gain that stream's columns
  after the built-in ones.
  """

  def __init__(self, defs: Sequence[streams_lib.base.StreamDef]):
    self.defs = tuple(defs)
    self.names = tuple(d.name for d in self.defs)
    self.streams: tuple[Stream, ...] = CORE + tuple(s for d in self.defs for s in d.stored)
    self.stream_by_name = {s.name: s for s in self.streams}
    self.flag_columns = tuple(c for d in self.defs for c, _, _ in d.flags)
    self.label_columns = tuple(c for d in self.defs for c in d.labels)
    self._flags = [(stream, col) for d in self.defs for _, stream, col in d.flags]
    flag_streams = {stream for stream, _ in self._flags}
    # logical stream -> its flag column (a one-value stream) or columns (one per part)
    self._flag_streams: dict[str, int | tuple[int, ...]] = {}
    for i, (stream, col) in enumerate(self._flags):
      self._flag_streams[stream] = i if col is None else (
          *self._flag_streams.get(stream, ()), i)
    self.views = "video" in self.names
    packed = flag_streams | set(self.label_columns)
    self.arrays: tuple[Stream, ...] = (
        *((Stream("video", lambda o, k: (len(xperience.VIEWS), o.video_size, o.video_size, 3),
                  "uint8"),) if self.views else ()),
        Stream("flags", streams_lib.base.fixed(len(self.flag_columns)), "bool"),
        Stream("labels", streams_lib.base.fixed(len(self.label_columns)), "int32"),
        *(s for s in self.streams if not s.name.startswith("video/") and s.name not in packed),
    )
    # how the window source reads each stored array and each flag (streams.base.read_as)
    owner = {s.name: d for d in self.defs for s in d.stored}
    self.read_as = {a.name: owner[a.name].read_as for a in self.arrays if a.name in owner}
    self.read_as["labels"] = streams_lib.base.LOW_DIM
    if self.views:
      self.read_as["video"] = streams_lib.base.FRAMES
    self.flag_read_as = {stream: owner[stream].read_as for stream in flag_streams}

  def pack(self, block: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Logical streams (T, ...) -> stored arrays (T, ...)."""
    out = {a.name: block[a.name] for a in self.arrays if a.name in block}
    if self.views:
      out["video"] = np.stack([block[f"video/{v}"] for v in xperience.VIEWS], axis=1)
    out["flags"] = np.stack([block[stream] if col is None else block[stream][:, col]
                             for stream, col in self._flags], axis=1)
    out["labels"] = np.stack([block[c] for c in self.label_columns], axis=1).astype(np.int32)
    return out

  def unpack(self, stored: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Stored arrays -> the logical streams they hold (views where possible; arrays that are
    absent from `stored` are skipped)."""
    out = {k: v for k, v in stored.items() if k not in ("video", "flags", "labels")}
    if "video" in stored:
      for i, v in enumerate(xperience.VIEWS):
        out[f"video/{v}"] = stored["video"][:, i]
    if "flags" in stored:
      f = stored["flags"]
      for stream, idx in self._flag_streams.items():
        out[stream] = f[:, idx] if isinstance(idx, int) else f[:, list(idx)]
    if "labels" in stored:
      for i, c in enumerate(self.label_columns):
        out[c] = stored["labels"][:, i]
    return out


_LAYOUTS: dict[tuple[str, ...], Layout] = {}


def layout(names: Optional[Sequence[str]] = None) -> Layout:
  """The layout of the streams `names` (default: every registered stream), cached."""
  names = tuple(d.name for d in streams_lib.registered()) if names is None else tuple(names)
  if names not in _LAYOUTS:
    _LAYOUTS[names] = Layout([streams_lib.get(n) for n in names])
  return _LAYOUTS[names]


def streams() -> tuple[Stream, ...]:
  """The logical streams of every registered stream definition (what readers get)."""
  return layout().streams


def corpus_streams(manifest: dict, path: pathlib.Path) -> tuple[str, ...]:
  """The stream definitions a corpus was shredded with: its manifest's "streams" (written
  when they are not the built-in ones), each of which must be registered here."""
  names = tuple(manifest.get("streams", streams_lib.BUILTIN))
  unknown = [n for n in names if n not in {d.name for d in streams_lib.registered()}]
  if unknown:
    raise ShardError(f"{path}: the corpus holds streams {unknown} that no stream definition "
                     "registers here (xefm_jax/data/streams/); register them before reading it")
  return names


def _codecs(dtype: str, clevel: int) -> list[dict]:
  return [{"name": "bytes", "configuration": {"endian": "little"}},
          {"name": "blosc", "configuration": {"cname": "zstd", "clevel": clevel,
                                              "shuffle": "shuffle",
                                              "typesize": np.dtype(dtype).itemsize}}]


def _chunk_shape(array: Stream, options: ShredOptions, num_objects: int) -> list[int]:
  # a per-frame axis of length 0 (no objects in the vocabulary) still needs a chunk size >= 1
  chunk = [options.chunk_frames, *(max(1, n) for n in array.shape(options, num_objects))]
  if array.name == "video":
    chunk[1] = 1  # one view per chunk
  return chunk


def chunk_grid(array: Stream, frames: int, options: ShredOptions, num_objects: int
               ) -> list[int]:
  """Chunks along each axis of one stored array of `frames` rows."""
  shape = [frames, *array.shape(options, num_objects)]
  return [math.ceil(n / c) for n, c in zip(shape, _chunk_shape(array, options, num_objects))]


def array_spec(path: pathlib.Path, array: Stream, frames: int, options: ShredOptions,
               num_objects: int) -> dict[str, Any]:
  """TensorStore spec creating one stored array of `frames` rows."""
  per_frame = array.shape(options, num_objects)
  chunk = _chunk_shape(array, options, num_objects)
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
    raise ShardError(f"{path}/zarr.json: array '{name}' is missing: the shard is incomplete "
                     f"or of another schema; {_damaged(shard_dir.parent)}")
  try:
    return ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path)}},
                   open=True, read=True, context=context).result()
  except ValueError as e:
    raise ShardError(f"{path}: cannot open as a zarr v3 array ({e}); "
                     f"{_damaged(shard_dir.parent)}") from None


def read_json(path: pathlib.Path, what: str, fix: str = "") -> dict:
  """A JSON file of the corpus; a ShardError naming it (and `fix`, what to do) if it is
  missing or not JSON."""
  fix = f"; {fix}" if fix else ""
  if not path.is_file():
    raise ShardError(f"{path}: {what} is missing{fix}")
  try:
    return json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise ShardError(f"{path}: {what} is not JSON ({e}){fix}") from None


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
        + ("; the corpus is newer than this code: update xefm_jax" if newer else
           "; re-shred the corpus with data_pipelines/shred.py into a new --out"))


def load_manifest(root: str | os.PathLike) -> dict:
  """The manifest of a complete corpus, after checking its schema and every shard's index."""
  root = pathlib.Path(root)
  manifest = read_json(
      root / MANIFEST_FILE, "the corpus manifest",
      f"shred a corpus there (python data_pipelines/shred.py --raw RAW --out {root}) or name "
      "a complete one (a corpus has a manifest only once every shard is written)")
  check_schema(manifest, root / MANIFEST_FILE)
  for shard in manifest["shards"]:
    shard_dir = root / shard["name"]
    if not shard_dir.is_dir():
      raise ShardError(f"{root / MANIFEST_FILE}: names shard '{shard['name']}', but "
                       f"{shard_dir} does not exist; {_damaged(root)}")
    index = read_json(shard_dir / INDEX_FILE, f"the index of shard '{shard['name']}' "
                      "(an incomplete shard)", _damaged(root))
    check_schema(index, shard_dir / INDEX_FILE)
    if index.get("frames") != shard["frames"]:
      raise ShardError(f"{shard_dir / INDEX_FILE}: {index.get('frames')} frames, the manifest "
                       f"says {shard['frames']}: the shard does not belong to this manifest; "
                       f"{_damaged(root)}")
  return manifest


# ------------------------------------------------------------------------------- integrity

CHUNK_DIR = "c"  # zarr v3's default chunk key encoding: <array>/c/<i>/<j>/...
DECODE_CHUNK_ROWS = 16  # chunks along time decoded per read by `check_shard(deep=True)`


def scan_chunks(shard_dir: pathlib.Path) -> tuple[dict[str, dict[str, int]], int]:
  """The chunk files of every stored array of a shard as {array: {"i/j/...": bytes}}, and
  the bytes of every file under the shard (one walk; os.scandir, no path objects: a
  shard holds thousands of nested chunk directories)."""
  found: dict[str, dict[str, int]] = {}
  total = 0

  def walk(path: str, parts: tuple[str, ...]) -> None:
    nonlocal total
    with os.scandir(path) as entries:
      for entry in entries:
        if entry.is_dir(follow_symlinks=False):
          walk(entry.path, parts + (entry.name,))
          continue
        size = entry.stat().st_size
        total += size
        if len(parts) >= 2 and parts[1] == CHUNK_DIR:
          found.setdefault(parts[0], {})["/".join(parts[2:] + (entry.name,))] = size

  walk(str(shard_dir), ())
  return found, total


def chunk_record(shard_dir: pathlib.Path, grids: dict[str, list[int]]) -> dict[str, dict]:
  """The integrity record of a shard just written: per array its chunk grid and the bytes of
  each chunk file in C order of the grid (0: not stored, i.e. all fill value)."""
  found, _ = scan_chunks(shard_dir)
  record = {}
  for name, grid in grids.items():
    sizes = [0] * math.prod(grid)
    for key, size in found.get(name, {}).items():
      index = tuple(int(i) for i in key.split("/"))
      if len(index) != len(grid) or any(not 0 <= i < n for i, n in zip(index, grid)):
        raise ShardError(f"{shard_dir / name}: chunk {CHUNK_DIR}/{key} lies outside the "
                         f"chunk grid {grid}; this is a bug of the shredder")
      sizes[int(np.ravel_multi_index(index, grid))] = size
    record[name] = {"grid": list(grid), "bytes": sizes}
  return record


def stored_chunks(record: dict[str, dict]) -> int:
  """Chunk files the integrity record of one shard lists."""
  return sum(1 for r in record.values() for size in r["bytes"] if size)


def sha256_file(path: pathlib.Path) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 22), b""):
      h.update(block)
  return h.hexdigest()


def check_shard(root: str | os.PathLike, shard: dict, deep: bool = False,
                progress: Optional[Callable[[int], None]] = None) -> list[str]:
  """What is wrong with one shard of a manifest (`shard`: its manifest entry), one line per
  problem; [] when it is as the shredder wrote it.

  Fast (the default): the sha256 of index.json against the manifest's, every array's chunk
  files and their sizes against the index's record (the first missing chunk named), the
  shard's bytes against the manifest's. `deep`: also decode every chunk through
  TensorStore. `progress(n)` is called as chunks are checked.
  """
  root = pathlib.Path(root)
  shard_dir = root / shard["name"]
  fix = f"the shard is damaged (an interrupted copy or sync?): {_damaged(root)}"
  index_path = shard_dir / INDEX_FILE
  if not index_path.is_file():
    return [f"{index_path}: the shard's index is missing; {fix}"]
  if sha256_file(index_path) != shard.get("index_sha256"):
    return [f"{index_path}: its sha256 is not the manifest's: the shard is not the one "
            f"{root / MANIFEST_FILE} was made with; {fix}"]
  record = json.loads(index_path.read_text())["chunks"]
  found, total = scan_chunks(shard_dir)
  problems = []
  for name, rec in record.items():
    array_dir = shard_dir / name
    grid = rec["grid"]
    stored = np.flatnonzero(rec["bytes"])
    keys = np.stack(np.unravel_index(stored, grid), 1) if len(stored) else []
    want = {"/".join(map(str, key)): rec["bytes"][k] for k, key in zip(stored, keys)}
    have = found.get(name, {})
    if not (array_dir / "zarr.json").is_file():
      problems.append(f"{array_dir}/zarr.json: the array's metadata is missing; {fix}")
    missing = [k for k in want if k not in have]
    if missing:
      problems.append(f"{array_dir}: {len(missing)} of {len(want)} chunk files are missing, "
                      f"the first {CHUNK_DIR}/{missing[0]} (frames from "
                      f"{int(missing[0].split('/')[0]) * _rows(array_dir, grid)}); {fix}")
    wrong = [k for k in want if k in have and have[k] != want[k]]
    if wrong:
      problems.append(f"{array_dir}/{CHUNK_DIR}/{wrong[0]}: {have[wrong[0]]} bytes, written "
                      f"with {want[wrong[0]]} ({len(wrong)} chunk files differ in size); {fix}")
    extra = sorted(set(have) - set(want))
    if extra:
      problems.append(f"{array_dir}/{CHUNK_DIR}/{extra[0]}: not written by the shredder "
                      f"({len(extra)} such files); {fix}")
    if progress:
      progress(len(want) if not deep else 0)
  if not problems and total != shard.get("bytes"):
    problems.append(f"{shard_dir}: {total} bytes on disk, the manifest says "
                    f"{shard.get('bytes')}; {fix}")
  if deep and not problems:
    problems += _decode_all(shard_dir, record, fix, progress)
  return problems


def _rows(array_dir: pathlib.Path, grid: list[int]) -> int:
  """Frames per chunk along time of an array (from its zarr.json; 0 when unreadable)."""
  try:
    meta = json.loads((array_dir / "zarr.json").read_text())
    return int(meta["chunk_grid"]["configuration"]["chunk_shape"][0])
  except (OSError, ValueError, KeyError):
    return 0


def _decode_all(shard_dir: pathlib.Path, record: dict[str, dict], fix: str,
                progress: Optional[Callable[[int], None]]) -> list[str]:
  """Reads every array of a shard through TensorStore, DECODE_CHUNK_ROWS chunks along time at
  a time; one problem per array that does not decode."""
  problems = []
  for name, rec in record.items():
    array = open_array(shard_dir, name)
    rows = int(array.chunk_layout.read_chunk.shape[0])
    frames = int(array.shape[0])
    per_row = math.prod(rec["grid"][1:])
    for a in range(0, frames, rows * DECODE_CHUNK_ROWS):
      b = min(frames, a + rows * DECODE_CHUNK_ROWS)
      try:
        array[a:b].read().result()
      except ValueError as e:
        problems.append(f"{shard_dir / name}: frames [{a}, {b}) do not decode ({e}); {fix}")
        break
      if progress:
        progress(sum(1 for s in rec["bytes"][a // rows * per_row:-(-b // rows) * per_row]
                     if s))
  return problems
