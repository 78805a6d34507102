"""Export the corpus as a LeRobot v2.1 dataset, the layout GR00T reads (SmolVLA, openpi, GR00T).

    python data_pipelines/export/lerobot.py --shards SHARDS --out DIR [--raw RAW]
        [--views stereo_left] [--size 320x240] [--split all|train|val|test]
        [--chunk 16] [--step 1] [--rotation rotvec|rot6d] [--fingers all|tips]
        [--task-index I --task-count N] [--merge-only] [--quiet]

The layout (../shared/DOWNSTREAM.md; LeRobot codebase v2.1):

  meta/info.json            codebase_version v2.1, fps, totals, data_path / video_path
                            templates, `splits` (the corpus' session splits as contiguous
                            episode ranges: episodes are numbered train, then val, then test)
                            and `features` (dtype, shape, names per column and video key)
  meta/episodes.jsonl       episode_index, tasks, length (+ split and source episode)
  meta/episodes_stats.jsonl per-episode statistics of observation.state and action (v2.1)
  meta/tasks.jsonl          task_index -> task: the corpus' main tasks, subtasks, action
                            classes and "unknown" (fixed by the vocabularies)
  meta/modality.json        GR00T: state / action slices {start, end} of the action space,
                            the video key map and the annotation keys
  meta/stats.json           GR00T's normalisation statistics: TRAIN episodes only (GR00T
                            computes its own over every episode when this file is missing)
  meta/action_space.json, meta/normalization_stats.json, meta/retargeting_report.json
                            the action space (xefm_jax/data/actions.py)
  data/chunk-000/episode_000000.parquet   one row per exported frame: observation.state,
        observation.state_mask, action, action_mask, timestamp, frame_index, episode_index,
        index, task_index (the frame's main task), next.done,
        annotation.human.action.task_description (task index of the current subtask, else
        the action class, else "unknown")
  videos/chunk-000/observation.images.<view>/episode_000000.mp4   H.264, one frame per row,
        cut from the raw episode with PyAV at --size

Frames are exported every `--step` corpus frames (the action rate); action row t is the
step t -> t + 1 (the last row's is masked). Written like every export (export/common.py):
one part per episode, resumable, atomic files, array tasks; whichever task finds every
episode done writes meta/ and lerobot_manifest.json. A failed episode stops the merge (a
LeRobot dataset cannot skip an episode index): fix it and run again.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys
from fractions import Fraction
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import tqdm

from data_pipelines.export import common
from data_pipelines.export import json_tasks
from xefm_jax.data import actions as actions_lib
from xefm_jax.data import shards
from xefm_jax.data import source as source_lib
from xefm_jax.data import xperience

CODEBASE_VERSION = "v2.1"
CHUNKS_SIZE = 1000
DATA_PATH = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
VIDEO_PATH = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
ANNOTATION = "annotation.human.action.task_description"
EPISODES, MANIFEST = "meta/episodes.jsonl", "lerobot_manifest.json"
STAT_KEYS = ("mean", "std", "min", "max", "q01", "q99")


Options = common.PolicyOptions


def video_key(view: str) -> str:
  return f"observation.images.{view}"


def exported_frames(length: int, step: int) -> int:
  return len(range(0, length, step))


def features(space: actions_lib.ActionSpace, opts: Options) -> dict[str, Any]:
  """info.json `features`: every parquet column and video key."""
  w, h = opts.size
  out: dict[str, Any] = {
      video_key(v): {"dtype": "video", "shape": [h, w, 3],
                     "names": ["height", "width", "channel"],
                     "info": {"video.fps": space.rate_hz, "video.height": h, "video.width": w,
                              "video.channels": 3, "video.codec": "h264",
                              "video.pix_fmt": "yuv420p", "video.is_depth_map": False,
                              "has_audio": False}}
      for v in opts.views}
  out.update({
      "observation.state": {"dtype": "float32", "shape": [space.state_dim],
                            "names": space.state_names()},
      "observation.state_mask": {"dtype": "bool", "shape": [3],
                                 "names": ["left", "right", "head"]},
      "action": {"dtype": "float32", "shape": [space.action_dim],
                 "names": space.action_names()},
      "action_mask": {"dtype": "bool", "shape": [2], "names": list(xperience.HANDS)},
      "timestamp": {"dtype": "float32", "shape": [1], "names": None},
      "frame_index": {"dtype": "int64", "shape": [1], "names": None},
      "episode_index": {"dtype": "int64", "shape": [1], "names": None},
      "index": {"dtype": "int64", "shape": [1], "names": None},
      "task_index": {"dtype": "int64", "shape": [1], "names": None},
      "next.done": {"dtype": "bool", "shape": [1], "names": None},
      ANNOTATION: {"dtype": "int64", "shape": [1], "names": None},
  })
  return out


SCHEMA_TYPES = {"float32": pa.float32(), "int64": pa.int64(), "bool": pa.bool_()}


def arrow_schema(feats: Mapping[str, Any]) -> pa.Schema:
  """The parquet schema of `features` (vectors as lists, scalars as values)."""
  fields = []
  for name, f in feats.items():
    if f["dtype"] == "video":
      continue
    t = SCHEMA_TYPES[f["dtype"]]
    fields.append(pa.field(name, pa.list_(t) if f["names"] is not None else t))
  return pa.schema(fields)


def modality(space: actions_lib.ActionSpace, opts: Options) -> dict[str, Any]:
  """GR00T's meta/modality.json."""
  rot = {"rotvec": "axis_angle", "rot6d": "rotation_6d"}[space.rotation]
  state = {k: {"start": a, "end": b, **({"rotation_type": "rotation_6d"} if "rotation" in k
                                        else {})}
           for k, (a, b) in space.state_slices().items()}
  action = {k: {"start": a, "end": b, "absolute": k.endswith("fingers"),
                **({"rotation_type": rot} if "rotation" in k else {})}
            for k, (a, b) in space.action_slices().items()}
  return {"state": state, "action": action,
          "video": {v: {"original_key": video_key(v)} for v in opts.views},
          "annotation": {"human.action.task_description": {}}}


