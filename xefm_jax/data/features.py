"""Per-frame features of a frozen video encoder, stored beside a shard corpus.

    SHARDS/features/<name>/shard-00000/video/   zarr v3 (frames, V, S, D) float32: the
                                                frozen ViT's patch tokens of every frame
                                                and view (data_pipelines/extract.py)
    SHARDS/features/<name>/shard-00000/provenance.json

Frames are the shard's own rows (axis 0 of its `video` array), so a window reads its
features with the same indices as its pixels. Provenance names the encoder (the video
modality's config: tokenizer, patch, ViT sizes, compute dtype), the sha256 of its
parameters (names and bytes, `params_sha256`) and the sources they were loaded from; a
reader refuses features whose encoder is not the one it expects (`check`). A shard's
feature folder exists only when complete (written under `.tmp-<shard>-<pid>`, renamed).
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from typing import Any, Mapping

import ml_collections
import numpy as np
import tensorstore as ts

from xefm_jax import errors

FEATURES_DIR, PROVENANCE = "features", "provenance.json"
ARRAY = "video"


class FeatureError(errors.Error):
  """Features that cannot be used; the message names the folder and what differs."""


def folder(root: str | pathlib.Path, name: str) -> pathlib.Path:
  return pathlib.Path(root) / FEATURES_DIR / name


def encoder_description(model: ml_collections.ConfigDict) -> dict[str, Any]:
  """What makes two encoders the same: the video tokenizer's config and the compute dtype."""
  video = model.modalities.video
  if video.get("tokenizer", None) != "video_vit":
    raise FeatureError("config.model.modalities.video.tokenizer: is "
                       f"{video.get('tokenizer', None)!r}, expected 'video_vit' (features are "
                       "the per-frame ViT's tokens); use configs/local.py:vit or set it")
  return {"tokenizer": "video_vit", "patch": int(video.patch),
          "vit": {k: int(v) for k, v in sorted(video.vit.items())},
          "dtype": str(model.dtype)}


def params_sha256(params: Mapping[str, Any]) -> str:
  """sha256 over the parameters' names, shapes, dtypes and bytes, in name order."""
  h = hashlib.sha256()
  for name in sorted(params):
    x = np.ascontiguousarray(np.asarray(params[name]))
    h.update(f"{name}:{x.shape}:{x.dtype}\n".encode())
    h.update(x.tobytes())
  return h.hexdigest()


def array_spec(path: pathlib.Path, shape: tuple[int, ...], chunk_frames: int) -> dict:
  return {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path / ARRAY)},
          "metadata": {"shape": list(shape), "data_type": "float32",
                       "chunk_grid": {"name": "regular", "configuration": {
                           "chunk_shape": [chunk_frames, 1, *shape[2:]]}},
                       "codecs": [{"name": "bytes", "configuration": {"endian": "little"}},
                                  {"name": "blosc", "configuration": {
                                      "cname": "zstd", "clevel": 3, "shuffle": "shuffle"}}],
                       "fill_value": 0},
          "create": True, "delete_existing": True}


def check(shard_dir: pathlib.Path, encoder: Mapping[str, Any],
          sha256: str | None = None) -> dict:
  """The provenance of one shard's features, after checking it names `encoder` (and the
  parameters `sha256`, when given); a FeatureError saying what differs otherwise."""
  path = shard_dir / PROVENANCE
  if not path.is_file():
    raise FeatureError(f"{path}: missing: features of this shard were not extracted (or not "
                       "completely); run data_pipelines/extract.py")
  doc = json.loads(path.read_text())
  if doc.get("encoder") != dict(encoder):
    raise FeatureError(f"{path}: made by another encoder: {doc.get('encoder')} here, "
                       f"{dict(encoder)} expected; extract features under another name for "
                       "this encoder")
  if sha256 is not None and doc.get("params_sha256") != sha256:
    raise FeatureError(f"{path}: made with other encoder parameters (params_sha256 "
                       f"{doc.get('params_sha256')}, expected {sha256}); re-extract them "
                       "from this checkpoint")
  return doc


def open_shard(root: str | pathlib.Path, name: str, shard: str,
               encoder: Mapping[str, Any], sha256: str | None = None) -> ts.TensorStore:
  """One shard's (frames, V, S, D) features for reading, provenance checked."""
  shard_dir = folder(root, name) / shard
  check(shard_dir, encoder, sha256)
  return ts.open({"driver": "zarr3", "kvstore": {"driver": "file",
                                                 "path": str(shard_dir / ARRAY)}},
                 open=True, read=True).result()
