"""Stage 0: the quality gate over a raw Xperience root.

    python data_pipelines/validate.py --raw DIR --report FILE.json [--workers K]

Every episode `<raw>/<session>/ep<k>/` gets one report row: pass or fail with reasons, the
per-stream frame counts and valid fractions, and its duration. Tolerated quirks of real
files (a NaN run, a view missing that the configuration does not require, a few frames of
count mismatch, timestamps stored as strings) are warnings; anything that would corrupt
training is a failure with a reason `<code>: <detail naming the file and key>`. The report
also carries the train/val/test assignment by session and its leakage proof.

Exit status: 0 when every episode passes, 1 when any fails, 2 on usage errors.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import dataclasses
import hashlib
import json
import multiprocessing
import os
import pathlib
import re
import sys
import time
from typing import Any, Optional, Sequence

import numpy as np
import tqdm

from xefm_jax import errors
from xefm_jax.data import episode as episode_lib
from xefm_jax.data import media
from xefm_jax.data import splits as splits_lib
from xefm_jax.data import xperience

REPORT_VERSION = 2  # 2: each row's `checksum` ties the report to its raw root
_EPISODE_DIR = re.compile(r"^ep\d+$")


@dataclasses.dataclass(frozen=True)
class GateConfig:
  """What the gate requires; the defaults are the project's Stage-0 policy."""

  require_views: tuple[str, ...] = ()  # views whose absence fails an episode
  require_audio: bool = False
  frame_tolerance: int = 5  # max frame-count difference between streams
  min_pose_valid: float = 0.9  # released episodes are trimmed to frames with a pose
  imu_alignment_ms: float = 10.0  # keyframe IMU sample vs frame time
  decode: str = "ends"  # "ends": first and last frames of every view; "full": every frame
  min_frames: int = 1


def find_episodes(raw: pathlib.Path) -> list[pathlib.Path]:
  """`<raw>/<session>/ep<k>` directories, sorted; hidden (in-flight) directories skipped."""
  out = []
  for session in sorted(p for p in raw.iterdir() if p.is_dir() and not p.name.startswith(".")):
    out += sorted((p for p in session.iterdir() if p.is_dir() and _EPISODE_DIR.match(p.name)),
                  key=lambda p: int(p.name[2:]))
  return out


def episode_checksum(path: str | os.PathLike) -> str:
  """sha256 over an episode's files (relative names and sizes): ties a report row to the
  episode it was made from wherever the raw root lies. Content is not read: the shredder
  checks every row in every task of an array job, and the gate's own decode is the check
  of content."""
  path = pathlib.Path(path)
  h = hashlib.sha256()
  for f in sorted(p for p in path.rglob("*") if p.is_file()):
    h.update(f"{f.relative_to(path).as_posix()}\t{f.stat().st_size}\n".encode())
  return h.hexdigest()


class _Row:
  """One episode's report row under construction."""

  def __init__(self, path: pathlib.Path):
    self.data: dict[str, Any] = {
        "episode": f"{path.parent.name}/{path.name}", "session": path.parent.name,
        "path": str(path), "checksum": episode_checksum(path), "status": "pass",
        "reasons": [], "warnings": [],
        "frames": {}, "valid_fraction": {}, "duration_s": 0.0, "views": [],
        "audio": None, "activity": "", "objects": []}

  def fail(self, code: str, detail: str) -> None:
    self.data["reasons"].append(f"{code}: {detail}")
    self.data["status"] = "fail"

  def warn(self, code: str, detail: str) -> None:
    self.data["warnings"].append(f"{code}: {detail}")


def _fraction(mask: np.ndarray) -> float:
  return float(np.mean(mask)) if mask.size else 0.0


