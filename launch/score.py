"""Score any model's answers to the structured-JSON task set, beside XEFM's and two floors.

    python launch/score.py --tasks EXPORT --predictions [NAME=]FILE.jsonl [...]
        [--split all|train|val|test] [--out DIR] [--write-references DIR] [--no-references]

EXPORT is a JSON-task export (data_pipelines/export/json_tasks.py). A predictions file has
one JSON line per record: {"id": <record id>, "prediction": <the model's text, or the
answer object>} and optionally "split" (checked against the record's); the public suite's
"raw_prediction" / "pred_json" are read too. XEFM's own file is written by the eval job:
`launch/eval.py ... --json_tasks EXPORT` -> DIR/eval/<step>/json_task_predictions.jsonl.

Scores per split (xefm_jax/eval/answer_scores.py): the JSON validity rate (unparseable,
wrong type, unknown label and missing answers all count as invalid), then per field
macro-F1 and accuracy (action, subtask, next_action), micro-F1 (objects), accuracy and F1
(contact, transition). The two reference predictors (majority label; the previous window's
answer) are scored beside every file unless --no-references; --write-references DIR writes
them as predictions files.

Nothing is dropped silently: an unreadable line, an unknown id, a duplicate id (the first
is scored), a record of a split not being scored, a split that disagrees with the record's,
and every record without an answer (scored as invalid) is reported as `FILE:LINE: ...`, in
the report and on stderr. Writes DIR/metrics.json and DIR/report.md (DIR defaults to
EXPORT/scores). Exit status: 0, 1 when any predictions file had a problem (the scores are
written all the same), 2 on usage errors.
"""

from __future__ import annotations

import argparse
import math
import pathlib
import sys
import time
from typing import Any, Optional, Sequence

from data_pipelines.export import common
from data_pipelines.export import json_tasks
from xefm_jax.eval import answer_scores

SPLITS = answer_scores.SPLITS


class ScoreError(Exception):
  """Bad input to the scorer; the message names the file (and line) and what was expected."""


def _finite(x: Any) -> Any:
  """JSON-safe: non-finite numbers become null."""
  if isinstance(x, dict):
    return {k: _finite(v) for k, v in x.items()}
  if isinstance(x, list):
    return [_finite(v) for v in x]
  if isinstance(x, float) and not math.isfinite(x):
    return None
  return x


def _named(spec: str) -> tuple[str, pathlib.Path]:
  name, sep, path = spec.partition("=")
  if not sep:
    path, name = spec, pathlib.Path(spec).stem
  if not name or not path:
    raise ScoreError(f"--predictions {spec!r}: expected FILE or NAME=FILE")
  return name, pathlib.Path(path)


def run(tasks: str, predictions: Sequence[str], split: str = "all",
        out: Optional[str] = None, references: bool = True,
        write_references: Optional[str] = None) -> tuple[dict[str, Any], pathlib.Path]:
  """Scores every predictor on the export `tasks` (module docstring); (result, out dir)."""
  export = pathlib.Path(tasks)
  try:
    manifest = common.read_json(export / json_tasks.MANIFEST, "the JSON-task manifest")
    rows = common.read_jsonl(export / json_tasks.DATASET)
    options = answer_scores.Options.from_manifest(manifest)
  except (common.ExportError, ValueError) as e:
    raise ScoreError(f"--tasks {tasks}: {e}") from None
  records = {r["id"]: r for r in rows}
  splits = SPLITS if split == "all" else (split,)
  named = [_named(p) for p in predictions]
  names = [n for n, _ in named]
  if len(set(names)) != len(names):
    twice = sorted({n for n in names if names.count(n) > 1})
    raise ScoreError(f"--predictions: two files named {twice} (use NAME=FILE)")
  result: dict[str, Any] = {
      "tasks": str(export), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
      "splits": list(splits), "records": {s: sum(r["split"] == s for r in rows) for s in splits},
      "episodes": {s: len({r["episode_id"] for r in rows if r["split"] == s}) for s in splits},
      "predictors": {}}
  if references or write_references:
    for ref in answer_scores.REFERENCES:
      try:
        preds = answer_scores.reference_predictions(ref, rows)
      except ValueError as e:
        raise ScoreError(f"--tasks {tasks}: {e} (or pass --no-references)") from None
      if write_references:
        common.write_jsonl(pathlib.Path(write_references) / f"{ref}.jsonl", preds)
      if references:
        found = {p["id"]: p["prediction"] for p in preds if records[p["id"]]["split"] in splits}
        scores = answer_scores.score_predictions(found, records, splits, options)
        result["predictors"][f"{ref} (reference)"] = {"file": "built in", "problems": [],
                                                      "splits": scores}
  for name, path in named:
    if not path.is_file():
      raise ScoreError(f"--predictions {path}: not found")
    found, problems = answer_scores.read_predictions(path, records, splits)
    scores = answer_scores.score_predictions(found, records, splits, options)
    result["predictors"][name] = {"file": str(path), "problems": problems, "splits": scores}
  out_dir = pathlib.Path(out) if out else export / "scores"
  common.write_json(out_dir / "metrics.json", _finite(result))
  common.write_text(out_dir / "report.md", answer_scores.markdown(result))
  return result, out_dir


def main(argv: Sequence[str]) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--tasks", required=True, help="a JSON-task export folder")
  p.add_argument("--predictions", action="append", default=[],
                 help="[NAME=]FILE.jsonl, one JSON line per record id (repeatable)")
  p.add_argument("--split", default="all", choices=("all",) + SPLITS)
  p.add_argument("--out", help="where metrics.json and report.md go (default EXPORT/scores)")
  p.add_argument("--no-references", action="store_true")
  p.add_argument("--write-references", metavar="DIR",
                 help="also write the reference predictors as predictions files")
  args = p.parse_args(argv)
  if not args.predictions and args.no_references and not args.write_references:
    p.error("nothing to score: give --predictions, or drop --no-references")
  try:
    result, out_dir = run(args.tasks, args.predictions, args.split, args.out,
                          not args.no_references, args.write_references)
  except ScoreError as e:
    print(f"score: {e}", file=sys.stderr)
    return 2
  problems = [x for pr in result["predictors"].values() for x in pr["problems"]]
  for x in problems:
    print(f"score: {x}", file=sys.stderr)
  print(answer_scores.markdown(result).split("## Problems")[0].rstrip())
  print(f"\nscore: {out_dir / 'metrics.json'} ({out_dir / 'report.md'})"
        + (f"; {len(problems)} problem(s) in the predictions files" if problems else ""))
  return 1 if problems else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
