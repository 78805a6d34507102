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

import fcntl
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
from typing import Any, Optional

from absl import app, flags

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

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
_STAGES = flags.DEFINE_list(
    "stages", ["configs/stage1.py", "configs/stage2.py", "configs/stage3.py"],
    "Configs whose compute the report extrapolates to (model FLOPs per window x windows "
    "per step x train.steps).")

SWEEP_FILE = "sweep.json"
STATUS_FILE = "status.json"
POINT_FILE = "point.json"  # a point's completion mark, written last and atomically
TRAINED_FILE = "trained.json"  # the point's training record, before its eval
LOG = "train.log"
EVAL_LOG = "eval.log"
LOCK = ".lock"  # held by the sweep process training the point


def write_json_atomic(path: pathlib.Path, obj: Any) -> None:
  from data_pipelines import validate  # pylint: disable=g-import-not-at-top
  validate.write_json_atomic(path, obj)


def load_config(spec: str):
  """configs/x.py[:arg] -> its ConfigDict."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("sweep_config", ROOT / path
                                                       if not os.path.isabs(path) else path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)


def apply_overrides(config, overrides: list[str]) -> None:
  """key=value strings (as --config.key=value) onto a ConfigDict, values parsed as Python
  literals where they parse."""
  import ast  # pylint: disable=g-import-not-at-top
  for item in overrides:
    key, _, value = item.partition("=")
    try:
      parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      parsed = value
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
      node = node[p]
    node[leaf] = parsed


def size_of(spec: str, overrides: list[str]) -> dict[str, Any]:
  """Parameters (trained: backbone and objective heads; and the backbone alone), model
  FLOPs per window and tokens per step of one ladder size; shapes only, nothing allocated."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from xefm_jax.data import spec as spec_lib  # pylint: disable=g-import-not-at-top
  from xefm_jax.model import xefm  # pylint: disable=g-import-not-at-top
  from xefm_jax.parallel import init  # pylint: disable=g-import-not-at-top
  from xefm_jax.train import flops  # pylint: disable=g-import-not-at-top
  config = load_config(spec)
  apply_overrides(config, overrides)
  batch = init.abstract_window_batch(spec_lib.WindowSpec.from_config(config.data), 1)
  model = xefm.XEFM(config.model)
  variables = nn.unbox(init.abstract_variables(model, batch))
  out = jax.eval_shape(lambda v, b: model.apply(v, b, method=xefm.XEFM.encode),
                       variables, batch)
  tokens = (sum(int(g.mask.shape[1]) for g in out.tokens.values())  # as model_summary
            + sum(int(r.shape[1]) for r in out.readouts.values()))
  per_window = flops.model_flops_per_window(config)
  return {
      "params_backbone": int(sum(x.size for x in jax.tree.leaves(variables["params"]))),
      "model_flops_per_window": per_window,
      "windows_per_step": int(config.data.batch_size),
      "tokens_per_window": tokens,
      "tokens_per_step": tokens * int(config.data.batch_size),
      "warmup_steps": int(config.optim.warmup_steps),
      "params": trained_params(config),
  }


