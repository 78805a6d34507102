"""Export future windows for world models (Cosmos): future-window pairs, the video-to-world
layout, and camera-pose forward-dynamics targets.

    python data_pipelines/export/cosmos.py --shards SHARDS --out DIR [--raw RAW]
        [--horizon 5] [--window-frames 20] [--stride-frames 20] [--view stereo_left]
        [--size 320x240] [--clip-stride 1] [--split all|train|val|test]
        [--checkpoint RUN[/checkpoints/STEP]]
        [--task-index I --task-count N] [--merge-only] [--quiet]

Windows are those of the JSON tasks (data_pipelines/export/json_tasks.py): 20 frames at a
stride of 20 on the 20 fps clock, from the episode's first frame. A pair is window k and
window k + H (H = --horizon) of the same episode (never across episodes, so never across
splits), one JSON line of dataset.jsonl (../shared/DOWNSTREAM.md):

  id `{session}__{episode}:future:{k}:h{H}`, episode_id, source_episode_id, split,
  target "future_window_world_model", window / future_window {start_frame, end_frame,
  num_frames}, media / future_media {clip, view, first/last clip frame of the window},
  conditioning and future_target: the JSON-task labels of each window (action, subtask,
  objects, contact, transition, next_action; majority rule of json_tasks) and the question;
  sensor_features / future_sensor_features {path, index, dim}: the sensor bridge of each
  window, as in the JSON tasks (one npz per episode under sensor_features/: with
  --checkpoint XEFM's window embeddings of depth, pose, mocap and IMU, else their
  hand-crafted window statistics); prompt (the clip's metas text), poses_path (the
  forward-dynamics file).

Video-to-world layout (the Cosmos post-training tools):
  videos/<stem>.mp4   one clip per pair: one view (--view) at --size, H.264, every
                      --clip-stride-th frame from the window's first to the future window's
                      last ((H + 1) x window / clip-stride frames), played at real speed
  metas/<stem>.txt    its prompt: the episode's main task, the current subtask and the
                      window's interaction caption (the corpus' captions, decoded)
  poses/<stem>.json   camera-pose forward dynamics from the SLAM poses at the clip's frames:
                      per step a 9-D action (change of translation and change of rotation as
                      a rotation vector, both in the previous step's body frame; the
                      displacement from the clip's first frame, in that frame's body frame;
                      metres and radians), in chunks of 8 steps (the last chunk padded with
                      zeros, `chunk_valid` marks real steps); `pose_valid` per frame.
Written like every export (export/common.py): one part per episode, resumable, atomic, array
tasks; whichever task finds every episode done writes dataset.jsonl and
dataset_manifest.json (counts per split, frames per clip).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import pathlib
import sys
from fractions import Fraction
from typing import Any, Optional, Sequence

import numpy as np
import tqdm

from data_pipelines.export import common
from data_pipelines.export import json_tasks
from xefm_jax import host
from xefm_jax.data import geometry
from xefm_jax.data import shards
from xefm_jax.data import source as source_lib
from xefm_jax.data import xperience

DATASET, MANIFEST = "dataset.jsonl", "dataset_manifest.json"
TARGET = "future_window_world_model"
CHUNK = 8  # forward-dynamics steps per chunk
QUESTION = "What happens in this egocentric video next?"


@dataclasses.dataclass(frozen=True)
class Options:
  horizon: int = 5
  window_frames: int = 20
  stride_frames: int = 20
  view: str = "stereo_left"
  size: tuple[int, int] = (320, 240)  # width, height
  clip_stride: int = 1
  min_label_fraction: float = json_tasks.Options.min_label_fraction
  split: str = "all"

  def bridge_options(self) -> json_tasks.Options:
    return json_tasks.Options(window_frames=self.window_frames,
                              stride_frames=self.stride_frames, split=self.split)

  @property
  def clip_frames(self) -> int:
    return (self.horizon + 1) * self.window_frames // self.clip_stride


def forward_dynamics(pose: np.ndarray) -> np.ndarray:
  """(T, 4, 4) T_world_body -> (T - 1, 9): relative translation and rotation vector of each
  step in the previous body frame, and the displacement from frame 0 in its body frame."""
  rel = geometry.se3_inverse(pose[:-1]) @ pose[1:]
  from_start = geometry.se3_inverse(pose[:1]) @ pose[1:]
  return np.concatenate([rel[:, :3, 3], geometry.matrix_to_axis_angle(rel[:, :3, :3]),
                         from_start[:, :3, 3]], -1)


def chunked(steps: np.ndarray, size: int = CHUNK) -> tuple[np.ndarray, np.ndarray]:
  """(S, 9) -> (ceil(S / size), size, 9) zero-padded, and the (.., size) mask of real steps."""
  n = -(-len(steps) // size)
  out = np.zeros((n * size, steps.shape[1]), steps.dtype)
  out[:len(steps)] = steps
  valid = np.arange(n * size) < len(steps)
  return out.reshape(n, size, -1), valid.reshape(n, size)


def prompt(corpus: source_lib.Corpus, stored: dict, a: int, answer: dict) -> str:
  """The metas text of a clip: main task, subtask and the caption at shard frame a."""
  parts = []
  t = int(stored["task"][a])
  if 0 <= t < len(corpus.labels.tasks):
    parts.append(corpus.labels.tasks[t].rstrip(".") + ".")
  if answer["subtask"] != "unknown":
    parts.append(f"Now: {answer['subtask']}.")
  if stored["caption_valid"][a]:
    text = corpus.labels.words.decode(stored["caption"][a]).strip()
    if text:
      parts.append(text[0].upper() + text[1:].rstrip(".") + ".")
  return " ".join(parts) or "An egocentric video of a person's hands at work."


def export_episode(out: pathlib.Path, corpus: source_lib.Corpus, index: int,
                   raw: pathlib.Path, opts: Options, bridge: json_tasks.Bridge
                   ) -> list[dict[str, Any]]:
  """Every pair of corpus episode `index`, with its clip, prompt and poses written."""
  ep = corpus.episodes[index]
  s = corpus.options.frame_stride
  key = common.episode_key(ep["episode"])
  stored = corpus.read_episode(index, ("labels", "objects", "flags", "contacts", "pose",
                                       "caption"))
  frames = ep["length"] * s
  w, stride, h = opts.window_frames, opts.stride_frames, opts.horizon
  starts = list(range(0, frames - w + 1, stride))
  pairs = [(k, k + h) for k in range(len(starts) - h)]
  if not pairs:
    return []
  cs = opts.clip_stride
  video, err = common.read_view(raw / ep["episode"] / f"{opts.view}{xperience.VIDEO_SUFFIX}",
                                (opts.size[1], opts.size[0]), cs, -(-frames // cs))

  def answer(k):
    a, b = starts[k] // s, (starts[k] + w) // s
    nxt = (b, b + (b - a)) if b + (b - a) <= ep["length"] else None
    return json_tasks.window_answer(stored, corpus.labels, a, b, nxt, starts[k],
                                    starts[k] + w - 1, opts.min_label_fraction)

  def span(k):
    return {"start_frame": starts[k], "end_frame": starts[k] + w - 1, "num_frames": w}

  used = sorted({k for pair in pairs for k in pair})
  features = bridge(index, [starts[k] + w - 1 for k in used])
  npz = out / "sensor_features" / f"{key}_sensor_features.npz"
  with common.atomic(npz) as tmp:
    with open(tmp, "wb") as fh:
      np.savez_compressed(fh, features=features, windows=np.array(used, np.int64),
                          starts=np.array([starts[k] for k in used], np.int64),
                          ends=np.array([starts[k] + w - 1 for k in used], np.int64))
  row_of = {k: n for n, k in enumerate(used)}

  def sensor(k):
    return {"path": str(npz.relative_to(out)), "index": row_of[k],
            "dim": int(features.shape[1])}

  rows = []
  for k, f in pairs:
    first, last = starts[k], starts[f] + w - 1
    clip_frames = np.arange(first, last + 1, cs)
    stem = f"{key}_future{k:05d}_h{h}"
    rgb = video[clip_frames // cs]
    json_tasks.write_mosaic(out / "videos" / f"{stem}.mp4", list(rgb),
                            Fraction(int(xperience.FPS), cs))
    now, later = answer(k), answer(f)
    text = prompt(corpus, stored, first // s, now)
    common.write_text(out / "metas" / f"{stem}.txt", text + "\n")
    shard_frames = clip_frames // s
    pose = stored["pose"][shard_frames].astype(np.float64)
    pose_valid = stored["pose_valid"][shard_frames]
    steps = forward_dynamics(pose)
    step_valid = pose_valid[1:] & pose_valid[:-1] & pose_valid[0]
    steps = np.where(step_valid[:, None], steps, 0.0)
    chunks, chunk_valid = chunked(steps)
    common.write_json(out / "poses" / f"{stem}.json", {
        "frames": clip_frames.tolist(), "fps": xperience.FPS / cs,
        "pose_valid": pose_valid.tolist(), "step_valid": step_valid.tolist(),
        "action_dim": 9, "chunk_size": CHUNK,
        "action_names": ["dx", "dy", "dz", "drx", "dry", "drz", "x0", "y0", "z0"],
        "units": "m and rad; step deltas in the previous body frame, displacement in the "
                 "first frame's body frame (T_world_body from SLAM)",
        "actions": np.round(steps, 7).tolist(), "chunks": np.round(chunks, 7).tolist(),
        "chunk_valid": chunk_valid.tolist()})
    media = {"clip": f"videos/{stem}.mp4", "view": opts.view,
             "clip_first_frame": first, "clip_last_frame": last,
             "clip_frames": len(clip_frames), "video_error": err}
    rows.append({
        "id": f"{key}:future:{k}:h{h}", "episode_id": key, "source_episode_id": ep["episode"],
        "episode_path": ep["episode"], "split": ep["split"], "target": TARGET, "horizon": h,
        "window": span(k), "future_window": span(f),
        "media": {**media, "window_in_clip": [0, w // cs]},
        "future_media": {**media, "window_in_clip": [(starts[f] - first) // cs,
                                                     (starts[f] - first + w) // cs]},
        "conditioning": {"question": QUESTION, **{k2: v for k2, v in now.items()
                                                  if k2 != "evidence_window"}},
        "future_target": {k2: v for k2, v in later.items() if k2 != "evidence_window"},
        "sensor_features": sensor(k), "future_sensor_features": sensor(f),
        "prompt": text, "meta_path": f"metas/{stem}.txt", "poses_path": f"poses/{stem}.json",
    })
  return rows


def run(shards_dir: str, out: str, opts: Options = Options(), raw: Optional[str] = None,
        task: tuple[int, int] = (0, 1), merge_only: bool = False, progress: bool = True,
        command: Optional[Sequence[str]] = None, checkpoint: Optional[str] = None
        ) -> dict[str, Any]:
  """The whole export (module docstring); returns a summary."""
  corpus = common.open_corpus(shards_dir)
  ckpt = json_tasks.resolve_checkpoint(checkpoint) if checkpoint else None
  s = corpus.options.frame_stride
  for flag, v in (("--window-frames", opts.window_frames),
                  ("--stride-frames", opts.stride_frames)):
    if v < 1 or v % s or v % opts.clip_stride:
      raise common.ExportError(f"{flag} {v}: must be a positive multiple of the corpus' "
                               f"frame stride {s} and of --clip-stride {opts.clip_stride}")
  if opts.view not in xperience.VIEWS:
    raise common.ExportError(f"--view {opts.view}: expected one of {', '.join(xperience.VIEWS)}")
  if opts.horizon < 1:
    raise common.ExportError(f"--horizon {opts.horizon}: must be at least 1")
  job = common.Job(out, "cosmos", dataclasses.asdict(opts), common.corpus_source(corpus),
                   task=task, command=command,
                   checkpoint=({"run": str(ckpt[0]), "step": ckpt[1]} if ckpt else None))
  units = {common.episode_key(corpus.episodes[i]["episode"]): i
           for i in common.episodes_by_split(corpus, opts.split)}
  if not units:
    raise common.ExportError(f"{corpus.root}: no episodes in split '{opts.split}'")
  todo = [] if merge_only else job.todo(list(units))
  done = 0
  if todo:
    raw_dir = common.raw_root(corpus, raw)
    bridge = json_tasks.Bridge(corpus, opts.bridge_options(), ckpt)
    for unit in tqdm.tqdm(todo, desc="cosmos", unit="episode", disable=not progress):
      try:
        rows = export_episode(job.out, corpus, units[unit], raw_dir, opts, bridge)
      except (shards.ShardError, OSError) as e:
        job.fail(unit, f"{type(e).__name__}: {e}")
        continue
      job.write_part(unit, rows)
      done += 1
  manifest = job.merge(list(units), DATASET, {
      "target": TARGET, "horizon_windows": opts.horizon,
      "layout": {"videos": "videos/<stem>.mp4", "metas": "metas/<stem>.txt",
                 "poses": "poses/<stem>.json"},
      "clip": {"view": opts.view, "width": opts.size[0], "height": opts.size[1],
               "frames_per_clip": opts.clip_frames, "fps": xperience.FPS / opts.clip_stride,
               "codec": "h264"},
      "forward_dynamics": {"action_dim": 9, "chunk_size": CHUNK},
      "sensor_bridge": {"modalities": list(json_tasks.BRIDGE_MODALITIES),
                        "content": ("xefm window embeddings" if ckpt else
                                    "hand-crafted window statistics")},
      "notes": ["A future window never leaves its episode (so never its split).",
                "Holds derived video of gated data: not a public package."]}, MANIFEST)
  return {"episodes": len(units), "exported_now": done, "failed_now": len(todo) - done,
          "merged": manifest is not None,
          "records": manifest["num_records"] if manifest else None,
          "split_counts": manifest["split_counts"] if manifest else None}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  common.corpus_flags(p)
  d = Options()
  p.add_argument("--horizon", type=int, default=d.horizon, help="windows ahead (H)")
  p.add_argument("--window-frames", type=int, default=d.window_frames)
  p.add_argument("--stride-frames", type=int, default=d.stride_frames)
  p.add_argument("--view", default=d.view, choices=xperience.VIEWS)
  p.add_argument("--size", type=common.size_arg, default=d.size, help="WIDTHxHEIGHT of clips")
  p.add_argument("--clip-stride", type=int, default=d.clip_stride,
                 help="keep every n-th frame in a clip")
  p.add_argument("--split", default="all", choices=("all", "train", "val", "test"))
  p.add_argument("--checkpoint", help="RUN or RUN/checkpoints/STEP: XEFM embeddings as the "
                 "sensor bridge")
  common.add_task_flags(p)
  return p.parse_args(argv)


def main(argv: Sequence[str]) -> int:
  args = parse_args(argv)
  host.configure()  # the sensor bridge computes with jax (xefm_jax/host.py)
  opts = Options(horizon=args.horizon, window_frames=args.window_frames,
                 stride_frames=args.stride_frames, view=args.view, size=args.size,
                 clip_stride=args.clip_stride, split=args.split)
  export = functools.partial(run, checkpoint=args.checkpoint)
  return common.cli("cosmos", export, args, opts, argv, lambda s: (
      f"{s['records']} future-window pairs of {s['episodes']} episodes "
      f"({common.counts_text(s['split_counts'])}) in {pathlib.Path(args.out) / DATASET}"))


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
