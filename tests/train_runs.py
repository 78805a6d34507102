"""Launcher runs for the tests: `python launch/train.py` as a real subprocess on the test
corpus, with the flags every test run shares, and readers of what a run leaves behind."""

import contextlib
import fcntl
import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
STEPS = 8
# Flags of every run: a fixed schedule (decay_steps set, so `steps` does not enter the
# compiled step and runs of different lengths share one compiled program).
TINY = "configs/local.py:tiny"
# The motion-side tiny model (tests/motion_ladder.py): runs whose subject is the run itself.
MOTION = "tests/motion_ladder.py:t1"
FLAGS = [f"--config={TINY}", "--config.train.log_every=1",
         "--config.train.ckpt_every=3", "--config.train.keep=5",
         "--config.optim.warmup_steps=2", "--config.optim.decay_steps=20",
         "--config.data.read_threads=2", "--config.data.prefetch=2",
         # MFU against a fixed peak: measuring one costs seconds per launch
         "--config.train.peak_flops_per_device=2e10"]
# Seconds a launcher run may take (XEFM_TEST_TIMEOUT: more on a loaded machine).
TIMEOUT = int(os.environ.get("XEFM_TEST_TIMEOUT", "600"))


@contextlib.contextmanager
def locked(path: pathlib.Path):
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, "w") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def with_devices(env: dict, count: int) -> dict:
  """`env` with `count` simulated CPU devices (with several, the launchers turn the
  compilation cache off themselves: xefm_jax/host.py)."""
  flags = [f for f in env["XLA_FLAGS"].split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  flags.append(f"--xla_force_host_platform_device_count={count}")
  return dict(env, XLA_FLAGS=" ".join(flags))


def launch_module(name: str):
  """launch/<name>.py as a module (launch/ is scripts, not a package): tests call its main()
  in-process instead of starting an interpreter per case."""
  spec = importlib.util.spec_from_file_location(f"launch_{name}", ROOT / "launch" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def launch(workdir: pathlib.Path, shards: pathlib.Path, env: dict, *extra: str,
           log_name: str = "train.log", config: str = TINY) -> subprocess.Popen:
  """`python launch/train.py` with FLAGS on `config` (TINY or MOTION) in the background."""
  workdir.mkdir(parents=True, exist_ok=True)
  log = open(workdir / log_name, "ab")
  flags = [f"--config={config}", *FLAGS[1:]]
  cmd = [sys.executable, str(ROOT / "launch" / "train.py"), *flags, f"--workdir={workdir}",
         f"--config.data.shards={shards}", f"--config.train.steps={STEPS}", *extra]
  return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def tail(workdir: pathlib.Path, log_name: str = "train.log", lines: int = 40) -> str:
  text = (workdir / log_name).read_text(errors="replace").splitlines()
  return "\n".join(text[-lines:])


def finish(proc: subprocess.Popen, workdir: pathlib.Path, log_name: str = "train.log") -> None:
  rc = proc.wait(timeout=TIMEOUT)
  assert rc == 0, f"exit {rc}:\n{tail(workdir, log_name)}"


def train_rows(workdir: pathlib.Path) -> dict[int, dict]:
  """Training rows of metrics.jsonl by step, the last occurrence of each step winning."""
  rows = {}
  path = workdir / "metrics.jsonl"
  if path.exists():
    for line in path.read_text().splitlines():
      row = json.loads(line)
      if "loss" in row:
        rows[row["step"]] = row
  return rows


def wait_for_step(proc: subprocess.Popen, workdir: pathlib.Path, step: int) -> int:
  """Polls metrics.jsonl until a step >= `step` is logged; returns the step seen."""
  deadline = time.time() + TIMEOUT
  while time.time() < deadline:
    seen = max(train_rows(workdir), default=0)
    if seen >= step:
      return seen
    assert proc.poll() is None, f"exited {proc.returncode} early:\n{tail(workdir)}"
    time.sleep(0.02)
  raise TimeoutError(f"step {step} not reached:\n{tail(workdir)}")