def trained_params(config) -> int:
  """Parameters the optimizer trains: the backbone and every enabled objective's head."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from xefm_jax.data import spec as spec_lib  # pylint: disable=g-import-not-at-top
  from xefm_jax.objectives.pretrainer import Pretrainer  # pylint: disable=g-import-not-at-top
  from xefm_jax.parallel import init  # pylint: disable=g-import-not-at-top
  from xefm_jax.train import loop, state as state_lib  # pylint: disable=g-import-not-at-top
  config = config.copy_and_resolve_references()
  loop.without_corpus(config)
  batch = init.abstract_window_batch(spec_lib.WindowSpec.from_config(config.data), 1)
  target = state_lib.target_shapes(config, batch)
  params = jax.eval_shape(lambda k, b, t: Pretrainer(config).init(
      {"params": k, "masking": k, "dropout": k}, b, t, train=True),
      jax.random.key(0), batch, target)["params"]
  return int(sum(x.size for x in jax.tree.leaves(nn.unbox(params))))


def point_name(variant: str, budget: float) -> str:
  return f"{variant}_{budget:.3g}".replace("+", "")


def plan(config: str, variants: list[str], budgets: list[float], overrides: list[str],
         min_steps: int, eval_batches: int,
         evaluation: Optional[dict[str, Any]] = None) -> dict[str, Any]:
  """The sweep's definition: sizes (measured from the configs) and points."""
  sizes = {v: size_of(f"{config}:{v}", overrides) for v in variants}
  points = []
  for b in budgets:  # budget-major: a sweep stopped early has every size at the low budgets
    for v in variants:
      per_step = sizes[v]["model_flops_per_window"] * sizes[v]["windows_per_step"]
      steps = max(min_steps, int(round(b / per_step)))
      if any(p["variant"] == v and p["steps"] == steps for p in points):
        continue  # --min_steps lifted two budgets to one run: train it once
      points.append({"name": point_name(v, b), "variant": v, "budget": b, "steps": steps,
                     "compute": steps * per_step,
                     "tokens": steps * sizes[v]["tokens_per_step"]})
  # the most steps every size reaches: each size has a val loss at that many tokens
  eval_every = min(max(p["steps"] for p in points if p["variant"] == v) for v in variants)
  return {"config": config, "variants": variants, "budgets": budgets, "set": overrides,
          "min_steps": min_steps, "eval_batches": eval_batches, "eval_every": eval_every,
          "sizes": sizes, "points": points, "eval": evaluation}


