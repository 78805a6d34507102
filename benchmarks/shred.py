"""Shredding time per episode against decode-only time of the same videos; bytes ratio.

    python benchmarks/shred.py [--episodes 4] [--video-size 64]

Both measured in this run, one process, on the same generated episodes:
  decode    the six MP4s of each episode decoded and resized by PyAV (media.VideoReader,
            the shredder's own decoder) and nothing else: the floor of any shredder;
  shred     data_pipelines/shred.shred_shard on one episode per shard: decode, HDF5 reads,
            resampling, labels, statistics, blosc-zstd compression, TensorStore writes.
Goal: shred / decode <= 1.5. Also shard bytes per raw byte. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import corpus as corpus_lib  # noqa: E402
from data_pipelines import shred  # noqa: E402
from data_pipelines import validate  # noqa: E402
from xefm_jax.data import media  # noqa: E402
from xefm_jax.data import shards  # noqa: E402
from xefm_jax.data import splits as splits_lib  # noqa: E402
from xefm_jax.data import xperience  # noqa: E402


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--episodes", type=int, default=4)
  p.add_argument("--video-size", type=int, default=64)
  p.add_argument("--profile", default="small")
  p.add_argument("--seconds", type=float, default=30.0)
  args = p.parse_args()
  raw = corpus_lib.raw_corpus(sessions=args.episodes, episodes=1, seconds=args.seconds,
                              profile=args.profile)
  episodes = validate.find_episodes(raw)[:args.episodes]
  options = shards.ShredOptions(video_size=args.video_size, depth_size=args.video_size // 2,
                                episodes_per_shard=1)

  decode_s = 0.0
  for ep in episodes:
    t = time.perf_counter()
    for view in xperience.VIEWS:
      path = ep / f"{view}.mp4"
      if path.exists():
        reader = media.VideoReader(path, args.video_size)
        reader.read(reader.info.num_frames)
        reader.close()
    decode_s += time.perf_counter() - t

  out = corpus_lib.ROOT / "shred-bench"
  shutil.rmtree(out, ignore_errors=True)
  out.mkdir(parents=True)
  report = validate.validate_root(raw, progress=False)
  keep = {f"{e.parent.name}/{e.name}" for e in episodes}
  report["episodes"] = [r for r in report["episodes"] if r["episode"] in keep]
  plan = shred.make_plan(raw, report, options, splits_lib.SplitSpec(), workers=1)
  shred.write_or_check_plan(out, plan)
  t = time.perf_counter()
  for s in plan["shards"]:
    shred.shred_shard(str(out), str(raw), plan, s["name"])
  shred_s = time.perf_counter() - t

  raw_bytes = sum(f.stat().st_size for e in episodes for f in pathlib.Path(e).rglob("*")
                  if f.is_file())
  shard_bytes = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
  n = len(episodes)
  result = {"benchmark": "shred", "episodes": n, "seconds_per_episode_audio": args.seconds,
            "video_size": args.video_size, "profile": args.profile,
            "decode_s_per_episode": decode_s / n, "shred_s_per_episode": shred_s / n,
            "shred_over_decode": shred_s / decode_s,
            "raw_bytes": raw_bytes, "shard_bytes": shard_bytes,
            "shard_bytes_per_raw_byte": shard_bytes / raw_bytes}
  print(f"decode only: {decode_s / n:.2f} s per episode; shred: {shred_s / n:.2f} s per "
        f"episode; shred / decode = {result['shred_over_decode']:.2f} (goal <= 1.5)")
  print(f"bytes: raw {raw_bytes / 1e6:.1f} MB -> shards {shard_bytes / 1e6:.1f} MB "
        f"({result['shard_bytes_per_raw_byte']:.2f} shard bytes per raw byte)")
  print(json.dumps(result))


if __name__ == "__main__":
  main()
