"""What every export shares: the job (plan, parts, merge, manifest), atomic files, the
corpus and its raw episodes, and the guard on packages meant for publication.

An export turns the shard corpus (and optionally a checkpoint) into another ecosystem's
format (../shared/DOWNSTREAM.md). Each one is a file of this package with a CLI, built on:

    job = common.Job(out, "json_tasks", options, common.corpus_source(corpus), task=(i, n))
    for unit in job.todo(units):                 # this task's units without a part
      job.write_part(unit, rows)                 # atomically: parts/<unit>.jsonl
      (or job.fail(unit, reason): recorded, retried by the next run, the job goes on)
    manifest = job.merge(units, "dataset.jsonl", extra)   # None while parts are missing

* Resumable: a unit (an episode) is done when its part file (parts/<kind>/<unit>.jsonl)
  exists; a re-run skips it. The options and the source are fixed in `<kind>_plan.json` at
  the first run; a re-run with others is refused instead of mixing two exports in one
  folder (exports of different kinds may share one).
* Array jobs: task i of n takes units i, i+n, ...; whichever task finds every part complete
  merges (or `--merge-only`).
* Atomic: every file is written under a temporary name beside its target and renamed; the
  merged JSON lines and the manifest appear only when complete.
* The manifest (like the shredder's): record and episode counts per split, the source corpus
  and checkpoint, the export's version, the time and the command.
* Splits are the corpus' session splits: a unit's split is its episode's split in the shard
  manifest, never recomputed here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import sys
import time
from collections import Counter
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence

import numpy as np

from xefm_jax.data import actions as actions_lib
from xefm_jax.data import shards
from xefm_jax.data import source as source_lib
from xefm_jax.data import xperience

EXPORT_VERSION = "export-1"
PARTS = "parts"
TMP = ".tmp-"


class ExportError(Exception):
  """An export that cannot go on; the message names the file or flag and what was expected."""


# ------------------------------------------------------------------------------- files


@contextlib.contextmanager
def atomic(path: str | os.PathLike) -> Iterator[pathlib.Path]:
  """Yields a temporary path beside `path`; renamed over `path` if the block succeeds,
  removed if it raises (so a reader sees the whole file or none)."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f"{TMP}{os.getpid()}-{path.name}")  # same suffix: writers sniff it
  try:
    yield tmp
    os.replace(tmp, path)
  finally:
    if tmp.exists():
      tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
  with atomic(path) as tmp:
    tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
  write_text(path, json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n")


def write_jsonl(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> None:
  with atomic(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
    for row in rows:
      f.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
  """Every line of a JSON-lines file as an object; a bad line is an error naming it."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise ExportError(f"{path}: not found")
  rows = []
  with open(path, encoding="utf-8") as f:
    for n, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise ExportError(f"{path}:{n}: not JSON ({e.msg})") from None
      if not isinstance(row, dict):
        raise ExportError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
      rows.append(row)
  return rows


def read_json(path: str | os.PathLike, what: str) -> dict[str, Any]:
  path = pathlib.Path(path)
  if not path.is_file():
    raise ExportError(f"{path}: {what} not found")
  try:
    return json.loads(path.read_text(encoding="utf-8"))
  except json.JSONDecodeError as e:
    raise ExportError(f"{path}: {what} is not JSON ({e.msg})") from None


# ------------------------------------------------------------------------------ corpus


def open_corpus(path: str | os.PathLike) -> source_lib.Corpus:
  try:
    return source_lib.Corpus(path)
  except shards.ShardError as e:
    raise ExportError(f"--shards {path}: {e}") from None


def corpus_source(corpus: source_lib.Corpus) -> dict[str, Any]:
  """The identity of a shard corpus, as a manifest's `source`."""
  return {"corpus": str(corpus.root), "corpus_created": corpus.manifest.get("created"),
          "raw": corpus.manifest.get("raw"),
          "splits": "the corpus' session splits (shard manifest)"}


def episode_key(name: str) -> str:
  """The public suite's episode id: `<session>/ep<k>` -> `<session>__ep<k>`."""
  return name.strip("/").replace("/", "__")


def raw_root(corpus: source_lib.Corpus, raw: Optional[str] = None) -> pathlib.Path:
  """The raw episode root (`--raw`, else the one the corpus was shredded from)."""
  root = pathlib.Path(raw or corpus.manifest["raw"])
  if not root.is_dir():
    where = "--raw" if raw else corpus.root / shards.MANIFEST_FILE
    raise ExportError(f"raw episode root {root} (from {where}) is not a directory: pass --raw")
  return root


def split_counts(rows: Iterable[Mapping[str, Any]], key: str = "split") -> dict[str, int]:
  return dict(sorted(Counter(str(r.get(key)) for r in rows).items()))


# --------------------------------------------------------------------------------- job


class Job:
  """One export into `out` (module docstring)."""

  def __init__(self, out: str | os.PathLike, kind: str, options: Mapping[str, Any],
               source: Mapping[str, Any], checkpoint: Optional[Mapping[str, Any]] = None,
               task: tuple[int, int] = (0, 1), command: Optional[Sequence[str]] = None):
    """source: what the export reads (`corpus_source`, or an earlier export's); options,
    source and checkpoint make the plan a re-run must match."""
    self.out, self.kind = pathlib.Path(out), kind
    self.source = json.loads(json.dumps(dict(source), sort_keys=True))
    self.checkpoint = dict(checkpoint) if checkpoint else None
    self.task_index, self.task_count = task
    if not 0 <= self.task_index < self.task_count:
      raise ExportError(f"--task-index {self.task_index} must lie in [0, --task-count "
                        f"{self.task_count})")
    self.command = list(command if command is not None else sys.argv)
    self.plan = json.loads(json.dumps({
        "export": kind, "version": EXPORT_VERSION, "options": dict(options),
        "source": self.source, "checkpoint": self.checkpoint}, sort_keys=True))
    self.out.mkdir(parents=True, exist_ok=True)
    path = self.out / f"{kind}_plan.json"
    if path.exists():
      existing = read_json(path, "the export plan")
      if existing != self.plan:
        changed = sorted(k for k in set(existing) | set(self.plan)
                         if existing.get(k) != self.plan.get(k))
        raise ExportError(f"{path}: this folder holds an export with other {', '.join(changed)}"
                          "; use a new --out or delete it")
    else:
      write_json(path, self.plan)

  @property
  def parts(self) -> pathlib.Path:
    return self.out / PARTS / self.kind

  def part(self, unit: str) -> pathlib.Path:
    return self.parts / f"{unit}.jsonl"

  def _failed(self, unit: str) -> pathlib.Path:
    return self.parts / f"{unit}.failed.json"

  def todo(self, units: Sequence[str]) -> list[str]:
    """This task's units without a complete part (failed ones are tried again)."""
    mine = [u for i, u in enumerate(units) if i % self.task_count == self.task_index]
    return [u for u in mine if not self.part(u).exists()]

  def write_part(self, unit: str, rows: Sequence[Mapping[str, Any]]) -> None:
    write_jsonl(self.part(unit), rows)
    self._failed(unit).unlink(missing_ok=True)

  def fail(self, unit: str, reason: str) -> None:
    write_json(self._failed(unit), {"unit": unit, "reason": reason})

  def merge(self, units: Sequence[str], name: str, extra: Mapping[str, Any] | None = None,
            manifest_name: Optional[str] = None) -> Optional[dict[str, Any]]:
    """Concatenate every unit's part into `name` (JSON lines) and write the manifest;
    None while a unit has neither a part nor a recorded failure."""
    failed = {u: read_json(self._failed(u), "a failure record")["reason"] for u in units
              if not self.part(u).exists() and self._failed(u).exists()}
    if any(not self.part(u).exists() and u not in failed for u in units):
      return None
    rows = [r for u in units if u not in failed for r in read_jsonl(self.part(u))]
    write_jsonl(self.out / name, rows)
    episodes: dict[str, set] = {}
    for r in rows:
      episodes.setdefault(str(r.get("split")), set()).add(r.get("episode_id"))
    manifest = {
        "export": self.kind, "version": EXPORT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": self.command,
        "output": name, "num_records": len(rows), "split_counts": split_counts(rows),
        "episode_split_counts": {s: len(e) for s, e in sorted(episodes.items())},
        "source": self.source, "checkpoint": self.checkpoint, "options": self.plan["options"],
        "skipped_episodes": [{"unit": u, "reason": r} for u, r in sorted(failed.items())],
        **dict(extra or {}),
    }
    write_json(self.out / (manifest_name or f"{pathlib.Path(name).stem}_manifest.json"),
               manifest)
    return manifest


# ------------------------------------------------------------------------------- guard

# What a package meant for publication never holds (DOWNSTREAM.md: raw MP4, HDF5, RRD,
# model weights, checkpoints, archives of them): suffix -> what it is.
FORBIDDEN_SUFFIXES = {
    ".mp4": "video (raw MP4 or a rendering of it)", ".mov": "video", ".mkv": "video",
    ".avi": "video", ".hdf5": "annotation HDF5", ".h5": "annotation HDF5",
    ".rrd": "Rerun RRD", ".safetensors": "model weights", ".ckpt": "a checkpoint",
    ".pt": "model weights", ".pth": "model weights", ".msgpack": "model weights",
    ".orbax-checkpoint": "a checkpoint", ".tar": "an archive", ".tgz": "an archive",
    ".gz": "an archive", ".zip": "an archive", ".7z": "an archive", ".xz": "an archive",
    ".zst": "an archive", ".bz2": "an archive",
}
# Files that mark an Orbax checkpoint directory, whatever its name.
CHECKPOINT_MARKERS = ("_CHECKPOINT_METADATA", "_METADATA", "manifest.ocdbt")


def package_problems(root: str | os.PathLike) -> list[str]:
  """One line per forbidden thing under `root`: `<path>: <what> (forbidden in a public
  package)`; links count (they would carry whatever they point to)."""
  root = pathlib.Path(root)
  out = []
  for path in sorted(root.rglob("*")):
    rel = path.relative_to(root)
    if path.is_symlink():
      out.append(f"{root / rel}: a link (a public package holds its own files only)")
      continue
    if path.is_file():
      suffixes = [s.lower() for s in path.suffixes]
      what = next((FORBIDDEN_SUFFIXES[s] for s in reversed(suffixes)
                   if s in FORBIDDEN_SUFFIXES), None)
      if what is None and path.name in CHECKPOINT_MARKERS:
        what = "a checkpoint (Orbax metadata)"
      if what:
        out.append(f"{root / rel}: {what}, forbidden in a public package")
  return out


def check_package(root: str | os.PathLike) -> None:
  """Raises ExportError listing everything forbidden under `root`."""
  problems = package_problems(root)
  if problems:
    raise ExportError(f"{root}: {len(problems)} forbidden artifact(s) in a public package: "
                      + "; ".join(problems))


# ------------------------------------------------------------------------ policy exports


SPLIT_ORDER = ("train", "val", "test")


def episodes_by_split(corpus: source_lib.Corpus, split: str = "all") -> list[int]:
  """Corpus episode indices, train first, then val, then test (each in manifest order), so
  that an export numbering episodes in this order holds each split as one contiguous range."""
  rank = {s: i for i, s in enumerate(SPLIT_ORDER)}
  idx = [i for i, e in enumerate(corpus.episodes) if split in ("all", e["split"])]
  return sorted(idx, key=lambda i: (rank.get(corpus.episodes[i]["split"], len(rank)), i))


def read_view(path: pathlib.Path, hw: tuple[int, int], stride: int, n: int
              ) -> tuple[np.ndarray, Optional[str]]:
  """n frames (every `stride`-th from the first) of a raw MP4 at (height, width), RGB uint8;
  frames the file does not have (missing, short or damaged) are black, and the second value
  says why (None when all were read)."""
  from xefm_jax.data import media
  out = np.zeros((n,) + tuple(hw) + (3,), np.uint8)
  if not path.is_file():
    return out, f"{path}: not found"
  try:
    reader = media.VideoReader(path, size=hw, stride=stride)
  except (media.MediaError, OSError) as e:
    return out, str(e)
  try:
    for i in range(n):
      out[i] = reader.read(1)[0]
  except media.MediaError as e:
    return out, str(e)
  finally:
    reader.close()
  return out, None


def add_task_flags(p: Any) -> None:
  """--task-index/--task-count/--merge-only/--quiet, as the shredder and every export."""
  p.add_argument("--task-index", type=int, default=0,
                 help="this task's index in an array job (units i, i + n, ...)")
  p.add_argument("--task-count", type=int, default=1, help="tasks in the array job")
  p.add_argument("--merge-only", action="store_true",
                 help="only merge the parts the tasks wrote")
  p.add_argument("--quiet", action="store_true")


def size_arg(text: str) -> tuple[int, int]:
  """WIDTHxHEIGHT (even, >= 2) -> (width, height), for argparse."""
  import argparse
  try:
    w, h = (int(x) for x in text.lower().split("x"))
  except ValueError:
    raise argparse.ArgumentTypeError(f"{text!r}: expected WIDTHxHEIGHT, e.g. 320x240") from None
  if w < 2 or h < 2 or w % 2 or h % 2:
    raise argparse.ArgumentTypeError(f"{text!r}: width and height must be even and >= 2")
  return w, h


def dir_bytes(root: str | os.PathLike) -> int:
  return sum(p.stat().st_size for p in pathlib.Path(root).rglob("*") if p.is_file())


UNKNOWN_TASK = "unknown"


def task_table(labels: Any) -> list[str]:
  """Every language string a policy export can use, fixed by the corpus' vocabularies (so
  array tasks agree on the indices without talking): main tasks, subtasks, action classes,
  then "unknown"; each once."""
  out: list[str] = []
  for name in (*labels.tasks, *labels.subtasks, *labels.actions, UNKNOWN_TASK):
    if name not in out:
      out.append(name)
  return out


def frame_language(labels: Any, stored: Mapping[str, np.ndarray], frames: np.ndarray
                   ) -> tuple[list[str], list[str]]:
  """Per exported frame: the main task (the activity) and the instruction (the current
  subtask, else the current action class, else "unknown"), from the shard labels."""
  def name(table, i):
    return table[i] if 0 <= i < len(table) else None
  tasks, instructions = [], []
  for f in frames:
    tasks.append(name(labels.tasks, int(stored["task"][f])) or UNKNOWN_TASK)
    instructions.append(name(labels.subtasks, int(stored["subtask"][f]))
                        or name(labels.actions, int(stored["action"][f])) or UNKNOWN_TASK)
  return tasks, instructions


def corpus_flags(p: Any) -> None:
  """--shards, --out, --raw: what every export of the shard corpus reads and writes."""
  p.add_argument("--shards", required=True, help="the shard corpus (its manifest's splits)")
  p.add_argument("--out", required=True)
  p.add_argument("--raw", help="raw episode root (default: the one the corpus came from)")


def counts_text(counts: Mapping[str, int]) -> str:
  return ", ".join(f"{k} {v}" for k, v in counts.items())


def cli(name: str, run: Any, args: Any, opts: Any, argv: Sequence[str], merged: Any) -> int:
  """An export's main() after parsing: `run(args.shards, args.out, opts, raw=, task=,
  merge_only=, progress=, command=)` (a summary with merged, exported_now, failed_now); prints
  the error, or one line (`merged(summary)` once merged); returns the exit status."""
  try:
    summary = run(args.shards, args.out, opts, raw=args.raw,
                  task=(args.task_index, args.task_count), merge_only=args.merge_only,
                  progress=not args.quiet,
                  command=[f"data_pipelines/export/{name}.py", *argv])
  except ExportError as e:
    print(f"{name}: {e}", file=sys.stderr)
    return 1
  if summary["merged"]:
    print(f"{name}: {merged(summary)}")
  else:
    print(f"{name}: {summary['exported_now']} episodes exported; the merge waits for other "
          f"tasks")
  if summary["failed_now"]:
    print(f"{name}: {summary['failed_now']} episodes failed (listed in "
          f"{pathlib.Path(args.out) / PARTS / name})", file=sys.stderr)
    return 1
  return 0


@dataclasses.dataclass(frozen=True)
class PolicyOptions:
  """What a policy export (LeRobot, RLDS) fixes: the views and their size, the split, and
  the hand action space (xefm_jax/data/actions.py)."""

  views: tuple[str, ...] = ("stereo_left",)
  size: tuple[int, int] = (320, 240)  # width, height
  split: str = "all"
  chunk: int = 16
  step: int = 1
  rotation: str = "rotvec"
  fingers: str = "all"

  def space(self, fps: float) -> actions_lib.ActionSpace:
    return actions_lib.ActionSpace(chunk=self.chunk, step=self.step, rotation=self.rotation,
                                   fingers=self.fingers, fps=fps)

  def check(self, corpus: source_lib.Corpus) -> actions_lib.ActionSpace:
    """The action space at the corpus' rate; an ExportError for unknown views or choices."""
    if not self.views or any(v not in xperience.VIEWS for v in self.views):
      raise ExportError(f"--views {','.join(self.views)}: expected some of "
                        f"{', '.join(xperience.VIEWS)}")
    try:
      return self.space(corpus.options.fps)
    except actions_lib.ActionError as e:
      raise ExportError(str(e)) from None


def policy_flags(p: Any, defaults: PolicyOptions = PolicyOptions()) -> None:
  """The flags of PolicyOptions (--views, --size, --split, --chunk, --step, --rotation,
  --fingers) with the corpus and task flags."""
  corpus_flags(p)
  p.add_argument("--views", default=",".join(defaults.views),
                 help=f"comma-separated views among {', '.join(xperience.VIEWS)}")
  p.add_argument("--size", type=size_arg, default=defaults.size, help="WIDTHxHEIGHT of frames")
  p.add_argument("--split", default="all", choices=("all", "train", "val", "test"))
  p.add_argument("--chunk", type=int, default=defaults.chunk, help="actions per policy chunk")
  p.add_argument("--step", type=int, default=defaults.step,
                 help="corpus frames between actions")
  p.add_argument("--rotation", default=defaults.rotation, choices=tuple(actions_lib.ROTATIONS))
  p.add_argument("--fingers", default=defaults.fingers, choices=tuple(actions_lib.FINGERS))
  add_task_flags(p)


def policy_options(args: Any) -> dict[str, Any]:
  """PolicyOptions' fields from parsed policy_flags."""
  return dict(views=tuple(v for v in args.views.split(",") if v), size=args.size,
              split=args.split, chunk=args.chunk, step=args.step, rotation=args.rotation,
              fingers=args.fingers)


def write_action_space(out: pathlib.Path, corpus: source_lib.Corpus,
                       space: actions_lib.ActionSpace, order: Sequence[int]) -> dict[str, Any]:
  """action_space.json, normalization_stats.json (train episodes only) and the retargeting
  report over the exported episodes `order`, in `out`; returns the statistics."""
  stats = actions_lib.compute_stats(corpus, space)
  actions_lib.write(out, space, stats, actions_lib.retargeting_report(
      corpus, space, {i: actions_lib.read_episode(corpus, i, space) for i in order}))
  return stats
