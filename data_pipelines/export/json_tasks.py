"""Export the structured-JSON task set (Qwen3-Omni LoRA; the Gemini Robotics comparison).

    python data_pipelines/export/json_tasks.py --shards SHARDS --out DIR [--raw RAW]
        [--checkpoint RUN[/checkpoints/STEP]] [--split all|train|val|test]
        [--window-frames 20] [--stride-frames 20] [--context-frames 120]
        [--max-video-frames 32] [--tile 320x240] [--no-media]
        [--task-index I --task-count N] [--merge-only] [--quiet]

One JSON line per window in the public task suite's record format (../shared/DOWNSTREAM.md):
windows of 20 frames at a stride of 20 over every episode of the corpus (20 fps frames,
counted from the episode's first frame), each with

  id `{session}__{episode}:qa:{k}` (k = start / stride), episode_id, source_episode_id (the
  shard manifest's episode name), episode_path (relative to the raw root), split (the
  corpus' session split), target "episode_qa", prompt_type "json_episode_understanding",
  center_window {start_frame, end_frame (inclusive), num_frames};
  media: video_paths (the six MP4s, relative to the raw root), context_start_frame /
  context_end_frame (120 frames centred on the window, moved inside the episode),
  max_video_frames, mosaic_video_path (the six views as a 2x3 mosaic MP4 of up to 32
  frames spread evenly over the context, played over the context's real duration) and
  audio_path (16 kHz mono WAV of the context), both relative to DIR and cut from the raw
  episode with PyAV;
  sensor_feature_path / _index / _dim: the sensor bridge, one npz per episode
  (`features`, `action_labels`, `subtask_labels`, `starts`, `ends`, `ids`): with
  --checkpoint the XEFM window embeddings of the bridge modalities (depth, pose, mocap, IMU:
  what a video-language model cannot see) of the model window ending at the record's last
  frame, else their hand-crafted window statistics (xefm_jax/eval/handcrafted.py) over the
  record's own window;
  question, answer_json (xefm_jax/eval/answers.py), label (= the answer's action),
  action_options / subtask_options / label_options (the corpus' vocabularies), and
  messages: the chat form (system turn; user turn with video, audio and text parts; the
  assistant turn is the answer as compact JSON with sorted keys).

Labels are read from the shards (the corpus' label definitions: action classes, subtasks,
objects) by majority over the window: a label must hold on at least 0.6 of the window's
frames, else "unknown" (frames without a label count against it). objects: those present
on at least 0.6 of the frames, most frequent first, at most 8. contact: "yes" when any of
the 21 body contact joints is above 0.5 on at least 0.6 of the frames, "no" when the body
is tracked without contact on at least 0.6, else "unknown". transition: "yes" when an action
starts inside the window (after its first frame), "no" when none does and some frame has an
action, else "unknown". next_action: the action label of the next window (the same rule),
"unknown" past the episode's end. evidence_window: the window itself.

Resumable, splittable over an array job, atomic, with a manifest (export/common.py): DIR
holds parts/json_tasks/<episode>.jsonl, media/<episode>/ and sensor_features/, and once
every episode is done, dataset.jsonl and dataset_manifest.json. An episode that cannot be
read is recorded in the manifest's skipped_episodes and the job goes on. The folder is a
training set, not a public package: it holds derived video and audio of gated data.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys
import types
from collections import Counter
from fractions import Fraction
from typing import Any, Mapping, Optional, Sequence

import av
import numpy as np
import tqdm

from data_pipelines.export import common
from xefm_jax import host
from xefm_jax.data import episode as episode_lib
from xefm_jax.data import media
from xefm_jax.data import shards
from xefm_jax.data import source as source_lib
from xefm_jax.data import spec as spec_lib
from xefm_jax.data import xperience
from xefm_jax.eval import answers

DATASET, MANIFEST = "dataset.jsonl", "dataset_manifest.json"
TARGET, PROMPT_TYPE = "episode_qa", "json_episode_understanding"
CONTACT_THRESHOLD = 0.5
BRIDGE_MODALITIES = ("depth", "pose", "mocap", "imu")
SCHEMA_EXAMPLE = ('{"action":"<an action option or unknown>","subtask":"<a subtask option or '
                  'unknown>","objects":["<up to 8 object names>"],"contact":"yes|no|unknown",'
                  '"transition":"yes|no|unknown","next_action":"<an action option or '
                  'unknown>","evidence_window":{"start_frame":0,"end_frame":0}}')
SYSTEM_PROMPT = (
    "You read one moment of a first-person recording from Xperience-10M: six synchronized "
    "camera views, audio and body sensors. Reply with a single JSON object and nothing "
    "else: no markdown, no code fence, no explanation. Its keys are exactly action, "
    "subtask, objects, contact, transition, next_action and evidence_window. Copy action, "
    "subtask and next_action verbatim from the option lists, or write \"unknown\" when the "
    "evidence does not settle it; never paraphrase a label. objects names at most 8 objects "
    "from the option list. contact and transition are \"yes\", \"no\" or \"unknown\". "
    f"Schema: {SCHEMA_EXAMPLE}")
QUESTION = ("What is the wearer doing in the centre window of this synchronized egocentric "
            "video, audio and sensor context, and what comes next?")


@dataclasses.dataclass(frozen=True)
class Options:
  window_frames: int = 20
  stride_frames: int = 20
  context_frames: int = 120
  max_video_frames: int = 32
  min_label_fraction: float = 0.6
  tile: tuple[int, int] = (320, 240)  # (width, height) of one view in the mosaic
  media: bool = True
  bridge_modalities: tuple[str, ...] = BRIDGE_MODALITIES
  split: str = "all"
  batch_size: int = 32  # windows per pass of the sensor bridge


# ------------------------------------------------------------------------------ labels


def majority(values: np.ndarray, min_fraction: float) -> Optional[int]:
  """The label (>= 0) that holds on at least `min_fraction` of the frames, else None."""
  labelled = values[values >= 0]
  if not len(labelled):
    return None
  ids, counts = np.unique(labelled, return_counts=True)
  best = int(np.argmax(counts))
  return int(ids[best]) if counts[best] >= min_fraction * len(values) else None


def window_answer(labels: Mapping[str, np.ndarray], vocab: Any, a: int, b: int,
                  next_window: Optional[tuple[int, int]], start_frame: int, end_frame: int,
                  min_fraction: float) -> dict[str, Any]:
  """The answer of shard frames [a, b) (module docstring); names from `vocab`
  (labels.Labels); next_window: shard frames of the next window, None past the end."""
  name = lambda table, i: answers.UNKNOWN if i is None else table[i]  # noqa: E731
  action = labels["action"][a:b]
  need = min_fraction * (b - a)
  counts = labels["objects"][a:b].sum(0)  # (K,) frames each object is present on
  objects = [int(k) for k in np.flatnonzero(counts >= need)]
  objects.sort(key=lambda k: (-counts[k], k))
  touching = (labels["contacts"][a:b] > CONTACT_THRESHOLD).any(1)
  tracked = labels["body_valid"][a:b]
  if touching.sum() >= need:
    contact = "yes"
  else:
    contact = "no" if (tracked & ~touching).sum() >= need else answers.UNKNOWN
  if labels["boundary"][a + 1:b].any():
    transition = "yes"
  else:
    transition = "no" if (action >= 0).any() else answers.UNKNOWN
  nxt = (majority(labels["action"][next_window[0]:next_window[1]], min_fraction)
         if next_window else None)
  return {"action": name(vocab.actions, majority(action, min_fraction)),
          "subtask": name(vocab.subtasks, majority(labels["subtask"][a:b], min_fraction)),
          "objects": [vocab.objects[k] for k in objects[:answers.MAX_OBJECTS]],
          "contact": contact, "transition": transition,
          "next_action": name(vocab.actions, nxt),
          "evidence_window": {"start_frame": int(start_frame), "end_frame": int(end_frame)}}


def context_span(start: int, end: int, frames: int, context: int) -> tuple[int, int]:
  """(first, last) frame of `context` frames centred on [start, end], inside [0, frames)."""
  first = max(0, start - (context - (end - start + 1)) // 2)  # as much before as after
  last = min(frames - 1, first + context - 1)
  return max(0, last - context + 1), last


def sampled_frames(first: int, last: int, count: int) -> np.ndarray:
  """Up to `count` frames spread evenly over [first, last]."""
  n = min(count, last - first + 1)
  return np.unique(np.linspace(first, last, n).round().astype(np.int64))


# ------------------------------------------------------------------------------- media


class _ViewFrames:
  """One view's frames at tile size, decoded once and in order; only the frames asked for
  are kept, and only until `forget_before` passes them."""

  def __init__(self, path: Optional[pathlib.Path], hw: tuple[int, int], wanted: set[int]):
    self.wanted, self.hw = wanted, hw
    self.reader = media.VideoReader(path, size=hw) if path is not None else None
    self.position, self.kept = 0, {}
    self.error: Optional[str] = None

  def get(self, k: int) -> Optional[np.ndarray]:
    while self.reader is not None and self.position <= k:
      try:
        frame = self.reader.read(1)[0]
      except media.MediaError as e:  # a short or damaged view: black from here on
        self.error = str(e)
        self.close()
        break
      if self.position in self.wanted:
        self.kept[self.position] = frame
      self.position += 1
    return self.kept.get(k)

  def forget_before(self, k: int) -> None:
    for f in [f for f in self.kept if f < k]:
      del self.kept[f]

  def close(self) -> None:
    if self.reader is not None:
      self.reader.close()
      self.reader = None


def write_mosaic(path: pathlib.Path, frames: Sequence[np.ndarray], rate: Fraction) -> None:
  """(H, W, 3) uint8 RGB frames as an H.264 MP4 at `rate` frames per second."""
  h, w = frames[0].shape[:2]
  with common.atomic(path) as tmp, av.open(str(tmp), "w", format="mp4") as out:
    stream = out.add_stream("libx264", rate=rate)
    stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
    stream.options = {"preset": "veryfast", "crf": "23"}
    for i, rgb in enumerate(frames):
      frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
      frame.pts = i
      for packet in stream.encode(frame):
        out.mux(packet)
    for packet in stream.encode(None):
      out.mux(packet)


def write_wav(path: pathlib.Path, samples: np.ndarray, rate: int) -> None:
  """(S,) float samples in [-1, 1] as a 16-bit mono WAV."""
  pcm = np.round(np.clip(samples, -1, 1) * 32767).astype(np.int16)
  with common.atomic(path) as tmp, av.open(str(tmp), "w", format="wav") as out:
    stream = out.add_stream("pcm_s16le", rate=rate)
    stream.layout = "mono"
    frame = av.AudioFrame.from_ndarray(pcm[None], format="s16", layout="mono")
    frame.sample_rate, frame.pts = rate, 0
    for packet in list(stream.encode(frame)) + list(stream.encode(None)):
      out.mux(packet)


# ------------------------------------------------------------------------------ bridge


class Bridge:
  """Sensor-bridge features of record windows (module docstring): XEFM embeddings of the
  bridge modalities from a checkpoint, else their hand-crafted window statistics."""

  def __init__(self, corpus: source_lib.Corpus, opts: Options,
               checkpoint: Optional[tuple[pathlib.Path, int]]):
    from xefm_jax.eval import embed  # the model stack loads only for an export that uses it
    from xefm_jax.eval import variants as variants_lib
    import ml_collections
    self.embed, self.corpus = embed, corpus
    self.params = None
    if checkpoint is not None:
      import jax
      from xefm_jax.eval import checkpoints
      from xefm_jax.eval import suite
      workdir, step = checkpoint
      try:
        run = suite.open_run(workdir, step, str(corpus.root))
      except (FileNotFoundError, ValueError, shards.ShardError) as e:
        raise common.ExportError(f"--checkpoint {workdir}: {e}") from None
      self.params = checkpoints.restore_params(run.config, workdir, step, run.mesh)["model"]
      self.data_cfg = embed.data_config(run.config.data, ml_collections.ConfigDict(
          dict(future=1, batch_size=opts.batch_size)), jax.device_count())
      self.encoder = run.encoder
      mods = tuple(m for m in opts.bridge_modalities if m in run.encoder.model_modalities)
    else:
      from configs import common as config_common
      s = corpus.options.frame_stride
      self.data_cfg = config_common.data_config()
      self.data_cfg.update(
          view_size=corpus.options.video_size, depth_size=corpus.options.depth_size,
          caption_len=corpus.options.caption_len, frames=opts.window_frames // s,
          frame_stride=1, future=1, next_window=False, batch_size=opts.batch_size,
          view_dropout=0.0, modality_dropout=0.0)
      self.encoder = types.SimpleNamespace(views=tuple(self.data_cfg.views))
      mods = tuple(opts.bridge_modalities)
    self.variant = variants_lib.Variant("bridge", mods)
    self.spec = corpus.window_spec(self.data_cfg)

  def __call__(self, index: int, ends: Sequence[int]) -> np.ndarray:
    """(n, d) float32 features of the windows of corpus episode `index` ending at `ends`
    (20 fps frames, inclusive)."""
    ep = self.corpus.episodes[index]
    split = ep["split"]
    span = source_lib.WindowSource(self.corpus, split, self.spec, self.spec.frames).span
    starts = [answers.model_window(e, ep["length"], self.spec, span) for e in ends]
    sel = self.embed.Selection.at(split, np.full(len(starts), index), np.asarray(starts))
    if self.params is not None:
      plan = self.embed.Plan(embed={"model": (self.params, {"bridge": self.variant})},
                             handcrafted={}, targets=False)
      key = "features/model/bridge"
    else:
      plan = self.embed.Plan(embed={}, handcrafted={"bridge": self.variant}, targets=False)
      key = "features/handcrafted/bridge"
    store = self.embed.run(self.corpus, split, self.data_cfg, sel, self.encoder, plan, 0,
                           progress=False)
    return store.arrays[key].astype(np.float32)


# ----------------------------------------------------------------------------- records


def user_prompt(record: Mapping[str, Any]) -> str:
  w = record["center_window"]
  lines = [record["question"], f"Episode: {record['episode_id']}",
           f"Centre window: frames {w['start_frame']}-{w['end_frame']} (20 fps)",
           "Answer with one compact JSON object only.", f"Schema: {SCHEMA_EXAMPLE}",
           "Action options:", *(f"- {a}" for a in record["action_options"]),
           "Subtask options:", *(f"- {s}" for s in record["subtask_options"])]
  return "\n".join(lines)


def messages(record: Mapping[str, Any]) -> list[dict[str, Any]]:
  """The chat form: system, user (video, audio, text parts), assistant (the answer)."""
  content: list[dict[str, Any]] = []
  if record["media"]["mosaic_video_path"]:
    content.append({"type": "video", "video": record["media"]["mosaic_video_path"]})
  if record["media"]["audio_path"]:
    content.append({"type": "audio", "audio": record["media"]["audio_path"]})
  content.append({"type": "text", "text": user_prompt(record)})
  return [{"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]},
          {"role": "user", "content": content},
          {"role": "assistant", "content": answers.answer_text(record["answer_json"])}]


def export_episode(job: common.Job, corpus: source_lib.Corpus, index: int,
                   raw: pathlib.Path, opts: Options, bridge: Bridge) -> list[dict[str, Any]]:
  """Every record of corpus episode `index`, with its media and sensor npz written."""
  ep = corpus.episodes[index]
  s = corpus.options.frame_stride
  key = common.episode_key(ep["episode"])
  stored = corpus.read_episode(index, ("labels", "objects", "flags", "contacts"))
  frames = ep["length"] * s  # 20 fps frames the shards cover
  w, stride = opts.window_frames, opts.stride_frames
  starts = list(range(0, frames - w + 1, stride))
  vocab = corpus.labels
  rows = []
  for start in starts:
    a, b = start // s, (start + w) // s
    nxt = (b, b + (b - a)) if b + (b - a) <= ep["length"] else None
    answer = window_answer(stored, vocab, a, b, nxt, start, start + w - 1,
                           opts.min_label_fraction)
    first, last = context_span(start, start + w - 1, frames, opts.context_frames)
    k = start // stride
    rows.append({
        "id": f"{key}:qa:{k}", "episode_id": key, "source_episode_id": ep["episode"],
        "episode_path": ep["episode"], "split": ep["split"], "target": TARGET,
        "prompt_type": PROMPT_TYPE,
        "center_window": {"start_frame": start, "end_frame": start + w - 1, "num_frames": w},
        "media": {"video_paths": [{"name": f"{v}.mp4", "path": f"{ep['episode']}/{v}.mp4"}
                                  for v in xperience.VIEWS if v in ep.get("views", ())],
                  "context_start_frame": first, "context_end_frame": last,
                  "max_video_frames": opts.max_video_frames,
                  "mosaic_video_path": None, "audio_path": None},
        "question": QUESTION, "answer_json": answer, "label": answer["action"],
        "action_options": list(vocab.actions), "subtask_options": list(vocab.subtasks),
        "label_options": list(vocab.actions),
    })
  if opts.media and rows:
    _write_media(job, raw / ep["episode"], ep, key, rows, opts)
  features = bridge(index, [r["center_window"]["end_frame"] for r in rows])
  npz = job.out / "sensor_features" / f"{key}_sensor_features.npz"
  with common.atomic(npz) as tmp:
    with open(tmp, "wb") as f:
      np.savez_compressed(
          f, features=features, ids=np.array([r["id"] for r in rows]),
          action_labels=np.array([r["answer_json"]["action"] for r in rows]),
          subtask_labels=np.array([r["answer_json"]["subtask"] for r in rows]),
          starts=np.array([r["center_window"]["start_frame"] for r in rows], np.int64),
          ends=np.array([r["center_window"]["end_frame"] for r in rows], np.int64))
  for i, r in enumerate(rows):
    r.update(sensor_feature_path=str(npz.relative_to(job.out)), sensor_feature_index=i,
             sensor_feature_dim=int(features.shape[1]))
    r["messages"] = messages(r)
  return rows


def _write_media(job: common.Job, ep_dir: pathlib.Path, ep: Mapping[str, Any], key: str,
                 rows: list[dict[str, Any]], opts: Options) -> None:
  """Mosaic MP4 and WAV of every record's context, from the raw episode (PyAV)."""
  tw, th = opts.tile
  spans = [(r["media"]["context_start_frame"], r["media"]["context_end_frame"]) for r in rows]
  picks = [sampled_frames(a, b, opts.max_video_frames) for a, b in spans]
  wanted = set(int(f) for p in picks for f in p)
  with episode_lib.Episode(ep_dir) as raw_ep:
    audio = raw_ep.audio(spec_lib.AUDIO_RATE_HZ)
    views = [_ViewFrames(raw_ep.video_info[v].path if v in raw_ep.views else None, (th, tw),
                         wanted) for v in xperience.VIEWS]
    black = np.zeros((th, tw, 3), np.uint8)
    try:
      for r, (first, last), pick in zip(rows, spans, picks):
        stem = f"{key}_w{r['id'].rsplit(':', 1)[1]:0>5}_ctx{first}_{last}"
        mosaic = []
        for f in pick:
          tiles = [t if (t := view.get(int(f))) is not None else black for view in views]
          mosaic.append(np.concatenate([np.concatenate(tiles[:3], 1),
                                        np.concatenate(tiles[3:], 1)], 0))
        for view in views:
          view.forget_before(first)
        video_path = job.out / "media" / key / f"{stem}_mosaic.mp4"
        rate = Fraction(len(pick) * int(xperience.FPS), last - first + 1)  # the context's duration
        write_mosaic(video_path, mosaic, rate)
        per = spec_lib.AUDIO_RATE_HZ / xperience.FPS
        a, b = int(round(first * per)), int(round((last + 1) * per))
        audio_path = job.out / "media" / key / f"{stem}_audio.wav"
        write_wav(audio_path, np.pad(audio[a:b], (0, max(0, b - a - len(audio[a:b])))),
                  spec_lib.AUDIO_RATE_HZ)
        r["media"]["mosaic_video_path"] = str(video_path.relative_to(job.out))
        r["media"]["audio_path"] = str(audio_path.relative_to(job.out))
    finally:
      for view in views:
        view.close()


