"""Shred raw episodes into TensorStore shards: decode once, train from shards forever.

    python data_pipelines/shred.py --raw DIR --out SHARDS [--report FILE.json] [--workers K]
        [--task-index I --task-count N] [--video-size PX] [--split train=0.8,val=0.1,test=0.1]

1. Gate: the Stage-0 report (`--report`, or the gate is run now); only passing episodes are
   shredded, the rest are listed in the manifest with their reasons.
2. Plan (`SHARDS/plan.json`): splits by session, label vocabularies over the passing
   episodes, the word vocabulary of the train split, episodes grouped into shards by split.
   The plan is a pure function of the raw root, the report and the options, so every task
   of an array job computes the same one (and refuses a different plan already on disk).
3. Shred: task I of N takes shards I, I+N, ...; `--workers` processes shred them in
   parallel. A shard is written under `.tmp-<name>-<pid>` and renamed when complete; a re-run
   skips complete shards; a kill loses only the shards in flight.
4. Merge: once every shard of the plan is complete, `manifest.json` is written (schema
   version, shards with the sha256 of their index, splits, vocabularies, provenance,
   train-split normalisation statistics). Any task that finishes last writes it;
   `--merge-only` writes it without shredding.

The Stage-0 report is tied to the raw root it was made from by its episodes' checksums
(`validate.episode_checksum`): a report of another raw root is refused, the same root at
another path is accepted. Every shard's index records its arrays' chunk files and their
sizes as written (`shards.chunk_record`).

    python data_pipelines/shred.py --verify SHARDS [--deep]

checks a corpus against those records (`shards.check_shard`): fast, every chunk file
listed and its size compared; `--deep`, every chunk decoded as well. Exit 0 when the corpus
is as written, 1 otherwise, one line per problem.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import multiprocessing
import os
import pathlib
import shutil
import sys
import time
from collections.abc import Sequence
from typing import Any, Optional

import numpy as np
import tensorstore as ts
import tqdm

from data_pipelines import validate
from xefm_jax import errors
from xefm_jax.data import episode as episode_lib
from xefm_jax.data import labels as labels_lib
from xefm_jax.data import shards
from xefm_jax.data import splits as splits_lib
from xefm_jax.data import stats as stats_lib
from xefm_jax.data import streams as streams_lib
from xefm_jax.data.streams import resample
from xefm_jax.data import text as text_lib

BLOCK_CHUNKS = 4  # chunks of frames decoded and written at a time (bounds memory)


# ----------------------------------------------------------------------------- plan


def _episode_facts(path: str, frame_stride: int, frame_slack: int) -> dict[str, Any]:
  """What planning needs of one passing episode: its labels, sentences and length."""
  with episode_lib.Episode(path, frame_slack=frame_slack) as ep:
    tl = ep.caption()
    return {
        "frames": ep.num_frames // frame_stride, "task": tl.task,
        "subtasks": list(tl.subtasks),
        "actions": sorted({labels_lib.action_class(a) for a in tl.action_labels} - {""}),
        "objects": sorted({o for s in tl.object_sets for o in s} - labels_lib.NOT_OBJECTS),
        "sentences": list(tl.interactions),
    }


def make_plan(raw: pathlib.Path, report: dict, options: shards.ShredOptions,
              split_spec: splits_lib.SplitSpec, workers: int) -> dict[str, Any]:
  rows = sorted(report["episodes"], key=lambda r: r["episode"])
  passing = [r for r in rows if r["status"] == "pass"]
  facts = [splits_lib.EpisodeFacts(r["episode"], r["session"], r["activity"],
                                   frozenset(r["objects"])) for r in rows]
  split = splits_lib.split_report(facts, split_spec)
  slack = report.get("config", {}).get("frame_tolerance", validate.GateConfig.frame_tolerance)
  paths = [str(raw / r["episode"]) for r in passing]
  args = [(p, options.frame_stride, slack) for p in paths]
  if workers > 1:
    with concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn")) as pool:
      info = list(pool.map(_episode_facts, *zip(*args))) if args else []
  else:
    info = [_episode_facts(*a) for a in args]

  train = [i for r, i in zip(passing, info) if split["assignment"][r["episode"]] == "train"]
  vocab = {
      "task": sorted({i["task"] for i in info}),
      "subtask": sorted({s for i in info for s in i["subtasks"]}),
      "action": sorted({a for i in info for a in i["actions"]}),
      "object": sorted({o for i in info for o in i["objects"]}),
      "word": text_lib.Vocab.build((s for i in train for s in i["sentences"]),
                                   max_size=options.vocab_size).words,
  }
  episodes, plan_shards = [], []
  for name in splits_lib.SPLITS:
    members = [(r, i) for r, i in zip(passing, info) if split["assignment"][r["episode"]] == name]
    for k in range(0, len(members), options.episodes_per_shard):
      group = members[k:k + options.episodes_per_shard]
      shard = {"name": f"shard-{len(plan_shards):05d}", "split": name,
               "episodes": [r["episode"] for r, _ in group],
               "frames": sum(i["frames"] for _, i in group)}
      plan_shards.append(shard)
      for r, i in group:
        episodes.append({"episode": r["episode"], "session": r["session"], "split": name,
                         "shard": shard["name"], "frames": i["frames"], "task": i["task"]})
  plan = {
      "schema_version": shards.SCHEMA_VERSION, "pipeline_version": shards.PIPELINE_VERSION,
      "raw": str(raw), "options": dataclasses.asdict(options), "splits": split,
      "vocabularies": vocab, "shards": plan_shards, "episodes": episodes,
      "failed": [{"episode": r["episode"], "reasons": r["reasons"]}
                 for r in rows if r["status"] != "pass"],
  }
  names = tuple(d.name for d in streams_lib.registered())
  if names != streams_lib.BUILTIN:  # an added stream: its columns follow the built-in ones
    plan["streams"] = list(names)
  return plan


def write_or_check_plan(out: pathlib.Path, plan: dict) -> None:
  """Writes the plan, or checks that the one on disk is the same (the raw root's path aside:
  the report's checksums, not its path, say which corpus it is)."""
  path = out / shards.PLAN_FILE
  if path.exists():
    existing = shards.read_json(path, "the shard plan")
    if {**existing, "raw": ""} != json.loads(json.dumps({**plan, "raw": ""}, sort_keys=True)):
      raise shards.ShardError(
          f"{path}: a different plan is already on disk (another raw root, report or options); "
          "use a new --out or delete the corpus")
    return
  shards.write_json_atomic(path, plan)


def check_report(raw: pathlib.Path, report: dict, where: pathlib.Path, fix: str) -> None:
  """Refuses a Stage-0 report that was not made from the raw root `raw`: its episodes must
  be the raw root's, with the same checksums (a report written before checksums: the same
  episode names)."""
  on_disk = {f"{p.parent.name}/{p.name}": p for p in validate.find_episodes(raw)}
  rows = report.get("episodes", [])
  missing = [r["episode"] for r in rows if r["episode"] not in on_disk]
  unlisted = sorted(set(on_disk) - {r["episode"] for r in rows})
  changed = [r["episode"] for r in rows if r["episode"] in on_disk and "checksum" in r
             and validate.episode_checksum(on_disk[r["episode"]]) != r["checksum"]]
  problems = [f"{len(x)} {what} (the first {x[0]})" for x, what in (
      (missing, f"of its {len(rows)} episodes are not under {raw}"),
      (unlisted, f"episodes under {raw} are not in it"),
      (changed, "episodes differ in their files")) if x]
  if problems:
    raise shards.ShardError(f"{where}: the Stage-0 report was made from another raw root "
                            f"({report.get('raw')}): {', '.join(problems)}; {fix}")


# ----------------------------------------------------------------------------- shred


def _group_meta(path: pathlib.Path) -> None:
  path.mkdir(parents=True, exist_ok=True)
  (path / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group",
                                              "attributes": {}}))


