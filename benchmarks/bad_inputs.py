"""What a person sees for each bad input of issue 11: the launchers' exit status and output.

    python benchmarks/bad_inputs.py --shards runs/local/data/shards [--tree DIR] [--only a,b]

Runs every case as a new user would (the launchers and pipelines as subprocesses, the
code of `--tree`, default this checkout, so an older checkout can be measured the same
way) on copies of the README corpus (configs/local.py, `runs/local/data`) under a scratch
folder (each case's whole output in SCRATCH/outputs/), and prints one row per case: exit
status, lines of output, and the first `xefm:` line or else the last line (the
message, or a traceback's exception line). Training runs use configs/local.py with a
schedule that does not depend on train.steps, so every run shares one compiled step.
Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
TRAIN = ["--config=configs/local.py", "--config.optim.decay_steps=130",
         "--config.optim.warmup_steps=1",
         "--config.train.eval_every=0", "--config.train.log_every=1",
         "--config.train.peak_flops_per_device=5e10"]


class Case:
  def __init__(self, name: str, what: str):
    self.name, self.what = name, what
    self.rc: int | None = None
    self.output = ""
    self.note = ""

  def row(self) -> dict:
    out = [line for line in self.output.splitlines() if line.strip()]
    errors = [line for line in out if line.startswith("xefm: ")]
    last = errors[0] if errors else (out[-1] if out else "")
    return {"case": self.name, "input": self.what, "exit": self.rc,
            "lines": len(out), "message": last[:300], "note": self.note}


class Runner:
  def __init__(self, tree: pathlib.Path, scratch: pathlib.Path, shards: pathlib.Path):
    self.tree, self.scratch, self.shards = tree, scratch, shards
    self.env = dict(os.environ, PYTHONPATH=str(tree), JAX_PLATFORMS="cpu")

  def run(self, case: Case, cmd: list[str], env: dict | None = None, timeout: int = 900
          ) -> Case:
    proc = subprocess.run([sys.executable, *cmd], cwd=self.tree, env=env or self.env,
                          capture_output=True, text=True, timeout=timeout)
    case.rc, case.output = proc.returncode, proc.stdout + proc.stderr
    return case

  def train(self, case: Case, workdir: pathlib.Path, shards: pathlib.Path, *extra: str,
            env: dict | None = None) -> Case:
    return self.run(case, ["launch/train.py", *TRAIN, f"--workdir={workdir}",
                           f"--config.data.shards={shards}", *extra], env)

  def copy_shards(self, name: str) -> pathlib.Path:
    dst = self.scratch / name
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(self.shards, dst)
    return dst


def _train_shards(shards: pathlib.Path) -> list[pathlib.Path]:
  manifest = json.loads((shards / "manifest.json").read_text())
  return [shards / s["name"] for s in manifest["shards"] if s["split"] == "train"]


def case_deleted_chunks(r: Runner) -> list[Case]:
  shards = r.copy_shards("no-pose")
  for shard in _train_shards(shards):
    shutil.rmtree(shard / "pose" / "c")  # every pose chunk of every train shard
  train = r.train(Case("deleted_chunks", "every pose chunk of the train shards deleted; "
                       "train 3 steps"), r.scratch / "w-no-pose", shards,
                  "--config.train.steps=3")
  verify = r.run(Case("verify_deleted_chunks", "shred.py --verify on that corpus"),
                 ["data_pipelines/shred.py", "--verify", str(shards)])
  return [train, verify]


def case_negative_lr(r: Runner) -> list[Case]:
  return [r.train(Case("negative_lr", "--config.optim.learning_rate=-1e-3, 3 steps"),
                  r.scratch / "w-lr", r.shards, "--config.train.steps=3",
                  "--config.optim.learning_rate=-1e-3")]


def case_warmup(r: Runner) -> list[Case]:
  return [r.train(Case("warmup_over_steps", "--config.optim.warmup_steps=50 with "
                       "--config.train.steps=3"), r.scratch / "w-warmup", r.shards,
                  "--config.train.steps=3", "--config.optim.warmup_steps=50")]


def case_unknown_key(r: Runner) -> list[Case]:
  return [r.train(Case("unknown_key", "--config.model.widht=3"), r.scratch / "w-key",
                  r.shards, "--config.model.widht=3")]


def case_indivisible_batch(r: Runner) -> list[Case]:
  env = dict(r.env, XLA_FLAGS="--xla_force_host_platform_device_count=8")
  return [r.train(Case("indivisible_batch", "--config.data.batch_size=12 on 8 devices"),
                  r.scratch / "w-batch", r.shards, "--config.data.batch_size=12",
                  "--config.train.steps=1", env=env)]


def case_empty_shards(r: Runner) -> list[Case]:
  empty = r.scratch / "empty"
  empty.mkdir(exist_ok=True)
  return [r.train(Case("empty_shards", "--config.data.shards=<an empty folder>"),
                  r.scratch / "w-empty", empty)]


def case_foreign_report(r: Runner) -> list[Case]:
  raw2 = r.scratch / "raw2"
  if not (raw2 / ".complete").exists():
    shutil.rmtree(raw2, ignore_errors=True)
    r.run(Case("synth", ""), ["data_pipelines/synthesize.py", "--out", str(raw2),
                              "--sessions", "2", "--episodes-per-session", "1",
                              "--seconds", "6", "--seed", "7"])
    (raw2 / ".complete").touch()
  out = r.scratch / "foreign"
  shutil.rmtree(out, ignore_errors=True)
  out.mkdir()
  shutil.copy(r.shards.parent / "stage0.json", out / "stage0.json")  # the README raw root's
  foreign = r.run(Case("foreign_report", "shred.py --raw A --out B where B/stage0.json is "
                       "the report of another raw root"),
                  ["data_pipelines/shred.py", "--raw", str(raw2), "--out", str(out),
                   "--quiet"])
  # the same raw root at a moved path, its own report in --out: accepted
  first = r.scratch / "moved-out"
  shutil.rmtree(first, ignore_errors=True)
  r.run(Case("shred", ""), ["data_pipelines/shred.py", "--raw", str(raw2), "--out",
                            str(first), "--quiet"])
  moved = r.scratch / "raw2-moved"
  shutil.rmtree(moved, ignore_errors=True)
  shutil.copytree(raw2, moved)
  again = r.scratch / "moved-out-2"
  shutil.rmtree(again, ignore_errors=True)
  again.mkdir()
  shutil.copy(first / "stage0.json", again / "stage0.json")
  accepted = r.run(Case("moved_raw_root", "the same raw root copied elsewhere, its report "
                        "in --out"), ["data_pipelines/shred.py", "--raw", str(moved), "--out",
                                      str(again), "--quiet"])
  return [foreign, accepted]


def _run_with_checkpoints(r: Runner, name: str, steps: int) -> pathlib.Path:
  """A finished run of `steps` steps with a checkpoint at every step (kept: all)."""
  base = r.scratch / f"base-{steps}"
  if not (base / "done").exists():
    shutil.rmtree(base, ignore_errors=True)
    c = r.train(Case("base", ""), base, r.shards, f"--config.train.steps={steps}",
                "--config.train.ckpt_every=1", "--config.train.keep=9")
    assert c.rc == 0, c.output[-3000:]
    (base / "done").touch()
  workdir = r.scratch / name
  shutil.rmtree(workdir, ignore_errors=True)
  shutil.copytree(base, workdir)
  return workdir


def _damage(step_dir: pathlib.Path) -> str:
  """Deletes the state item's largest data file; returns its path."""
  files = [p for p in (step_dir / "state").rglob("*") if p.is_file()]
  victim = max(files, key=lambda p: p.stat().st_size)
  victim.unlink()
  return str(victim.relative_to(step_dir.parent.parent))


