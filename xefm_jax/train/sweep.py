"""The scaling sweep's runner (issue 17): a sweep's definition (sizes measured from the
configs, the (size, budget) points), each point's training and eval commands, the point's
record, and the Runner that trains and evaluates one point under its lock. The command
line, and what each file of a sweep directory holds, are launch/sweep.py's.
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

ROOT = pathlib.Path(__file__).resolve().parents[2]

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
      raise ValueError(f"--eval_set={item}: want key=value (a --config.key=value of "
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