def episode_plan(corpus: source_lib.Corpus, order: Sequence[int], step: int
                 ) -> dict[int, tuple[int, int]]:
  """Corpus episode index -> (episode_index, global index of its first row)."""
  out, first = {}, 0
  for k, i in enumerate(order):
    out[i] = (k, first)
    first += exported_frames(corpus.episodes[i]["length"], step)
  return out


def _vector_stats(x: np.ndarray) -> dict[str, Any]:
  return {"min": x.min(0).tolist(), "max": x.max(0).tolist(), "mean": x.mean(0).tolist(),
          "std": x.std(0).tolist(), "count": [int(len(x))]}


def export_episode(out: pathlib.Path, corpus: source_lib.Corpus, index: int,
                   plan: tuple[int, int], raw: Optional[pathlib.Path], opts: Options,
                   tasks: Mapping[str, int]) -> dict[str, Any]:
  """Parquet and videos of corpus episode `index`; returns its episodes.jsonl row (with
  its per-episode statistics under `stats`)."""
  ep = corpus.episodes[index]
  space = opts.space(corpus.options.fps)
  episode_index, first = plan
  stored = corpus.read_episode(index, ("labels",) + actions_lib.EPISODE_ARRAYS)
  arr = actions_lib.episode_arrays(space, stored)
  frames = arr["frame_index"]
  n = len(frames)
  main, instr = common.frame_language(corpus.labels, stored, frames)
  done = np.zeros(n, bool)
  done[-1] = True
  table = pa.table({
      "observation.state": pa.array(list(arr["state"]), pa.list_(pa.float32())),
      "observation.state_mask": pa.array(list(arr["state_mask"]), pa.list_(pa.bool_())),
      "action": pa.array(list(arr["action"]), pa.list_(pa.float32())),
      "action_mask": pa.array(list(arr["action_mask"]), pa.list_(pa.bool_())),
      "timestamp": pa.array(np.arange(n, dtype=np.float32) / np.float32(space.rate_hz)),
      "frame_index": pa.array(np.arange(n, dtype=np.int64)),
      "episode_index": pa.array(np.full(n, episode_index, np.int64)),
      "index": pa.array(first + np.arange(n, dtype=np.int64)),
      "task_index": pa.array(np.array([tasks[t] for t in main], np.int64)),
      "next.done": pa.array(done),
      ANNOTATION: pa.array(np.array([tasks[t] for t in instr], np.int64)),
  }, schema=arrow_schema(features(space, opts)))
  chunk = episode_index // CHUNKS_SIZE
  path = out / DATA_PATH.format(episode_chunk=chunk, episode_index=episode_index)
  with common.atomic(path) as tmp:
    pq.write_table(table, tmp)
  video_errors = {}
  w, h = opts.size
  for view in opts.views:
    if raw is not None:
      src = raw / ep["episode"] / f"{view}{xperience.VIDEO_SUFFIX}"
      rgb, err = common.read_view(src, (h, w), corpus.options.frame_stride * opts.step, n)
    else:
      rgb, err = np.zeros((n, h, w, 3), np.uint8), "no raw episode root"
    if err:
      video_errors[view] = err
    json_tasks.write_mosaic(
        out / VIDEO_PATH.format(episode_chunk=chunk, video_key=video_key(view),
                                episode_index=episode_index),
        list(rgb), Fraction(space.rate_hz).limit_denominator(1001))
  return {"episode_index": episode_index, "tasks": list(dict.fromkeys(main)), "length": n,
          "split": ep["split"], "episode_id": common.episode_key(ep["episode"]),
          "source_episode_id": ep["episode"], "first_index": first,
          "video_errors": video_errors,
          "stats": {"observation.state": _vector_stats(arr["state"]),
                    "action": _vector_stats(arr["action"])}}


