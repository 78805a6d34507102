"""The scaling sweep's report: SWEEP/report.md, report.json and PNG plots from the finished
points of launch/sweep.py (each SWEEP/<point>/point.json), fitted with eval/scaling.py.

What it fits, and on what:
  * L(C): val loss against model FLOPs on the compute-efficient envelope of every run's
    evaluations (the (compute so far, loss) pairs with a lower loss than any of less
    compute; Kaplan et al.'s and Chinchilla's approach 1), bootstrap intervals on the exponent;
    an irreducible term only where the data support it (scaling.choose_fit).
  * L(N) at fixed tokens: every size's val loss at the sweep's common evaluation step
    (`eval_every`, the same tokens for every size), against backbone parameters. Longer
    runs are then mid-schedule (their cosine has not decayed), which favours no size in
    particular but is not a fully trained loss: the table says so.
  * Compute-optimal size per budget: the size with the lowest val loss at each budget;
    "at the ladder's edge" when that is the smallest or largest size (the optimum may lie
    beyond), and a fit N_opt = k C^c only with 3 or more interior optima.
  * Extrapolation to the stage configs' planned compute, marked as such with the factor
    beyond the fitted range, the predicted loss and its bootstrap interval.
  * The eval tasks (points evaluated by the sweep's eval job, launch/sweep.py
    --eval_config): each task's headline score per point beside its compute, and the
    baselines', tabulated and plotted against compute per size; nothing fitted.
"""

from __future__ import annotations

import json
import math
import pathlib
from typing import Any

import numpy as np

from xefm_jax.eval import scaling

POINT_FILE = "point.json"
RTOL = 0.05  # computes within 5% are one budget on the frontier (steps are rounded)
RESAMPLES = 1000  # bootstrap refits per fit (launch/sweep.py --resamples)


