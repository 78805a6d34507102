"""The Grain pipeline: shards -> windows -> per-process batches -> global jax.Arrays.

    MapDataset.range(windows) -> shuffle(seed) -> repeat -> [process::processes] -> batch
      -> map(WindowSource._getitems, then per window: normalise, masks, view and modality
         dropout in training; stack) -> to_iter_dataset(ReadOptions) [-> mp_prefetch]
      -> make_global_batch

The shuffled, sliced and batched elements are window indices; the source is read a batch
at a time. A TensorStore read costs about 100 us of CPU in synchronisation whatever its
size, and Grain 0.2 reads a source one element at a time (its batch pushdown is switched
off), so issuing every read of a batch before awaiting any (`WindowSource._getitems`)
halves the CPU per window (benchmarks/loader.py). Every step is deterministic for a seed,
and the iterator's state (`get_state`) is a few integers, so a restored iterator yields
exactly the batches the uninterrupted one would have (save it with Orbax through
`grain.checkpoint.CheckpointSave`). Each process reads only its own slice of the shuffled
windows and hands its batch to `jax.make_array_from_process_local_data`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Sequence

import grain
import jax
import numpy as np

from xefm_jax.data import spec as spec_lib
from xefm_jax.data import source as source_lib
from xefm_jax.data import streams as streams_lib
from xefm_jax.data.streams import mocap as mocap_lib


@dataclasses.dataclass(frozen=True)
class Normaliser:
  """Train-split statistics of the manifest (`stats`), which the stream definitions
  normalise their window fields with (xefm_jax/data/streams/); the hands' conversions are
  here as well for the objectives and the eval that turn predictions back into metres."""

  stats: Mapping[str, Mapping[str, Any]]

  def hands(self, joints: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(..., 2, 21, 3) camera-frame metres -> normalised wrist [0] and wrist-relative [1:]."""
    return mocap_lib.normalise_hands(self.stats, joints, valid)

  def hands_to_metres(self, x: np.ndarray) -> np.ndarray:
    """Inverse of `hands` (for MPJPE in metres); works on numpy or jax arrays."""
    return mocap_lib.hands_to_metres(self.stats, x)


def _inputs(raw: Mapping[str, np.ndarray], sl: slice, sig: slice, spec: spec_lib.WindowSpec,
            norm: Normaliser, defs: Sequence[streams_lib.base.StreamDef]
            ) -> dict[str, np.ndarray]:
  """The model inputs of a batch of raw windows (B, rows, ...): frames `sl`, signal rows
  `sig` (both along axis 1), from every input stream."""
  out: dict[str, np.ndarray] = {}
  for stream in defs:
    if stream.group is not None:
      out.update(stream.inputs(raw, sl, sig, spec, norm))
  return out


def to_batch(windows: Sequence[Mapping[str, np.ndarray]], spec: spec_lib.WindowSpec,
             norm: Normaliser, defs: Optional[Sequence[streams_lib.base.StreamDef]] = None
             ) -> dict[str, Any]:
  """Raw windows from WindowSource -> a batch of the spec.window_fields contract, each
  stream's fields from its definition (`defs`: the corpus' streams, WindowSource.layout;
  default: every registered stream).

  The raw windows are stacked first and transformed as one batch: numpy's per-call cost,
  not arithmetic, dominates arrays this small.
  """
  defs = streams_lib.registered() if defs is None else defs
  raw = {k: np.stack([w[k] for w in windows]) for k in windows[0]}
  w, f, s = spec.frames, spec.future, spec.frame_stride
  ctx, ahead = slice(0, w), slice(w, w + f)
  out: dict[str, Any] = _inputs(raw, ctx, slice(0, s * w), spec, norm, defs)
  out["future"] = {}
  for stream in defs:
    out.update(stream.targets(raw, ctx))
    out["future"].update(stream.future(raw, ahead, norm))
  out["task"] = raw["task"][:, 0]
  out["episode"], out["start"] = raw["episode"].astype(np.int32), raw["start"].astype(np.int32)
  if spec.next_window:
    out["next"] = _inputs(raw, slice(w, 2 * w), slice(s * w, 2 * s * w), spec, norm, defs)
  return out