def case_checkpoint_missing_file(r: Runner) -> list[Case]:
  workdir = _run_with_checkpoints(r, "w-ckpt-missing", 1)
  gone = _damage(workdir / "checkpoints" / "1")
  train = r.train(Case("checkpoint_missing_file", f"resume a run whose only checkpoint "
                       f"lacks {gone}"), workdir, r.shards, "--config.train.steps=2",
                  "--config.train.ckpt_every=1", "--config.train.keep=9")
  ev = r.run(Case("eval_missing_file", "launch/eval.py on that run"),
             ["launch/eval.py", "--config=configs/eval.py:quick", f"--workdir={workdir}",
              "--checkpoint=1"])
  return [train, ev]


def case_damaged_latest(r: Runner) -> list[Case]:
  workdir = _run_with_checkpoints(r, "w-ckpt-latest", 2)
  gone = _damage(workdir / "checkpoints" / "2")
  c = r.train(Case("damaged_latest", f"resume (3 steps) when the latest checkpoint (2) "
                   f"lacks {gone}, step 1 complete"), workdir, r.shards,
              "--config.train.steps=3", "--config.train.ckpt_every=1",
              "--config.train.keep=9")
  restored = [line for line in c.output.splitlines() if "restored step" in line
              or "cannot be restored" in line or "falling back" in line]
  c.note = " | ".join(x.split("] ", 1)[-1] for x in restored)[:300]
  return [c]