def load_points(sweep_dir: pathlib.Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
  sweep = json.loads((sweep_dir / "sweep.json").read_text())
  points = []
  for p in sweep["points"]:
    path = sweep_dir / p["name"] / POINT_FILE
    if path.exists():
      points.append(json.loads(path.read_text()))
  return sweep, points


FEATURE_SETS = ("model", "model_ema", "handcrafted", "random_init")


def task_scores(sweep: dict[str, Any], points: list[dict[str, Any]]
                ) -> dict[str, Any] | None:
  """The eval tasks' headline scores of the points that have an `eval` block (point.json,
  launch/sweep.py), sizes in ladder order then budgets; None when no point has one.

  {"names": tasks in the eval report's order, "metrics": {task: {metric, higher_is_better}},
   "points": [{point, variant, budget, compute, params, step, split, significant_wins,
               "model" | "model_ema" | "handcrafted" | "random_init": {task: score}}]}"""
  evaluated = [p for p in points if p.get("eval")]
  if not evaluated:
    return None
  order = sweep["variants"]
  evaluated.sort(key=lambda p: (order.index(p["variant"]) if p["variant"] in order
                                else len(order), p["budget"]))
  names: list[str] = []
  metrics: dict[str, dict[str, Any]] = {}
  rows = []
  for p in evaluated:
    tasks = p["eval"]["tasks"]
    for n, e in tasks.items():
      if n not in metrics:
        names.append(n)
        metrics[n] = {"metric": e["metric"], "higher_is_better": e["higher_is_better"]}
    row = {"point": p["name"], "variant": p["variant"], "budget": p["budget"],
           "compute": p["compute"],
           "params": sweep["sizes"].get(p["variant"], {}).get("params_backbone"),
           "step": p["eval"].get("step"), "split": p["eval"].get("split"),
           "significant_wins": p["eval"].get("significant_wins")}
    for fs in FEATURE_SETS:
      row[fs] = {n: e[fs] for n, e in tasks.items() if fs in e}
    rows.append(row)
  return {"names": names, "metrics": metrics, "points": rows}


def _fit(x: list[float], y: list[float], resamples: int) -> dict[str, Any] | None:
  """A chosen fit with its bootstrap, as JSON; None with fewer than 3 distinct x."""
  if len(set(x)) < 3:
    return None
  law = scaling.choose_fit(x, y)
  boot = scaling.bootstrap(x, y, law, resamples=resamples)
  return {"a": law.a, "b": law.b, "e": law.e, "irreducible": law.irreducible,
          "b_interval": [boot.b.low, boot.b.high], "e_interval": [boot.e.low, boot.e.high],
          "x_range": [law.x_min, law.x_max], "points": law.n, "rms_log": law.rms_log,
          "resamples": len(boot.samples), "_boot": boot}


def _public(fit: dict[str, Any] | None) -> dict[str, Any] | None:
  return None if fit is None else {k: v for k, v in fit.items() if not k.startswith("_")}


def analyse(sweep: dict[str, Any], points: list[dict[str, Any]],
            stages: list[dict[str, Any]], resamples: int = RESAMPLES) -> dict[str, Any]:
  """The report's numbers; every fit's intervals from `resamples` bootstrap refits (each
  an irreducible fit costs ~10-30 ms on this CPU: 1,000 x 14 fits take minutes)."""
  sizes = sweep["sizes"]
  # per-objective val losses that some point scored (an objective with no val targets in
  # the corpus' val split logs 0)
  objectives = sorted({k for p in points for k, v in p["val"].items()
                       if k.endswith("loss") and v > 0})
  # every evaluation of every run: (point, step, compute so far, val metrics)
  evals = [(p, int(step), int(step) * p["compute"] / p["steps"], vals)
           for p in points for step, vals in p["val_by_step"].items()]

  def envelope(key: str) -> list[tuple[float, float, str, int]]:
    rows = [(c, v[key], p["name"], step) for p, step, c, v in evals if v.get(key, 0) > 0]
    return [rows[i] for i in scaling.pareto_frontier([r[0] for r in rows],
                                                     [r[1] for r in rows], RTOL)]
  frontier = envelope("val/loss")
  law = _fit([r[0] for r in frontier], [r[1] for r in frontier], resamples)
  per_objective = {}
  for key in objectives:
    if key != "val/loss":
      rows = envelope(key)
      per_objective[key] = _public(_fit([r[0] for r in rows], [r[1] for r in rows],
                                        resamples))
  final = scaling.pareto_frontier([p["compute"] for p in points],
                                  [p["val"]["val/loss"] for p in points], RTOL)

  # loss vs parameters at the common evaluation step (fixed tokens)
  step = str(sweep["eval_every"])
  at_step: dict[str, float] = {}
  for p in sorted(points, key=lambda p: p["steps"]):
    if step in p["val_by_step"] and p["variant"] not in at_step:
      at_step[p["variant"]] = p["val_by_step"][step]["val/loss"]
  at_step = {v: at_step[v] for v in sweep["variants"] if v in at_step}
  n_law = _fit([sizes[v]["params_backbone"] for v in at_step], list(at_step.values()),
               resamples)

  # compute-optimal size per budget
  optimal = []
  order = sweep["variants"]
  for b in sweep["budgets"]:
    rows = [p for p in points if p["budget"] == b]
    if len(rows) < 2:
      continue
    best = min(rows, key=lambda p: p["val"]["val/loss"])
    ran = [p["variant"] for p in rows]
    edge = best["variant"] in (min(ran, key=order.index), max(ran, key=order.index))
    optimal.append({"budget": b, "variant": best["variant"],
                    "params": sizes[best["variant"]]["params_backbone"],
                    "val_loss": best["val"]["val/loss"], "at_edge": edge,
                    "sizes_run": len(rows)})
  interior = [o for o in optimal if not o["at_edge"]]
  n_opt = None
  if len({o["params"] for o in interior}) >= 2 and len(interior) >= 3:
    a, c = scaling._line(np.array([o["budget"] for o in interior]),  # pylint: disable=protected-access
                         np.array([o["params"] for o in interior]))
    n_opt = {"k": a, "exponent": -c, "budgets": len(interior)}

  extrapolation = []
  if law is not None:
    for s in stages:
      extrapolation.append(dict(s, **law["_boot"].predict(s["compute"])))
  return {"points": points, "objectives": objectives,
          "frontier": [points[i]["name"] for i in final],
          "envelope": [{"compute": c, "loss": l, "point": n, "step": st}
                       for c, l, n, st in frontier],
          "loss_vs_compute": law, "per_objective": per_objective,
          "fixed_tokens": {"step": int(step), "tokens": int(step) * next(
              iter(sizes.values()))["tokens_per_step"], "loss": at_step, "fit": n_law},
          "compute_optimal": optimal, "n_opt_fit": n_opt, "extrapolation": extrapolation,
          "tasks": task_scores(sweep, points)}


def _save(fig, ax, path: pathlib.Path) -> str:
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path.name


def _plots(sweep_dir: pathlib.Path, sweep: dict[str, Any], result: dict[str, Any]
           ) -> list[str]:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  files = []
  points = result["points"]
  law = result["loss_vs_compute"]

  fig, ax = plt.subplots(figsize=(6, 4.2))
  for v in sweep["variants"]:
    rows = sorted((p for p in points if p["variant"] == v), key=lambda p: p["compute"])
    if rows:
      line, = ax.plot([p["compute"] for p in rows], [p["val"]["val/loss"] for p in rows],
                      "o-", label=f"{v} ({sweep['sizes'][v]['params_backbone'] / 1e6:.2f}M "
                      "backbone)")
      for p in rows:  # each run's intermediate evaluations, faint
        steps = sorted(int(k) for k in p["val_by_step"])
        ax.plot([k * p["compute"] / p["steps"] for k in steps],
                [p["val_by_step"][str(k)]["val/loss"] for k in steps], ":",
                color=line.get_color(), alpha=0.4)
  env = result["envelope"]
  ax.plot([e["compute"] for e in env], [e["loss"] for e in env], "k*", ms=9,
          label="envelope (fitted)", zorder=5)
  if law is not None:
    xs = np.geomspace(law["x_range"][0], law["x_range"][1], 50)
    ax.plot(xs, law["_boot"].law(xs), "k--",
            label=f"fit b={law['b']:.3f} [{law['b_interval'][0]:.3f}, "
                  f"{law['b_interval'][1]:.3f}]")
  ax.set(xscale="log", yscale="log", xlabel="model FLOPs (train)", ylabel="val loss",
         title="val loss vs compute, per size")
  files.append(_save(fig, ax, sweep_dir / "loss_vs_flops.png"))

  if law is not None and result["extrapolation"]:
    fig, ax = plt.subplots(figsize=(6, 4.2))
    ax.plot([e["compute"] for e in env], [e["loss"] for e in env], "k*", ms=9,
            label="envelope (fitted)")
    hi = max(e["compute"] for e in result["extrapolation"])
    xs = np.geomspace(law["x_range"][0], hi, 100)
    preds = [law["_boot"].predict(x) for x in xs]
    ax.plot(xs, [p["loss"] for p in preds], "k--", label="fit")
    ax.fill_between(xs, [p["low"] for p in preds], [p["high"] for p in preds], alpha=0.2,
                    label="95% bootstrap")
    ax.axvspan(law["x_range"][1], hi, color="red", alpha=0.05, label="extrapolation")
    for e in result["extrapolation"]:
      ax.errorbar(e["compute"], e["loss"], yerr=[[e["loss"] - e["low"]],
                                                 [e["high"] - e["loss"]]], fmt="o", capsize=3)
      ax.annotate(pathlib.Path(e["config"]).stem, (e["compute"], e["loss"]), fontsize=7)
    ax.set(xscale="log", yscale="log", xlabel="model FLOPs (train)", ylabel="val loss",
           title="frontier fit, extrapolated to the stage configs")
    files.append(_save(fig, ax, sweep_dir / "frontier.png"))

  probe = [p for p in points if "val/retrieval_r1" in p["val"]]
  if probe:
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for v in sweep["variants"]:
      rows = sorted((p for p in probe if p["variant"] == v), key=lambda p: p["compute"])
      if rows:
        ax.plot([p["compute"] for p in rows], [p["val"]["val/retrieval_r1"] for p in rows],
                "o-", label=v)
    chance = probe[0]["val"].get("val/retrieval_r1_chance")
    if chance:
      ax.axhline(chance, color="gray", ls=":", label="chance")
    ax.set(xscale="log", xlabel="model FLOPs (train)", ylabel="val text->window R@1",
           title="retrieval probe vs compute")
    files.append(_save(fig, ax, sweep_dir / "probe_vs_flops.png"))
  if result["tasks"]:
    files.append(tasks_plot(sweep_dir / "tasks_vs_flops.png", sweep["variants"],
                            result["tasks"]))
  return files


def _task_title(name: str, metric: dict[str, Any]) -> str:
  return f"{name} ({metric['metric']}{'' if metric['higher_is_better'] else ', lower better'})"


def tasks_plot(path: pathlib.Path, variants: list[str], tasks: dict[str, Any]) -> str:
  """One panel per task: the model's score against compute per size (log x); the
  hand-crafted baseline grey and dotted, each size's random init dashed in its colour."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  names = tasks["names"]
  cols = min(5, len(names))
  rows_n = -(-len(names) // cols)
  fig, axes = plt.subplots(rows_n, cols, figsize=(3.2 * cols, 2.6 * rows_n), squeeze=False)
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  for ax, name in zip(axes.flat, names):
    handcrafted = [r["handcrafted"][name] for r in tasks["points"]
                   if r["handcrafted"].get(name) is not None]
    if handcrafted:
      ax.axhline(float(np.mean(handcrafted)), color="gray", ls=":", label="hand-crafted")
    for i, v in enumerate(variants):
      rows = sorted((r for r in tasks["points"] if r["variant"] == v
                     and r["model"].get(name) is not None), key=lambda r: r["compute"])
      if not rows:
        continue
      color = colors[i % len(colors)]
      ax.plot([r["compute"] for r in rows], [r["model"][name] for r in rows], "o-",
              color=color, label=v)
      random = [r["random_init"][name] for r in rows if r["random_init"].get(name) is not None]
      if random:
        ax.axhline(float(np.mean(random)), color=color, ls="--", alpha=0.5, lw=0.8,
                   label=f"{v} random init")
    ax.set_xscale("log")
    ax.set_title(_task_title(name, tasks["metrics"][name]), fontsize=8)
    ax.tick_params(labelsize=7)
  spare = list(axes.flat)[len(names):]
  for ax in spare:
    ax.axis("off")
  handles, labels = axes.flat[0].get_legend_handles_labels()
  (spare[0] if spare else axes.flat[0]).legend(handles, labels, fontsize=6,
                                               loc="center" if spare else "best")
  fig.supxlabel("model FLOPs (train)", fontsize=9)
  fig.suptitle("eval tasks vs compute, per size (split: "
               f"{', '.join(sorted({str(r['split']) for r in tasks['points']}))})", fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path.name


def _interval(fit: dict[str, Any] | None) -> str:
  if fit is None:
    return "not fitted (fewer than 3 distinct x)"
  text = (f"b = {fit['b']:.4f} (95% bootstrap [{fit['b_interval'][0]:.4f}, "
          f"{fit['b_interval'][1]:.4f}]), a = {fit['a']:.4g}")
  if fit["irreducible"]:
    text += (f", irreducible e = {fit['e']:.4g} [{fit['e_interval'][0]:.4g}, "
             f"{fit['e_interval'][1]:.4g}]")
  return text + f"; {fit['points']} points, rms log residual {fit['rms_log']:.4f}"


def _score(x: Any) -> str:
  return "n/a" if x is None else f"{x:.3f}"


def tasks_markdown(sweep: dict[str, Any], tasks: dict[str, Any]) -> list[str]:
  """The "## Eval tasks" section: a row per evaluated point, a column per task."""
  names = tasks["names"]
  rows = tasks["points"]
  definition = sweep.get("eval") or {}
  lines = ["## Eval tasks", "",
           f"{len(rows)} of {len(sweep['points'])} points evaluated "
           f"(`{definition.get('config', '?')}`"
           + "".join(f", `{x}`" for x in definition.get("set", [])) + ") on the "
           f"{', '.join(sorted({str(r['split']) for r in rows}))} split of their last "
           "checkpoint; each task's headline metric for the trained trunk, as "
           "launch/eval.py reports it (SWEEP/<point>/eval/<step>/report.md for the "
           "intervals). Below the points, the baselines: hand-crafted window statistics "
           "(the same for every size) and each size's random init. Wins: tasks where the "
           "trunk beats both baselines with 95% intervals above zero.", "",
           "| size | budget | compute (FLOPs) | wins | "
           + " | ".join(_task_title(n, tasks["metrics"][n]) for n in names) + " |",
           "|---|---:|---:|---:|" + "---:|" * len(names)]
  for r in rows:
    lines.append(f"| {r['variant']} | {r['budget']:.3g} | {r['compute']:.3g} | "
                 f"{'n/a' if r['significant_wins'] is None else r['significant_wins']} | "
                 + " | ".join(_score(r["model"].get(n)) for n in names) + " |")
  if any(r["handcrafted"] for r in rows):
    first = next(r for r in rows if r["handcrafted"])
    lines.append("| hand-crafted | | | | "
                 + " | ".join(_score(first["handcrafted"].get(n)) for n in names) + " |")
  for v in sweep["variants"]:
    first = next((r for r in rows if r["variant"] == v and r["random_init"]), None)
    if first is not None:
      lines.append(f"| random init {v} | | | | "
                   + " | ".join(_score(first["random_init"].get(n)) for n in names) + " |")
  return lines


def markdown(sweep: dict[str, Any], result: dict[str, Any], files: list[str]) -> str:
  points = result["points"]
  law = result["loss_vs_compute"]
  lines = ["# Scaling sweep", "",
           f"Config `{sweep['config']}`, sizes {', '.join(sweep['variants'])}, budgets "
           f"{', '.join(f'{b:.3g}' for b in sweep['budgets'])} model FLOPs; "
           f"{len(points)} of {len(sweep['points'])} points finished. Overrides of every "
           "point: " + (", ".join(f"`{x}`" for x in sweep["set"]) or "none") + ".", "",
           "Compute = steps x model FLOPs per window (forward + backward, 3 x forward "
           "matmuls: PaLM's 6ND with attention) x windows per step. Val loss: the weighted "
           f"sum of the objectives on {sweep['eval_batches']} val batches (as the trainer "
           "evaluates them), at each point's last step.", "",
           "## Sizes", "", "| size | params (trained, with heads) | params (backbone) | "
           "model GFLOP / "
           "window | tokens / step |", "|---|---:|---:|---:|---:|"]
  for v in sweep["variants"]:
    s = sweep["sizes"][v]
    lines.append(f"| {v} | {s['params']:,} | {s['params_backbone']:,} | "
                 f"{s['model_flops_per_window'] / 1e9:.3f} | {s['tokens_per_step']:,} |")
  objectives = [o for o in result["objectives"] if o != "val/loss"]
  lines += ["", "## Points", "", "| point | steps | compute (FLOPs) | tokens | val loss | "
            + " | ".join(o.removeprefix("val/") for o in objectives) + " | wall s |",
            "|---|---:|---:|---:|---:|" + "---:|" * len(objectives) + "---:|"]
  for p in sorted(points, key=lambda p: (sweep["variants"].index(p["variant"]), p["budget"])):
    lines.append(f"| {p['name']}{' *' if p['name'] in result['frontier'] else ''} | "
                 f"{p['steps']} | {p['compute']:.3g} | {p['tokens']:,} | "
                 f"{p['val']['val/loss']:.4f} | "
                 + " | ".join(f"{p['val'].get(o, float('nan')):.4f}" for o in objectives)
                 + f" | {p['wall_s']:.0f} |")
  lines += ["", "`*`: on the compute-efficient frontier of the finished runs.", "",
            "## Loss vs compute", "",
            "Fitted on the envelope of every evaluation of every run (each run evaluates "
            f"every {sweep['eval_every']} steps and at its end; compute so far = steps so far "
            "x its FLOPs per step): the (compute, val loss) pairs with a lower loss than any "
            "of less compute, as in Kaplan et al. and Chinchilla's approach 1. A run's "
            "intermediate evaluations are mid-schedule (its cosine not yet decayed), so the "
            "envelope is an upper bound on the loss reachable at that compute.", "",
            f"L(C) = a C^-b (+ e): {_interval(law)}.", "",
            "Envelope points: " + ", ".join(f"{e['point']}@{e['step']}"
                                             for e in result["envelope"]) + "."]
  if law is not None:
    lines.append(f"Fitted on compute {law['x_range'][0]:.3g} .. {law['x_range'][1]:.3g} "
                 "FLOPs; outside it the law is an extrapolation.")
  if result["per_objective"]:
    lines += ["", "Per objective (each on its own envelope):", ""]
    for key, fit in result["per_objective"].items():
      lines.append(f"- {key}: {_interval(fit)}")
  ft = result["fixed_tokens"]
  lines += ["", "## Loss vs parameters at fixed tokens", "",
            f"Val loss at step {ft['step']} ({ft['tokens']:,} tokens) of each size's "
            "shortest run that reached it (mid-schedule for runs longer than that): "
            + ", ".join(f"{v} {l:.4f}" for v, l in ft["loss"].items()) + ".",
            f"L(N) = a N^-b (+ e), N the backbone's parameters (modality encoders and "
            f"fusion; the objective heads left out, as LM laws leave out embeddings): "
            f"{_interval(ft['fit'])}.", "",
            "## Compute-optimal size per budget", "",
            "| budget | best size | backbone params | val loss | note |", "|---:|---|---:|---:|---|"]
  for o in result["compute_optimal"]:
    note = "at the ladder's edge: the optimum may lie beyond" if o["at_edge"] else "interior"
    lines.append(f"| {o['budget']:.3g} | {o['variant']} | {o['params']:,} | "
                 f"{o['val_loss']:.4f} | {note} |")
  if result["n_opt_fit"]:
    f = result["n_opt_fit"]
    lines.append(f"\nN_opt(C) = {f['k']:.3g} C^{f['exponent']:.3f} over {f['budgets']} "
                 "interior optima.")
  else:
    lines.append("\nNo N_opt(C) fit: it needs 3 or more budgets whose best size is inside "
                 "the ladder.")
  if result["extrapolation"]:
    lines += ["", "## Extrapolation to the stage configs (EXTRAPOLATION, not measured)", "",
              "Compute = model FLOPs per window x windows per step x train.steps as the "
              "configs say. A power law fitted on a few CPU-scale points and "
              "carried many orders of magnitude further is a hypothesis, not a forecast: "
              "the interval covers only the bootstrap's uncertainty, not a change of regime. "
              "The predicted loss is the sweep's val loss (the objectives its points "
              "trained); a stage's compute counts every objective its config enables.",
              "", "| config | GFLOP / window | windows x steps | compute | x beyond fit | "
              "predicted val loss | 95% interval |", "|---|---:|---:|---:|---:|---:|---|"]
    for e in result["extrapolation"]:
      lines.append(f"| {e['config']} | {e['model_flops_per_window'] / 1e9:.1f} | "
                   f"{e['windows_per_step']} x {e['steps']:,} | {e['compute']:.3g} | "
                   f"{e['factor_beyond']:.3g} | {e['loss']:.3g} | "
                   f"[{e['low']:.3g}, {e['high']:.3g}] |")
    if not law["irreducible"]:
      lines.append("\nThe fit has no irreducible term (the data do not support one), so it "
                   "falls towards zero loss as compute grows: these predictions are "
                   "lower bounds with no practical meaning, not estimates. A sweep reaching "
                   "the curve's bend (larger budgets) is what would give a usable one.")
  if result["tasks"]:
    lines += [""] + tasks_markdown(sweep, result["tasks"])
  lines += ["", "## Plots", ""] + [f"![{f}]({f})" for f in files]
  return "\n".join(lines) + "\n"


def write(sweep_dir: pathlib.Path, stages: list[dict[str, Any]],
          resamples: int = RESAMPLES) -> dict[str, Any]:
  """Writes report.md, report.json and the plots into sweep_dir; returns the JSON."""
  sweep, points = load_points(sweep_dir)
  if not points:
    raise ValueError(f"{sweep_dir}: no finished point (no */{POINT_FILE})")
  result = analyse(sweep, points, stages, resamples)
  files = _plots(sweep_dir, sweep, result)
  (sweep_dir / "report.md").write_text(markdown(sweep, result, files))
  public = dict(result, loss_vs_compute=_public(result["loss_vs_compute"]),
                fixed_tokens=dict(result["fixed_tokens"],
                                  fit=_public(result["fixed_tokens"]["fit"])),
                plots=files, sweep=sweep)
  (sweep_dir / "report.json").write_text(json.dumps(public, indent=1, default=float))
  print(f"report: {sweep_dir / 'report.md'}")
  return public
