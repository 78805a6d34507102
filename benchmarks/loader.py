"""Windows per second through the Grain pipeline, against a naive loader and the limit.

    python benchmarks/loader.py [--config configs/local.py] [--windows 512]

All three read the same windows of the same generated corpus in one run:
  pipeline  the training pipeline (WindowSource -> shuffle -> map -> batch, Grain threads);
  naive     each window read straight from annotation.hdf5 and the six MP4s (h5py slices,
            PyAV seek + decode + resize, audio decoded from its file), what training would
            do without shards;
  limit     TensorStore alone: the same reads of the same chunks (decompressed), issued
            `threads` windows at a time, with no transform, batching or Grain.
Rates are windows per wall second and per CPU second of this process (all its threads):
the per-CPU-second figure is the per-core rate. Goals: pipeline >= 50x naive, and >= half
the limit. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import corpus as corpus_lib  # noqa: E402
from configs import local  # noqa: E402
from xefm_jax.data import episode as episode_lib  # noqa: E402
from xefm_jax.data import pipeline  # noqa: E402
from xefm_jax.data import shards  # noqa: E402
from xefm_jax.data import source as source_lib  # noqa: E402
from xefm_jax.data.streams import resample  # noqa: E402


def timed(fn):
  wall, cpu = time.perf_counter(), time.process_time()
  n = fn()
  return {"windows": n, "wall_s": time.perf_counter() - wall,
          "cpu_s": time.process_time() - cpu}


def rates(r: dict) -> dict:
  return dict(r, per_wall_s=r["windows"] / r["wall_s"], per_cpu_s=r["windows"] / r["cpu_s"])


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--windows", type=int, default=512)
  p.add_argument("--naive-windows", type=int, default=16)
  p.add_argument("--threads", type=int, default=8)
  args = p.parse_args()
  cfg = local.get_config().data
  cfg.read_threads, cfg.prefetch, cfg.batch_size = args.threads, args.threads, 8
  raw = corpus_lib.raw_corpus()
  root = corpus_lib.shard_corpus(raw, shards.ShredOptions(
      video_size=cfg.view_size, depth_size=cfg.depth_size, caption_len=cfg.caption_len))
  corpus = source_lib.Corpus(root)
  spec = corpus.window_spec(cfg)
  src = source_lib.WindowSource(corpus, "train", spec, cfg.window_stride)
  order = np.random.default_rng(0).permutation(len(src))
  n = min(args.windows, len(src)) // cfg.batch_size * cfg.batch_size
  print(f"corpus {root.name}: {len(src)} train windows; measuring {n} "
        f"({spec.frames} frames of {len(spec.views)} views at {spec.view_size} px, next "
        f"window and {spec.future} future frames)")

  it = iter(pipeline.make_dataset(corpus, "train", cfg, train=True, seed=0, process_index=0,
                                  process_count=1))
  next(it)  # warm up: threads started, shards opened

  def run_pipeline():
    for _ in range(n // cfg.batch_size):
      next(it)
    return n
  pipe = rates(timed(run_pipeline))

  def run_limit():
    arrays = {}
    done = 0
    for k in range(0, n, args.threads):
      futures = []
      for i in order[k:k + args.threads]:
        shard, offset, _ = src._episodes[int(src.episode_ids[i])]
        if shard not in arrays:
          arrays[shard] = {x.name: shards.open_array(root / shard, x.name)
                           for x in corpus.layout.arrays}
        a, s = offset + int(src.starts[i]), spec.frame_stride
        for x, how in corpus.layout.read_as.items():
          rows = {source_lib.LOW_DIM: slice(a, a + src.span_low, s),
                  source_lib.FRAMES: slice(a, a + src.span_frames, s)}.get(
                      how, slice(a, a + src.span_signal))
          futures.append(arrays[shard][x][rows].read())
        futures.append(arrays[shard]["flags"][a:a + src.span].read())
      for f in futures:
        f.result()
      done += len(order[k:k + args.threads])
    return done
  run_limit()  # warm the page cache the same way the pipeline's warm-up did
  limit = rates(timed(run_limit))

  def run_naive():
    for i in order[:args.naive_windows]:
      e = corpus.episodes[int(src.episode_ids[i])]
      start = int(src.starts[i])
      with episode_lib.Episode(raw / e["episode"]) as ep:
        es = resample.EpisodeStreams(ep, corpus.options, corpus.labels)
        es.block(start, start + max(src.span_low, src.span_frames))
    return args.naive_windows
  naive = rates(timed(run_naive))

  for name, r in (("pipeline", pipe), ("limit (TensorStore alone)", limit),
                  ("naive (HDF5 + MP4)", naive)):
    print(f"{name:28s} {r['per_wall_s']:9.1f} windows/s  {r['per_cpu_s']:9.1f} windows/CPU-s "
          f"({r['windows']} windows, {r['wall_s']:.2f} s wall, {r['cpu_s']:.2f} s CPU)")
  result = {
      "benchmark": "loader", "cpus": os.cpu_count(), "windows": n,
      "pipeline_windows_per_s": pipe["per_wall_s"], "pipeline_windows_per_cpu_s": pipe["per_cpu_s"],
      "limit_windows_per_s": limit["per_wall_s"], "limit_windows_per_cpu_s": limit["per_cpu_s"],
      "naive_windows_per_s": naive["per_wall_s"], "naive_windows_per_cpu_s": naive["per_cpu_s"],
      "pipeline_over_naive": pipe["per_cpu_s"] / naive["per_cpu_s"],
      "pipeline_over_naive_wall": pipe["per_wall_s"] / naive["per_wall_s"],
      "pipeline_over_limit": pipe["per_cpu_s"] / limit["per_cpu_s"],
      "pipeline_over_limit_wall": pipe["per_wall_s"] / limit["per_wall_s"],
  }
  print(f"pipeline / naive: {result['pipeline_over_naive']:.1f}x per core "
        f"({result['pipeline_over_naive_wall']:.1f}x wall; goal >= 50x)")
  print(f"pipeline / limit: {result['pipeline_over_limit']:.2f} per core "
        f"({result['pipeline_over_limit_wall']:.2f} wall; goal >= 0.5)")
  print(json.dumps(result))


if __name__ == "__main__":
  main()