def _check_streams(ep: episode_lib.Episode, row: _Row, cfg: GateConfig) -> None:
  """Frame counts agree, timestamps increase, pose/depth/mocap/IMU index with valid counts."""
  row.data["frames"] = dict(ep.frame_counts)
  row.data["num_frames"] = ep.num_frames
  row.data["duration_s"] = ep.duration_s
  counts = {s: c for s, c in ep.frame_counts.items() if s not in xperience.VIEWS}
  counts.update({v: ep.frame_counts[v] for v in ep.views})
  if counts and max(counts.values()) - min(counts.values()) > cfg.frame_tolerance:
    row.fail("frame_count_mismatch",
             f"{ep.annotation_path}: per-stream frame counts {counts} differ by "
             f"{max(counts.values()) - min(counts.values())} frames, expected at most "
             f"{cfg.frame_tolerance}")
  elif counts and max(counts.values()) != min(counts.values()):
    row.warn("frame_count_slack", f"per-stream frame counts differ: {counts}")
  if ep.num_frames < cfg.min_frames:
    row.fail("empty_episode", f"{ep.annotation_path}: {ep.num_frames} frames")
    return

  times = ep.timestamps_ns()  # (N,)
  steps = np.diff(times)
  if (steps <= 0).any():
    row.fail("video_timestamps", f"{ep.annotation_path}: key 'video/device_timestamp' is not "
             f"strictly increasing ({int((steps <= 0).sum())} steps <= 0)")
  elif len(steps):
    period_ms = float(np.median(steps)) / 1e6
    if abs(period_ms - 1e3 / xperience.FPS) > 0.1 * 1e3 / xperience.FPS:
      row.fail("video_timestamps", f"{ep.annotation_path}: key 'video/device_timestamp' has a "
               f"median step of {period_ms:.1f} ms, expected {1e3 / xperience.FPS:.0f} ms")
    drops = int((steps > 1.5 * np.median(steps)).sum())
    if drops:
      row.warn("frame_drops", f"{drops} gaps longer than 1.5 frame periods")
  if ep.keys.get("video/device_timestamp", ((), np.dtype("i8")))[1].kind in "SOU":
    row.warn("timestamps_as_strings", "video/device_timestamp is stored as strings")

  pose = ep.pose()
  row.data["valid_fraction"]["pose"] = _fraction(pose.valid)
  if not pose.valid.any():
    row.fail("pose_invalid", f"{ep.annotation_path}: key 'slam/quat_wxyz': no frame has a "
             "finite unit quaternion (all NaN or zero)")
  elif _fraction(pose.valid) < cfg.min_pose_valid:
    row.fail("pose_invalid", f"{ep.annotation_path}: key 'slam/quat_wxyz': only "
             f"{_fraction(pose.valid):.1%} of frames have a valid pose, expected at least "
             f"{cfg.min_pose_valid:.0%}")

  hands = ep.hands()
  for i, side in enumerate(xperience.HANDS):
    row.data["valid_fraction"][f"{side}_hand"] = _fraction(hands.valid[:, i])
  body = ep.body()
  row.data["valid_fraction"]["body"] = _fraction(body.valid)
  depth = ep.depth()
  depth_ok = (depth.depth > 0).mean((1, 2)) > 0.5  # (N,) frames with mostly known depth
  row.data["valid_fraction"]["depth"] = _fraction(depth_ok)
  ep.calibration()  # raises on a non-finite or zero camera model

  imu = ep.imu()
  row.data["frames"]["imu_samples"] = int(len(imu.timestamps_ns))
  imu_steps = np.diff(imu.timestamps_ns)
  if len(imu.timestamps_ns) < 2 or (imu_steps <= 0).any():
    row.fail("imu_timestamps", f"{ep.annotation_path}: key 'imu/device_timestamp_ns' is not "
             f"strictly increasing ({int((imu_steps <= 0).sum())} steps <= 0)")
  else:
    k = imu.keyframe_indices
    if (k < 0).any() or (k >= len(imu.timestamps_ns)).any() or (np.diff(k) < 0).any():
      row.fail("imu_keyframes", f"{ep.annotation_path}: key 'imu/keyframe_indices' must be "
               f"non-decreasing indices into {len(imu.timestamps_ns)} IMU samples")
    else:
      lag_ms = np.abs(imu.timestamps_ns[k] - times).max() / 1e6
      if lag_ms > cfg.imu_alignment_ms:
        row.fail("imu_misaligned", f"{ep.annotation_path}: key 'imu/keyframe_indices': IMU "
                 f"samples lie up to {lag_ms:.1f} ms from their frames, expected at most "
                 f"{cfg.imu_alignment_ms} ms")
  finite = np.isfinite(imu.accel).all(-1) & np.isfinite(imu.gyro).all(-1)
  row.data["valid_fraction"]["imu"] = _fraction(finite)