def shred_shard(out: str, raw: str, plan: dict, shard_name: str) -> dict[str, Any]:
  """Write one complete shard; returns its index. Runs in a worker process."""
  out_p, raw_p = pathlib.Path(out), pathlib.Path(raw)
  shard = next(s for s in plan["shards"] if s["name"] == shard_name)
  options = shards.ShredOptions(**plan["options"])
  labels = labels_lib.Labels.from_manifest(plan["vocabularies"])
  num_objects = len(labels.objects)
  layout = shards.layout(plan.get("streams", streams_lib.BUILTIN))
  tmp = out_p / f"{shards.TMP_PREFIX}{shard_name}-{os.getpid()}"
  shutil.rmtree(tmp, ignore_errors=True)
  _group_meta(tmp)
  arrays = {a.name: ts.open(shards.array_spec(tmp, a, shard["frames"], options,
                                              num_objects)).result()
            for a in layout.arrays}
  episodes, offset = [], 0
  block = options.chunk_frames * BLOCK_CHUNKS
  pending: list = []  # the previous block's writes: compressed while the next decodes
  for name in shard["episodes"]:
    src = raw_p / name
    with episode_lib.Episode(src) as ep:
      es = resample.EpisodeStreams(ep, options, labels)
      n = es.num_frames
      moments: dict[str, stats_lib.Moments] = {}
      valid = {k: 0.0 for d in layout.defs if d.group is not None for k in d.valid}
      for a in range(0, n, block):  # in order: each view is decoded once, sequentially
        b = min(n, a + block)
        data = es.block(a, b)
        for w in pending:  # never two blocks' writes at once: they may share a chunk
          w.result()
        pending = [arrays[k][offset + a:offset + b].write(v)
                   for k, v in layout.pack(data).items()]
        for k, m in stats_lib.moments(data, layout.defs).items():
          moments[k] = moments[k] + m if k in moments else m
        for k in valid:
          valid[k] += float(np.asarray(data[k], np.float64).mean() * (b - a))
      es.close()
      intrinsics = ep.calibration().depth
      episodes.append({
          "episode": name, "session": ep.session, "split": shard["split"], "offset": offset,
          "length": n, "views": list(ep.views),
          "stream_valid": {k: v / max(n, 1) for k, v in valid.items()},
          "depth_intrinsics": [float(intrinsics.K[0] / intrinsics.width),
                               float(intrinsics.K[1] / intrinsics.height),
                               float(intrinsics.K[2] / intrinsics.width),
                               float(intrinsics.K[3] / intrinsics.height)],
          "source": str(src), "annotation_bytes": ep.annotation_path.stat().st_size,
          "annotation_sha256": shards.sha256_file(ep.annotation_path),
          "raw_bytes": shards.dir_bytes(src),
          "pipeline_version": shards.PIPELINE_VERSION,
          "stats": {k: m.to_json() for k, m in moments.items()},
      })
      offset += n
  for w in pending:
    w.result()
  if offset != shard["frames"]:
    raise shards.ShardError(f"{shard_name}: wrote {offset} frames, the plan says "
                            f"{shard['frames']} (the raw root changed since planning?)")
  grids = {a.name: shards.chunk_grid(a, shard["frames"], options, num_objects)
           for a in layout.arrays}
  index = {"schema_version": shards.SCHEMA_VERSION, "name": shard_name, "split": shard["split"],
           "frames": offset, "episodes": episodes, "chunks": shards.chunk_record(tmp, grids)}
  (tmp / shards.INDEX_FILE).write_text(json.dumps(index, indent=1, sort_keys=True))
  final = out_p / shard_name
  os.rename(tmp, final)  # atomic on one file system: the shard appears complete or not at all
  return index


