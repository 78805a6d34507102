"""Scores of answers to the structured-JSON task set (answers.py): validity, then each field.

    options = answer_scores.Options.from_manifest(manifest)       # the label vocabularies
    answer, reason = answer_scores.check(prediction, options)     # None + why, if invalid
    scores = answer_scores.score(truths, answers, reasons)        # one split
    found, problems = answer_scores.read_predictions(path, records, splits)   # a file
    per_split = answer_scores.score_predictions(found, records, splits, options)

Validity (the rate of valid answers over every record of the split, a missing one counted):
  unparseable    no JSON object in the text (a code fence around it, or prose before and
                 after one object, is tolerated, as the public suite's parser does)
  wrong_type     not exactly the seven keys, or a value of the wrong type: a string for
                 action / subtask / next_action, a list of at most 8 distinct strings for
                 objects, "yes" / "no" / "unknown" for contact and transition, integers
                 start_frame <= end_frame for evidence_window
  unknown_label  a label outside the corpus' vocabularies (and not "unknown")
  missing        no prediction for the record
An invalid answer counts as wrong in every field (its labels are `INVALID`, its object set
empty). Fields, over the records whose true value is known (not "unknown"):
  action, subtask, next_action   macro-F1 over the classes present in the truth or the
                                 predictions (metrics.f1_scores), and accuracy
  objects                        micro-F1 over (record, object) pairs
  contact, transition            accuracy, and F1 of "yes"
evidence_window is checked for type only: the records' windows are given in the prompt.

A predictions file (launch/score.py states its format) is read with every problem reported
by file and line (`read_predictions`); a record without an answer is scored as missing.

The reference predictors give every table a floor: `majority` (each field's most common
true value on the train split, the object set too) and `previous_window` (the true answer
of the episode's previous window; the majority answer for an episode's first window).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections import Counter
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from xefm_jax.eval import answers
from xefm_jax.eval import metrics

INVALID = "<invalid>"
REASONS = ("missing", "unparseable", "wrong_type", "unknown_label")
REFERENCES = ("majority", "previous_window")
SPLITS = ("train", "val", "test")
# report.md columns: (field, metric, heading)
COLUMNS = (("action", "macro_f1", "action macro-F1"),
           ("subtask", "macro_f1", "subtask macro-F1"),
           ("next_action", "macro_f1", "next action macro-F1"),
           ("objects", "micro_f1", "objects micro-F1"), ("contact", "accuracy", "contact acc"),
           ("transition", "accuracy", "transition acc"), ("transition", "f1", "transition F1"))
_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Options:
  """The labels an answer may use (the export's vocabularies)."""

  actions: frozenset[str]
  subtasks: frozenset[str]
  objects: frozenset[str]

  @classmethod
  def from_manifest(cls, manifest: Mapping[str, Any]) -> "Options":
    try:
      return cls(frozenset(manifest["action_options"]), frozenset(manifest["subtask_options"]),
                 frozenset(manifest["object_options"]))
    except KeyError as e:
      raise ValueError(f"the JSON-task manifest has no {e.args[0]} (not a json_tasks export?)"
                       ) from None

  def labels(self, field: str) -> frozenset[str]:
    return self.subtasks if field == "subtask" else self.actions


def parse(prediction: Any) -> Optional[dict[str, Any]]:
  """The JSON object of a prediction (an object already, or text holding one), or None."""
  if isinstance(prediction, dict):
    return prediction
  if not isinstance(prediction, str):
    return None
  text = _FENCE.sub("", prediction.strip())
  try:
    value = json.loads(text)
  except json.JSONDecodeError:
    first, last = text.find("{"), text.rfind("}")
    if first < 0 or last <= first:
      return None
    try:
      value = json.loads(text[first:last + 1])
    except json.JSONDecodeError:
      return None
  return value if isinstance(value, dict) else None


def check(prediction: Any, options: Options) -> tuple[Optional[dict[str, Any]], Optional[str]]:
  """(the answer, None) when valid, else (None, the reason: one of REASONS)."""
  answer = parse(prediction)
  if answer is None:
    return None, "unparseable"
  if set(answer) != set(answers.KEYS):
    return None, "wrong_type"
  strings = all(isinstance(answer[f], str) for f in answers.LABEL_FIELDS)
  objects = answer["objects"]
  objects_ok = (isinstance(objects, list) and len(objects) <= answers.MAX_OBJECTS
                and all(isinstance(o, str) for o in objects) and len(set(objects)) == len(objects))
  binary_ok = all(answer[f] in answers.YES_NO for f in answers.BINARY_FIELDS)
  w = answer["evidence_window"]
  window_ok = (isinstance(w, dict) and set(w) == {"start_frame", "end_frame"}
               and all(isinstance(w[k], int) and not isinstance(w[k], bool) for k in w)
               and w["start_frame"] <= w["end_frame"])
  if not (strings and objects_ok and binary_ok and window_ok):
    return None, "wrong_type"
  for f in answers.LABEL_FIELDS:
    if answer[f] != answers.UNKNOWN and answer[f] not in options.labels(f):
      return None, "unknown_label"
  if any(o not in options.objects for o in objects):
    return None, "unknown_label"
  return answer, None


def _f1(true: Sequence[str], pred: Sequence[str]) -> dict[str, float]:
  classes = {c: i for i, c in enumerate(sorted(set(true) | set(pred)))}
  s = metrics.f1_scores(np.array([classes[t] for t in true]),
                        np.array([classes[p] for p in pred]))
  return {"macro_f1": s["macro_f1"], "accuracy": s["micro_f1"]}


def score(truths: Sequence[Mapping[str, Any]], predicted: Sequence[Optional[Mapping[str, Any]]],
          reasons: Sequence[Optional[str]]) -> dict[str, Any]:
  """Scores of one split: truths (the records' answer_json), predicted (the valid answers,
  None where invalid), reasons (None where valid)."""
  n = len(truths)
  invalid = Counter(r for r in reasons if r is not None)
  out: dict[str, Any] = {
      "records": n,
      "json_validity_rate": (n - sum(invalid.values())) / n if n else float("nan"),
      "invalid": {r: int(invalid.get(r, 0)) for r in REASONS}, "fields": {}}
  get = lambda p, f: INVALID if p is None else p[f]  # noqa: E731
  for f in answers.LABEL_FIELDS + answers.BINARY_FIELDS:
    rows = [i for i, t in enumerate(truths) if t[f] != answers.UNKNOWN]
    true = [truths[i][f] for i in rows]
    pred = [get(predicted[i], f) for i in rows]
    if not rows:
      out["fields"][f] = {"records": 0}
      continue
    if f in answers.BINARY_FIELDS:
      yes_t = np.array([t == "yes" for t in true])
      yes_p = np.array([p == "yes" for p in pred])
      entry = {"accuracy": float(np.mean([t == p for t, p in zip(true, pred)])),
               "f1": metrics.binary_f1(yes_t, yes_p)}
    else:
      entry = _f1(true, pred)
    out["fields"][f] = {**entry, "records": len(rows)}
  tp = fp = fn = 0
  for t, p in zip(truths, predicted):
    true_set, pred_set = set(t["objects"]), set(p["objects"]) if p is not None else set()
    tp += len(true_set & pred_set)
    fp += len(pred_set - true_set)
    fn += len(true_set - pred_set)
  out["fields"]["objects"] = {"micro_f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else
                              float("nan"), "records": n}
  return out


# ------------------------------------------------------------------- reference predictors


def _window_of(record: Mapping[str, Any]) -> dict[str, int]:
  w = record["center_window"]
  return {"start_frame": int(w["start_frame"]), "end_frame": int(w["end_frame"])}


def majority_answer(train: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
  """Each field's most common true value over `train` records (ties: the first in sorted
  order); label fields among known values where there are any."""
  if not train:
    raise ValueError("the majority predictor needs train records in the export")
  answer: dict[str, Any] = {}
  for f in answers.LABEL_FIELDS + answers.BINARY_FIELDS:
    values = [r["answer_json"][f] for r in train]
    known = [v for v in values if v != answers.UNKNOWN] or values
    counts = Counter(known)
    answer[f] = min(counts, key=lambda v: (-counts[v], v))
  sets = Counter(tuple(r["answer_json"]["objects"]) for r in train)
  answer["objects"] = list(min(sets, key=lambda s: (-sets[s], s)))
  return answer


def reference_predictions(name: str, records: Sequence[Mapping[str, Any]]
                          ) -> list[dict[str, Any]]:
  """[{"id", "split", "prediction"}] of reference predictor `name` for every record."""
  if name not in REFERENCES:
    raise ValueError(f"unknown reference predictor {name!r} (have {REFERENCES})")
  base = majority_answer([r for r in records if r["split"] == "train"])
  previous: dict[str, Mapping[str, Any]] = {}
  if name == "previous_window":
    by_episode: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
      by_episode.setdefault(r["episode_id"], []).append(r)
    for rows in by_episode.values():
      rows = sorted(rows, key=lambda r: r["center_window"]["start_frame"])
      previous.update({b["id"]: a["answer_json"] for a, b in zip(rows, rows[1:])})
  out = []
  for r in records:
    source = previous.get(r["id"], base)
    answer = {f: source[f] for f in answers.KEYS if f != "evidence_window"}
    answer["evidence_window"] = _window_of(r)
    out.append({"id": r["id"], "split": r["split"], "prediction": answers.answer_text(answer)})
  return out


# ------------------------------------------------------------------- predictions files


def read_predictions(path: str | os.PathLike, records: dict[str, dict[str, Any]],
                     splits: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
  """({record id: prediction}, problems) of one predictions file (module docstring)."""
  found: dict[str, Any] = {}
  first_line: dict[str, int] = {}
  problems = []
  with open(path, encoding="utf-8") as f:
    for n, line in enumerate(f, 1):
      if not line.strip():
        continue
      where = f"{path}:{n}"
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        problems.append(f"{where}: not JSON ({e.msg}); the line is not scored")
        continue
      if not isinstance(row, dict) or not isinstance(row.get("id"), str):
        problems.append(f"{where}: expected an object with a string \"id\"; not scored")
        continue
      rid = row["id"]
      if rid not in records:
        problems.append(f"{where}: id {rid!r} is not a record of the export; not scored")
        continue
      split = records[rid]["split"]
      if split not in splits:
        problems.append(f"{where}: id {rid!r} is a {split} record, the scored split(s) are "
                        f"{', '.join(splits)}; not scored")
        continue
      if "split" in row and row["split"] != split:
        problems.append(f"{where}: id {rid!r} says split {row['split']!r}, the record is in "
                        f"{split!r}; scored as the record's")
      if rid in found:
        problems.append(f"{where}: duplicate id {rid!r} (first on line {first_line[rid]}); "
                        "the first is scored")
        continue
      if "prediction" in row:
        value = row["prediction"]
      elif "raw_prediction" in row:
        value = row["raw_prediction"]
      elif "pred_json" in row:
        value = row["pred_json"]
      else:
        problems.append(f"{where}: id {rid!r} has no \"prediction\"; scored as invalid")
        value = None
      found[rid], first_line[rid] = value, n
  for rid, r in records.items():
    if r["split"] in splits and rid not in found:
      problems.append(f"{path}: id {rid!r} ({r['split']}) has no prediction; scored as "
                      "invalid (missing)")
  return found, problems


def score_predictions(found: dict[str, Any], records: dict[str, dict[str, Any]],
                      splits: Sequence[str], options: Options) -> dict[str, Any]:
  """{split: scores} of one predictor."""
  out = {}
  for split in splits:
    rows = [r for r in records.values() if r["split"] == split]
    if not rows:
      continue
    checked = [check(found[r["id"]], options) if r["id"] in found
               else (None, "missing") for r in rows]
    s = score([r["answer_json"] for r in rows], [c[0] for c in checked],
              [c[1] for c in checked])
    s["episodes"] = len({r["episode_id"] for r in rows})
    out[split] = s
  return out


def _num(x: Any) -> str:
  if x is None or (isinstance(x, float) and math.isnan(x)):
    return "n/a"
  return f"{x:.3f}"


def markdown(result: dict[str, Any]) -> str:
  lines = [f"# JSON task scores: `{result['tasks']}`", "",
           "Every predictor answers the same records (the corpus' session splits). Invalid "
           "answers (unparseable, wrong type, unknown label, missing) count as wrong in every "
           "field. Label fields are scored over records whose true label is known; the "
           "majority and previous-window predictors are the floors.", ""]
  for split in result["splits"]:
    n = result["records"].get(split, 0)
    if not n:
      continue
    episodes = result["episodes"][split]
    what = "episodes seen in training" if split == "train" else "held-out episodes"
    lines += [f"## {split}: {n} records, {episodes} {what}", ""]
    head = ["predictor", "JSON validity"] + [c[2] for c in COLUMNS]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, p in result["predictors"].items():
      s = p["splits"][split]
      row = [name, _num(s["json_validity_rate"])] + [
          _num(s["fields"][f].get(m)) for f, m, _ in COLUMNS]
      lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    invalid = {name: p["splits"][split]["invalid"] for name, p in result["predictors"].items()
               if any(p["splits"][split]["invalid"].values())}
    if invalid:
      lines.append("Invalid answers: " + "; ".join(
          f"{name}: " + ", ".join(f"{k} {v}" for k, v in c.items() if v)
          for name, c in invalid.items()) + ".")
      lines.append("")
  problems = [(name, p["problems"]) for name, p in result["predictors"].items() if p["problems"]]
  lines += ["## Problems in the predictions files", ""]
  if not problems:
    lines.append("None: every scored record has exactly one answer.")
  for name, items in problems:
    lines.append(f"- {name}: {len(items)}")
    lines += [f"  - `{x}`" for x in items[:200]]
    if len(items) > 200:
      lines.append(f"  - ... {len(items) - 200} more in metrics.json")
  lines += ["", "Sources: " + ", ".join(f"{name} `{p['file']}`"
                                         for name, p in result["predictors"].items()), ""]
  return "\n".join(lines)