def _check_media(ep: episode_lib.Episode, row: _Row, cfg: GateConfig) -> None:
  """Every view present and decodable (or recorded missing); audio extractable or not."""
  for view in xperience.VIEWS:
    problem = ep.view_problems.get(view)
    if problem is None:
      continue
    if "file is missing" in problem:
      if view in cfg.require_views:
        row.fail("view_missing", f"{problem} (the configuration requires {view})")
      else:
        row.warn("view_missing", problem)
    elif "short video stream" in problem:
      code_detail = ("frame_count_mismatch", problem)
      if view in cfg.require_views:
        row.fail(*code_detail)
      else:
        row.warn(*code_detail)
    else:  # present but unreadable: corruption, not an absent camera
      row.fail("video_corrupt", problem)
  for view in ep.views:
    n = ep.frame_counts[view]
    try:
      if cfg.decode == "full":
        media.decode_video(ep.video_info[view].path, size=32)
      else:
        media.decode_video(ep.video_info[view].path, size=32, start=0, stop=1)
        media.decode_video(ep.video_info[view].path, size=32, start=max(0, n - 2), stop=n)
    except media.MediaError as e:
      row.fail("video_corrupt", str(e))
  row.data["views"] = [v for v in ep.views if not any(
      r.startswith("video_corrupt") and v in r for r in row.data["reasons"])]
  try:
    samples = ep.audio(16000)
    row.data["audio"] = {"available": True, "seconds": len(samples) / 16000}
  except episode_lib.EpisodeError as e:
    row.data["audio"] = {"available": False, "reason": str(e)}
    (row.fail if cfg.require_audio else row.warn)("audio_unavailable", str(e))


def _check_language(ep: episode_lib.Episode, row: _Row) -> None:
  try:
    timeline = ep.caption()
  except episode_lib.EpisodeError as e:
    text = str(e)
    code = ("caption_not_json" if "not JSON" in text or "not UTF-8" in text
            else "caption_out_of_range" if "outside the episode" in text
            else "caption_invalid")
    row.fail(code, text)
    return
  row.data["activity"] = timeline.task
  row.data["objects"] = sorted({o for s in timeline.object_sets for o in s} - {"hand"})
  row.data["valid_fraction"]["action_label"] = _fraction(timeline.action >= 0)
  row.data["actions"] = len(timeline.actions)


def validate_episode(path: str | os.PathLike, cfg: GateConfig = GateConfig()) -> dict[str, Any]:
  """The report row of one episode. Never raises on bad data: it records the reason."""
  path = pathlib.Path(path)
  row = _Row(path)
  try:
    ep = episode_lib.Episode(path, frame_slack=cfg.frame_tolerance)
  except episode_lib.EpisodeError as e:
    row.fail("annotation_missing" if "file is missing" in str(e) else "annotation_unreadable",
             str(e))
    return row.data
  with ep:
    problems = ep.key_problems()
    for p in problems:
      row.fail("key_missing" if p.endswith("is missing") else "key_shape", p)
    checks = (_check_media,) if problems else (_check_streams, _check_media)
    for check in checks:
      try:
        check(ep, row, cfg)
      except episode_lib.EpisodeError as e:
        row.fail("stream_unreadable", str(e))
      except (OSError, ValueError, KeyError, IndexError) as e:  # h5py/av internals
        row.fail("stream_unreadable", f"{ep.annotation_path}: {type(e).__name__}: {e}")
    _check_language(ep, row)
    try:
      row.data["health_report"] = ep.health_report()
    except episode_lib.EpisodeError as e:
      row.warn("health_report", str(e))
  return row.data


