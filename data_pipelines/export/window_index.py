"""Export the model-neutral window index of a JSON-task export, with its three adapter views.

    python data_pipelines/export/window_index.py --tasks EXPORT [--out DIR]
        [--horizon 5] [--quiet]

One JSON line per window of the JSON-task export (data_pipelines/export/json_tasks.py), in
the public suite's neutral form (../shared/DOWNSTREAM.md), so every branch reads the same
windows and splits:

  id, episode_id, split, window {start_frame, end_frame, num_frames};
  modalities: media {video_streams, mosaic_video_path, audio_path, context_window},
    sensor_features {path, index, dim, modalities, content}, language {question,
    action_options, subtask_options};
  supervision: the JSON answer and its fields one by one;
  adapter_views: what each branch reads of this window:
    qwen3_omni_lora     the record's chat messages (mosaic video + audio + prompt -> JSON);
    cosmos_world_model  this window as context and the window `--horizon` windows later in
                        the same episode as the future target (its id, or null past the end;
                        a future window never leaves its episode, so never its split);
    policy_vla_branch   this window as the observation, the subtask as the instruction and
                        the candidate targets; the action space is not defined here (the
                        policy exports define action_space.json);
  provenance: the source record, the export and corpus it came from.

Paths are rewritten relative to DIR (default: the export folder itself). Written like every
export (export/common.py): one part per episode, resumable, atomic, then
window_index.jsonl and window_index_manifest.json.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
from collections import Counter
from typing import Any, Mapping, Optional, Sequence

import tqdm

from data_pipelines.export import common
from data_pipelines.export import json_tasks
from xefm_jax.eval import answers

INDEX, MANIFEST = "window_index.jsonl", "window_index_manifest.json"
HORIZON = 5  # windows between a context and its future target (the world-model default)


def _rel(path: Optional[str], src: pathlib.Path, out: pathlib.Path) -> Optional[str]:
  """A path relative to the export `src`, rewritten relative to `out`."""
  if not path:
    return None
  return os.path.relpath(src / path, out)


def neutral_record(row: Mapping[str, Any], future: Optional[Mapping[str, Any]],
                   src: pathlib.Path, out: pathlib.Path, manifest: Mapping[str, Any],
                   horizon: int) -> dict[str, Any]:
  """One window of the index (module docstring); future: the record `horizon` windows
  later in the same episode, or None."""
  media, answer = row.get("media") or {}, row["answer_json"]
  bridge = manifest.get("sensor_bridge", {})
  window = dict(row["center_window"])
  return {
      "id": row["id"], "episode_id": row["episode_id"], "split": row["split"],
      "window": window,
      "modalities": {
          "media": {"video_streams": media.get("video_paths", []),
                    "video_streams_root": manifest.get("source", {}).get("raw"),
                    "mosaic_video_path": _rel(media.get("mosaic_video_path"), src, out),
                    "audio_path": _rel(media.get("audio_path"), src, out),
                    "context_window": {"start_frame": media.get("context_start_frame"),
                                       "end_frame": media.get("context_end_frame"),
                                       "max_video_frames": media.get("max_video_frames")}},
          "sensor_features": {"path": _rel(row.get("sensor_feature_path"), src, out),
                              "index": row.get("sensor_feature_index"),
                              "dim": row.get("sensor_feature_dim"),
                              "modalities": bridge.get("modalities"),
                              "content": bridge.get("content")},
          "language": {"question": row.get("question"),
                       "action_options": row.get("action_options", []),
                       "subtask_options": row.get("subtask_options", [])}},
      "supervision": {"json_answer": answer, **{k: answer.get(k) for k in answers.KEYS}},
      "adapter_views": {
          "qwen3_omni_lora": {
              "sample_contract": "mosaic video + audio + prompt -> strict JSON answer",
              "messages": row.get("messages", []),
              "direct_modalities": ["mosaic_video", "audio", "language_prompt"],
              "bridged_modalities": bridge.get("modalities", [])},
          "cosmos_world_model": {
              "sample_contract": "context window + conditioning -> the window "
                                 f"{horizon} windows later",
              "context_window": {"start_frame": media.get("context_start_frame"),
                                 "end_frame": media.get("context_end_frame")},
              "horizon_windows": horizon,
              "future_window_id": future["id"] if future else None,
              "future_window": dict(future["center_window"]) if future else None,
              "conditioning": {k: answer.get(k) for k in ("action", "subtask", "objects",
                                                          "contact", "transition",
                                                          "next_action")}},
          "policy_vla_branch": {
              "sample_contract": "observation + instruction -> action or motion chunk",
              "observation_window": window,
              "instruction": answer.get("subtask"),
              "candidate_targets": ["action", "next_action", "contact", "objects",
                                    "hand_trajectory_chunk"],
              "action_space": None}},
      "provenance": {"source_record_id": row["id"],
                     "source_episode_id": row.get("source_episode_id"),
                     "json_task_export": str(src), "export_version": manifest.get("version"),
                     "corpus": manifest.get("source", {}).get("corpus"),
                     "checkpoint": manifest.get("checkpoint")},
  }


def run(tasks: str, out: Optional[str] = None, horizon: int = HORIZON,
        progress: bool = True, command: Optional[Sequence[str]] = None) -> dict[str, Any]:
  src = pathlib.Path(tasks)
  manifest = common.read_json(src / json_tasks.MANIFEST,
                              "the JSON-task manifest (run data_pipelines/export/json_tasks.py)")
  rows = common.read_jsonl(src / json_tasks.DATASET)
  dest = pathlib.Path(out) if out else src
  by_episode: dict[str, list[dict[str, Any]]] = {}
  for r in rows:
    by_episode.setdefault(r["episode_id"], []).append(r)
  source = {"json_tasks": str(src), "json_tasks_created": manifest.get("created"),
            "corpus": manifest.get("source", {}).get("corpus")}
  job = common.Job(dest, "window_index", {"horizon": horizon}, source, command=command,
                   checkpoint=manifest.get("checkpoint"))
  units = sorted(by_episode)
  for unit in tqdm.tqdm(job.todo(units), desc="window index", unit="episode",
                        disable=not progress):
    windows = sorted(by_episode[unit], key=lambda r: r["center_window"]["start_frame"])
    job.write_part(unit, [
        neutral_record(r, windows[i + horizon] if i + horizon < len(windows) else None, src,
                       dest, manifest, horizon) for i, r in enumerate(windows)])
  modality_counts: Counter = Counter()
  for r in rows:
    media = r.get("media") or {}
    modality_counts.update(k for k, present in (
        ("mosaic_video", media.get("mosaic_video_path")), ("audio", media.get("audio_path")),
        ("sensor_features", r.get("sensor_feature_path")),
        ("language", r.get("question"))) if present)
  extra = {"modality_record_counts": dict(modality_counts),
           "adapter_contracts": {
               "qwen3_omni_lora": "JSON-task records (dataset.jsonl): train and score with "
                                  "launch/score.py",
               "cosmos_world_model": "future window `horizon` windows later in the episode",
               "policy_vla_branch": "observation windows; the action space is the policy "
                                    "export's action_space.json"},
           "source_dataset_summary": {k: manifest.get(k) for k in
                                      ("num_records", "split_counts", "episode_split_counts",
                                       "clip_policy", "sensor_bridge")}}
  merged = job.merge(units, INDEX, extra, MANIFEST)
  return {"records": merged["num_records"] if merged else None,
          "split_counts": merged["split_counts"] if merged else None,
          "path": str(dest / INDEX)}


def main(argv: Sequence[str]) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--tasks", required=True, help="a JSON-task export folder")
  p.add_argument("--out", help="where to write (default: the export folder)")
  p.add_argument("--horizon", type=int, default=HORIZON)
  p.add_argument("--quiet", action="store_true")
  args = p.parse_args(argv)
  if args.horizon < 1:
    p.error("--horizon must be at least 1")
  try:
    summary = run(args.tasks, args.out, args.horizon, not args.quiet,
                  ["data_pipelines/export/window_index.py", *argv])
  except common.ExportError as e:
    print(f"window_index: {e}", file=sys.stderr)
    return 1
  print(f"window_index: {summary['records']} windows "
        f"({', '.join(f'{k} {v}' for k, v in summary['split_counts'].items())}) in "
        f"{summary['path']}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
