"""Scaling sweep: every (model size, compute budget) point trained as its own run, then a
report of loss against compute with fitted power laws (issue 17).

    python launch/sweep.py --config=configs/pilot.py --variants=s0,s1,s2,s3 \
        --budgets=3e12,1e13,3e13 [--sweep_dir=runs/sweep] \
        [--eval_config=configs/eval.py:quick [--eval_set=key=value ...]]
    python launch/sweep.py --sweep_dir=runs/sweep --report
    python launch/sweep.py --sweep_dir=runs/sweep --point_index=3    # one point (SLURM)
    python launch/sweep.py ... --plan_only     # define, prepare the corpus, list the points

Budgets are model FLOPs (forward + backward, PaLM's count, xefm_jax/train/flops.py
`model_flops_per_window`); a point trains steps = round(budget / (model FLOPs per window x
windows per step)) (at least --min_steps), and its compute is recorded as those steps x that
count (what the fits use). Tokens per window and windows per step are the same for every
size of a ladder (configs/pilot.py:s0..s4), so compute differs only by size and steps.

Points run one after another as subprocesses of launch/train.py in SWEEP/<variant>_<budget>,
all reading one corpus: the config's, or one prepared once in SWEEP/data. Each run
evaluates (val loss per objective, --eval_batches batches) at its end and every
`eval_every` steps: the most steps that every size reaches (the largest budget's step count
of the largest size), so every size has a val loss at that same number of tokens (loss vs
parameters at fixed tokens). The learning-rate warmup is the
config's, capped at a tenth of the point's steps; the cosine decays to each point's end.

--eval_config (default: none, no eval): once a point has trained (its record in
SWEEP/<point>/trained.json), launch/eval.py scores its last checkpoint with that eval config
(--eval_set=key=value: its --config.key=value overrides, e.g. splits.score=val to keep the
test split unseen while the sweep is being read; the probes' regularisation is then chosen
and scored on val, an optimistic but like-for-like score), output in SWEEP/<point>/eval.log
and SWEEP/<point>/eval/<step>/. Each task's headline metric (the score on the eval's score
split of the trunk, its EMA and the baselines the eval config scores) goes into the `eval`
block of point.json; --report tabulates and plots them against compute. A failed eval is
recorded like a failed run; the next run of the sweep evaluates the point again without
retraining it.
--eval_config given to an existing sweep replaces its eval job (`--eval_config=` removes
it): its finished points are then evaluated, not retrained.

Resumable: a finished point has SWEEP/<point>/point.json (written atomically, last, after
its eval) and is skipped; a killed point resumes from its latest Orbax checkpoint
(launch/train.py does that in its workdir). A failed point is recorded in SWEEP/status.json
with its stage (train or eval) and log tail and the sweep goes on (run the same command
again to retry it). A point is trained and evaluated under an exclusive lock
(SWEEP/<point>/.lock), so several sweep processes on one sweep dir share the points out (on
a machine with idle cores, start the same command twice). SIGTERM/SIGINT to the sweep reach
the running point, which saves a checkpoint and exits (an eval just stops); the sweep then
stops.

The sweep's definition is SWEEP/sweep.json (written by the first run, with its eval job; a
--point_index task or --report reads it, so they need only --sweep_dir).
launch/slurm/sweep.sbatch runs one point (its training, then its eval) per array task.
"""

from __future__ import annotations

import json
import pathlib
import sys
from typing import Any

from absl import app, flags

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from xefm_jax.train import sweep as sweep_lib  # pylint: disable=wrong-import-position

_CONFIG = flags.DEFINE_string("config", None, "Config file (variants are appended as :v).")
_VARIANTS = flags.DEFINE_list("variants", None, "Config variants: the sizes of the ladder.")
_BUDGETS = flags.DEFINE_list("budgets", None, "Compute budgets in model FLOPs (e.g. 1e13).")
_SWEEP_DIR = flags.DEFINE_string("sweep_dir", "runs/sweep", "Where the points' runs go.")
_SET = flags.DEFINE_multi_string(
    "set", [], "key=value config override for every point (--config.key=value of train.py).")
_MIN_STEPS = flags.DEFINE_integer("min_steps", 20, "Fewest steps a point trains.")
_EVAL_BATCHES = flags.DEFINE_integer("eval_batches", 8, "Val batches per evaluation.")
_POINT_INDEX = flags.DEFINE_integer("point_index", None, "Run only this point (0-based).")
_PLAN_ONLY = flags.DEFINE_bool(
    "plan_only", False, "Define the sweep and prepare its corpus, then stop (SLURM: before "
    "the array job).")
_REPORT = flags.DEFINE_bool("report", False, "Collect the finished points into a report.")
_EVAL_CONFIG = flags.DEFINE_string(
    "eval_config", None, "Eval config (configs/eval.py[:quick]): launch/eval.py on each "
    "point's last checkpoint once it has trained, its task scores in point.json. Default: "
    "what SWEEP/sweep.json records (none for a new sweep: no eval).")