def train_command(sweep: dict[str, Any], point: dict[str, Any], workdir: pathlib.Path,
                  shards: str) -> list[str]:
  steps = point["steps"]
  warmup = max(1, min(sweep["sizes"][point["variant"]]["warmup_steps"], steps // 10))
  ckpt_every = max(10, steps // 4)
  return [sys.executable, str(ROOT / "launch" / "train.py"),
          f"--config={sweep['config']}:{point['variant']}", f"--workdir={workdir}",
          f"--config.data.shards={shards}", f"--config.train.steps={steps}",
          f"--config.optim.warmup_steps={warmup}", "--config.optim.decay_steps=-1",
          f"--config.train.eval_every={sweep['eval_every']}",
          f"--config.train.eval_batches={sweep['eval_batches']}",
          f"--config.train.ckpt_every={ckpt_every}", "--config.train.keep=2",
          f"--config.train.log_every={max(1, min(50, steps // 10))}",
          *[f"--config.{s}" for s in sweep["set"]]]


def eval_definition(spec: Optional[str], overrides: list[str]) -> Optional[dict[str, Any]]:
  """The sweep's eval job as sweep.json records it (None: no eval)."""
  if not spec:
    return None
  for item in overrides:
    if "=" not in item:
      raise app.UsageError(f"--eval_set={item}: want key=value (a --config.key=value of "
                           "launch/eval.py, e.g. splits.score=val)")
  load_config(spec)  # fails now, not after the first point has trained
  return {"config": spec, "set": list(overrides)}


def eval_command(sweep: dict[str, Any], point: dict[str, Any], workdir: pathlib.Path,
                 shards: str) -> list[str]:
  """launch/eval.py on the point's last checkpoint (progress bars off: the log is a file).
  Its embedding and baseline caches are keyed by the eval settings, so --force redoes only
  what another eval definition changes."""
  return [sys.executable, str(ROOT / "launch" / "eval.py"),
          f"--config={sweep['eval']['config']}", f"--workdir={workdir}",
          f"--checkpoint={point['steps']}", f"--shards={shards}", "--config.progress=false",
          "--force",  # a report of that step under another eval definition is redone
          *[f"--config.{s}" for s in sweep["eval"]["set"]]]


def headline(entry: dict[str, Any]) -> dict[str, Any]:
  """One task of an eval report: its headline metric's score (on the eval's score split)
  for the trained trunk, its EMA and the baselines (those the eval config scored), and
  whether the trunk wins against both (95% intervals above zero)."""
  out = {"metric": entry["metric"], "higher_is_better": entry["higher_is_better"]}
  out.update({fs: entry[fs] for fs in ("model", "model_ema", "handcrafted", "random_init")
              if fs in entry})
  out["wins"] = entry.get("wins")
  return out


def eval_record(sweep: dict[str, Any], point: dict[str, Any], workdir: pathlib.Path,
                seconds: float) -> dict[str, Any]:
  """point.json's `eval` block from SWEEP/<point>/eval/<step>/report.json (the keys of
  xefm_jax/eval/report.py). Raises if there is none."""
  path = workdir / "eval" / str(point["steps"]) / "report.json"
  if not path.is_file():
    raise RuntimeError(f"{path}: no eval report")
  report = json.loads(path.read_text())
  summary = report.get("summary", {})
  return {"definition": sweep["eval"], "step": report["step"],
          "report": str(path.relative_to(workdir)),
          "split": report["splits"]["score"]["split"],
          "test_sessions": summary.get("test_sessions"),
          "significant_wins": summary.get("significant_wins"),
          "tasks": {n: headline(e) for n, e in report["tasks"].items()},
          "extensions": {n: headline(e) for n, e in report.get("extensions", {}).items()},
          "wall_s": seconds}


def finished(sweep: dict[str, Any], workdir: pathlib.Path) -> bool:
  """The point has its point.json, with the eval block of the sweep's eval job if any."""
  path = workdir / POINT_FILE
  if not path.exists():
    return False
  if not sweep.get("eval"):
    return True
  return json.loads(path.read_text()).get("eval", {}).get("definition") == sweep["eval"]


def shared_corpus(sweep_dir: pathlib.Path, sweep: dict[str, Any]) -> str:
  """The config's corpus, or one prepared once in SWEEP/data for every point (the sizes of
  a ladder share the data config, so one corpus fits all)."""
  from data_pipelines import prepare  # pylint: disable=g-import-not-at-top
  config = load_config(f"{sweep['config']}:{sweep['variants'][0]}")
  apply_overrides(config, sweep["set"])
  return str(prepare.prepare(sweep_dir, config.data, progress=False))


def read_rows(workdir: pathlib.Path) -> list[dict[str, Any]]:
  path = workdir / "metrics.jsonl"
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def tail(path: pathlib.Path, lines: int = 30) -> str:
  if not path.exists():
    return ""
  return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def summarize(point: dict[str, Any], workdir: pathlib.Path, seconds: float) -> dict[str, Any]:
  """The point's record: its plan, its val metrics at the end and at every evaluation, the
  last training loss. Raises if the run did not reach its last step's evaluation."""
  rows = read_rows(workdir)
  val: dict[int, dict[str, float]] = {}
  train_loss = None
  for row in rows:
    if any(k.startswith("val/") for k in row):
      val.setdefault(row["step"], {}).update(
          {k: v for k, v in row.items() if k.startswith("val/")})
    elif "loss" in row:
      train_loss = row["loss"]
  if point["steps"] not in val:
    raise RuntimeError(f"{workdir}: no val metrics at step {point['steps']}")
  return dict(point, val=val[point["steps"]], val_by_step={str(k): v for k, v in
                                                           sorted(val.items())},
              train_loss=train_loss, wall_s=seconds)


class Runner:
  """Runs points one at a time; SIGTERM/SIGINT go to the running point, then stop."""

  def __init__(self):
    self.child: Optional[subprocess.Popen] = None
    self.stopping = False
    signal.signal(signal.SIGTERM, self._stop)
    signal.signal(signal.SIGINT, self._stop)

  def _stop(self, signum, frame):
    del frame
    self.stopping = True
    if self.child is not None and self.child.poll() is None:
      self.child.send_signal(signal.SIGTERM)  # the trainer checkpoints and exits
    print(f"sweep: signal {signum}, stopping after the running point saves", flush=True)

  def run(self, sweep: dict[str, Any], point: dict[str, Any], sweep_dir: pathlib.Path,
          shards: str) -> dict[str, Any]:
    """One point: skipped if finished, else trained (resuming), evaluated and summarized."""
    workdir = sweep_dir / point["name"]
    if finished(sweep, workdir):
      return {"state": "done", "skipped": True}
    workdir.mkdir(parents=True, exist_ok=True)
    lock = open(workdir / LOCK, "w")  # closed (and so released) when this returns or dies
    try:
      fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      return {"state": "busy"}  # another sweep process trains it
    with lock:
      if finished(sweep, workdir):  # another process finished it since
        return {"state": "done", "skipped": True}
      return self._point(sweep, point, workdir, shards)

  def _child(self, cmd: list[str], log_path: pathlib.Path) -> tuple[int, float]:
    """Runs cmd from the repository root, its output appended to log_path (after the
    command line); returns (exit status, seconds)."""
    start = time.time()
    with open(log_path, "ab") as log:
      log.write(("\n$ " + " ".join(cmd) + "\n").encode())
      log.flush()
      self.child = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
      rc = self.child.wait()
      self.child = None
    return rc, time.time() - start

  def _point(self, sweep: dict[str, Any], point: dict[str, Any], workdir: pathlib.Path,
             shards: str) -> dict[str, Any]:
    """Trains the point unless trained.json (or an earlier point.json) has its record, then
    evaluates it if the sweep has an eval job; point.json last."""
    result: dict[str, Any] = {"state": "done"}
    record = None
    for name in (POINT_FILE, TRAINED_FILE):  # point.json: a point finished before its eval
      if (workdir / name).exists():
        record = json.loads((workdir / name).read_text())
        record.pop("eval", None)
        break
    if record is None:
      print(f"sweep: {point['name']}: {point['steps']} steps, {point['compute']:.3g} FLOPs",
            flush=True)
      rc, seconds = self._child(train_command(sweep, point, workdir, shards), workdir / LOG)
      if self.stopping:
        return {"state": "interrupted", "stage": "train", "rc": rc}
      if rc != 0:
        return {"state": "failed", "stage": "train", "rc": rc, "log_tail": tail(workdir / LOG)}
      try:
        record = summarize(point, workdir, seconds)
      except RuntimeError as e:
        return {"state": "failed", "stage": "train", "rc": rc, "error": str(e),
                "log_tail": tail(workdir / LOG)}
      write_json_atomic(workdir / TRAINED_FILE, record)
      result["wall_s"] = seconds
    if sweep.get("eval"):
      print(f"sweep: {point['name']}: eval ({sweep['eval']['config']})", flush=True)
      rc, seconds = self._child(eval_command(sweep, point, workdir, shards),
                                workdir / EVAL_LOG)
      if self.stopping:
        return {"state": "interrupted", "stage": "eval", "rc": rc}
      if rc != 0:
        return {"state": "failed", "stage": "eval", "rc": rc,
                "log_tail": tail(workdir / EVAL_LOG)}
      try:
        record["eval"] = eval_record(sweep, point, workdir, seconds)
      except (RuntimeError, KeyError, ValueError) as e:
        return {"state": "failed", "stage": "eval", "rc": rc, "error": repr(e),
                "log_tail": tail(workdir / EVAL_LOG)}
      result["eval_s"] = seconds
    write_json_atomic(workdir / POINT_FILE, record)
    return result


def load_or_plan(sweep_dir: pathlib.Path) -> dict[str, Any]:
  """SWEEP/sweep.json, written from the flags by the first run. --eval_config given to an
  existing sweep replaces its eval job (its finished points are then evaluated, not
  retrained); without it the recorded one stands (a --point_index task needs no flags)."""
  path = sweep_dir / SWEEP_FILE
  evaluation = (eval_definition(_EVAL_CONFIG.value, _EVAL_SET.value)
                if _EVAL_CONFIG.value is not None else None)
  if _CONFIG.value is None:
    if not path.exists():
      raise app.UsageError(f"{path} not found: give --config, --variants and --budgets")
    sweep = json.loads(path.read_text())
  else:
    if not (_VARIANTS.value and _BUDGETS.value):
      raise app.UsageError("--config needs --variants and --budgets")
    budgets = [float(b) for b in _BUDGETS.value]
    if not path.exists():
      sweep = plan(_CONFIG.value, _VARIANTS.value, budgets, _SET.value, _MIN_STEPS.value,
                   _EVAL_BATCHES.value, evaluation)
      write_json_atomic(path, sweep)
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
    write_json_atomic(path, sweep)
  return sweep


def stage_compute(spec: str) -> dict[str, Any]:
  """A stage config's planned training compute: model FLOPs per window x windows per step
  x train.steps (what the config says; nothing is allocated)."""
  config = load_config(spec)
  from xefm_jax.train import flops  # pylint: disable=g-import-not-at-top
  per_window = flops.model_flops_per_window(config)
  steps, windows = int(config.train.steps), int(config.data.batch_size)
  return {"config": spec, "model_flops_per_window": per_window, "windows_per_step": windows,
          "steps": steps, "compute": per_window * windows * steps}


def cached_stage_compute(sweep_dir: pathlib.Path, spec: str) -> dict[str, Any]:
  """stage_compute, kept in SWEEP/stages.json under a hash of the configs/ sources (tracing
  a 7B model's step takes minutes on a loaded CPU; a config edit recomputes it)."""
  import hashlib  # pylint: disable=g-import-not-at-top
  digest = hashlib.sha256()
  for path in sorted((ROOT / "configs").glob("*.py")) + [ROOT / spec.partition(":")[0]]:
    digest.update(path.read_bytes())
  key = f"{spec}@{digest.hexdigest()[:16]}"
  path = sweep_dir / "stages.json"
  cache = json.loads(path.read_text()) if path.exists() else {}
  if key not in cache:
    cache[key] = stage_compute(spec)
    write_json_atomic(path, cache)
  return cache[key]


def collect_status(sweep_dir: pathlib.Path, sweep: dict[str, Any]) -> dict[str, Any]:
  """SWEEP/status.json: every point's last result (SWEEP/<point>/status.json, written by
  whichever sweep process or array task ran it), in the sweep's order; rewritten whole, so
  concurrent writers all leave the union."""
  status = {}
  for p in sweep["points"]:
    path = sweep_dir / p["name"] / STATUS_FILE
    if path.exists():
      status[p["name"]] = json.loads(path.read_text())
  write_json_atomic(sweep_dir / STATUS_FILE, status)
  return status


def main(argv):
  del argv
  sweep_dir = pathlib.Path(_SWEEP_DIR.value)
  if _REPORT.value:
    from xefm_jax.eval import scaling_report  # pylint: disable=g-import-not-at-top
    scaling_report.write(sweep_dir, [cached_stage_compute(sweep_dir, s)
                                     for s in _STAGES.value])
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
  runner = Runner()
  status: dict[str, Any] = {}
  for point in points:
    if runner.stopping:
      break
    result = runner.run(sweep, point, sweep_dir, shards)
    print(f"sweep: {point['name']}: {result['state']}", flush=True)
    if result["state"] != "busy":
      write_json_atomic(sweep_dir / point["name"] / STATUS_FILE, result)
    status = collect_status(sweep_dir, sweep)
  failed = [n for n, r in status.items() if r["state"] == "failed"]
  if failed:
    print(f"sweep: failed points: {', '.join(failed)} (logs in {STATUS_FILE})", flush=True)
  if runner.stopping:
    sys.exit(143)


if __name__ == "__main__":
  flags.register_validator(
      "report", lambda r: not (r and flags.FLAGS.point_index is not None),
      "--report and --point_index exclude each other")
  app.run(main)
