"""The episode's language: interaction sentences and the caption JSON document.

The caption follows shared/XPERIENCE_FORMAT.md and the reader's rules (xefm_jax/data/
caption.py): a Main Task, Sub Task segments of at most `segment_sec` seconds that follow
the subtask spans, Current Action spans with device-time bounds (ends inclusive, as in real
files), and objects and interaction sentences keyed by the device time of frames sampled
at 0.5 fps. Real files mix the forms of segment bounds, even inside one segment; with
`mixed_forms` the generator does too (device-time ints, device-time strings, 1-based
"frame_XXXXXXX" names, and `start_frame_name` / `end_frame_name` keys).
"""

from __future__ import annotations

import datetime
import json

import numpy as np

from data_pipelines.synth import procedure as procedure_lib
from data_pipelines.synth.scene import EpisodeSim, Step

SEGMENT_SEC = 20
SAMPLE_FPS = 0.5
SAMPLE_EVERY = int(round(procedure_lib.FPS / SAMPLE_FPS))  # frames between sampled frames
_GERUND = {"reach": "reaching", "grasp": "grasping", "lift": "lifting", "place": "placing",
           "put": "putting", "pour": "pouring", "stir": "stirring", "cut": "cutting",
           "wipe": "wiping", "open": "opening", "close": "closing", "push": "pushing",
           "walk": "walking", "turn": "turning", "look": "looking"}
BOUND_FORMS = ("int", "str", "frame")  # device time as int, as string, "frame_XXXXXXX"


def interaction_sentence(step: Step, visible: np.ndarray) -> str:
  """What the hands do in a step, as a caption would say it; visible: (2,) left, right."""
  words = step.description.rstrip(".").split(" ", 1)
  verb = _GERUND[words[0].lower()]
  rest = words[1] if len(words) > 1 else ""
  for tail in (" with the left hand", " with the right hand", " with both hands"):
    rest = rest.replace(tail, "")
  if step.hand == "none":
    seen = "" if visible.any() else "; no hands are in view"
    return f"The wearer is {verb} {rest}{seen}."
  if step.hand == "both" and visible.all():
    return f"Both hands are {verb} {rest}."
  side = step.hand if step.hand != "both" else ("left" if visible[0] else "right")
  if not visible[0 if side == "left" else 1]:
    return f"The wearer is {verb} {rest} with the hands out of view."
  return f"The {side} hand is {verb} {rest}."


def interactions(steps: list[Step], hand_visible: np.ndarray) -> list[tuple[int, str]]:
  """(frame, sentence) at the 0.5 fps sampled frames."""
  idx = np.full(hand_visible.shape[0], -1)
  for i, s in enumerate(steps):
    idx[s.start:s.end] = i
  return [(f, interaction_sentence(steps[idx[f]], hand_visible[f]))
          for f in range(0, hand_visible.shape[0], SAMPLE_EVERY)]


def _segments(steps: list[Step]) -> list[tuple[int, int, str]]:
  """(start, stop, subtask): runs of one subtask cut into pieces of at most SEGMENT_SEC,
  at step boundaries where a step fits, inside a step where one is longer."""
  limit = int(SEGMENT_SEC * procedure_lib.FPS)
  out = []
  i = 0
  while i < len(steps):
    j = i
    while j + 1 < len(steps) and steps[j + 1].subtask == steps[i].subtask:
      j += 1
    start, end = steps[i].start, steps[j].end
    cuts = [s.end for s in steps[i:j]]  # step boundaries inside the run
    a = start
    while a < end:
      inside = [c for c in cuts if a < c <= a + limit]
      b = end if end - a <= limit else (inside[-1] if inside else a + limit)
      out.append((a, b, steps[i].subtask))
      a = b
    i = j + 1
  return out


def _object_names(sim: EpisodeSim, frame: int) -> list[str]:
  names = [o.name.replace("_", " ") for o, on in zip(sim.objects, sim.relevant_objects[frame])
           if on]
  return names + (["hand"] if sim.hand_visible[frame].any() else [])


def caption_json(sim: EpisodeSim, rng: np.random.Generator, mixed_forms: bool = True) -> str:
  """The caption document of an episode, as a JSON string."""
  times = sim.frame_times_ns
  steps = sim.steps
  sentences = dict(sim.interactions)
  index = sim.action_index()

  def ref(frame: int, form: str):
    t = int(times[frame])
    return {"int": t, "str": str(t), "frame": f"frame_{frame + 1:07d}"}[form]

  clock = datetime.datetime(2025, 1, 1) + datetime.timedelta(
      days=int(rng.integers(0, 365)), seconds=int(rng.integers(0, 86400)))
  segments, total = [], 0
  for sid, (a, b, subtask) in enumerate(_segments(steps)):
    forms = (BOUND_FORMS[(2 * sid) % 3], BOUND_FORMS[(2 * sid + 1) % 3]) if mixed_forms else (
        "int", "int")
    seg = {"segment_id": sid, "start_frame": ref(a, forms[0]), "end_frame": ref(b - 1, forms[1])}
    if mixed_forms and (sid == 0 or rng.random() < 0.3):
      seg["start_frame_name"] = f"{int(times[a])}.jpg"
      seg["end_frame_name"] = f"{int(times[b - 1])}.jpg"
    seg["Sub Task"] = subtask
    actions = []
    for s in steps:
      lo, hi = max(s.start, a), min(s.end, b)
      if lo < hi:
        as_str = mixed_forms and rng.random() < 0.3
        actions.append({"label": s.label, "description": s.description,
                        "start_frame": ref(lo, "str" if as_str else "int"),
                        "end_frame": ref(hi - 1, "str" if as_str else "int")})
    seg["Current Action"] = actions
    sampled = list(range(-(-a // SAMPLE_EVERY) * SAMPLE_EVERY, b, SAMPLE_EVERY)) or [(a + b) // 2]
    seg["sampled_frames"] = {f"Image {i + 1}": int(times[f]) for i, f in enumerate(sampled)}
    seg["objects"] = {str(int(times[f])): _object_names(sim, f) for f in sampled}
    seg["interaction"] = {
        str(int(times[f])): sentences.get(f) or interaction_sentence(
            steps[index[f]], sim.hand_visible[f]) for f in sampled}
    clock += datetime.timedelta(seconds=float(rng.uniform(2, 6)))
    seg["api_call_start"] = clock.isoformat(timespec="microseconds")
    clock += datetime.timedelta(seconds=float(rng.uniform(3, 9)))
    seg["api_call_end"] = clock.isoformat(timespec="microseconds")
    text = json.dumps({k: seg[k] for k in ("Current Action", "objects", "interaction")})
    seg["tokens_in"] = int(rng.integers(1500, 2200)) + 258 * len(sampled)  # prompt + images
    seg["tokens_out"] = len(text) // 4
    total += seg["tokens_in"] + seg["tokens_out"]
    segments.append(seg)
  runs = [s.subtask for i, s in enumerate(steps) if i == 0 or s.subtask != steps[i - 1].subtask]
  order = list(dict.fromkeys(runs))  # each subtask once, in order of first appearance
  rounds = max(runs.count(r) for r in order)
  summary = (f"{sim.task_text} In the {sim.place.replace('_', ' ')}, the wearer goes through: "
             + ", ".join(r[0].lower() + r[1:] for r in order)
             + (f"; some of these {rounds} times over." if rounds > 1 else "."))
  doc = {"config": {"segment_sec": SEGMENT_SEC, "sample_fps": SAMPLE_FPS, "total_tokens": total,
                    "Main Task": sim.task_text},
         "segments": segments, "global_summary": summary}
  return json.dumps(doc)
