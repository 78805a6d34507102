"""Feature extraction: a frozen per-frame video encoder run once over a shard corpus.

    python data_pipelines/extract.py --config=configs/local.py:vit \\
        --config.model.init_from='({"path": "siglip.npz", "mapping": ...},)' \\
        --shards=SHARDS --name=siglip [--task_index=I --task_count=N] [--frames_per_batch=64]

The encoder is the config's video tower (modalities.video.tokenizer = "video_vit": a
big_vision ViT per frame), its parameters read from config.model.init_from exactly as a
training run would load them (train/warm_start.py; every ViT parameter must come from a
source: features of a random encoder are refused). Every frame of every view of every
shard goes through it once; its patch tokens are written beside the shards, with
provenance (data/features.py): SHARDS/features/NAME/<shard>/{video/, provenance.json}.

Reading, encoding and writing overlap: the next block of pixels is read and the previous
block's features are written by TensorStore's I/O threads while the encoder runs.

An array job: task I of N takes shards I, I+N, ... of the manifest. A shard's features are
written under `.tmp-<shard>-<pid>` and renamed when complete; a re-run skips the shards
already done by the same encoder and refuses those done by another.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from xefm_jax import host  # noqa: E402

host.configure()  # XLA:CPU settings, before the first computation (xefm_jax/host.py)

from absl import flags, logging  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
from ml_collections import config_flags  # noqa: E402
import numpy as np  # noqa: E402
import tensorstore as ts  # noqa: E402

from xefm_jax import console, errors  # noqa: E402
from xefm_jax.data import features as features_lib  # noqa: E402
from xefm_jax.data import shards as shards_lib  # noqa: E402
from xefm_jax.data import source as source_lib  # noqa: E402
from xefm_jax.modalities import video_vit  # noqa: E402
from xefm_jax.train import warm_start  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_SHARDS = flags.DEFINE_string("shards", None, "Shard corpus (default: config.data.shards).")
_NAME = flags.DEFINE_string("name", None, "Name of the features (SHARDS/features/NAME).")
_TASK_INDEX = flags.DEFINE_integer("task_index", 0, "This task's index in the array job.")
_TASK_COUNT = flags.DEFINE_integer("task_count", 1, "Tasks of the array job.")
_FRAMES = flags.DEFINE_integer("frames_per_batch", 64, "Frames (x views) per encoder call.")


def encoder_params(config: ml_collections.ConfigDict, corpus: source_lib.Corpus
                   ) -> dict[str, np.ndarray]:
  """The ViT's parameters {name below its prefix: array}, from config.model.init_from."""
  data = config.data.copy_and_resolve_references()
  data.video_features = None  # the encoder reads pixels (its features may not exist yet)
  params = warm_start.vit_params(config, corpus.window_spec(data))
  if not params:
    raise features_lib.FeatureError(
        "config.model.init_from: no source gives the video ViT's parameters (model/video/"
        "tokenizer/vit/...); features of an untrained encoder are of no use: give the "
        "checkpoint in config.model.init_from")
  return params


@functools.lru_cache(maxsize=4)
def encode_fn(encoder_json: str, param_dtype: str):
  """(params, frames (M, H, W, 3) uint8) -> (M, S, D) float32: the tokenizer's ViT on the
  tokenizer's pixel scaling (video.VideoTokenizer.pixels), for a `features.
  encoder_description` (as JSON)."""
  encoder = json.loads(encoder_json)
  dtype, vit_cfg = jnp.dtype(encoder["dtype"]), encoder["vit"]
  vit = video_vit.ViT(vit_cfg["width"], vit_cfg["depth"], vit_cfg["num_heads"],
                      vit_cfg["mlp_dim"], encoder["patch"], dtype=dtype,
                      param_dtype=jnp.dtype(param_dtype))

  @jax.jit
  def encode(params, frames):
    x = frames.astype(dtype) * (2.0 / 255.0) - 1.0
    return vit.apply({"params": params}, x).astype(jnp.float32)
  return encode


