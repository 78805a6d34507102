"""One pass over a split's windows: embeddings, hand-crafted features, targets, predictions.

Why one pass: reading and normalising windows costs as much as a small model's forward, so
each batch is read once and every feature set (the checkpoint, the random init, the
hand-crafted statistics) and every input variant is computed from it before the next.

    windows = embed.select(corpus, "test", data_cfg, max_windows=600)
    store = embed.run(corpus, "test", data_cfg, windows, encoder, plan, ...)
    store.save(path)  /  embed.Store.load(path)

A `Store` holds flat arrays, keyed like the .npz it is cached in:
  meta/episode, meta/start          (N,) which window each row is
  targets/<name>                    xefm_jax/eval/targets.py, plus stats/<modality>
  features/<feature set>/<variant>  (N, F) float32
  predictions/<head>/<key>          model heads (test split only)
  recon/<modality>                  (N, 4) per-window sums for the reconstruction's R^2
Rows follow the source's window order; padding rows of the last batch are dropped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import pathlib
from typing import Any, Mapping, Optional, Sequence

import grain
import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from xefm_jax.data import pipeline
from xefm_jax.data import source as source_lib
from xefm_jax.eval import handcrafted
from xefm_jax.eval import targets as targets_lib
from xefm_jax.eval import variants as variants_lib

PyTree = Any


def data_config(run_data: ml_collections.ConfigDict, eval_config: ml_collections.ConfigDict,
                devices: int) -> ml_collections.ConfigDict:
  """The run's window with evaluation's future and stride, no dropout and no next window;
  the batch a multiple of the device count."""
  d = ml_collections.ConfigDict(run_data.to_dict())
  d.future = int(eval_config.future)
  d.next_window = False
  d.window_stride = max(1, int(d.frames) // 4)
  d.view_dropout = 0.0
  d.modality_dropout = 0.0
  d.batch_size = int(math.ceil(eval_config.batch_size / devices) * devices)
  d.worker_count = 0
  return d


@dataclasses.dataclass(frozen=True)
class Selection:
  """The windows of a split that are evaluated: indices into the source at the base
  stride, and the stride they are read at (frames)."""

  split: str
  indices: np.ndarray  # (N,) into WindowSource(corpus, split, spec, base_stride)
  stride: int
  base_stride: int
  windows: Optional[tuple[np.ndarray, np.ndarray]] = None  # given (episodes, starts)

  @classmethod
  def at(cls, split: str, episodes: np.ndarray, starts: np.ndarray) -> "Selection":
    """Given windows of a split (corpus episode ids, first frames), in that order."""
    episodes, starts = np.asarray(episodes, np.int32), np.asarray(starts, np.int32)
    return cls(split, np.arange(len(starts), dtype=np.int64), 1, 1, (episodes, starts))


def select(corpus: source_lib.Corpus, split: str, data_cfg: ml_collections.ConfigDict,
           max_windows: int) -> Selection:
  """Every window at the base stride, or, above `max_windows`, every k-th with k a divisor
  of W / base stride (so the window W frames later, the temporal-order partner, and the one
  8 base strides later, the misalignment partner, stay in the set), then whole episodes
  evenly thinned out."""
  spec = corpus.window_spec(data_cfg)
  base = int(data_cfg.window_stride)
  src = source_lib.WindowSource(corpus, split, spec, base)
  steps = src.starts // base
  limit = max(1, spec.frames // base)
  k = 1
  for cand in range(1, limit + 1):
    if limit % cand == 0 and 8 % cand == 0:
      k = cand
      if np.sum(steps % cand == 0) <= max_windows:
        break
  every = np.flatnonzero(steps % k == 0)
  episodes = np.unique(src.episode_ids[every])
  keep, n = every, len(episodes)
  while len(keep) > max_windows and n > 1:  # fewer episodes, evenly spread over the split
    n = min(n - 1, max(1, int(n * max_windows / len(keep))))
    chosen = episodes[np.unique(np.linspace(0, len(episodes) - 1, n).round().astype(int))]
    keep = every[np.isin(src.episode_ids[every], chosen)]
  return Selection(split, keep.astype(np.int64), base * k, base)


@dataclasses.dataclass
class Plan:
  """What one pass computes.

  embed: {feature set: (trunk parameters, variants)}; handcrafted: variants (empty: none);
  heads: the Pretrainer parameters for predictions and reconstructions (None: none) with
  `predict` the heads to read on `full_variant`, `reconstruct` {modality: the variant it is
  reconstructed from} for masked-modeling R^2.
  """

  embed: dict[str, tuple[PyTree, dict[str, variants_lib.Variant]]]
  handcrafted: dict[str, variants_lib.Variant]
  heads: Optional[PyTree] = None
  predict: tuple[str, ...] = ()
  full_variant: Optional[variants_lib.Variant] = None
  reconstruct: dict[str, variants_lib.Variant] = dataclasses.field(default_factory=dict)
  targets: bool = True


class Store:
  """Flat arrays of one split (module docstring)."""

  def __init__(self, arrays: Optional[dict[str, np.ndarray]] = None, fingerprint: str = ""):
    self.arrays: dict[str, np.ndarray] = dict(arrays or {})
    self.fingerprint = fingerprint

  def __len__(self) -> int:
    return len(self.arrays["meta/episode"])

  def features(self, feature_set: str, variant: str) -> np.ndarray:
    key = f"features/{feature_set}/{variant}"
    if key not in self.arrays:
      raise KeyError(f"no {feature_set} features of variant {variant!r} in this split "
                     f"(have {sorted(k for k in self.arrays if k.startswith('features/'))})")
    return self.arrays[key]

  def has(self, key: str) -> bool:
    return key in self.arrays

  def target(self, name: str) -> np.ndarray:
    return self.arrays[f"targets/{name}"]

  def merge(self, other: "Store") -> "Store":
    """Both stores' arrays (the same windows in the same order, else an error)."""
    for k in ("meta/episode", "meta/start"):
      if k in self.arrays and k in other.arrays and not np.array_equal(self.arrays[k],
                                                                          other.arrays[k]):
        raise ValueError("stores of different windows cannot be merged")
    return Store({**self.arrays, **other.arrays}, self.fingerprint)

  def save(self, path: str | os.PathLike) -> None:
    """Atomically (written beside the file under a temporary name, then renamed)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    with open(tmp, "wb") as f:
      np.savez(f, __fingerprint__=np.asarray(self.fingerprint), **self.arrays)
    os.replace(tmp, path)

  @classmethod
  def load(cls, path: str | os.PathLike, fingerprint: Optional[str] = None
           ) -> Optional["Store"]:
    """The cached store, or None when absent or computed under another fingerprint."""
    path = pathlib.Path(path)
    if not path.is_file():
      return None
    with np.load(path, allow_pickle=False) as z:
      stored = str(z["__fingerprint__"])
      if fingerprint is not None and stored != fingerprint:
        return None
      return cls({k: z[k] for k in z.files if k != "__fingerprint__"}, stored)


def fingerprint(*parts: Any) -> str:
  """A short hash of JSON-able parts (configs, corpus identity, step)."""
  text = json.dumps(parts, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------ the pass


def _batches(corpus: source_lib.Corpus, split: str, data_cfg: ml_collections.ConfigDict,
             selection: Selection) -> tuple[Any, int, int]:
  """Per-process batches of the selected windows (an iterable), their count (equal on every
  process) and the local batch size. Padding is done by the caller."""
  spec = corpus.window_spec(data_cfg)
  src = source_lib.WindowSource(corpus, split, spec, selection.base_stride, selection.windows)
  norm = pipeline.Normaliser(corpus.stats)
  processes, index = jax.process_count(), jax.process_index()
  local = selection.indices[index::processes]
  per = data_cfg.batch_size // processes
  count = int(math.ceil(math.ceil(len(selection.indices) / processes) / per))
  chunks = [local[i * per:(i + 1) * per] for i in range(count)]
  chunks = [c if len(c) else selection.indices[:1] for c in chunks]  # an all-padding batch
  valid = [min(per, max(0, len(local) - i * per)) for i in range(count)]
  ds = grain.MapDataset.source(chunks).map(pipeline.ReadBatch(src, norm))
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=2))
  return zip(it, valid), count, per


def _pad(batch: dict[str, Any], rows: int) -> dict[str, Any]:
  """Repeat the last row up to `rows` rows."""
  def pad(x):
    if x.shape[0] == rows:
      return x
    return np.concatenate([x, np.repeat(x[-1:], rows - x.shape[0], axis=0)], 0)
  return jax.tree.map(pad, batch)


class _HandcraftedBlocks:
  """Per-modality statistics of one batch under masks, each computed once per mask."""

  def __init__(self, batch: Mapping[str, Any], views: Sequence[str], seed: int,
               vocab_size: int):
    self.batch, self.views, self.seed, self.vocab = batch, views, seed, vocab_size
    self._cache: dict[Any, np.ndarray] = {}

  def block(self, modality: str, variant: variants_lib.Variant) -> np.ndarray:
    kept = modality in variant.modalities
    if modality == "video" and kept:  # per-view statistics, the dropped views' rows zeroed
      if "video/views" not in self._cache:
        self._cache["video/views"] = handcrafted.video_per_view(self.batch)  # (B, V, F)
      keep = variants_lib.view_keep(variant, self.batch, self.views, self.seed)  # (B, V)
      per_view = self._cache["video/views"] * keep[..., None]
      return np.nan_to_num(per_view.reshape(len(per_view), -1).astype(np.float32))
    key = (modality, kept)
    if key not in self._cache:
      one = variants_lib.Variant("one", (modality,) if kept else ())
      masked = variants_lib.apply(one, self.batch, self.views, self.seed)
      out = handcrafted.statistics(modality, masked, self.vocab)
      self._cache[key] = np.nan_to_num(out.astype(np.float32))
    return self._cache[key]

  def features(self, variant: variants_lib.Variant) -> np.ndarray:
    return np.concatenate([self.block(m, variant) for m in variant.universe], -1)


def run(corpus: source_lib.Corpus, split: str, data_cfg: ml_collections.ConfigDict,
        selection: Selection, encoder: Any, plan: Plan, seed: int, progress: bool = True,
        describe: str = "") -> Store:
  """Computes `plan` over the selected windows of `split` (module docstring)."""
  norm = pipeline.Normaliser(corpus.stats)
  vocab = len(corpus.labels.words)
  step = int(data_cfg.frame_stride) * corpus.options.frame_stride  # 20 fps frames per frame
  episodes = targets_lib.EpisodeLabels(corpus)  # horizons past the window's future frames
  batches, count, per = _batches(corpus, split, data_cfg, selection)
  parts: dict[str, list[np.ndarray]] = {}

  def add(key: str, value: np.ndarray, valid: np.ndarray) -> None:
    parts.setdefault(key, []).append(np.asarray(value)[valid])

  show = progress and jax.process_index() == 0
  for local, n in tqdm(batches, total=count, disable=not show, leave=False,
                       desc=describe or f"embed {split}", unit="batch"):
    local = _pad(local, per)
    row_ok = np.arange(per) < n
    host: dict[str, np.ndarray] = {"meta/episode": local["episode"],
                                   "meta/start": local["start"], "meta/valid": row_ok}
    if plan.targets:
      for k, v in targets_lib.window_targets(local, norm, step, episodes).items():
        host[f"targets/{k}"] = v
    blocks = _HandcraftedBlocks(local, encoder.views, seed, vocab)
    if plan.targets:
      for m in ("video", "depth"):
        host[f"targets/stats/{m}"] = blocks.block(m, variants_lib.Variant("all", (m,)))
    for name, variant in plan.handcrafted.items():
      host[f"features/handcrafted/{name}"] = blocks.features(variant)
    if jax.process_count() > 1:  # the device outputs are in global row order
      host = multihost_utils.process_allgather(host, tiled=True)
    valid = np.asarray(host["meta/valid"], bool)
    for k, v in host.items():
      if k != "meta/valid":
        add(k, v, valid)

    done: set[tuple[str, str]] = set()
    if plan.heads is not None:
      if plan.full_variant is not None:
        emb, preds, _ = encoder.heads(plan.heads, local, plan.full_variant, plan.predict)
        add(f"features/model/{plan.full_variant.name}", emb, valid)
        done.add(("model", plan.full_variant.name))
        for head, out in preds.items():
          for k, v in out.items():
            add(f"predictions/{head}/{k}", v, valid)
      by_variant: dict[str, list[str]] = {}
      for m, variant in plan.reconstruct.items():
        by_variant.setdefault(variant.name, []).append(m)
      for mods in by_variant.values():
        _, _, sums = encoder.heads(plan.heads, local, plan.reconstruct[mods[0]], (),
                                   reconstruct=tuple(mods))
        for m in mods:
          add(f"recon/{m}", sums[m], valid)
    for feature_set, (params, wanted) in plan.embed.items():
      for name, variant in wanted.items():
        if (feature_set, name) in done:
          continue
        add(f"features/{feature_set}/{name}", encoder.embed(params, local, variant, seed),
            valid)
  return Store({k: np.concatenate(v, 0) for k, v in parts.items()})