_EVAL_SET = flags.DEFINE_multi_string(
    "eval_set", [], "key=value override of the eval config (--config.key=value of eval.py).")
_RESAMPLES = flags.DEFINE_integer(
    "resamples", 1000, "Bootstrap refits per fit of the report (its intervals).")
_STAGES = flags.DEFINE_list(
    "stages", ["configs/stage1.py", "configs/stage2.py", "configs/stage3.py"],
    "Configs whose compute the report extrapolates to (model FLOPs per window x windows "
    "per step x train.steps).")


def shared_corpus(sweep_dir: pathlib.Path, sweep: dict[str, Any]) -> str:
  """The config's corpus, or one prepared once in SWEEP/data for every point (the sizes of
  a ladder share the data config, so one corpus fits all)."""
  from data_pipelines import prepare  # pylint: disable=g-import-not-at-top
  config = sweep_lib.load_config(f"{sweep['config']}:{sweep['variants'][0]}")
  sweep_lib.apply_overrides(config, sweep["set"])
  return str(prepare.prepare(sweep_dir, config.data, progress=False))


def load_or_plan(sweep_dir: pathlib.Path) -> dict[str, Any]:
  """SWEEP/sweep.json, written from the flags by the first run. --eval_config given to an
  existing sweep replaces its eval job (its finished points are then evaluated, not
  retrained); without it the recorded one stands (a --point_index task needs no flags)."""
  path = sweep_dir / sweep_lib.SWEEP_FILE
  try:
    evaluation = (sweep_lib.eval_definition(_EVAL_CONFIG.value, _EVAL_SET.value)
                  if _EVAL_CONFIG.value is not None else None)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  if _CONFIG.value is None:
    if not path.exists():
      raise app.UsageError(f"{path} not found: give --config, --variants and --budgets")
    sweep = json.loads(path.read_text())
  else:
    if not (_VARIANTS.value and _BUDGETS.value):
      raise app.UsageError("--config needs --variants and --budgets")
    budgets = [float(b) for b in _BUDGETS.value]
    if not path.exists():
      sweep = sweep_lib.plan(_CONFIG.value, _VARIANTS.value, budgets, _SET.value,
                             _MIN_STEPS.value, _EVAL_BATCHES.value, evaluation)
      sweep_lib.write_json_atomic(path, sweep)
      return sweep
    sweep = json.loads(path.read_text())
    same = (sweep["config"], sweep["variants"], sweep["budgets"], sweep["set"]) == (
        _CONFIG.value, _VARIANTS.value, budgets, _SET.value)
    if not same:
      raise app.UsageError(f"{path} defines another sweep (config, variants, budgets or "
                           "--set differ): use another --sweep_dir")
  if _EVAL_CONFIG.value is not None and evaluation != sweep.get("eval"):
    print(f"sweep: eval job {sweep.get('eval')} -> {evaluation} (finished points are "
          "evaluated again, not retrained)", flush=True)
    sweep["eval"] = evaluation
    sweep_lib.write_json_atomic(path, sweep)
  return sweep


def main(argv):
  del argv
  sweep_dir = pathlib.Path(_SWEEP_DIR.value)
  if _REPORT.value:
    from xefm_jax.eval import scaling_report  # pylint: disable=g-import-not-at-top
    scaling_report.write(sweep_dir, [sweep_lib.cached_stage_compute(sweep_dir, s)
                                     for s in _STAGES.value], resamples=_RESAMPLES.value)
    return
  sweep = load_or_plan(sweep_dir)
  shards = shared_corpus(sweep_dir, sweep)
  if _PLAN_ONLY.value:
    for i, p in enumerate(sweep["points"]):
      print(f"{i}: {p['name']}: {p['steps']} steps, {p['compute']:.3g} FLOPs")
    e = sweep.get("eval")
    print("eval job: " + ("none" if not e else " ".join([e["config"], *e["set"]])))
    return
  points = sweep["points"]
  if _POINT_INDEX.value is not None:
    points = [points[_POINT_INDEX.value]]
  runner = sweep_lib.Runner()
  status: dict[str, Any] = {}
  for point in points:
    if runner.stopping:
      break
    result = runner.run(sweep, point, sweep_dir, shards)
    print(f"sweep: {point['name']}: {result['state']}", flush=True)
    if result["state"] != "busy":
      sweep_lib.write_json_atomic(sweep_dir / point["name"] / sweep_lib.STATUS_FILE, result)
    status = sweep_lib.collect_status(sweep_dir, sweep)
  failed = [n for n, r in status.items() if r["state"] == "failed"]
  if failed:
    print(f"sweep: failed points: {', '.join(failed)} (logs in {sweep_lib.STATUS_FILE})",
          flush=True)
  if runner.stopping:
    sys.exit(143)


if __name__ == "__main__":
  flags.register_validator(
      "report", lambda r: not (r and flags.FLAGS.point_index is not None),
      "--report and --point_index exclude each other")
  app.run(main)