def drop_inputs(batch: dict[str, Any], rng: np.random.Generator, view_dropout: float,
                modality_dropout: float,
                defs: Optional[Sequence[streams_lib.base.StreamDef]] = None
                ) -> dict[str, Any]:
  """Training-time masks, in place: drop views and whole modalities per window (values
  zeroed with their masks, so a masked value is always 0).

  At least one present view of a window survives view dropout, and at least one modality
  survives modality dropout, so no window is empty. `next/*` (the EMA target's input) is
  untouched. The modalities are the input streams of `defs` (default: every registered
  one), in order.
  """
  inputs = [d for d in (streams_lib.registered() if defs is None else defs)
            if d.group is not None]
  v = batch["video_valid"]  # (B, V)
  keep = rng.random(v.shape) >= view_dropout
  for i in np.flatnonzero(~(keep & v).any(1) & v.any(1)):
    keep[i, rng.choice(np.flatnonzero(v[i]))] = True
  batch["video_valid"] = v & keep
  dropped = rng.random((len(v), len(inputs))) < modality_dropout  # (B, M)
  for i in np.flatnonzero(dropped.all(1)):
    dropped[i, rng.integers(len(inputs))] = False
  for m, stream in enumerate(inputs):
    for field in stream.valid:
      mask = batch[field]
      batch[field] = mask & ~dropped[:, m].reshape((-1,) + (1,) * (mask.ndim - 1))
  for stream in inputs:
    stream.mask_invalid(batch)
  return batch


class ReadBatch(grain.transforms.Map):
  """Window indices -> one batch of windows (evaluation: no dropout)."""

  def __init__(self, src: source_lib.WindowSource, norm: Normaliser):
    self.src, self.norm = src, norm

  def map(self, indices):
    return to_batch(self.src._getitems(indices), self.src.spec, self.norm,
                    self.src.layout.defs)


class ReadTrainingBatch(grain.transforms.RandomMap):
  """Window indices -> one batch of windows with view and modality dropout."""

  def __init__(self, src: source_lib.WindowSource, norm: Normaliser, view_dropout: float,
               modality_dropout: float):
    self.src, self.norm = src, norm
    self.view_dropout, self.modality_dropout = view_dropout, modality_dropout

  def random_map(self, indices, rng: np.random.Generator):
    defs = self.src.layout.defs
    return drop_inputs(to_batch(self.src._getitems(indices), self.src.spec, self.norm, defs),
                       rng, self.view_dropout, self.modality_dropout, defs)


def make_dataset(corpus: source_lib.Corpus, split: str, data_cfg: Any, *, train: bool,
                 seed: int, process_index: Optional[int] = None,
                 process_count: Optional[int] = None) -> grain.IterDataset:
  """The per-process iterable of batches (global batch / process count windows each).

  Training batches are full and the windows repeat, reshuffled each epoch; evaluation reads
  the split once in order, the last batch possibly short.
  """
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  if data_cfg.batch_size % process_count:
    raise ValueError(f"data.batch_size={data_cfg.batch_size} is not divisible by "
                     f"{process_count} processes")
  spec = corpus.window_spec(data_cfg)
  norm = Normaliser(corpus.stats)
  src = source_lib.WindowSource(corpus, split, spec, data_cfg.window_stride,
                               verify=bool(data_cfg.get("verify_shards", True)))
  ds = grain.MapDataset.range(len(src))
  if train:
    ds = ds.shuffle(seed=seed).repeat(None)
  ds = ds[process_index::process_count]
  ds = ds.batch(data_cfg.batch_size // process_count, drop_remainder=train)
  if train:
    ds = ds.random_map(ReadTrainingBatch(src, norm, data_cfg.view_dropout,
                                         data_cfg.modality_dropout), seed=seed + 1)
  else:
    ds = ds.map(ReadBatch(src, norm))
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=data_cfg.read_threads,
                                            prefetch_buffer_size=data_cfg.prefetch))
  if data_cfg.worker_count > 0:
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=data_cfg.worker_count))
  return it


def make_global_batch(local: Any, shardings: Any) -> Any:
  """Per-process numpy batch -> global jax.Arrays laid out by `shardings` (a matching tree
  or one sharding for every leaf). One process: one `device_put` of the whole tree (the
  local batch of configs/local.py, 55 leaves, 3.6 MB: 5.7-6.0 ms of host time against
  9.0-9.7 ms assembled leaf by leaf)."""
  if jax.process_count() == 1:
    return jax.device_put(local, shardings)
  if isinstance(shardings, jax.sharding.Sharding):
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(shardings, x), local)
  return jax.tree.map(jax.make_array_from_process_local_data, shardings, local)