def _run_isolated(path: pathlib.Path, cfg: GateConfig) -> dict[str, Any]:
  """Validate in a fresh process, so a decoder crash costs only this episode."""
  ctx = multiprocessing.get_context("spawn")
  with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
    try:
      return pool.submit(validate_episode, path, cfg).result()
    except concurrent.futures.process.BrokenProcessPool:
      row = _Row(path)
      row.fail("crashed", f"{path}: the validating process died (decoder crash?)")
      return row.data


def validate_root(raw: str | os.PathLike, cfg: GateConfig = GateConfig(), workers: int = 1,
                  split_spec: Optional[splits_lib.SplitSpec] = None,
                  progress: bool = True) -> dict[str, Any]:
  """The full Stage-0 report for a raw root (see the module docstring)."""
  raw = pathlib.Path(raw)
  paths = find_episodes(raw)
  start = time.time()
  rows: dict[pathlib.Path, dict] = {}
  bar = tqdm.tqdm(total=len(paths), desc="stage-0 gate", unit="ep", disable=not progress)
  if workers <= 1:
    for p in paths:
      rows[p] = validate_episode(p, cfg)
      bar.update()
  else:
    ctx = multiprocessing.get_context("spawn")  # h5py/av state must not be forked
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
      futures = {pool.submit(validate_episode, p, cfg): p for p in paths}
      try:
        for f in concurrent.futures.as_completed(futures):
          rows[futures[f]] = f.result()
          bar.update()
      except concurrent.futures.process.BrokenProcessPool:
        pass  # a worker crashed: finish the rest one process each, below
    for p in paths:
      if p not in rows:
        rows[p] = _run_isolated(p, cfg)
        bar.update()
  bar.close()
  episodes = [rows[p] for p in paths]
  facts = [splits_lib.EpisodeFacts(r["episode"], r["session"], r["activity"],
                                   frozenset(r["objects"])) for r in episodes]
  split_spec = split_spec or splits_lib.SplitSpec()
  split = splits_lib.split_report(facts, split_spec) if facts else {}
  for r in episodes:
    r["split"] = split["assignment"][r["episode"]] if split else None
  return {"version": REPORT_VERSION, "raw": str(raw), "config": dataclasses.asdict(cfg),
          "episodes": episodes, "splits": split,
          "summary": summarize(episodes, time.time() - start)}


def summarize(episodes: Sequence[dict], seconds: float) -> dict[str, Any]:
  reasons = collections.Counter(r.split(":", 1)[0] for e in episodes for r in e["reasons"])
  warnings = collections.Counter(w.split(":", 1)[0] for e in episodes for w in e["warnings"])
  passed = [e for e in episodes if e["status"] == "pass"]
  streams = sorted({k for e in passed for k in e["valid_fraction"]})
  return {
      "episodes": len(episodes), "passed": len(passed), "failed": len(episodes) - len(passed),
      "sessions": len({e["session"] for e in episodes}),
      "hours_passed": sum(e["duration_s"] for e in passed) / 3600,
      "frames_passed": sum(e.get("num_frames", 0) for e in passed),
      "failure_reasons": dict(reasons.most_common()), "warnings": dict(warnings.most_common()),
      "mean_valid_fraction": {s: float(np.mean([e["valid_fraction"].get(s, 0.0)
                                                for e in passed])) for s in streams},
      "seconds": round(seconds, 2)}


