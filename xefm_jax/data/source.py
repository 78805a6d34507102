"""A Grain random-access source of windows read from a shard corpus.

Window i is (episode, start): W context frames start + s * [0, W) on the shard clock (s is
the window's frame stride), the next F frames as future targets, and when `next_window` the
following W frames as the EMA encoder's input. Windows never cross episodes; consecutive
starts are `window_stride` frames apart. Audio and IMU are read contiguously over the span
of time the context covers (they are signals, not frames).

TensorStore handles are opened lazily, once per process (a Grain worker process opens its
own on first use; pickling drops them), and TensorStore reads are safe from many threads.
All of a window's reads are issued before any is awaited, so they overlap.

A zarr array reads a missing chunk file as zeros, so a source first checks the shards of
its split against what the shredder wrote (`Corpus.verify`: chunk files and sizes, once per
shard and corpus) and refuses a damaged one, naming the shard, the array and the first
missing chunk.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any, Optional, Sequence

import numpy as np
import tensorstore as ts

from xefm_jax.data import features as features_lib
from xefm_jax.data import labels as labels_lib
from xefm_jax.data import shards
from xefm_jax.data import spec as spec_lib
from xefm_jax.data import streams as streams_lib

# How a stored array is read is its stream definition's `read_as` (shards.Layout.read_as):
# LOW_DIM at the frame stride over the low-dimensional span (context + future), FRAMES (the
# heavy inputs) at the frame stride over context (+ next), SIGNAL contiguously over the time
# the frames cover. The per-frame flags are read contiguously over the whole span and
# strided here, each as its stream is.
LOW_DIM, FRAMES, SIGNAL = streams_lib.base.LOW_DIM, streams_lib.base.FRAMES, streams_lib.base.SIGNAL


class Corpus:
  """A complete shard corpus: its manifest, label vocabularies and statistics."""

  def __init__(self, root: str | os.PathLike):
    self.root = pathlib.Path(root)
    self.manifest = shards.load_manifest(self.root)
    self.layout = shards.layout(shards.corpus_streams(self.manifest, self.root))
    self.options = shards.ShredOptions(**self.manifest["options"])
    self.labels = labels_lib.Labels.from_manifest(self.manifest["vocabularies"])
    self.episodes: list[dict] = self.manifest["episodes"]
    self.stats: dict[str, dict] = self.manifest["stats"]
    self._verified: set[str] = set()

  def verify(self, splits: Sequence[str]) -> list[str]:
    """Checks the shards holding `splits` against what the shredder wrote (chunk files and
    their sizes, `shards.check_shard`), each shard once per Corpus; raises a ShardError
    with every problem of the first damaged shard. Returns the shards checked now."""
    entries = {s["name"]: s for s in self.manifest["shards"]}
    names = sorted({e["shard"] for e in self.episodes if e["split"] in splits}
                   - self._verified)
    for name in names:
      problems = shards.check_shard(self.root, entries[name])
      if problems:
        raise shards.ShardError("\n".join(problems))
      self._verified.add(name)
    return names

  def split_episodes(self, split: str) -> list[int]:
    """Indices into `episodes` of one split."""
    idx = [i for i, e in enumerate(self.episodes) if e["split"] == split]
    if not idx:
      raise shards.ShardError(f"{self.root}: no episodes in split '{split}' (splits: "
                              f"{sorted({e['split'] for e in self.episodes})}); shred a "
                              "corpus with more sessions, or change its --split")
    return idx

  def read_episode(self, index: int, arrays: tuple[str, ...] = ("labels", "objects", "flags")
                   ) -> dict[str, np.ndarray]:
    """Every frame of episode `index` (into `episodes`) of the stored `arrays`, as the
    logical streams they hold (Layout.unpack): the labels, objects and flags by default,
    for whatever needs a whole episode's timeline (horizons past a window, exports)."""
    e = self.episodes[index]
    names = {a.name for a in self.layout.arrays}
    unknown = [a for a in arrays if a not in names]
    if unknown:
      raise shards.ShardError(f"{self.root}: no stored arrays {unknown} (have {sorted(names)})")
    a, b = e["offset"], e["offset"] + e["length"]
    futures = {k: shards.open_array(self.root / e["shard"], k)[a:b].read() for k in arrays}
    try:
      return self.layout.unpack({k: f.result() for k, f in futures.items()})
    except ValueError as err:  # a truncated or corrupt chunk file
      raise shards.ShardError(f"{self.root / e['shard']}: cannot read episode "
                              f"{e['episode']} ({err}); the shard is damaged: re-shred it"
                              ) from None

  def window_spec(self, data_cfg: Any) -> spec_lib.WindowSpec:
    """The config's window with sizes from this corpus; refuses a corpus shredded otherwise."""
    s = spec_lib.WindowSpec.from_config(data_cfg)
    for field, shred in (("view_size", "video_size"), ("depth_size", "depth_size"),
                         ("caption_len", "caption_len")):
      if getattr(s, field) != getattr(self.options, shred):
        raise shards.ShardError(
            f"{self.root}: the corpus was shredded with {shred}={getattr(self.options, shred)},"
            f" the config asks for data.{field}={getattr(s, field)}; set "
            f"--config.data.{field}={getattr(self.options, shred)} or re-shred the corpus "
            f"(shred.py --{shred.replace('_', '-')}={getattr(s, field)})")
    vocab = self.manifest["vocabularies"]
    if s.video_features:
      s = dataclasses.replace(s, feature_shape=self.feature_shape(s.video_features))
    return dataclasses.replace(
        s, num_objects=len(vocab["object"]), num_actions=len(vocab["action"]),
        num_subtasks=len(vocab["subtask"]), num_tasks=len(vocab["task"]),
        vocab_size=len(vocab["word"]), shard_stride=self.options.frame_stride)

  def feature_shape(self, name: str) -> tuple[int, ...]:
    """(S, D) of the extracted features `name`; every shard must have them, complete."""
    shapes = set()
    for shard in self.manifest["shards"]:
      shard_dir = features_lib.folder(self.root, name) / shard["name"]
      if not (shard_dir / features_lib.PROVENANCE).is_file():
        raise shards.ShardError(
            f"{shard_dir}: no features '{name}' for shard {shard['name']} (config.data."
            "video_features); run data_pipelines/extract.py over the corpus first")
      doc = json.loads((shard_dir / features_lib.PROVENANCE).read_text())
      shapes.add(tuple(doc["shape"][2:]))
    if len(shapes) != 1:
      raise shards.ShardError(f"{features_lib.folder(self.root, name)}: shards' features "
                              f"differ in shape {sorted(shapes)}; re-extract them")
    return shapes.pop()


