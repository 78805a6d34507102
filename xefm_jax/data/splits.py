"""Train/val/test assignment by session, with optional held-out activities and objects.

Episodes of one session share a wearer and a place, so a split by episode would leak both:
every split here is by session. Assignment is a pure function of the session ids, the
fractions and a seed (sessions are ordered by a keyed hash, not by listing order), so any
job that sees the same corpus computes the same splits.

Holding out an activity (a main task) or an object sends every session that contains it to
the held-out split, so the held-out activity or object is unseen in train and val while no
session straddles two splits. `check_leakage` proves both properties for an assignment.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Mapping, Sequence

from xefm_jax import errors

SPLITS = ("train", "val", "test")
HELDOUT_SPLIT = "test"


class SplitError(errors.Error, ValueError):
  """A split specification or assignment that cannot be honoured."""


@dataclasses.dataclass(frozen=True)
class EpisodeFacts:
  """What splitting needs to know of an episode."""

  episode: str  # "<session>/ep<k>"
  session: str
  activity: str = ""  # main task
  objects: frozenset[str] = frozenset()


@dataclasses.dataclass(frozen=True)
class SplitSpec:
  fractions: Mapping[str, float] = dataclasses.field(
      default_factory=lambda: {"train": 0.8, "val": 0.1, "test": 0.1})
  holdout_activities: tuple[str, ...] = ()
  holdout_objects: tuple[str, ...] = ()
  seed: int = 0

  def to_json(self) -> dict:
    return {"fractions": dict(self.fractions), "holdout_activities": list(self.holdout_activities),
            "holdout_objects": list(self.holdout_objects), "seed": self.seed}


def parse_fractions(text: str) -> dict[str, float]:
  """"train=0.8,val=0.1,test=0.1" -> {"train": 0.8, ...}; fractions must sum to 1."""
  out: dict[str, float] = {}
  for part in filter(None, (p.strip() for p in text.split(","))):
    name, sep, value = part.partition("=")
    if not sep or name not in SPLITS:
      raise SplitError(f"split fractions: expected name=fraction with name in {SPLITS}, "
                       f"got {part!r}")
    try:
      out[name] = float(value)
    except ValueError:
      raise SplitError(f"split fractions: {value!r} for {name!r} is not a number") from None
    if not 0.0 <= out[name] <= 1.0:
      raise SplitError(f"split fractions: {name}={value} is outside [0, 1]")
  if abs(sum(out.values()) - 1.0) > 1e-6:
    raise SplitError(f"split fractions must sum to 1, got {sum(out.values()):.4f} from {text!r}")
  return out


def _session_key(session: str, seed: int) -> str:
  return hashlib.sha256(f"{seed}:{session}".encode()).hexdigest()


def _targets(n: int, fractions: Mapping[str, float]) -> dict[str, int]:
  """Session counts per split: largest remainder, and at least one session for every split
  with a positive fraction when there are enough sessions."""
  raw = {s: fractions.get(s, 0.0) * n for s in SPLITS}
  counts = {s: int(raw[s]) for s in SPLITS}
  for s in sorted(SPLITS, key=lambda s: raw[s] - counts[s], reverse=True):
    if sum(counts.values()) >= n:
      break
    counts[s] += 1
  wanted = [s for s in SPLITS if fractions.get(s, 0.0) > 0]
  if n >= len(wanted):
    for s in wanted:
      while counts[s] == 0:
        donor = max(SPLITS, key=lambda d: counts[d])
        counts[donor] -= 1
        counts[s] += 1
  return counts


def assign_splits(episodes: Sequence[EpisodeFacts], spec: SplitSpec) -> dict[str, str]:
  """Episode name -> split name."""
  sessions: dict[str, list[EpisodeFacts]] = {}
  for e in episodes:
    sessions.setdefault(e.session, []).append(e)
  held_acts, held_objs = set(spec.holdout_activities), set(spec.holdout_objects)
  forced = {s for s, eps in sessions.items()
            if any(e.activity in held_acts or e.objects & held_objs for e in eps)}
  order = sorted(sessions, key=lambda s: _session_key(s, spec.seed))
  targets = _targets(len(order), spec.fractions)
  session_split = {s: HELDOUT_SPLIT for s in forced}
  free = [s for s in order if s not in forced]
  quota = {"val": targets["val"], "test": max(0, targets["test"] - len(forced))}
  for s in free:
    for name in ("val", "test"):
      if quota[name] > 0:
        quota[name] -= 1
        session_split[s] = name
        break
    else:
      session_split[s] = "train"
  return {e.episode: session_split[e.session] for e in episodes}


def check_leakage(assignment: Mapping[str, str], episodes: Iterable[EpisodeFacts],
                  spec: SplitSpec) -> dict[str, list[str]]:
  """Violations by kind; every list is empty for a sound assignment."""
  episodes = list(episodes)
  per_session: dict[str, set[str]] = {}
  for e in episodes:
    per_session.setdefault(e.session, set()).add(assignment[e.episode])
  seen_side: set[str] = set()  # activities/objects of train and val
  for e in episodes:
    if assignment[e.episode] != HELDOUT_SPLIT:
      seen_side.add("activity:" + e.activity)
      seen_side.update("object:" + o for o in e.objects)
  return {
      "sessions_in_several_splits": sorted(s for s, v in per_session.items() if len(v) > 1),
      "heldout_activities_seen": sorted(a for a in spec.holdout_activities
                                        if "activity:" + a in seen_side),
      "heldout_objects_seen": sorted(o for o in spec.holdout_objects
                                     if "object:" + o in seen_side),
      "unassigned_episodes": sorted(e.episode for e in episodes if e.episode not in assignment),
  }


def split_report(episodes: Sequence[EpisodeFacts], spec: SplitSpec) -> dict:
  """Assignment, counts and the leakage proof, as written into reports and manifests."""
  assignment = assign_splits(episodes, spec)
  leakage = check_leakage(assignment, episodes, spec)
  if any(leakage.values()):
    raise SplitError(f"split leakage: {leakage}")
  by_split: dict[str, dict[str, int]] = {s: {"sessions": 0, "episodes": 0} for s in SPLITS}
  seen = set()
  for e in episodes:
    split = assignment[e.episode]
    by_split[split]["episodes"] += 1
    if e.session not in seen:
      seen.add(e.session)
      by_split[split]["sessions"] += 1
  return {"spec": spec.to_json(), "assignment": dict(sorted(assignment.items())),
          "counts": by_split, "leakage": leakage}