# -------------------------------------------------------------------------------- job


def resolve_checkpoint(arg: str) -> tuple[pathlib.Path, int]:
  """RUN (its latest complete checkpoint) or RUN/checkpoints/STEP -> (RUN, step)."""
  from xefm_jax.eval import checkpoints
  path = pathlib.Path(arg)
  if path.name.isdigit() and path.parent.name == checkpoints.CHECKPOINTS:
    workdir, step = path.parent.parent, int(path.name)
    if step not in checkpoints.steps(workdir):
      raise common.ExportError(f"--checkpoint {arg}: not a complete checkpoint of {workdir}")
    return workdir, step
  steps = checkpoints.steps(path) if path.is_dir() else []
  if not steps:
    raise common.ExportError(f"--checkpoint {arg}: no complete checkpoint (give a run "
                             "directory or RUN/checkpoints/STEP)")
  return path, steps[-1]


def run(shards_dir: str, out: str, opts: Options = Options(), raw: Optional[str] = None,
        checkpoint: Optional[str] = None, task: tuple[int, int] = (0, 1),
        merge_only: bool = False, progress: bool = True,
        command: Optional[Sequence[str]] = None) -> dict[str, Any]:
  """The whole export (module docstring); returns a summary."""
  corpus = common.open_corpus(shards_dir)
  s = corpus.options.frame_stride
  for flag, v in (("--window-frames", opts.window_frames), ("--stride-frames",
                                                            opts.stride_frames)):
    if v < 1 or v % s:
      raise common.ExportError(f"{flag} {v}: must be a positive multiple of the corpus' "
                               f"frame stride {s}")
  ckpt = resolve_checkpoint(checkpoint) if checkpoint else None
  options = dataclasses.asdict(opts)
  job = common.Job(out, "json_tasks", options, common.corpus_source(corpus), task=task,
                   command=command,
                   checkpoint=({"run": str(ckpt[0]), "step": ckpt[1]} if ckpt else None))
  units = {common.episode_key(e["episode"]): i for i, e in enumerate(corpus.episodes)
           if opts.split in ("all", e["split"])}
  if not units:
    raise common.ExportError(f"{corpus.root}: no episodes in split '{opts.split}'")
  todo = [] if merge_only else job.todo(list(units))
  done = 0
  if todo:
    raw_dir = common.raw_root(corpus, raw) if opts.media else pathlib.Path(".")
    bridge = Bridge(corpus, opts, ckpt)
    for unit in tqdm.tqdm(todo, desc="json tasks", unit="episode", disable=not progress):
      try:
        rows = export_episode(job, corpus, units[unit], raw_dir, opts, bridge)
      except (episode_lib.EpisodeError, media.MediaError, shards.ShardError, OSError) as e:
        job.fail(unit, f"{type(e).__name__}: {e}")
        continue
      job.write_part(unit, rows)
      done += 1
  extra = {
      "dataset_path": DATASET, "target": TARGET, "prompt_type": PROMPT_TYPE,
      "action_options": list(corpus.labels.actions),
      "subtask_options": list(corpus.labels.subtasks),
      "object_options": list(corpus.labels.objects),
      "clip_policy": {"label_window_frames": opts.window_frames,
                      "stride_frames": opts.stride_frames,
                      "context_frames": opts.context_frames,
                      "max_video_frames": opts.max_video_frames,
                      "min_label_fraction": opts.min_label_fraction,
                      "audio_span": "the video context, 16 kHz mono WAV",
                      "mosaic": "2x3: fisheye_cam0-2 over fisheye_cam3, stereo_left, "
                                "stereo_right; tiles " + "x".join(map(str, opts.tile)),
                      "media": opts.media},
      "sensor_bridge": {"modalities": list(opts.bridge_modalities),
                        "content": ("xefm window embeddings" if ckpt else
                                    "hand-crafted window statistics")},
      "notes": ["Answers are labels of the corpus' vocabularies by majority over the window "
                "(module docstring of data_pipelines/export/json_tasks.py).",
                "Paths are relative: media and sensor features to this folder, video_paths "
                "and episode_path to the raw root (source.raw).",
                "Holds derived video and audio of gated data: not a public package."],
  }
  manifest = job.merge(list(units), DATASET, extra, MANIFEST)
  if manifest is not None:
    rows = common.read_jsonl(job.out / DATASET)
    manifest["label_counts"] = dict(Counter(r["label"] for r in rows).most_common())
    common.write_json(job.out / MANIFEST, manifest)
  return {"episodes": len(units), "exported_now": done, "failed_now": len(todo) - done,
          "merged": manifest is not None,
          "records": manifest["num_records"] if manifest else None,
          "split_counts": manifest["split_counts"] if manifest else None}