def format_summary(report: dict) -> str:
  s = report["summary"]
  lines = [f"Stage-0 gate: {s['passed']}/{s['episodes']} episodes pass "
           f"({s['sessions']} sessions, {s['hours_passed'] * 60:.1f} min passing, "
           f"{s['seconds']:.1f} s)"]
  if s["mean_valid_fraction"]:
    lines.append("  valid fraction (passing episodes): " + ", ".join(
        f"{k} {v:.2f}" for k, v in s["mean_valid_fraction"].items()))
  for title, counts in (("failure reasons", s["failure_reasons"]), ("warnings", s["warnings"])):
    if counts:
      lines.append(f"  {title}: " + ", ".join(f"{k} x{v}" for k, v in counts.items()))
  failed = [e for e in report["episodes"] if e["status"] == "fail"]
  if failed:
    width = max(len(e["episode"]) for e in failed)
    lines.append(f"  {'failed episode'.ljust(width)}  first reason")
    lines += [f"  {e['episode'].ljust(width)}  {e['reasons'][0][:110]}" for e in failed]
  if report.get("splits"):
    c = report["splits"]["counts"]
    lines.append("  splits by session: " + ", ".join(
        f"{k} {v['sessions']} sessions / {v['episodes']} episodes" for k, v in c.items()))
  return "\n".join(lines)


def write_json_atomic(path: pathlib.Path, obj: Any) -> None:
  """Write to a temporary name beside `path`, then rename: readers never see half a file."""
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
  tmp.write_text(json.dumps(obj, indent=1, default=str))
  os.replace(tmp, path)


def _csv(text: str) -> tuple[str, ...]:
  return tuple(t.strip() for t in text.split(",") if t.strip())


def add_split_arguments(p: argparse.ArgumentParser) -> None:
  """The split flags shared by the gate and the shredder."""
  p.add_argument("--split", default="train=0.8,val=0.1,test=0.1")
  p.add_argument("--split-seed", type=int, default=0)
  p.add_argument("--holdout-activities", type=_csv, default=(),
                 help="comma-separated main tasks to hold out (test only)")
  p.add_argument("--holdout-objects", type=_csv, default=())


def split_spec_from_args(p: argparse.ArgumentParser,
                         args: argparse.Namespace) -> splits_lib.SplitSpec:
  try:
    fractions = splits_lib.parse_fractions(args.split)
  except splits_lib.SplitError as e:
    p.error(str(e))
  return splits_lib.SplitSpec(fractions=fractions, holdout_activities=args.holdout_activities,
                              holdout_objects=args.holdout_objects, seed=args.split_seed)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--raw", required=True, help="raw root: <session>/ep<k>/ directories")
  p.add_argument("--report", required=True, help="where to write the JSON report")
  p.add_argument("--workers", type=int, default=1)
  add_split_arguments(p)
  p.add_argument("--require-views", type=_csv, default=GateConfig.require_views)
  p.add_argument("--require-audio", action="store_true")
  p.add_argument("--frame-tolerance", type=int, default=GateConfig.frame_tolerance)
  p.add_argument("--decode", choices=("ends", "full"), default=GateConfig.decode)
  p.add_argument("--quiet", action="store_true", help="no progress bar")
  errors.add_verbose_argument(p)
  args = p.parse_args(argv)
  if not pathlib.Path(args.raw).is_dir():
    p.error(f"--raw {args.raw}: not a directory")
  unknown = set(args.require_views) - set(xperience.VIEWS)
  if unknown:
    p.error(f"--require-views: unknown views {sorted(unknown)}, expected some of "
            f"{xperience.VIEWS}")
  if args.workers < 1:
    p.error("--workers must be at least 1")
  args.split_spec = split_spec_from_args(p, args)
  return args


def main(argv: Sequence[str]) -> int:
  args = parse_args(argv)
  cfg = GateConfig(require_views=args.require_views, require_audio=args.require_audio,
                   frame_tolerance=args.frame_tolerance, decode=args.decode)
  spec = args.split_spec
  if not find_episodes(pathlib.Path(args.raw)):
    raise errors.UsageError(f"{args.raw}: no <session>/ep<k> episode directories; give the "
                            "raw root (its folders are sessions)")
  try:
    report = validate_root(args.raw, cfg, args.workers, spec, progress=not args.quiet)
  except splits_lib.SplitError as e:
    raise errors.UsageError(str(e)) from e
  write_json_atomic(pathlib.Path(args.report), report)
  print(format_summary(report))
  print(f"report: {args.report}")
  return 0 if report["summary"]["failed"] == 0 else 1


if __name__ == "__main__":
  errors.cli(main)