def case_kill9(r: Runner) -> list[Case]:
  """kill -9 after step 4 is logged (checkpoints every 2 steps), then resume to 6."""
  workdir = r.scratch / "w-kill"
  shutil.rmtree(workdir, ignore_errors=True)
  workdir.mkdir()
  cmd = [sys.executable, "launch/train.py", *TRAIN, f"--workdir={workdir}",
         f"--config.data.shards={r.shards}", "--config.train.steps=6",
         "--config.train.ckpt_every=2", "--config.train.keep=9"]
  with open(workdir / "log1", "w") as log:
    proc = subprocess.Popen(cmd, cwd=r.tree, env=r.env, stdout=log, stderr=subprocess.STDOUT)
    metrics = workdir / "metrics.jsonl"
    deadline = time.time() + 900
    while time.time() < deadline and proc.poll() is None:
      steps = [json.loads(x)["step"] for x in metrics.read_text().splitlines()] if (
          metrics.exists()) else []
      if steps and max(steps) >= 4:
        break
      time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  c = Case("kill9_resume", "kill -9 after step 4 is logged (checkpoints every 2), then "
           "resume to 6")
  r.run(c, cmd[1:])
  steps = [json.loads(x)["step"] for x in (workdir / "metrics.jsonl").read_text().splitlines()]
  twice = sorted({s for s in steps if steps.count(s) > 1})
  c.note = f"metrics.jsonl steps {steps}; twice: {twice}"
  return [c]


CASES = {f.__name__[5:]: f for f in (
    case_unknown_key, case_empty_shards, case_negative_lr, case_warmup,
    case_indivisible_batch, case_deleted_chunks, case_foreign_report,
    case_checkpoint_missing_file, case_damaged_latest, case_kill9)}


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--shards", required=True, help="the README corpus' shards")
  p.add_argument("--tree", default=str(ROOT), help="the checkout whose code runs")
  p.add_argument("--scratch", default=None)
  p.add_argument("--only", default="", help=f"comma-separated of {', '.join(CASES)}")
  args = p.parse_args()
  scratch = pathlib.Path(args.scratch or tempfile.mkdtemp(prefix="bad-inputs-"))
  scratch.mkdir(parents=True, exist_ok=True)
  runner = Runner(pathlib.Path(args.tree).resolve(), scratch.resolve(),
                  pathlib.Path(args.shards).resolve())
  names = [n for n in args.only.split(",") if n] or list(CASES)
  rows = []
  for name in names:
    t0 = time.time()
    for case in CASES[name](runner):
      (scratch / "outputs").mkdir(exist_ok=True)
      (scratch / "outputs" / f"{case.name}.txt").write_text(case.output)
      row = case.row()
      rows.append(row)
      print(f"| {row['case']} | {row['input']} | {row['exit']} | {row['lines']} | "
            f"`{row['message']}` | {row['note']} | ({time.time() - t0:.0f} s)", flush=True)
  print(json.dumps(rows))
  return 0


if __name__ == "__main__":
  sys.exit(main())
