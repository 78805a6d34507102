"""What a stream definition is, and the ordered registry of them.

A stream is one modality as the data side sees it, defined in one place,
xefm_jax/data/streams/<name>.py: an instance of a `StreamDef` subclass, registered with
`register`, that says

  * read:        how the stream is read from a raw episode (xefm_jax/data/episode.py) and
                 resampled to the shard's frame clock (the shredder writes what it returns);
  * stored:      how it is stored in a shard: its logical per-frame arrays (name, per-frame
                 shape, dtype); `flags` and `labels` name the columns it packs into the
                 shard's shared one-value-per-frame arrays (xefm_jax/data/shards.py), and
                 `read_as` how the window source reads its arrays (frames, low-dimensional
                 span, or a contiguous signal);
  * statistics:  the train-split features whose moments the manifest keeps (normalisation);
  * inputs / targets / future:  its window fields (context, future; `next` is `inputs`
                 over the next window's frames) from the raw arrays, normalised;
  * valid / values:  the window fields that say it is present and the values zeroed when
                 it is not (the pipeline's dropout, the eval's input variants);
  * group:       its input-variant group ("motion", "visual", "language"; None for a stream
                 that is never a model input, the labels);
  * handcrafted: its hand-crafted window statistics (the eval's baseline (a)).

The shredder, the window source, the pipeline, the statistics, the eval's variants and
hand-crafted baselines iterate over `registered()` in registration order, which fixes the
order of the packed flag columns (the shard layout, shards.SCHEMA_VERSION), so built-in
streams register in a fixed order (xefm_jax/data/streams/__init__.py) and an added stream
comes after them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, Mapping, Optional

import numpy as np

Arrays = Mapping[str, np.ndarray]
FRAMES, LOW_DIM, SIGNAL = "frames", "low_dim", "signal"  # StreamDef.read_as


@dataclasses.dataclass(frozen=True)
class Stream:
  name: str  # logical stream name (what readers and the round-trip test see)
  shape: Callable[[Any, int], tuple[int, ...]]  # (ShredOptions, num_objects) -> per frame
  dtype: str  # numpy / zarr v3 data type


def fixed(*shape: int) -> Callable[[Any, int], tuple[int, ...]]:
  return lambda o, k: shape


def zero_masked(x: np.ndarray, valid: np.ndarray) -> None:
  """In place: x[..., masked positions, ...] = 0, `valid` matching x's leading axes."""
  x[~valid] = 0


def moments(x: np.ndarray, axis) -> np.ndarray:
  """Mean, std, min and max along `axis`, concatenated (hand-crafted statistics)."""
  return np.concatenate([x.mean(axis), x.std(axis), x.min(axis), x.max(axis)], -1)


def mean_std(stats: Mapping[str, Mapping[str, Any]], name: str
             ) -> tuple[np.ndarray, np.ndarray]:
  """The manifest's train-split mean and std of feature `name`, float32."""
  s = stats[name]
  return np.asarray(s["mean"], np.float32), np.asarray(s["std"], np.float32)


class StreamDef:
  """One modality on the data side (module docstring). Subclasses set the class attributes
  and override what applies; the defaults describe a stream with no such part."""

  name: ClassVar[str]
  group: ClassVar[Optional[str]] = None
  stored: ClassVar[tuple[Stream, ...]] = ()
  # (flag column, logical stream, column of it or None) packed into the shard's `flags`
  flags: ClassVar[tuple[tuple[str, str, Optional[int]], ...]] = ()
  labels: ClassVar[tuple[str, ...]] = ()  # int32 streams packed into the shard's `labels`
  read_as: ClassVar[str] = LOW_DIM
  valid: ClassVar[tuple[str, ...]] = ()  # window fields: the stream is present
  values: ClassVar[Mapping[str, str]] = {}  # window field -> the `valid` field masking it

  future_fields: ClassVar[tuple[str, ...]] = ()  # of fields/target_fields: in `future/*`

  def fields(self, spec: Any, t: int) -> dict[str, tuple[tuple[int, ...], Any]]:
    """The window contract of its model inputs over t frames: name -> (shape, dtype) per
    example (xefm_jax/data/spec.py)."""
    return {}

  def target_fields(self, spec: Any, t: int) -> dict[str, tuple[tuple[int, ...], Any]]:
    """The same for its per-frame targets (never model inputs)."""
    return {}

  def read(self, es: Any, state: dict, start: int, stop: int) -> dict[str, np.ndarray]:
    """The stored streams of output frames [start, stop) of the episode `es`
    (resample.EpisodeStreams); `state` persists across the blocks of one episode."""
    raise NotImplementedError

  def close(self, state: dict) -> None:
    """Releases what `read` opened for one episode."""

  def statistics(self, block: Arrays) -> dict[str, np.ndarray]:
    """Train-split normalisation features of a block of shard frames, (n, C) valid rows."""
    return {}

  def inputs(self, raw: Arrays, sl: slice, sig: slice, spec: Any, stats: Any
             ) -> dict[str, np.ndarray]:
    """Model inputs of a batch of raw windows (B, rows, ...): frames `sl`, signal rows
    `sig` (along axis 1); `stats` is the pipeline's Normaliser."""
    return {}

  def targets(self, raw: Arrays, sl: slice) -> dict[str, np.ndarray]:
    """Per-frame targets (never model inputs) over frames `sl`."""
    return {}

  def future(self, raw: Arrays, ahead: slice, stats: Any) -> dict[str, np.ndarray]:
    """The window's `future/*` fields over frames `ahead`."""
    return {}

  def mask_invalid(self, batch: dict[str, Any]) -> None:
    """In place: every value of the stream where its `valid` field is False becomes its
    fill (the pipeline's dropout; default: zero)."""
    for field, valid in self.values.items():
      if field in batch:
        zero_masked(batch[field], batch[valid])

  def fill_removed(self, batch: dict[str, Any]) -> None:
    """In place, after the `valid` fields were cleared: the stream's fill where it is
    missing, beyond zeros (default: the zeroed `values` already are)."""

  def handcrafted(self, batch: Arrays, vocab_size: int) -> np.ndarray:
    """(B, F) hand-crafted statistics of a window batch (masked as the model sees it)."""
    raise NotImplementedError(f"stream {self.name!r} has no hand-crafted statistics")


_REGISTRY: dict[str, StreamDef] = {}


def register(stream: StreamDef) -> StreamDef:
  """Adds a stream definition after those registered so far; returns it."""
  if stream.name in _REGISTRY:
    raise ValueError(f"stream {stream.name!r} is registered twice")
  _REGISTRY[stream.name] = stream
  return stream


def unregister(name: str) -> None:
  """Removes an added stream (tests that register a toy stream clean up with it)."""
  del _REGISTRY[name]


def registered() -> tuple[StreamDef, ...]:
  """Every stream definition, in registration order."""
  return tuple(_REGISTRY.values())


def get(name: str) -> StreamDef:
  if name not in _REGISTRY:
    raise KeyError(f"no stream {name!r} (registered: {sorted(_REGISTRY)}); a stream is "
                   "registered by its file under xefm_jax/data/streams/")
  return _REGISTRY[name]


def inputs() -> tuple[StreamDef, ...]:
  """The registered streams that are model inputs (a variant group), in order."""
  return tuple(s for s in registered() if s.group is not None)


def group(name: str) -> tuple[str, ...]:
  """Names of the input streams of one variant group, in registration order."""
  return tuple(s.name for s in inputs() if s.group == name)