def is_complete(out: pathlib.Path, shard_name: str) -> bool:
  return (out / shard_name / shards.INDEX_FILE).is_file()


def merge(out: pathlib.Path) -> Optional[dict]:
  """Write manifest.json when every planned shard is complete; None while some are not."""
  plan = shards.read_json(out / shards.PLAN_FILE, "the shard plan")
  if not all(is_complete(out, s["name"]) for s in plan["shards"]):
    return None
  indexes = [shards.read_json(out / s["name"] / shards.INDEX_FILE, "a shard index")
             for s in plan["shards"]]
  episodes = [dict(e, shard=ix["name"]) for ix in indexes for e in ix["episodes"]]
  train_stats = [e["stats"] for e in episodes if e["split"] == "train"]
  manifest = {
      "schema_version": shards.SCHEMA_VERSION, "pipeline_version": shards.PIPELINE_VERSION,
      "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "raw": plan["raw"],
      "options": plan["options"], "splits": plan["splits"], "vocabularies": plan["vocabularies"],
      "shards": [{"name": ix["name"], "split": ix["split"], "frames": ix["frames"],
                  "episodes": len(ix["episodes"]), "bytes": shards.dir_bytes(out / ix["name"]),
                  "index_sha256": shards.sha256_file(out / ix["name"] / shards.INDEX_FILE)}
                 for ix in indexes],
      "episodes": [{k: v for k, v in e.items() if k != "stats"} for e in episodes],
      "stats": stats_lib.merge(train_stats), "failed": plan["failed"],
      **({"streams": plan["streams"]} if "streams" in plan else {}),
  }
  shards.write_json_atomic(out / shards.MANIFEST_FILE, manifest)
  return manifest


