"""The caption JSON of an Xperience episode, resolved to per-frame labels.

The document (the `caption` key of annotation.hdf5, see shared/XPERIENCE_FORMAT.md) is a
hierarchy: a Main Task for the episode, Sub Task segments of about 20 s, Current Action
spans inside them, and objects and interaction sentences sampled at 0.5 fps. This module
turns it into a `CaptionTimeline`: one label index per frame for each level, plus the
resolved spans. It is also the statement of the caption format for the synthetic generator.

Frame references (every `start_frame`, `end_frame`, `*_frame_name`, `sampled_frames` value
and `objects` / `interaction` key) are resolved to 0-based frame indices by one rule:
  * A device time: an integer, or a string of digits, of value >= 1e8
    (xperience.TIMESTAMP_MIN_NS), optionally with an image suffix ("<ns>.jpg" as in
    `slam/frame_names`). It resolves to the frame whose device time is NEAREST (ties to the
    earlier frame).
  * "frame_0000021" (optionally with an image suffix): 1-based, so frame index 20.
  * A small integer (an int or a digit string below 1e8): 1-based, as the format page says,
    in every position. AMBIGUITY: Ropedia's own loader reads plain small integers at segment
    bounds as 0-based indices. This module applies one rule everywhere (1-based by default)
    rather than guess per position; `small_int_base=0` switches every plain small integer to
    0-based. At a segment bound the two readings differ by one frame (50 ms).
  * Integral floats are read as integers; booleans, other floats and other strings are
    errors.
A start or end may be given by both `<side>_frame` and `<side>_frame_name`; the least
ambiguous one is used: a device time, else the "frame_" form, else a plain small integer
(`<side>_frame` first among equals).

Ends are inclusive (a real action span has start_frame == end_frame); the spans stored here
are half-open [start, stop). A reference may lie at most `slack_frames` frames outside the
episode (captions were made before episodes were trimmed to frames with a pose, and streams
differ by a few frames); it is then clamped to the first or last frame. Further out, it is
an error naming the segment and the reference.

Per-frame labels (N = num_frames rows, -1 where nothing applies):
  * subtask: the segment covering the frame (a later segment wins a shared frame);
  * action, action_description: the action span covering the frame (a later span wins);
  * action_start: True where an action span starts;
  * object_set, interaction: each sample holds from its frame until the next sample of its
    segment (or the segment's end); frames of a segment before its first sample take the
    first sample, so nearest-frame rounding of sample times leaves no holes (a sample
    outside its segment is clamped into it).
The Main Task is one string for the whole episode (`task`).
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Optional, Sequence, Union

import numpy as np

from xefm_jax import errors
from xefm_jax.data import xperience

DEFAULT_SLACK_FRAMES = 5
_FRAME_FORM = re.compile(r"^frame_(\d+)$", re.IGNORECASE)
_INT_FORM = re.compile(r"^[+-]?\d+$")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

# Reference kinds, in order of preference when a bound is given twice.
_DEVICE_TIME, _FRAME_NAME, _SMALL_INT = 0, 1, 2


class CaptionError(errors.Error, ValueError):
  """A caption document that cannot be read; the message names source, key and what was
  expected."""


@dataclasses.dataclass(frozen=True)
class SegmentSpan:
  """One Sub Task segment, frames [start, stop)."""

  segment_id: int
  start: int
  stop: int
  subtask: str
  sample_frames: tuple[int, ...]  # resolved `sampled_frames`, in the document's order


@dataclasses.dataclass(frozen=True)
class ActionSpan:
  """One Current Action span, frames [start, stop)."""

  segment_id: int
  start: int
  stop: int
  label: str
  description: str


@dataclasses.dataclass(frozen=True, eq=False)
class CaptionTimeline:
  """Per-frame language labels of one episode; index arrays point into the name tuples."""

  num_frames: int
  task: str  # the Main Task, for every frame
  summary: str  # `global_summary`, "" when absent
  subtasks: tuple[str, ...]  # distinct Sub Task names, in order of first appearance
  action_labels: tuple[str, ...]
  action_descriptions: tuple[str, ...]
  object_sets: tuple[tuple[str, ...], ...]  # distinct object sets, names in document order
  interactions: tuple[str, ...]
  subtask: np.ndarray  # (N,) int32 into subtasks, -1 outside every segment
  action: np.ndarray  # (N,) int32 into action_labels, -1 outside every action span
  action_description: np.ndarray  # (N,) int32 into action_descriptions, -1 none or empty
  object_set: np.ndarray  # (N,) int32 into object_sets, -1 none
  interaction: np.ndarray  # (N,) int32 into interactions, -1 none
  action_start: np.ndarray  # (N,) bool, frames where an action span starts
  segments: tuple[SegmentSpan, ...]
  actions: tuple[ActionSpan, ...]
  config: dict  # the document's `config` object, as parsed

  def objects_at(self, frame: int) -> tuple[str, ...]:
    i = int(self.object_set[frame])
    return self.object_sets[i] if i >= 0 else ()

  def interaction_at(self, frame: int) -> str:
    i = int(self.interaction[frame])
    return self.interactions[i] if i >= 0 else ""


class _Vocab:
  """Distinct values in order of first appearance."""

  def __init__(self):
    self.index: dict[Any, int] = {}

  def __call__(self, value) -> int:
    return self.index.setdefault(value, len(self.index))

  def values(self) -> tuple:
    return tuple(self.index)


class _Resolver:
  """Turns frame references into 0-based frame indices of one episode."""

  def __init__(self, frame_times_ns: Optional[np.ndarray], num_rows: int, source: str,
               small_int_base: int, slack_frames: int):
    self.source = source
    self.num_rows = num_rows
    self.base = small_int_base
    self.slack = slack_frames
    self.times = None
    if frame_times_ns is not None:
      times = np.asarray(frame_times_ns, dtype=np.int64).reshape(-1)  # (R,)
      self.order = np.argsort(times, kind="stable")  # times may not be sorted
      self.times = times[self.order]
      steps = np.diff(self.times)
      steps = steps[steps > 0]
      # Slack for device times, in ns: frames are 1/FPS apart in the nominal clock.
      period = float(np.median(steps)) if len(steps) else 1e9 / xperience.FPS
      self.slack_ns = self.slack * period

  def error(self, where: str, expected: str) -> CaptionError:
    return CaptionError(f"{self.source or 'caption'}: {where}: {expected}")

  def classify(self, ref, where: str) -> tuple[int, int]:
    """(kind, value): device time in ns, 1-based frame_ number, or plain small int."""
    value = ref
    if isinstance(ref, bool) or ref is None:
      raise self.error(where, f"frame reference {ref!r} is not a device time, "
                       "'frame_XXXXXXX' or a frame number")
    if isinstance(ref, float):
      if not ref.is_integer():
        raise self.error(where, f"frame reference {ref!r} is not an integer")
      value = int(ref)
    elif isinstance(ref, str):
      text = ref.strip()
      for suffix in _IMAGE_SUFFIXES:
        if text.lower().endswith(suffix):
          text = text[:-len(suffix)]
          break
      m = _FRAME_FORM.match(text)
      if m:
        return _FRAME_NAME, int(m.group(1))
      if not _INT_FORM.match(text):
        raise self.error(where, f"frame reference {ref!r} is not a device time, "
                         "'frame_XXXXXXX' or a frame number")
      value = int(text)
    elif not isinstance(ref, int):
      raise self.error(where, f"frame reference {ref!r} has type {type(ref).__name__}, "
                       "expected an int or a string")
    if value >= xperience.TIMESTAMP_MIN_NS:
      return _DEVICE_TIME, value
    return _SMALL_INT, value

  def resolve(self, ref, where: str) -> int:
    return self.resolve_classified(ref, self.classify(ref, where), where)

  def resolve_classified(self, ref, kind_value: tuple[int, int], where: str) -> int:
    kind, value = kind_value
    n = self.num_rows
    if kind == _DEVICE_TIME:
      if self.times is None or not len(self.times):
        raise self.error(where, f"device-time reference {ref!r} but the episode has no "
                         "frame times (video/device_timestamp or slam/frame_names)")
      t = self.times
      pos = int(np.searchsorted(t, value))
      if pos == 0:
        best = 0
      elif pos == len(t):
        best = len(t) - 1
      else:  # nearest of the two neighbours, the earlier on a tie
        best = pos - 1 if value - t[pos - 1] <= t[pos] - value else pos
      if value < t[0] - self.slack_ns or value > t[-1] + self.slack_ns:
        raise self.error(where, f"device-time reference {ref!r} is outside the episode "
                         f"(frame times {t[0]}..{t[-1]} ns, {self.slack} frames of slack)")
      return int(self.order[best])
    index = value - 1 if kind == _FRAME_NAME else value - self.base
    if n == 0 or not -self.slack <= index < n + self.slack:
      form = "1-based 'frame_'" if kind == _FRAME_NAME else f"{self.base}-based"
      raise self.error(where, f"frame reference {ref!r} ({form}, frame index {index}) is "
                       f"outside the episode's {n} frames ({self.slack} frames of slack)")
    return min(max(index, 0), n - 1)

  def bound(self, obj: dict, side: str, where: str) -> int:
    """The frame index of `<side>_frame` / `<side>_frame_name`, least ambiguous first."""
    candidates = []
    for key in (f"{side}_frame", f"{side}_frame_name"):
      if obj.get(key) is not None:
        candidates.append((self.classify(obj[key], f"{where}.{key}"), key))
    if not candidates:
      raise self.error(where, f"missing {side}_frame (expected a frame reference: a device "
                       "time, 'frame_XXXXXXX' or a frame number)")
    (kind, value), key = min(candidates, key=lambda c: c[0][0])  # stable: _frame first
    return self.resolve_classified(obj[key], (kind, value), f"{where}.{key}")


def _load(text: Union[str, bytes], source: str) -> dict:
  name = source or "caption"
  if isinstance(text, (bytes, bytearray, np.bytes_)):
    try:
      text = bytes(text).decode("utf-8")
    except UnicodeDecodeError as e:
      raise CaptionError(f"{name}: caption is not UTF-8 ({e})") from e
  if not isinstance(text, str):
    raise CaptionError(f"{name}: caption has type {type(text).__name__}, expected a JSON "
                       "string")
  try:
    doc = json.loads(text)
    if isinstance(doc, str):  # some exports store the document JSON-encoded twice
      doc = json.loads(doc)
  except json.JSONDecodeError as e:
    raise CaptionError(f"{name}: caption is not JSON ({e})") from e
  if not isinstance(doc, dict):
    raise CaptionError(f"{name}: caption is a JSON {type(doc).__name__}, expected an object "
                       "with 'config' and 'segments'")
  return doc


def _string(value, where: str, source: str, default: str = "") -> str:
  if value is None:
    return default
  if not isinstance(value, str):
    raise CaptionError(f"{source or 'caption'}: {where}: expected a string, got "
                       f"{type(value).__name__}")
  return value.strip()


def _mapping(value, where: str, source: str) -> dict:
  if value is None:
    return {}
  if not isinstance(value, dict):
    raise CaptionError(f"{source or 'caption'}: {where}: expected an object mapping frame "
                       f"references to values, got {type(value).__name__}")
  return value


def _object_names(value, where: str, source: str) -> tuple[str, ...]:
  if isinstance(value, str):
    value = [value]
  if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
    raise CaptionError(f"{source or 'caption'}: {where}: expected a list of object names")
  names = (v.strip() for v in value)
  return tuple(dict.fromkeys(n for n in names if n))  # drop empties and repeats, keep order


def _hold(labels: np.ndarray, samples: list[tuple[int, int]], start: int, stop: int):
  """Paints sample values over [start, stop): each holds until the next sample."""
  if not samples or start >= stop:
    return
  samples = sorted((min(max(f, start), stop - 1), v) for f, v in samples)
  bounds = [start] + [f for f, _ in samples[1:]] + [stop]
  for (_, value), a, b in zip(samples, bounds[:-1], bounds[1:]):
    labels[a:b] = value


def parse_caption(text: Union[str, bytes], frame_times_ns: Optional[Sequence[int]],
                  source: str = "", *, num_frames: Optional[int] = None,
                  small_int_base: int = 1,
                  slack_frames: int = DEFAULT_SLACK_FRAMES) -> CaptionTimeline:
  """Parses a caption document into a CaptionTimeline.

  Args:
    text: the JSON document.
    frame_times_ns: (R,) device time of every frame, for device-time references; None if
      the episode has none (device-time references are then errors).
    source: named in error messages, e.g. "<session>/ep3/annotation.hdf5:caption".
    num_frames: rows of the per-frame arrays (the frames every stream covers); defaults to
      R. References are checked against the R frame times; spans are clipped to num_frames.
    small_int_base: 1 (the format page) or 0 (Ropedia's loader at segment bounds), applied
      to every plain small integer reference.
    slack_frames: how far outside the episode a reference may lie and be clamped.
  Raises:
    CaptionError: not JSON, bad structure, or a reference outside the episode.
  """
  if small_int_base not in (0, 1):
    raise ValueError(f"small_int_base must be 0 or 1, got {small_int_base}")
  doc = _load(text, source)
  times = None if frame_times_ns is None else np.asarray(frame_times_ns, np.int64)
  num_rows = len(times) if times is not None else (num_frames or 0)
  n = num_rows if num_frames is None else int(num_frames)
  res = _Resolver(times, num_rows, source, small_int_base, slack_frames)

  config = _mapping(doc.get("config"), "config", source)
  task = _string(config.get("Main Task", doc.get("Main Task")), "config['Main Task']", source)
  summary = _string(doc.get("global_summary"), "global_summary", source)
  segments_doc = doc.get("segments")
  if not isinstance(segments_doc, list):
    raise res.error("segments", "expected a list of segment objects, got "
                    f"{type(segments_doc).__name__}")

  subtask = np.full(n, -1, np.int32)
  action = np.full(n, -1, np.int32)
  action_description = np.full(n, -1, np.int32)
  object_set = np.full(n, -1, np.int32)
  interaction = np.full(n, -1, np.int32)
  action_start = np.zeros(n, bool)
  vocab = {k: _Vocab() for k in ("subtask", "action", "description", "objects", "interaction")}
  segments, actions = [], []

  def clip(a: int, b: int) -> tuple[int, int]:
    return min(a, n), min(b, n)

  for si, seg in enumerate(segments_doc):
    if not isinstance(seg, dict):
      raise res.error(f"segments[{si}]", f"expected an object, got {type(seg).__name__}")
    seg_id = seg.get("segment_id", si)
    where = f"segment {seg_id} (segments[{si}])"
    first = res.bound(seg, "start", where)
    last = res.bound(seg, "end", where)
    if last < first:
      raise res.error(where, f"ends at frame {last} before it starts at frame {first}")
    start, stop = clip(first, last + 1)
    name = _string(seg.get("Sub Task"), f"{where}['Sub Task']", source)
    if start < stop:
      subtask[start:stop] = vocab["subtask"](name)

    acts = seg.get("Current Action")
    acts = [] if acts is None else [acts] if isinstance(acts, dict) else acts
    if not isinstance(acts, list):
      raise res.error(f"{where}['Current Action']", "expected a list of action objects")
    for ai, act in enumerate(acts):
      a_where = f"{where}['Current Action'][{ai}]"
      if not isinstance(act, dict):
        raise res.error(a_where, f"expected an object, got {type(act).__name__}")
      label = _string(act.get("label"), f"{a_where}.label", source)
      if not label:
        raise res.error(f"{a_where}.label", "expected a non-empty action label")
      description = _string(act.get("description"), f"{a_where}.description", source)
      a_first = res.bound(act, "start", a_where)
      a_last = res.bound(act, "end", a_where)
      if a_last < a_first:
        raise res.error(a_where, f"ends at frame {a_last} before it starts at {a_first}")
      a_start, a_stop = clip(a_first, a_last + 1)
      actions.append(ActionSpan(seg_id, a_start, a_stop, label, description))
      if a_start < a_stop:
        action[a_start:a_stop] = vocab["action"](label)
        action_description[a_start:a_stop] = (vocab["description"](description)
                                              if description else -1)
        action_start[a_start] = True

    sampled = _mapping(seg.get("sampled_frames"), f"{where}.sampled_frames", source)
    sample_frames = tuple(res.resolve(ref, f"{where}.sampled_frames[{key!r}]")
                          for key, ref in sampled.items())
    obj_doc = _mapping(seg.get("objects"), f"{where}.objects", source)
    obj_samples = []
    for ref, names in obj_doc.items():
      o_where = f"{where}.objects[{ref!r}]"
      obj_samples.append((res.resolve(ref, o_where),
                          vocab["objects"](_object_names(names, o_where, source))))
    _hold(object_set, obj_samples, start, stop)
    int_doc = _mapping(seg.get("interaction"), f"{where}.interaction", source)
    int_samples = []
    for ref, sentence in int_doc.items():
      i_where = f"{where}.interaction[{ref!r}]"
      sentence = _string(sentence, i_where, source)
      int_samples.append((res.resolve(ref, i_where),
                          vocab["interaction"](sentence) if sentence else -1))
    _hold(interaction, int_samples, start, stop)
    segments.append(SegmentSpan(seg_id, start, stop, name, sample_frames))

  return CaptionTimeline(
      num_frames=n, task=task, summary=summary,
      subtasks=vocab["subtask"].values(), action_labels=vocab["action"].values(),
      action_descriptions=vocab["description"].values(),
      object_sets=vocab["objects"].values(), interactions=vocab["interaction"].values(),
      subtask=subtask, action=action, action_description=action_description,
      object_set=object_set, interaction=interaction, action_start=action_start,
      segments=tuple(segments), actions=tuple(actions), config=config)
