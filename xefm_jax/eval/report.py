"""The report of one checkpoint: DIR/eval/<step>/report.json and report.md, written atomically.

report.json (what tools read):
  {"step", "run", "corpus", "feature_sets", "splits": {role: {split, sessions, episodes,
   windows, stride}},
   "tasks": {"<task id>": {"metric", "higher_is_better", "evaluator", "target", "inputs",
             "model", "handcrafted", "random_init", "beats_both",
             "probe": {feature set: {kind, params, val_score}},
             "details": {feature set: every metric of the test split}}},
   "extensions": {...the same for the four extension probes...},
   "summary": {"tasks_model_beats_both", "tasks", "which"},
   "protocol": {"structured_generation", "text_window_retrieval", "forecasting",
                "reconstruction", "heads", "robustness", "generalization"},
   "figures": [file names], "timings": {...}}
Non-finite numbers are null. report.md is the same for people: the model against both
baselines per task, a win/loss column and the count of tasks where the model beats both.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Mapping, Optional

REPORT_JSON, REPORT_MD = "report.json", "report.md"
BASELINES = ("handcrafted", "random_init")


def write_text_atomic(path: pathlib.Path, text: str) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
  tmp.write_text(text)
  os.replace(tmp, path)


def _num(x: Any, digits: int = 3) -> str:
  if x is None:
    return "n/a"
  if isinstance(x, bool):
    return str(x)
  if isinstance(x, (int, float)):
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)
  return str(x)


def verdict(entry: Mapping[str, Any]) -> str:
  """"wins" when the model beats both baselines, else which it loses (or ties) to."""
  m = entry.get("model")
  if m is None:
    return "n/a"
  sign = 1 if entry["higher_is_better"] else -1
  lost = [b.replace("_", " ") for b in BASELINES
          if entry.get(b) is None or sign * (m - entry[b]) <= 0]
  return "wins" if not lost else "loses to " + " and ".join(lost)


def _task_table(entries: Mapping[str, Any], feature_sets) -> list[str]:
  head = ["task", "metric"] + [fs.replace("_", " ") for fs in feature_sets]
  has_all = all(fs in feature_sets for fs in ("model",) + BASELINES)
  if has_all:
    head.append("model vs both")
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for name, e in entries.items():
    arrow = "" if e["higher_is_better"] else " (lower is better)"
    row = [f"`{name}`", e["metric"] + arrow] + [_num(e.get(fs)) for fs in feature_sets]
    if has_all:
      row.append(verdict(e))
    lines.append("| " + " | ".join(row) + " |")
  return lines


def _protocol_md(p: Mapping[str, Any]) -> list[str]:
  out = ["## The pretraining protocol (model heads)", ""]

  def unavailable(name, d):
    if isinstance(d, Mapping) and d.get("available") is False:
      out.append(f"- **{name}**: not available ({d['reason']})")
      return True
    return False

  sg = p.get("structured_generation", {})
  if not unavailable("structured generation", sg):
    f = sg["fields"]
    out.append(f"- **structured generation**: JSON validity {_num(sg['json_validity_rate'])}; "
               f"action macro-F1 {_num(f['action']['macro_f1'])}, subtask "
               f"{_num(f['subtask']['macro_f1'])}, next action "
               f"{_num(f['next_action']['macro_f1'])}, objects micro-F1 "
               f"{_num(f['objects']['micro_f1'])}, contact accuracy "
               f"{_num(f['contact']['accuracy'])}, transition F1 {_num(f['transition']['f1'])}"
               f", caption exact match {_num(f['caption']['exact_match'])} (word F1 "
               f"{_num(f['caption']['word_f1'])}); evidence_window is attached, not generated")
    for ex in sg.get("examples", [])[:1]:
      out.append(f"  - example: `{ex}`")
  tw = p.get("text_window_retrieval", {})
  if not unavailable("text-window retrieval", tw):
    for d in ("text_to_window", "window_to_text"):
      r = tw[d]
      out.append(f"- **{d.replace('_', '-')}** ({tw['sentences']} sentences, {tw['windows']} "
                 f"windows): " + ", ".join(f"{k} {_num(v)}" for k, v in r.items()))
  fc = p.get("forecasting", {})
  if not unavailable("forecasting", fc):
    parts = []
    for h, r in fc["ego"].items():
      parts.append(f"{h}: n/a" if r.get("available") is False else
                   f"{h}: ADE {_num(r['ade'])} / FDE {_num(r['fde'])} m")
    out.append("- **ego-motion forecast**: " + "; ".join(parts))
    out.append(f"- **hand forecast**: MPJPE {_num(fc['hands']['mpjpe'])} m over "
               f"{fc['hands']['frames']} frames")
  rc = p.get("reconstruction", {})
  if not unavailable("cross-modal reconstruction", rc):
    parts = [f"{m} from {r['from']}: R^2 {_num(r['r2'])}" for m, r in rc.items()
             if isinstance(r, Mapping) and "r2" in r]
    out.append("- **cross-modal reconstruction**: " + ("; ".join(parts) or "n/a"))
  hd = p.get("heads", {})
  if not unavailable("heads", hd):
    out.append("- **heads read directly**: " + ", ".join(
        f"{k} " + "/".join(f"{m} {_num(v)}" for m, v in r.items()) for k, r in hd.items()))
  rob = p.get("robustness", {})
  if rob:
    out += ["", "### Missing-modality robustness (change of the test score; probes fitted "
            "on full inputs, not refitted)", ""]
    labels = sorted({label for e in rob.values() for fs, d in e.items()
                     if isinstance(d, Mapping) for label in d})
    out.append("| task | feature set | " + " | ".join(labels) + " |")
    out.append("|" + "---|" * (len(labels) + 2))
    for task, e in rob.items():
      for fs, d in e.items():
        if not isinstance(d, Mapping):
          continue
        out.append(f"| `{task}` | {fs.replace('_', ' ')} | " + " | ".join(
            f"{d[lb]['change']:+.3f}" if lb in d and d[lb]["change"] is not None else ""
            for lb in labels) + " |")
  gen = p.get("generalization", {})
  if gen:
    out += ["", "### Generalization", "",
            f"- held-out sessions: {gen.get('heldout_sessions')}"]
    for name, g in gen.items():
      if name == "heldout_sessions":
        continue
      if g.get("available") is False:
        out.append(f"- {name.replace('_', ' ')}: not available ({g['reason']})")
        continue
      scores = ", ".join(f"{t} " + "/".join(_num(v) for v in r.values())
                         for t, r in g.items() if isinstance(r, Mapping))
      out.append(f"- {name.replace('_', ' ')} ({g['windows']} windows; model/handcrafted/"
                 f"random init): {scores}")
  return out


def markdown(report: Mapping[str, Any]) -> str:
  fs = report["feature_sets"]
  lines = [f"# XEFM evaluation: step {report['step']}", "",
           f"Run `{report['run']}`, corpus `{report['corpus']}`. Probes (linear and MLP) are "
           "fitted on train, chosen on val, scored once on test; splits are by session.", "",
           "| role | split | sessions | episodes | windows | stride (frames) |",
           "|---|---|---|---|---|---|"]
  for role, s in report["splits"].items():
    lines.append(f"| {role} | {s['split']} | {s['sessions']} | {s['episodes']} | "
                 f"{s['windows']} | {s['stride']} |")
  summary = report["summary"]
  lines += ["", f"## The {len(report['tasks'])} window tasks", ""] + _task_table(
      report["tasks"], fs)
  lines += ["", f"**The model beats both baselines on {summary['tasks_model_beats_both']} of "
            f"{summary['tasks']} tasks**" + (f" ({', '.join(summary['which'])})."
                                             if summary["which"] else "."), ""]
  lines += ["## Extension probes", ""] + _task_table(report["extensions"], fs) + [""]
  if "protocol" in report:
    lines += _protocol_md(report["protocol"]) + [""]
  if report.get("figures"):
    lines += ["## Figures", ""] + [f"![{f}]({f})" for f in report["figures"]] + [""]
  t = report.get("timings", {})
  if t:
    lines += ["Timings: " + ", ".join(f"{k} {v:.1f}" for k, v in t.items()), ""]
  return "\n".join(lines)


def write(out_dir: str | os.PathLike, report: Mapping[str, Any]) -> pathlib.Path:
  """report.md, then report.json (its presence marks the step as evaluated)."""
  out_dir = pathlib.Path(out_dir)
  write_text_atomic(out_dir / REPORT_MD, markdown(report))
  write_text_atomic(out_dir / REPORT_JSON, json.dumps(report, indent=1, allow_nan=False))
  return out_dir / REPORT_JSON


def load(out_dir: str | os.PathLike) -> Optional[dict]:
  path = pathlib.Path(out_dir) / REPORT_JSON
  return json.loads(path.read_text()) if path.is_file() else None