def run(raw: str | os.PathLike, out: str | os.PathLike, *, report: Optional[str] = None,
        options: shards.ShredOptions = shards.ShredOptions(),
        split_spec: splits_lib.SplitSpec = splits_lib.SplitSpec(), workers: int = 1,
        task_index: int = 0, task_count: int = 1, merge_only: bool = False,
        progress: bool = True) -> dict[str, Any]:
  """The whole job (see the module docstring); returns the closing summary."""
  start = time.time()
  raw, out = pathlib.Path(raw), pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  if merge_only:
    manifest = merge(out)
    if manifest is None:
      plan = shards.read_json(out / shards.PLAN_FILE, "the shard plan")
      missing = [s["name"] for s in plan["shards"] if not is_complete(out, s["name"])]
      raise shards.ShardError(f"{out}: {len(missing)} shards are not complete yet: "
                              f"{missing[:8]}{' ...' if len(missing) > 8 else ''}")
    return {"merged": True, "shards": len(manifest["shards"])}

  if report:
    gate = shards.read_json(pathlib.Path(report), "the Stage-0 report")
    check_report(raw, gate, pathlib.Path(report), f"pass the report of {raw} (python "
                 f"data_pipelines/validate.py --raw {raw} --report FILE), or no --report to "
                 "gate it now")
  else:
    gate_path = out / "stage0.json"
    if gate_path.exists():
      gate = shards.read_json(gate_path, "the Stage-0 report")
      check_report(raw, gate, gate_path, f"delete it (the gate then runs on {raw}) or use "
                   "another --out")
    else:
      gate = validate.validate_root(raw, workers=workers, progress=progress)
      validate.write_json_atomic(gate_path, gate)
  plan = make_plan(raw, gate, options, split_spec, workers)
  write_or_check_plan(out, plan)
  for stale in out.glob(shards.TMP_PREFIX + "shard-*"):
    name = stale.name[len(shards.TMP_PREFIX):].rsplit("-", 1)[0]
    owner = int(name.split("-")[1]) % task_count
    if owner == task_index:  # a leftover of this task's killed run
      shutil.rmtree(stale, ignore_errors=True)
  mine = [s["name"] for i, s in enumerate(plan["shards"]) if i % task_count == task_index]
  todo = [n for n in mine if not is_complete(out, n)]
  bar = tqdm.tqdm(total=len(mine), initial=len(mine) - len(todo), desc="shred", unit="shard",
                  disable=not progress)
  if workers > 1 and len(todo) > 1:
    with concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn")) as pool:
      futures = [pool.submit(shred_shard, str(out), str(raw), plan, n) for n in todo]
      for f in concurrent.futures.as_completed(futures):
        f.result()
        bar.update()
  else:
    for n in todo:
      shred_shard(str(out), str(raw), plan, n)
      bar.update()
  bar.close()
  manifest = merge(out)
  done = [out / n for n in mine]
  indexes = [shards.read_json(d / shards.INDEX_FILE, "a shard index") for d in done]
  return {
      "episodes": sum(len(ix["episodes"]) for ix in indexes),
      "failed_episodes": len(plan["failed"]), "shards": len(mine), "shredded_now": len(todo),
      "frames": sum(ix["frames"] for ix in indexes),
      "bytes_in": sum(e["raw_bytes"] for ix in indexes for e in ix["episodes"]),
      "bytes_out": sum(shards.dir_bytes(d) for d in done),
      "seconds": round(time.time() - start, 2), "manifest": manifest is not None,
  }