def extract_shard(root: pathlib.Path, name: str, shard: str, encode, params,
                  provenance: dict, frames_per_batch: int) -> bool:
  """Features of one shard; False when they were already there (same encoder)."""
  out_dir = features_lib.folder(root, name)
  done = out_dir / shard
  if done.is_dir():
    features_lib.check(done, provenance["encoder"], provenance["params_sha256"])
    return False
  pixels = shards_lib.open_array(root / shard, "video")
  frames, views = pixels.shape[:2]
  tmp = out_dir / f"{shards_lib.TMP_PREFIX}{shard}-{os.getpid()}"
  out, writes = None, []
  starts = list(range(0, frames, frames_per_batch))

  def read(a):  # a TensorStore future: the read runs on its I/O threads
    return pixels[a:min(a + frames_per_batch, frames)].read()

  pending = read(starts[0]) if starts else None
  for i, a in enumerate(starts):
    block = pending.result()  # (f, V, H, W, 3)
    pending = read(starts[i + 1]) if i + 1 < len(starts) else None  # next block meanwhile
    f = len(block)
    flat = block.reshape(f * views, *block.shape[2:])
    if f < frames_per_batch:  # one compiled shape: pad the last block
      flat = np.concatenate([flat, np.zeros(((frames_per_batch - f) * views,)
                                            + flat.shape[1:], flat.dtype)])
    tokens = np.asarray(encode(params, flat))[:f * views]
    tokens = tokens.reshape(f, views, *tokens.shape[1:])  # (f, V, S, D)
    if out is None:
      out = ts.open(features_lib.array_spec(tmp, (frames, views, *tokens.shape[2:]),
                                            frames_per_batch)).result()
    writes.append(out[a:a + f].write(tokens))  # committed while the next block encodes
  for write in writes:
    write.result()
  shards_lib.write_json_atomic(tmp / features_lib.PROVENANCE,
                               dict(provenance, shard=shard, shape=list(out.shape)))
  os.rename(tmp, done)
  return True


def run(config: ml_collections.ConfigDict, root: str | os.PathLike, name: str,
        task_index: int = 0, task_count: int = 1, frames_per_batch: int = 64) -> list[str]:
  """Extracts this task's shards; returns the names of those it wrote."""
  root = pathlib.Path(root)
  if not 0 <= task_index < task_count:
    raise errors.UsageError(f"--task_index={task_index}: expected 0 <= index < --task_count="
                            f"{task_count}")
  corpus = source_lib.Corpus(root)
  encoder = features_lib.encoder_description(config.model)
  params = encoder_params(config, corpus)
  provenance = {"encoder": encoder, "params_sha256": features_lib.params_sha256(params),
                "sources": [str(dict(s).get("path")) for s in config.model.init_from],
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
  encode = encode_fn(json.dumps(encoder, sort_keys=True), str(config.model.param_dtype))
  params = warm_start.nested(params)
  names = [s["name"] for s in shards_lib.load_manifest(root)["shards"]][task_index::task_count]
  features_lib.folder(root, name).mkdir(parents=True, exist_ok=True)
  written = []
  for shard in names:
    t = time.perf_counter()
    if extract_shard(root, name, shard, encode, params, provenance, frames_per_batch):
      written.append(shard)
      logging.info("%s: features written in %.1f s", shard, time.perf_counter() - t)
    else:
      logging.info("%s: features already there (same encoder)", shard)
  return written


def main(argv):
  del argv
  console.quiet_libraries()
  host.restrict_compilation_cache()  # a cache from the environment: one-device CPU only
  config = _CONFIG.value
  root = _SHARDS.value or config.data.shards
  if not root or not _NAME.value:
    raise errors.UsageError("give --shards (or config.data.shards) and --name")
  written = run(config, root, _NAME.value, _TASK_INDEX.value, _TASK_COUNT.value,
                _FRAMES.value)
  print(json.dumps({"features": str(features_lib.folder(root, _NAME.value)),
                    "written": written}))


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  errors.run(main)
