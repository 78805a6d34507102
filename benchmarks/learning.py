"""Does pretraining pay? The representation pilot's learning curves against both baselines,
and what each objective family carries.

    python benchmarks/learning.py [--config configs/pilot.py] [--workdir runs/pilot]
                                  [--ablate masked_modeling,contrastive,supervised]
                                  [--no-train] [--no-ablations]

1. Trains `--config` (resumes a finished or interrupted run: train.py restores the latest
   checkpoint) and evaluates every checkpoint with `launch/eval.py --checkpoint all`.
2. Draws one learning curve per task (WORKDIR/learning/<task>.png): the model's test score
   at every checkpoint, with the random init (a fresh init of the same config) as step 0;
   the 95% band of the paired bootstrap over test sessions against the hand-crafted
   baseline (the model score that difference interval implies); both baselines as lines.
3. Ablations: the same config with one family's weights set to 0 (masked_modeling;
   contrastive; supervised = procedure, contact and captioning), trained as long and
   evaluated at its last step. A family "carries" a task when the full model wins it
   significantly and the model without that family does not.
4. WORKDIR/learning/summary.json and summary.md, and one JSON line on stdout.

Everything runs as subprocesses of the project's own launchers, so what is measured is what
a user runs. Wall times are the launchers' own.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
FAMILIES = {"masked_modeling": ("masked_modeling",), "contrastive": ("contrastive",),
            "supervised": ("procedure", "contact", "captioning")}


def _run(cmd: list[str], log: pathlib.Path) -> float:
  """Runs a launcher, its output to `log`; returns its wall time; raises on failure."""
  log.parent.mkdir(parents=True, exist_ok=True)
  t0 = time.perf_counter()
  with open(log, "ab") as f:
    rc = subprocess.call(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
  if rc:
    tail = log.read_text(errors="replace").splitlines()[-15:]
    raise SystemExit(f"learning: {' '.join(cmd[1:3])} failed (exit {rc}); {log}:\n"
                     + "\n".join(tail))
  return time.perf_counter() - t0


def train_and_eval(config: str, workdir: pathlib.Path, overrides: list[str],
                   checkpoints: str, train: bool) -> dict[str, float]:
  walls = {}
  if train:
    walls["train_s"] = _run([sys.executable, "launch/train.py", f"--config={config}",
                             f"--workdir={workdir}", *overrides], workdir / "learning.log")
  walls["eval_s"] = _run([sys.executable, "launch/eval.py", "--config=configs/eval.py",
                          f"--workdir={workdir}", f"--checkpoint={checkpoints}"],
                         workdir / "learning.log")
  return walls


def reports(workdir: pathlib.Path) -> dict[int, dict]:
  out = {}
  for path in sorted((workdir / "eval").glob("*/report.json")):
    if path.parent.name.isdigit():
      out[int(path.parent.name)] = json.loads(path.read_text())
  return dict(sorted(out.items()))


def _band(entry: dict) -> tuple[float, float] | None:
  """The model scores the CI of model - handcrafted implies (None without a CI)."""
  ci, base = entry.get("ci95_vs_handcrafted"), entry.get("handcrafted")
  if ci is None or base is None:
    return None
  lo, hi = ci  # signed: positive = the model is better
  return (base + lo, base + hi) if entry["higher_is_better"] else (base - hi, base - lo)


def curves(runs: dict[int, dict], out: pathlib.Path) -> list[str]:
  """One PNG per task; returns the file names."""
  out.mkdir(parents=True, exist_ok=True)
  last = runs[max(runs)]
  names = []
  for table in ("tasks", "extensions"):
    for task, final in last.get(table, {}).items():
      steps = [0] + list(runs)
      model = [final["random_init"]] + [r[table][task]["model"] for r in runs.values()]
      bands = [None] + [_band(r[table][task]) for r in runs.values()]
      fig, ax = plt.subplots(figsize=(5, 3.2))
      ax.plot(steps, model, "o-", color="C0", label="XEFM (step 0 = random init)")
      have = [(s, b) for s, b in zip(steps, bands) if b is not None]
      if have:
        ax.fill_between([s for s, _ in have], [b[0] for _, b in have], [b[1] for _, b in have],
                        color="C0", alpha=0.2, label="95% CI vs hand-crafted")
      ax.axhline(final["handcrafted"], color="C1", ls="--", label="hand-crafted")
      ax.axhline(final["random_init"], color="C2", ls=":", label="random init")
      arrow = "" if final["higher_is_better"] else " (lower is better)"
      ax.set(title=task, xlabel="training step", ylabel=final["metric"] + arrow)
      ax.legend(fontsize=7)
      fig.tight_layout()
      name = f"{task}.png"
      fig.savefig(out / name, dpi=90)
      plt.close(fig)
      names.append(name)
  return names


def _wins(report: dict) -> set[str]:
  return {t for t, e in report["tasks"].items() if e.get("wins")}


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--config", default="configs/pilot.py")
  p.add_argument("--workdir", default="runs/pilot")
  p.add_argument("--ablate", default=",".join(FAMILIES),
                 help=f"families to remove one at a time ({', '.join(FAMILIES)})")
  p.add_argument("--no-train", action="store_true", help="evaluate what is there")
  p.add_argument("--no-ablations", action="store_true")
  p.add_argument("--override", action="append", default=[],
                 help="extra --config.a.b=v flags for every run (e.g. shorter tests)")
  args = p.parse_args(argv)
  workdir = ROOT / args.workdir
  t0 = time.perf_counter()
  walls = {"full": train_and_eval(args.config, workdir, args.override, "all",
                                  not args.no_train)}
  runs = reports(workdir)
  if not runs:
    raise SystemExit(f"learning: no evaluation reports under {workdir / 'eval'}")
  figures = curves(runs, workdir / "learning")
  final = runs[max(runs)]
  full_wins = _wins(final)
  ablations = {}
  families = [] if args.no_ablations else [f for f in args.ablate.split(",") if f]
  for family in families:
    if family not in FAMILIES:
      raise SystemExit(f"learning: --ablate {family!r}: expected one of {sorted(FAMILIES)}")
    zero = [f"--config.objectives.{o}.weight=0" for o in FAMILIES[family]]
    wd = workdir.with_name(f"{workdir.name}-no-{family}")
    walls[f"no_{family}"] = train_and_eval(args.config, wd, args.override + zero, "latest",
                                           not args.no_train)
    r = reports(wd)[max(reports(wd))]
    ablations[family] = {
        "significant_wins": len(_wins(r)), "wins": sorted(_wins(r)),
        "carries": sorted(full_wins - _wins(r)),
        "scores": {t: e["model"] for t, e in r["tasks"].items()}}
  summary = {
      "config": args.config, "workdir": str(workdir), "final_step": max(runs),
      "steps": list(runs), "tasks": len(final["tasks"]),
      "significant_wins": len(full_wins), "wins": sorted(full_wins),
      "significant_wins_first12": len(full_wins & set(list(final["tasks"])[:12])),
      "ema_significant_wins": final["summary"].get("ema_significant_wins"),
      "test_sessions": final["summary"].get("test_sessions"),
      "curve": {t: {s: r["tasks"][t]["model"] for s, r in runs.items()} for t in final["tasks"]},
      "final": {t: {k: e.get(k) for k in ("metric", "model", "handcrafted", "random_init",
                                          "ci95_vs_handcrafted", "ci95_vs_random_init",
                                          "wins")}
                for t, e in final["tasks"].items()},
      "ablations": ablations, "wall_s": {k: {kk: round(vv, 1) for kk, vv in v.items()}
                                         for k, v in walls.items()},
      "total_wall_s": round(time.perf_counter() - t0, 1), "figures": figures}
  out = workdir / "learning"
  (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
  (out / "summary.md").write_text(_markdown(summary))
  print(json.dumps({k: summary[k] for k in ("config", "final_step", "significant_wins",
                                            "significant_wins_first12", "tasks",
                                            "test_sessions", "total_wall_s")}
                   | {"ablations": {f: a["significant_wins"] for f, a in ablations.items()}}))


def _markdown(s: dict) -> str:
  lines = [f"# Learning curve of `{s['config']}` ({s['workdir']})", "",
           f"Final step {s['final_step']}: significant wins against both baselines on "
           f"{s['significant_wins']} of {s['tasks']} tasks ({s['significant_wins_first12']} of "
           f"the first 12), over {s['test_sessions']} test sessions.", "",
           "| task | metric | model | hand-crafted | random init | vs hand-crafted | "
           "vs random init | wins |" + "".join(f" -{f} |" for f in s["ablations"]),
           "|---" * (8 + len(s["ablations"])) + "|"]
  fmt = lambda x: "n/a" if x is None else f"{x:.3f}"  # noqa: E731
  ci = lambda c: "n/a" if c is None else f"[{c[0]:+.3f}, {c[1]:+.3f}]"  # noqa: E731
  for t, e in s["final"].items():
    row = [f"`{t}`", e["metric"], fmt(e["model"]), fmt(e["handcrafted"]),
           fmt(e["random_init"]), ci(e["ci95_vs_handcrafted"]), ci(e["ci95_vs_random_init"]),
           "yes" if e["wins"] else "no"]
    row += [fmt(a["scores"].get(t)) + (" (carried)" if t in a["carries"] else "")
            for a in s["ablations"].values()]
    lines.append("| " + " | ".join(row) + " |")
  lines += ["", "Wall time (s): " + json.dumps(s["wall_s"]), ""]
  return "\n".join(lines) + "\n"


if __name__ == "__main__":
  main()
