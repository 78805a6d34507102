"""The known quirks of real episodes, injected into synthetic ones at configurable rates.

Every quirk here is one the readers and the Stage-0 gate must tolerate
(shared/XPERIENCE_FORMAT.md, "Real quirks a reader must survive"): extra NaN runs in hand
tracking, untracked hands stored as NaN instead of the real files' zeros, one MP4 missing,
one stream a few frames short, and video timestamps stored as byte strings. Corruptions that must fail
the gate are not made here.

`draw_quirks` decides, from an rng, which quirks one episode gets; the writer applies the
decision. The same rng state gives the same decision.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from xefm_jax.data import xperience

DEPTH_STREAM = "depth"
SHORTENABLE_STREAMS = xperience.VIEWS + (DEPTH_STREAM,)


@dataclasses.dataclass(frozen=True)
class QuirkRates:
  """Per-episode probabilities of each quirk (0 disables it)."""

  hand_nan_runs: float = 0.0  # extra NaN runs in a tracked hand
  untracked_nan: float = 0.0  # the episode stores untracked hands as NaN, not zeros
  missing_view: float = 0.0  # one of the six MP4 files is absent
  short_stream: float = 0.0  # one MP4 or the depth stream ends 1-3 frames early
  string_timestamps: float = 0.0  # video/device_timestamp written as b"<ns>" strings

  def __post_init__(self):
    for f in dataclasses.fields(self):
      value = getattr(self, f.name)
      if not 0.0 <= value <= 1.0:
        raise ValueError(f"QuirkRates.{f.name} = {value}: expected a probability in [0, 1]")

  @classmethod
  def none(cls) -> "QuirkRates":
    return cls()


@dataclasses.dataclass(frozen=True)
class EpisodeQuirks:
  """The quirks one episode gets: concrete frames and streams."""

  hand_nan_runs: tuple[tuple[int, int, int], ...] = ()  # (hand 0=left 1=right, start, end)
  untracked_nan: bool = False  # untracked hand rows are NaN instead of zeros
  missing_view: str | None = None  # a name from xperience.VIEWS
  short_streams: tuple[tuple[str, int], ...] = ()  # (stream, frames missing at the end)
  string_timestamps: bool = False

  def frames_in(self, stream: str, num_frames: int) -> int:
    """Frames actually written for `stream` (a view name or "depth")."""
    return num_frames - dict(self.short_streams).get(stream, 0)

  def describe(self) -> dict[str, Any]:
    """A JSON-ready summary (world.json and tests; the health report says it its own way)."""
    return {
        "hand_nan_runs": [list(r) for r in self.hand_nan_runs],
        "untracked_nan": self.untracked_nan,
        "missing_view": self.missing_view,
        "short_streams": dict(self.short_streams),
        "string_timestamps": self.string_timestamps,
    }


def _runs(rng: np.random.Generator, num_frames: int, count: int, min_len: int,
          max_len: int) -> list[tuple[int, int]]:
  out = []
  for _ in range(count):
    length = int(rng.integers(min_len, max_len + 1))
    length = max(1, min(length, num_frames))
    start = int(rng.integers(0, num_frames - length + 1))
    out.append((start, start + length))
  return sorted(out)


def draw_quirks(rates: QuirkRates, rng: np.random.Generator, num_frames: int) -> EpisodeQuirks:
  """Which quirks an episode of `num_frames` frames gets. Deterministic given `rng`.

  Every draw is made whatever the rates, so changing one rate does not reshuffle the
  others' decisions for the same seed.
  """
  u = rng.random(5)
  nan_runs = []
  for hand in (0, 1):
    count = int(rng.integers(1, 4))
    runs = _runs(rng, num_frames, count, 3, max(3, num_frames // 10))
    if u[0] < rates.hand_nan_runs:
      nan_runs += [(hand, s, e) for s, e in runs]
  view = xperience.VIEWS[int(rng.integers(0, len(xperience.VIEWS)))]
  short = SHORTENABLE_STREAMS[int(rng.integers(0, len(SHORTENABLE_STREAMS)))]
  short_by = int(rng.integers(1, 4))
  missing = view if u[2] < rates.missing_view else None
  shorts = ()
  # A file that is not there cannot also be short; and keep at least one frame.
  if u[3] < rates.short_stream and short != missing and num_frames > short_by:
    shorts = ((short, short_by),)
  return EpisodeQuirks(
      hand_nan_runs=tuple(nan_runs),
      untracked_nan=bool(u[1] < rates.untracked_nan),
      missing_view=missing,
      short_streams=shorts,
      string_timestamps=bool(u[4] < rates.string_timestamps),
  )


def apply_hand_quirks(quirks: EpisodeQuirks, hands: dict[str, np.ndarray],
                      tracked: np.ndarray) -> None:
  """Blanks hand-tracking rows in place.

  hands: `hand_mocap/...` key name -> (N, ...) float array, as the writer is about to store
  them (untracked rows already zeros, as real files store them). tracked: (N, 2) bool.
  NaN runs blank whole rows of the run's hand; `untracked_nan` turns the untracked rows to
  NaN, the other form the format allows.
  """
  blank = ~np.asarray(tracked, bool) if quirks.untracked_nan else np.zeros(tracked.shape, bool)
  for hand, start, end in quirks.hand_nan_runs:
    blank[start:end, hand] = True
  for hand, side in enumerate(xperience.HANDS):
    for name, value in hands.items():
      if name.startswith(f"hand_mocap/{side}_"):
        value[blank[:, hand]] = np.nan


def timestamps_as_strings(ns: np.ndarray) -> np.ndarray:
  """(N,) int64 ns -> (N,) fixed-length bytes b"<ns>", as some real files store them."""
  return np.array([str(int(t)).encode() for t in ns], dtype="S")