def _splits(rows: Sequence[Mapping[str, Any]]) -> dict[str, str]:
  """Contiguous episode ranges per split, as LeRobot's info.json writes them ("a:b")."""
  out: dict[str, list[int]] = {}
  for r in rows:
    out.setdefault(r["split"], []).append(r["episode_index"])
  for s, idx in out.items():
    if idx != list(range(min(idx), max(idx) + 1)):
      raise common.ExportError(f"split {s}: episodes {idx} are not contiguous")
  return {s: f"{min(i)}:{max(i) + 1}" for s, i in out.items()}


def write_meta(out: pathlib.Path, corpus: source_lib.Corpus, opts: Options,
               rows: list[dict[str, Any]], tasks: Sequence[str], order: Sequence[int]) -> None:
  """Everything under meta/ once every episode is written."""
  space = opts.space(corpus.options.fps)
  stats = common.write_action_space(out / "meta", corpus, space, order)
  feats = features(space, opts)
  info = {
      "codebase_version": CODEBASE_VERSION, "robot_type": "human_hands_egocentric",
      "total_episodes": len(rows), "total_frames": sum(r["length"] for r in rows),
      "total_tasks": len(tasks), "total_videos": len(rows) * len(opts.views),
      "total_chunks": (len(rows) - 1) // CHUNKS_SIZE + 1 if rows else 0,
      "chunks_size": CHUNKS_SIZE, "fps": space.rate_hz, "splits": _splits(rows),
      "data_path": DATA_PATH, "video_path": VIDEO_PATH, "features": feats}
  common.write_json(out / "meta" / "info.json", info)
  common.write_jsonl(out / "meta" / "tasks.jsonl",
                     [{"task_index": i, "task": t} for i, t in enumerate(tasks)])
  common.write_jsonl(out / "meta" / "episodes_stats.jsonl",
                     [{"episode_index": r["episode_index"], "stats": r["stats"]} for r in rows])
  common.write_jsonl(out / EPISODES, [{k: v for k, v in r.items() if k != "stats"}
                                      for r in rows])
  common.write_json(out / "meta" / "modality.json", modality(space, opts))
  common.write_json(out / "meta" / "stats.json", {
      "observation.state": {k: stats["state"][k] for k in STAT_KEYS},
      "action": {k: stats["action"][k] for k in STAT_KEYS}})


