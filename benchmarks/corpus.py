"""The generated corpus the benchmarks measure on, built once under runs/bench/ and reused."""

from __future__ import annotations

import pathlib

from data_pipelines import shred
from data_pipelines import synthesize
from xefm_jax.data import shards

ROOT = pathlib.Path(__file__).resolve().parents[1] / "runs" / "bench"


def raw_corpus(sessions: int = 4, episodes: int = 2, seconds: float = 30.0, seed: int = 0,
               profile: str = "small") -> pathlib.Path:
  out = ROOT / f"raw-{profile}-{sessions}x{episodes}x{seconds:g}s-seed{seed}"
  if not (out / ".complete").exists():
    synthesize.synthesize(out, sessions, episodes, seconds, seed, profile=profile, workers=2)
    (out / ".complete").touch()
  return out


def shard_corpus(raw: pathlib.Path, options: shards.ShredOptions) -> pathlib.Path:
  out = ROOT / f"shards-{raw.name}-v{options.video_size}-d{options.depth_size}"
  if not (out / shards.MANIFEST_FILE).exists():
    shred.run(raw, out, options=options, workers=2)
  return out
