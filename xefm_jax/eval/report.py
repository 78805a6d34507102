"""The report of one checkpoint: DIR/eval/<step>/report.json and report.md, written atomically.

report.json (what tools read):
  {"step", "run", "corpus", "feature_sets", "splits": {role: {split, sessions, episodes,
   windows, stride}},
   "tasks": {"<task id>": {"metric", "higher_is_better", "evaluator", "target", "inputs",
             "model", "model_ema", "handcrafted", "random_init",   (test scores)
             "ci95_vs_handcrafted": [lo, hi], "ci95_vs_random_init": [lo, hi],
                 (95% paired-bootstrap interval over test sessions of model minus the
                  baseline, positive = the model is better; null with < 2 test sessions)
             "wins": both intervals above zero (the online trunk, "model"),
             "ema": {"ci95_vs_handcrafted", "ci95_vs_random_init", "wins"} (the EMA trunk),
             "beats_both": the point estimates ahead of both baselines (no noise model),
             "supervised_by": [enabled objectives that train this task's label],
             "label_coverage": {"labels", "classes", "test_labels", "test_classes",
                                "unseen"} and "low_label_coverage" (class tasks only),
             "probe": {feature set: {kind, params, val_score, searched}},
             "details": {feature set: every metric of the test split}}},
   "extensions": {...the same for the four extension probes...},
   "summary": {"significant_wins", "which_wins", "ema_significant_wins", "ema_which_wins",
               "extension_significant_wins", "tasks", "extensions",
               "tasks_model_beats_both", "which", "test_sessions", "bootstrap",
               "intervals" (null, or why there are none), "low_label_coverage"},
   "protocol": {"structured_generation", "text_window_retrieval", "forecasting",
                "reconstruction", "heads", "robustness", "generalization"},
   "world_model": future-window retrieval from the future-state head, beside the equal
                  ridge probe on every feature set (xefm_jax/eval/world_model.py),
   "figures": [file names], "timings": {...}}
Non-finite numbers are null. report.md is the same for people: per task the scores, the
intervals against both baselines, the verdict, label coverage and supervision, and the
count of significant wins.
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


def _ci(ci: Any) -> str:
  return "n/a" if ci is None or None in ci else f"[{ci[0]:+.3f}, {ci[1]:+.3f}]"


def verdict(entry: Mapping[str, Any], prefix: str = "") -> str:
  """"wins" when both intervals lie above zero, else where each baseline stands: "tie"
  (the interval holds zero) or "below" (it lies below zero); without intervals, where the
  point estimates stand ("ahead of both, no interval")."""
  block = entry.get("ema", {}) if prefix == "ema" else entry
  if block.get("wins"):
    return "wins"
  cis = {b: block.get(f"ci95_vs_{b}") for b in BASELINES}
  if any(ci is None for ci in cis.values()):
    m = entry.get("model_ema" if prefix == "ema" else "model")
    if m is None:
      return "n/a"
    sign = 1 if entry["higher_is_better"] else -1
    lost = [b.replace("_", " ") for b in BASELINES
            if entry.get(b) is None or sign * (m - entry[b]) <= 0]
    return ("ahead of both" if not lost else "behind " + " and ".join(lost)) + ", no interval"
  parts = []
  for b, ci in cis.items():
    if ci[0] <= 0:
      parts.append(("below " if ci[1] < 0 else "tie with ") + b.replace("_", " "))
  return ", ".join(parts)


def _coverage(e: Mapping[str, Any]) -> str:
  cov = e.get("label_coverage")
  if not cov:
    return ""
  text = f"{_num(cov['labels'], 2)}"
  if cov.get("unseen"):
    text += f" ({len(cov['unseen'])} of {cov['test_classes']} classes unseen)"
  return text + (" **low**" if e.get("low_label_coverage") else "")


def _task_table(entries: Mapping[str, Any], feature_sets) -> list[str]:
  head = ["task", "metric"] + [fs.replace("_", " ") for fs in feature_sets]
  compare = all(fs in feature_sets for fs in ("model",) + BASELINES)
  ema = compare and "model_ema" in feature_sets
  if compare:
    head += [f"model - {b.replace('_', ' ')} (95% CI)" for b in BASELINES] + ["verdict"]
  if ema:
    head.append("EMA verdict")
  head += ["supervised by", "label coverage"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for name, e in entries.items():
    arrow = "" if e["higher_is_better"] else " (lower is better)"
    row = [f"`{name}`", e["metric"] + arrow] + [_num(e.get(fs)) for fs in feature_sets]
    if compare:
      row += [_ci(e.get(f"ci95_vs_{b}")) for b in BASELINES] + [verdict(e)]
    if ema:
      row.append(verdict(e, "ema"))
    row += [", ".join(e.get("supervised_by", [])) or "-", _coverage(e)]
    lines.append("| " + " | ".join(row) + " |")
  return lines


def _protocol_md(p: Mapping[str, Any], feature_sets) -> list[str]:
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
      out.append(f"- {name.replace('_', ' ')} ({g['windows']} windows; "
                 f"{'/'.join(fs.replace('_', ' ') for fs in feature_sets)}): {scores}")
  return out


def world_model_md(w: Mapping[str, Any]) -> list[str]:
  """The world-model section (xefm_jax/eval/world_model.py's `section`)."""
  out = ["## World-model evaluation (future-window retrieval)", ""]
  if w.get("available") is False:
    return out + [f"Not available ({w['reason']}).", ""]
  c = w["chance"]
  out += [f"Each test window's predicted future latent ranks its true future ({w['target']}; "
          f"s W = {w['future_offset_frames']} frames) among all {w['pool']} test windows by "
          f"cosine; {w['queries']} queries (windows whose future is a test window). Chance: "
          f"MRR {_num(c['mrr'])}, R@1 {_num(c['r@1'])}, median rank {_num(c['median_rank'], 1)}."
          " Consistency: cosine of the predictions at t and at the next window of the "
          "episode (truth: the same for the true futures). Brackets: 95% session-bootstrap "
          "intervals.", "",
          "| queries from | median rank (lower is better) | MRR | R@1 | R@5 | R@10 | "
          "consistency | truth consistency |", "|---|---|---|---|---|---|---|---|"]

  def cell(e, m, digits=3):
    v = _num(e["test"].get(m), digits)
    ci = e.get("ci95", {}).get(m)
    return v if not ci or None in ci else f"{v} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
  for fs, e in w["feature_sets"].items():
    name = "future_state head" if fs == "future_state_head" else fs.replace("_", " ")
    out.append(f"| {name}: {e['how']} | {cell(e, 'median_rank', 1)} | " + " | ".join(
        cell(e, m) for m in ("mrr", "r@1", "r@5", "r@10", "consistency", "truth_consistency"))
        + " |")
  out.append("")
  for fs, cis in w.get("ci95_vs", {}).items():
    name = "future_state head" if fs == "future_state_head" else "model probe"
    out.append(f"- {name} minus each baseline ({w['metric']}, 95% CI): " + ", ".join(
        f"{b.replace('_', ' ')} {_ci(ci)}" for b, ci in cis.items()) +
        f" -> {'wins' if w['wins'].get(fs) else 'no significant win over both'}")
  return out + [""]


def _headline(summary: Mapping[str, Any]) -> list[str]:
  b = summary["bootstrap"]
  lines = [f"**Significant wins against both baselines: {summary['significant_wins']} of "
           f"{summary['tasks']}**" + (f" ({', '.join(summary['which_wins'])})"
                                      if summary["which_wins"] else "") +
           f"; the EMA trunk: {summary['ema_significant_wins']} of {summary['tasks']}"
           f"; extension probes: {summary['extension_significant_wins']} of "
           f"{summary['extensions']}.", ""]
  if summary.get("intervals"):
    lines += [f"**Intervals: n/a.** {summary['intervals']}.", ""]
  lines += [f"A win is a paired-bootstrap 95% interval of model minus baseline above zero "
            f"against both baselines ({b['replicates']} replicates over the "
            f"{summary['test_sessions']} test session"
            f"{'' if summary['test_sessions'] == 1 else 's'}, seed {b['seed']}; differences are "
            "signed so that positive means the model is better). Point estimates alone put "
            f"the model ahead of both on {summary['tasks_model_beats_both']} of "
            f"{summary['tasks']}. \"supervised by\": enabled objectives that train the "
            "task's own label (supervised transfer, not what pretraining alone learned). "
            "Label coverage: the fraction of test labels whose class occurs in the train "
            "split.", ""]
  if summary.get("low_label_coverage"):
    lines += ["Low label coverage (test labels that train barely has; scored and counted "
              "all the same): " + ", ".join(f"`{n}`" for n in summary["low_label_coverage"])
              + ".", ""]
  return lines


def markdown(report: Mapping[str, Any]) -> str:
  fs = report["feature_sets"]
  lines = [f"# XEFM evaluation: step {report['step']}", "",
           f"Run `{report['run']}`, corpus `{report['corpus']}`. Linear probes (logistic "
           "regression, class-balanced for macro-F1; ridge) with one log grid of their "
           "regularisation for every feature set, fitted on train, chosen on val, scored "
           "once on test; splits are by session.", "",
           "| role | split | sessions | episodes | windows | stride (frames) |",
           "|---|---|---|---|---|---|"]
  for role, s in report["splits"].items():
    lines.append(f"| {role} | {s['split']} | {s['sessions']} | {s['episodes']} | "
                 f"{s['windows']} | {s['stride']} |")
  summary = report["summary"]
  lines += ["", f"## The {summary['tasks']} window tasks", ""] + _headline(summary)
  lines += _task_table(report["tasks"], fs) + [""]
  lines += ["## Extension probes", ""] + _task_table(report["extensions"], fs) + [""]
  if "protocol" in report:
    lines += _protocol_md(report["protocol"], fs) + [""]
  if "world_model" in report:
    lines += world_model_md(report["world_model"])
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
