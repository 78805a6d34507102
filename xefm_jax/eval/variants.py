"""Input variants: which modalities and camera views a task's window side keeps.

Why: the contracts restrict inputs ("window without language", "motion + IMU + pose ->
depth / video"), and robustness asks for every task again with a modality or some views
removed. A variant is applied the same way to every feature set: to the window batch as
masks (values zeroed with their `*_valid` flags, as the pipeline's dropout does), so the
model sees a missing stream exactly as in training and the hand-crafted statistics are
computed from the same masked window.

Derived (robustness) variants are named `<base>-<modality>` (the base with one modality
dropped) and `<base>~views` (the base with a random half of its present camera views
dropped, at least one kept, seeded by the window's episode and start, so every feature set
and every run sees the same views). Their probe is the base's: no refit.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from xefm_jax.data import streams as streams_lib


@dataclasses.dataclass(frozen=True)
class Variant:
  """modalities: kept; views: fixed camera views kept (None: every present view);
  random_views: drop a random half of the present views per window; base: the variant
  whose probe scores this one (itself for a base variant); universe: the modalities of the
  base (hand-crafted features of a dropped modality are those of its masked input)."""

  name: str
  modalities: tuple[str, ...]
  views: Optional[tuple[str, ...]] = None
  random_views: bool = False
  base: str = ""
  universe: tuple[str, ...] = ()

  def __post_init__(self):
    object.__setattr__(self, "base", self.base or self.name)
    object.__setattr__(self, "universe", self.universe or self.modalities)

  @property
  def dropped(self) -> tuple[str, ...]:
    return tuple(m for m in self.universe if m not in self.modalities)


def base_variants(config: Any, model_modalities: Sequence[str]) -> dict[str, Variant]:
  """The config's variants (config.variants), restricted to the model's modalities. A
  variant names its modalities, or a `group` of input streams (the streams whose
  definition is on that side, xefm_jax/data/streams/, in registration order)."""
  out = {}
  for name, v in config.variants.items():
    named = v["modalities"] if "modalities" in v else streams_lib.group(v["group"])
    mods = tuple(m for m in named if m in model_modalities)
    views = tuple(v["views"]) if v.get("views") else None
    out[name] = Variant(name, mods, views)
  return out


def robustness_variants(base: Variant, drop: Sequence[str], random_views: bool
                        ) -> dict[str, Variant]:
  """The derived variants of `base` (module docstring); none for a fixed-view variant."""
  out = {}
  if base.views is not None:
    return out
  if len(base.modalities) > 1:
    for m in drop:
      if m in base.modalities:
        kept = tuple(x for x in base.modalities if x != m)
        out[f"{base.name}-{m}"] = Variant(f"{base.name}-{m}", kept, base=base.name,
                                          universe=base.modalities)
  if random_views and "video" in base.modalities:
    out[f"{base.name}~views"] = Variant(f"{base.name}~views", base.modalities,
                                        random_views=True, base=base.name,
                                        universe=base.modalities)
  return out


def _window_seed(seed: int, episode: int, start: int) -> int:
  digest = hashlib.sha256(f"{seed}:{episode}:{start}".encode()).digest()
  return int.from_bytes(digest[:8], "little")


def view_keep(variant: Variant, batch: Mapping[str, np.ndarray], views: Sequence[str],
              seed: int) -> np.ndarray:
  """(B, V) bool: the camera views the variant keeps (before the data's own validity)."""
  present = np.asarray(batch["video_valid"], bool)  # (B, V)
  if variant.views is not None:
    fixed = np.isin(np.asarray(views), variant.views)
    return np.broadcast_to(fixed, present.shape).copy()
  keep = np.ones_like(present)
  if variant.random_views:
    for i in range(len(present)):
      have = np.flatnonzero(present[i])
      if len(have) < 2:
        continue
      rng = np.random.default_rng(_window_seed(seed, int(batch["episode"][i]),
                                               int(batch["start"][i])))
      gone = rng.choice(have, size=len(have) // 2, replace=False)
      keep[i, gone] = False
  return keep


def apply(variant: Variant, batch: Mapping[str, Any], views: Sequence[str], seed: int
          ) -> dict[str, Any]:
  """A copy of the window batch with everything the variant removes masked and zeroed.

  Only the input fields of the registered input streams change (each stream's `valid` and
  `values`, xefm_jax/data/streams/); targets are untouched.
  """
  out = dict(batch)
  for stream in streams_lib.inputs():
    if stream.name in variant.modalities or stream.valid[0] not in batch:
      continue
    for f in stream.valid:
      out[f] = np.zeros_like(batch[f])
    for f in stream.values:
      if f in batch:  # e.g. pixels, or the extracted features that replace them
        out[f] = np.zeros_like(batch[f])
    stream.fill_removed(out)
  if "video" in variant.modalities and (variant.views is not None or variant.random_views):
    keep = view_keep(variant, batch, views, seed) & batch["video_valid"]  # (B, V)
    out["video_valid"] = keep
    for f in ("video", "video_features"):  # (B, V, T, ...)
      if f in batch:
        x = batch[f]
        out[f] = np.where(keep.reshape(keep.shape + (1,) * (x.ndim - 2)), x, 0).astype(x.dtype)
  return out
