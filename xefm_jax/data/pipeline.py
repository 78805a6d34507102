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
from xefm_jax.data import stats as stats_lib
from xefm_jax.data import xperience

# Modalities as dropout sees them: name -> the `*_valid` fields it clears.
MODALITIES = {"video": ("video_valid",), "audio": ("audio_valid",), "depth": ("depth_valid",),
              "pose": ("pose_valid",), "mocap": ("hands_valid", "body_valid"),
              "imu": ("imu_valid",), "language": ("caption_valid",)}


@dataclasses.dataclass(frozen=True)
class Normaliser:
  """Train-split statistics of the manifest, applied to one window's arrays."""

  stats: Mapping[str, Mapping[str, Any]]

  def _ms(self, name: str) -> tuple[np.ndarray, np.ndarray]:
    s = self.stats[name]
    return np.asarray(s["mean"], np.float32), np.asarray(s["std"], np.float32)

  def hands(self, joints: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(..., 2, 21, 3) camera-frame metres -> normalised wrist [0] and wrist-relative [1:]."""
    wm, ws = self._ms("wrist")
    _, ls = self._ms("hands_local")
    out = np.concatenate([(joints[..., :1, :] - wm) / ws,
                          (joints[..., 1:, :] - joints[..., :1, :]) / ls], -2)
    return np.where(valid[..., None, None], out, 0.0).astype(np.float32)

  def hands_to_metres(self, x: np.ndarray) -> np.ndarray:
    """Inverse of `hands` (for MPJPE in metres); works on numpy or jax arrays."""
    wm, ws = self._ms("wrist")
    _, ls = self._ms("hands_local")
    wrist = x[..., :1, :] * ws + wm
    return np.concatenate([wrist, wrist + x[..., 1:, :] * ls], -2) if isinstance(
        x, np.ndarray) else jax.numpy.concatenate([wrist, wrist + x[..., 1:, :] * ls], -2)

  def body(self, kp: np.ndarray, valid: np.ndarray) -> np.ndarray:
    _, bs = self._ms("body_local")
    out = (kp - kp[..., stats_lib.PELVIS:stats_lib.PELVIS + 1, :]) / bs
    return np.where(valid[..., None, None], out, 0.0).astype(np.float32)

  def imu(self, x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    m, s = self._ms("imu")
    return np.where(valid[..., None, None], (x - m) / s, 0.0).astype(np.float32)

  def depth(self, d: np.ndarray, valid: np.ndarray) -> np.ndarray:
    m, s = self._ms("depth")
    d = d.astype(np.float32)
    out = np.where(d > 0, (d - m[0]) / s[0], 0.0)
    return np.where(valid[..., None, None], out, 0.0).astype(np.float32)


def _zero_masked(x: np.ndarray, valid: np.ndarray) -> None:
  """In place: x[..., masked positions, ...] = 0, `valid` matching x's leading axes."""
  x[~valid] = 0


def _inputs(raw: Mapping[str, np.ndarray], sl: slice, sig: slice, spec: spec_lib.WindowSpec,
            norm: Normaliser) -> dict[str, np.ndarray]:
  """The model inputs of a batch of raw windows (B, rows, ...): frames `sl`, signal rows
  `sig` (both along axis 1)."""
  b, t = len(raw["pose"]), spec.frames
  views = [xperience.VIEWS.index(v) for v in spec.views]
  if spec.video_features:  # (B, T, all views, S, D) -> (B, V, T, S, D)
    key, video = "video_features", np.swapaxes(raw["video_features"][:, sl][:, :, views], 1, 2)
  else:
    key, video = "video", np.stack([raw[f"video/{v}"][:, sl] for v in spec.views], 1)
  video = np.ascontiguousarray(video)  # (B, V, T, h, w, 3) or (B, V, T, S, D)
  video_valid = raw["video_valid"][:, sl][:, :, views].all(1)  # (B, V)
  _zero_masked(video, video_valid)
  audio_valid = raw["audio_valid"][:, sig].all(1)  # (B,)
  audio = raw["audio"][:, sig].reshape(b, -1).astype(np.float32) / 32767.0  # (B, samples)
  _zero_masked(audio, audio_valid)
  imu = raw["imu"][:, sig].reshape(b, t, -1, 6)  # (B, T, s * per, 6)
  imu_valid = raw["imu_valid"][:, sig].reshape(b, t, -1).all(-1)  # (B, T)
  depth_valid = raw["depth_valid"][:, sl]  # (B, T)
  confidence = raw["depth_confidence"][:, sl].astype(np.float32) / 255.0
  _zero_masked(confidence, depth_valid)
  pose_valid, hands_valid, body_valid = (raw["pose_valid"][:, sl], raw["hands_valid"][:, sl],
                                         raw["body_valid"][:, sl])
  last = (sl.start or 0) + t - 1
  caption_valid = raw["caption_valid"][:, last]  # (B,)
  caption = raw["caption"][:, last].copy()  # (B, L)
  _zero_masked(caption, caption_valid)
  return {
      key: video, "video_valid": video_valid,
      "audio": audio, "audio_valid": audio_valid,
      "depth": norm.depth(raw["depth"][:, sl], depth_valid),
      "depth_confidence": confidence, "depth_valid": depth_valid,
      "depth_intrinsics": raw["depth_intrinsics"],
      "pose": np.where(pose_valid[..., None, None], raw["pose"][:, sl],
                       np.eye(4, dtype=np.float32)),
      "pose_valid": pose_valid,
      "hands": norm.hands(raw["hands"][:, sl], hands_valid), "hands_valid": hands_valid,
      "body": norm.body(raw["body"][:, sl], body_valid), "body_valid": body_valid,
      "imu": norm.imu(imu, imu_valid), "imu_valid": imu_valid,
      "caption": caption, "caption_valid": caption_valid,
  }


def _targets(raw: Mapping[str, np.ndarray], sl: slice) -> dict[str, np.ndarray]:
  return {k: raw[k][:, sl] for k in ("contacts", "action", "subtask", "boundary", "transition",
                                     "objects")}


def to_batch(windows: Sequence[Mapping[str, np.ndarray]], spec: spec_lib.WindowSpec,
             norm: Normaliser) -> dict[str, Any]:
  """Raw windows from WindowSource -> a batch of the spec.window_fields contract.

  The raw windows are stacked first and transformed as one batch: numpy's per-call cost,
  not arithmetic, dominates arrays this small.
  """
  raw = {k: np.stack([w[k] for w in windows]) for k in windows[0]}
  w, f, s = spec.frames, spec.future, spec.frame_stride
  ctx = slice(0, w)
  out: dict[str, Any] = {**_inputs(raw, ctx, slice(0, s * w), spec, norm),
                         **_targets(raw, ctx)}
  out["task"] = raw["task"][:, 0]
  out["episode"], out["start"] = raw["episode"].astype(np.int32), raw["start"].astype(np.int32)
  ahead = slice(w, w + f)
  hv, bv = raw["hands_valid"][:, ahead], raw["body_valid"][:, ahead]
  out["future"] = {
      "pose": raw["pose"][:, ahead], "pose_valid": raw["pose_valid"][:, ahead],
      "hands": norm.hands(raw["hands"][:, ahead], hv), "hands_valid": hv,
      "body": norm.body(raw["body"][:, ahead], bv), "body_valid": bv,
      **{k: v for k, v in _targets(raw, ahead).items() if k in spec_lib.FUTURE_FIELDS}}
  if spec.next_window:
    out["next"] = _inputs(raw, slice(w, 2 * w), slice(s * w, 2 * s * w), spec, norm)
  return out


def drop_inputs(batch: dict[str, Any], rng: np.random.Generator, view_dropout: float,
                modality_dropout: float) -> dict[str, Any]:
  """Training-time masks, in place: drop views and whole modalities per window (values
  zeroed with their masks, so a masked value is always 0).

  At least one present view of a window survives view dropout, and at least one modality
  survives modality dropout, so no window is empty. `next/*` (the EMA target's input) is
  untouched.
  """
  v = batch["video_valid"]  # (B, V)
  keep = rng.random(v.shape) >= view_dropout
  for i in np.flatnonzero(~(keep & v).any(1) & v.any(1)):
    keep[i, rng.choice(np.flatnonzero(v[i]))] = True
  batch["video_valid"] = v & keep
  names = list(MODALITIES)
  dropped = rng.random((len(v), len(names))) < modality_dropout  # (B, M)
  for i in np.flatnonzero(dropped.all(1)):
    dropped[i, rng.integers(len(names))] = False
  for m, name in enumerate(names):
    for field in MODALITIES[name]:
      mask = batch[field]
      batch[field] = mask & ~dropped[:, m].reshape((-1,) + (1,) * (mask.ndim - 1))
  video = "video_features" if "video_features" in batch else "video"
  for field, mask in ((video, "video_valid"), ("audio", "audio_valid"),
                      ("depth", "depth_valid"), ("depth_confidence", "depth_valid"),
                      ("imu", "imu_valid"), ("hands", "hands_valid"), ("body", "body_valid"),
                      ("caption", "caption_valid")):
    _zero_masked(batch[field], batch[mask])
  batch["pose"][~batch["pose_valid"]] = np.eye(4, dtype=np.float32)
  return batch


class ReadBatch(grain.transforms.Map):
  """Window indices -> one batch of windows (evaluation: no dropout)."""

  def __init__(self, src: source_lib.WindowSource, norm: Normaliser):
    self.src, self.norm = src, norm

  def map(self, indices):
    return to_batch(self.src._getitems(indices), self.src.spec, self.norm)


class ReadTrainingBatch(grain.transforms.RandomMap):
  """Window indices -> one batch of windows with view and modality dropout."""

  def __init__(self, src: source_lib.WindowSource, norm: Normaliser, view_dropout: float,
               modality_dropout: float):
    self.src, self.norm = src, norm
    self.view_dropout, self.modality_dropout = view_dropout, modality_dropout

  def random_map(self, indices, rng: np.random.Generator):
    return drop_inputs(to_batch(self.src._getitems(indices), self.src.spec, self.norm), rng,
                       self.view_dropout, self.modality_dropout)


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
  or one sharding for every leaf)."""
  if isinstance(shardings, jax.sharding.Sharding):
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(shardings, x), local)
  return jax.tree.map(jax.make_array_from_process_local_data, shardings, local)