_tile = common.size_arg


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--shards", required=True, help="the shard corpus (its manifest's splits)")
  p.add_argument("--out", required=True)
  p.add_argument("--raw", help="raw episode root (default: the one the corpus came from)")
  p.add_argument("--checkpoint", help="RUN or RUN/checkpoints/STEP: XEFM embeddings as the "
                 "sensor bridge")
  p.add_argument("--split", default="all", choices=("all", "train", "val", "test"))
  d = Options()
  p.add_argument("--window-frames", type=int, default=d.window_frames)
  p.add_argument("--stride-frames", type=int, default=d.stride_frames)
  p.add_argument("--context-frames", type=int, default=d.context_frames)
  p.add_argument("--max-video-frames", type=int, default=d.max_video_frames)
  p.add_argument("--min-label-fraction", type=float, default=d.min_label_fraction)
  p.add_argument("--tile", type=_tile, default=d.tile, help="WIDTHxHEIGHT of a mosaic tile")
  p.add_argument("--no-media", action="store_true", help="records without mosaic and WAV")
  p.add_argument("--task-index", type=int, default=0)
  p.add_argument("--task-count", type=int, default=1)
  p.add_argument("--merge-only", action="store_true")
  p.add_argument("--quiet", action="store_true")
  args = p.parse_args(argv)
  for flag in ("context_frames", "max_video_frames", "task_count"):
    if getattr(args, flag) < 1:
      p.error(f"--{flag.replace('_', '-')} must be at least 1")
  if not 0 < args.min_label_fraction <= 1:
    p.error("--min-label-fraction must lie in (0, 1]")
  return args


def main(argv: Sequence[str]) -> int:
  args = parse_args(argv)
  host.configure()  # --checkpoint runs the model (xefm_jax/host.py)
  opts = Options(window_frames=args.window_frames, stride_frames=args.stride_frames,
                 context_frames=args.context_frames, max_video_frames=args.max_video_frames,
                 min_label_fraction=args.min_label_fraction, tile=args.tile,
                 media=not args.no_media, split=args.split)
  try:
    summary = run(args.shards, args.out, opts, raw=args.raw, checkpoint=args.checkpoint,
                  task=(args.task_index, args.task_count), merge_only=args.merge_only,
                  progress=not args.quiet, command=["data_pipelines/export/json_tasks.py",
                                                    *argv])
  except common.ExportError as e:
    print(f"json_tasks: {e}", file=sys.stderr)
    return 1
  if summary["merged"]:
    print(f"json_tasks: {summary['records']} records of {summary['episodes']} episodes "
          f"({', '.join(f'{k} {v}' for k, v in summary['split_counts'].items())}) in "
          f"{pathlib.Path(args.out) / DATASET}")
  else:
    print(f"json_tasks: {summary['exported_now']} episodes exported; the merge waits for "
          "other tasks")
  if summary["failed_now"]:
    print(f"json_tasks: {summary['failed_now']} episodes failed (listed in "
          f"{pathlib.Path(args.out) / common.PARTS / 'json_tasks'})", file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