class WindowSource:
  """Grain RandomAccessDataSource of raw windows (shard dtypes; the pipeline normalises)."""

  def __init__(self, corpus: Corpus, split: str, spec: spec_lib.WindowSpec,
               window_stride: int,
               windows: Optional[tuple[np.ndarray, np.ndarray]] = None,
               verify: bool = True):
    """windows: (episode ids, starts) of given windows of the split (exports, per-record
    decoding) instead of every window at `window_stride`. verify: check the split's shards
    against their integrity records first (Corpus.verify)."""
    if verify:
      corpus.verify([split])
    self.root = corpus.root
    self.spec, self.options, self.layout = spec, corpus.options, corpus.layout
    s, w = spec.frame_stride, spec.frames
    self.span_low = s * (w + max(spec.future, w if spec.next_window else 0))
    self.span_frames = s * (2 * w if spec.next_window else w)
    self.span_signal = self.span_frames  # every frame's samples, not only the sampled ones
    self.span = span = max(self.span_low, self.span_frames)
    members = corpus.split_episodes(split)
    if windows is not None:
      ep_ids, starts = (np.asarray(w, np.int32).reshape(-1) for w in windows)
      for e, a in zip(ep_ids, starts):
        ep = corpus.episodes[e] if 0 <= e < len(corpus.episodes) else None
        if ep is None or e not in members or not 0 <= a <= ep["length"] - span:
          raise shards.ShardError(
              f"{self.root}: window (episode {e}, start {a}) is not a window of split "
              f"'{split}' (an episode of the split, 0 <= start <= length - {span})")
      self.episode_ids, self.starts = ep_ids, starts
    else:
      ep_ids, starts = [], []
      for i in members:
        length = corpus.episodes[i]["length"]
        n = max(0, (length - span) // window_stride + 1)
        ep_ids.append(np.full(n, i, np.int32))
        starts.append(np.arange(n, dtype=np.int32) * window_stride)
      self.episode_ids = np.concatenate(ep_ids)  # (num_windows,)
      self.starts = np.concatenate(starts)  # (num_windows,)
    self._episodes = [(e["shard"], e["offset"], e["depth_intrinsics"]) for e in corpus.episodes]
    self._handles: dict[str, dict[str, ts.TensorStore]] = {}
    self._pid: Optional[int] = None

  def __len__(self) -> int:
    return len(self.starts)

  def __repr__(self) -> str:
    return f"WindowSource({self.root}, windows={len(self)})"

  def __getstate__(self):
    state = dict(self.__dict__)
    state["_handles"], state["_pid"] = {}, None  # reopened in the receiving process
    return state

  def _shard(self, name: str) -> dict[str, ts.TensorStore]:
    if self._pid != os.getpid():
      self._handles, self._pid = {}, os.getpid()
    if name not in self._handles:
      features = self.spec.video_features
      handles = {a.name: shards.open_array(self.root / name, a.name)
                 for a in self.layout.arrays if not (features and a.name == "video")}
      if features:  # provenance is checked against the model once, by the training loop
        handles["video_features"] = ts.open(
            {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(
                features_lib.folder(self.root, features) / name / features_lib.ARRAY)}},
            open=True, read=True).result()
      self._handles[name] = handles  # complete before another read thread can see it
    return self._handles[name]

  def _issue(self, index: int) -> dict[str, Any]:
    """Start every TensorStore read of window `index`; returns the futures."""
    shard, offset, _ = self._episodes[int(self.episode_ids[index])]
    arrays = self._shard(shard)
    s = self.spec.frame_stride
    a = offset + int(self.starts[index])
    futures = {}
    for k, how in self.layout.read_as.items():
      if how == LOW_DIM:
        futures[k] = arrays[k][a:a + self.span_low:s].read()
      elif how == FRAMES:
        if self.spec.video_features and k == "video":
          k = "video_features"
        futures[k] = arrays[k][a:a + self.span_frames:s].read()
      else:
        futures[k] = arrays[k][a:a + self.span_signal].read()
    futures["flags"] = arrays["flags"][a:a + self.span].read()
    return futures

  def _await(self, index: int, futures: dict[str, Any]) -> dict[str, np.ndarray]:
    try:
      return {k: f.result() for k, f in futures.items()}
    except ValueError as e:  # a truncated or corrupt chunk file
      shard, offset, _ = self._episodes[int(self.episode_ids[index])]
      a = offset + int(self.starts[index])
      raise shards.ShardError(f"{self.root / shard}: cannot read frames [{a}, {a + self.span})"
                              f" ({e}); the shard is damaged: re-shred it") from None

  def _getitems(self, indices) -> list[dict[str, Any]]:
    """Windows `indices`, every read of all of them in flight before any is awaited.

    A TensorStore read costs about 100 us of CPU in synchronisation whatever its size; issued
    together, a batch's reads share it (Grain's SupportsBatchedReadRandomAccessDataSource).
    """
    indices = [int(i) for i in indices]
    pending = [self._issue(i) for i in indices]
    return [self._window(i, self._await(i, f)) for i, f in zip(indices, pending)]

  def __getitem__(self, index: int) -> dict[str, Any]:
    return self._getitems([index])[0]

  def _window(self, index: int, stored: dict[str, np.ndarray]) -> dict[str, Any]:
    """Stored arrays -> the logical streams of the window (shards.Layout.streams names,
    shard dtypes): frame streams at the window's stride, signals and their flags
    contiguous."""
    s = self.spec.frame_stride
    flags = self.layout.unpack({"flags": stored.pop("flags")})
    raw = self.layout.unpack(stored)
    rows = {LOW_DIM: -(-self.span_low // s), FRAMES: -(-self.span_frames // s)}
    for k, v in flags.items():
      how = self.layout.flag_read_as[k]
      raw[k] = v[:self.span_signal] if how == SIGNAL else v[::s][:rows[how]]
    _, _, intrinsics = self._episodes[int(self.episode_ids[index])]
    raw["depth_intrinsics"] = np.asarray(intrinsics, np.float32)
    raw["episode"] = self.episode_ids[index]
    raw["start"] = self.starts[index]
    return raw