def verify(root: str | os.PathLike, deep: bool = False, progress: bool = True
           ) -> dict[str, Any]:
  """Checks every shard of a complete corpus against what the shredder wrote
  (`shards.check_shard`); returns the problems (one line each) and what was checked."""
  start = time.perf_counter()
  root = pathlib.Path(root)
  manifest = shards.load_manifest(root)
  chunks = {s["name"]: shards.stored_chunks(shards.read_json(
      root / s["name"] / shards.INDEX_FILE, "a shard index")["chunks"])
      for s in manifest["shards"]}
  bar = tqdm.tqdm(total=sum(chunks.values()), unit="chunk", unit_scale=True,
                  desc="verify (decode)" if deep else "verify", disable=not progress)
  problems = []
  for shard in manifest["shards"]:
    before = bar.n
    problems += shards.check_shard(root, shard, deep=deep, progress=bar.update)
    bar.update(before + chunks[shard["name"]] - bar.n)  # a damaged shard stops early
  bar.close()
  return {"shards": len(manifest["shards"]), "chunks": sum(chunks.values()),
          "bytes": sum(s["bytes"] for s in manifest["shards"]), "deep": deep,
          "problems": problems, "seconds": round(time.perf_counter() - start, 3)}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--raw", help="raw root: <session>/ep<k>/ directories")
  p.add_argument("--out", help="the shard corpus to write")
  p.add_argument("--verify", metavar="SHARDS",
                 help="check a complete corpus instead of shredding (exit 1 if damaged)")
  p.add_argument("--deep", action="store_true", help="--verify: decode every chunk too")
  p.add_argument("--report", help="Stage-0 report JSON (default: run the gate now)")
  p.add_argument("--workers", type=int, default=1)
  p.add_argument("--task-index", type=int, default=0)
  p.add_argument("--task-count", type=int, default=1)
  p.add_argument("--merge-only", action="store_true")
  p.add_argument("--video-size", type=int, default=shards.ShredOptions.video_size)
  p.add_argument("--depth-size", type=int, default=shards.ShredOptions.depth_size)
  p.add_argument("--frame-stride", type=int, default=shards.ShredOptions.frame_stride)
  p.add_argument("--caption-len", type=int, default=shards.ShredOptions.caption_len)
  p.add_argument("--episodes-per-shard", type=int,
                 default=shards.ShredOptions.episodes_per_shard)
  validate.add_split_arguments(p)
  p.add_argument("--quiet", action="store_true")
  errors.add_verbose_argument(p)
  args = p.parse_args(argv)
  if args.verify:
    if args.raw or args.out:
      p.error("--verify checks a corpus: give it alone, without --raw and --out")
    return args
  if args.deep:
    p.error("--deep goes with --verify SHARDS")
  if not args.raw or not args.out:
    p.error("--raw and --out are required (or --verify SHARDS)")
  if not pathlib.Path(args.raw).is_dir():
    p.error(f"--raw {args.raw}: not a directory")
  if not 0 <= args.task_index < args.task_count:
    p.error(f"--task-index {args.task_index} must lie in [0, --task-count {args.task_count})")
  for flag in ("workers", "video_size", "depth_size", "frame_stride", "caption_len",
               "episodes_per_shard"):
    if getattr(args, flag) < 1:
      p.error(f"--{flag.replace('_', '-')} must be at least 1")
  args.split_spec = validate.split_spec_from_args(p, args)
  return args


def main(argv: Sequence[str]) -> int:
  args = parse_args(argv)
  if args.verify:
    result = verify(args.verify, deep=args.deep, progress=not args.quiet)
    for problem in result["problems"]:
      print(errors.PREFIX + problem, file=sys.stderr)
    print(f"verify: {result['shards']} shards, {result['chunks']} chunk files, "
          f"{result['bytes'] / 1e6:.1f} MB: "
          f"{'damaged' if result['problems'] else 'as written'} "
          f"({'every chunk decoded' if args.deep else 'listing and sizes'}, "
          f"{result['seconds']:.2f} s)")
    print(json.dumps({k: v for k, v in result.items() if k != "problems"}
                     | {"problems": len(result["problems"])}))
    return 1 if result["problems"] else 0
  options = shards.ShredOptions(video_size=args.video_size, depth_size=args.depth_size,
                                frame_stride=args.frame_stride, caption_len=args.caption_len,
                                episodes_per_shard=args.episodes_per_shard)
  summary = run(args.raw, args.out, report=args.report, options=options,
                split_spec=args.split_spec,
                workers=args.workers, task_index=args.task_index, task_count=args.task_count,
                merge_only=args.merge_only, progress=not args.quiet)
  if "frames" in summary:
    print(f"shred: {summary['episodes']} episodes ({summary['failed_episodes']} failed the "
          f"gate), {summary['frames']} frames, {summary['bytes_in'] / 1e6:.1f} MB in, "
          f"{summary['bytes_out'] / 1e6:.1f} MB out, {summary['seconds']:.1f} s"
          + ("" if summary["manifest"] else " (manifest pending: other tasks still running)"))
  print(json.dumps(summary))
  return 0


if __name__ == "__main__":
  errors.cli(main)
