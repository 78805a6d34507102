"""A shard corpus for a training run that was given none: synthesize -> gate -> shred.

    shards = prepare.prepare(workdir, config.data)

  config.data.shards set   -> that corpus, untouched
  config.data.raw set      -> gate + shred it into WORKDIR/data/shards
  neither                  -> synthesize config.data.synthesize into WORKDIR/data/raw first

Each stage is skipped when its output already exists (a restarted run does not redo them),
and each output appears only when complete: the raw root is marked by a `.complete` file
written last, the Stage-0 report is written atomically, and the shredder writes its shards
and manifest atomically. Shards are shredded at the config's window sizes (view, depth,
caption length), so the corpus matches the model that reads it.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any, Optional

from data_pipelines import shred
from data_pipelines import synthesize
from data_pipelines import validate
from xefm_jax.data import shards as shards_lib
from xefm_jax.data import splits as splits_lib

COMPLETE = ".complete"


def shred_options(data_cfg: Any) -> shards_lib.ShredOptions:
  """The shredder's sizes that the window contract checks against the config."""
  return shards_lib.ShredOptions(video_size=int(data_cfg.view_size),
                                 depth_size=int(data_cfg.depth_size),
                                 caption_len=int(data_cfg.caption_len))


def prepare(workdir: str | os.PathLike, data_cfg: Any, workers: Optional[int] = None,
            progress: bool = True) -> pathlib.Path:
  """The shard corpus root for `data_cfg` (see the module docstring)."""
  if data_cfg.shards:
    return pathlib.Path(data_cfg.shards)
  workers = workers or max(1, min(8, os.cpu_count() or 1))
  root = pathlib.Path(workdir) / "data"
  raw = pathlib.Path(data_cfg.raw) if data_cfg.raw else root / "raw"
  if not data_cfg.raw and not (raw / COMPLETE).exists():
    s = data_cfg.synthesize
    synthesize.synthesize(raw, sessions=s.sessions, episodes_per_session=s.episodes_per_session,
                          seconds=s.seconds, seed=s.seed, profile=s.profile, workers=workers,
                          progress=progress)
    (raw / COMPLETE).touch()
  report = root / "stage0.json"
  if not report.exists():
    root.mkdir(parents=True, exist_ok=True)
    validate.write_json_atomic(report, validate.validate_root(raw, workers=workers,
                                                              progress=progress))
  out = root / "shards"
  if not (out / shards_lib.MANIFEST_FILE).exists():
    split = splits_lib.SplitSpec(fractions=splits_lib.parse_fractions(data_cfg.split))
    shred.run(raw, out, report=str(report), options=shred_options(data_cfg), workers=workers,
              split_spec=split, progress=progress)
  return out