def run(shards_dir: str, out: str, opts: Options = Options(), raw: Optional[str] = None,
        task: tuple[int, int] = (0, 1), merge_only: bool = False, progress: bool = True,
        command: Optional[Sequence[str]] = None) -> dict[str, Any]:
  """The whole export (module docstring); returns a summary."""
  corpus = common.open_corpus(shards_dir)
  opts.check(corpus)
  options = dataclasses.asdict(opts)
  job = common.Job(out, "lerobot", options, common.corpus_source(corpus), task=task,
                   command=command)
  order = common.episodes_by_split(corpus, opts.split)
  if not order:
    raise common.ExportError(f"{corpus.root}: no episodes in split '{opts.split}'")
  units = {common.episode_key(corpus.episodes[i]["episode"]): i for i in order}
  plan = episode_plan(corpus, order, opts.step)
  tasks = common.task_table(corpus.labels)
  task_ids = {t: i for i, t in enumerate(tasks)}
  todo = [] if merge_only else job.todo(list(units))
  done = 0
  if todo:
    raw_dir = common.raw_root(corpus, raw)
    for unit in tqdm.tqdm(todo, desc="lerobot", unit="episode", disable=not progress):
      i = units[unit]
      try:
        row = export_episode(job.out, corpus, i, plan[i], raw_dir, opts, task_ids)
      except (shards.ShardError, OSError) as e:
        job.fail(unit, f"{type(e).__name__}: {e}")
        continue
      job.write_part(unit, [row])
      done += 1
  failed = [u for u in units if not job.part(u).exists()]
  manifest = None
  if not failed:
    manifest = job.merge(list(units), EPISODES, {
        "format": f"LeRobot {CODEBASE_VERSION} (GR00T: meta/modality.json)",
        "frame_split_counts": _frame_counts(_rows(job, units)),
        "notes": ["Normalisation statistics (meta/stats.json, meta/normalization_stats.json) "
                  "come from train episodes only; meta/episodes_stats.jsonl is per episode "
                  "(LeRobot aggregates it over the episodes it loads: load the train range).",
                  "Holds derived video of gated data: not a public package."]}, MANIFEST)
    rows = _rows(job, units)
    write_meta(job.out, corpus, opts, rows, tasks, order)
  return {"episodes": len(units), "exported_now": done, "failed_now": len(todo) - done,
          "merged": manifest is not None,
          "frames": sum(r["length"] for r in _rows(job, units)) if manifest else None,
          "split_counts": manifest["split_counts"] if manifest else None,
          "waiting_for": failed}


def _rows(job: common.Job, units: Mapping[str, int]) -> list[dict[str, Any]]:
  return sorted((r for u in units for r in common.read_jsonl(job.part(u))),
                key=lambda r: r["episode_index"])


def _frame_counts(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
  out: dict[str, int] = {}
  for r in rows:
    out[r["split"]] = out.get(r["split"], 0) + r["length"]
  return dict(sorted(out.items()))


def main(argv: Sequence[str]) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  common.policy_flags(p)
  args = p.parse_args(argv)
  return common.cli("lerobot", run, args, Options(**common.policy_options(args)), argv,
                    lambda s: (f"{s['episodes']} episodes, {s['frames']} frames "
                               f"({common.counts_text(s['split_counts'])} episodes) in "
                               f"{args.out}"))


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
