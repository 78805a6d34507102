"""The scaling sweep end to end (launch/sweep.py, issue 17): a two-size x two-budget ladder
(tests/motion_ladder.py) on the test corpus, as a real subprocess that is killed (SIGKILL to
its process group: the sweep and its running point) once two points finished and the third
committed a checkpoint, then run again: the finished points are skipped, the killed one
resumes from its checkpoint, the last runs; an eval job added to the finished sweep
evaluates one point (--point_index) without retraining it, and --report writes report.md,
report.json and the plots, its eval-task table with that point. On the resumed run the last
point's trainer fails: it is recorded and the sweep goes on; the next run trains it. A
second test: the runner's train-then-eval protocol with stand-in commands.

One simulated device (conftest.train_env: XLA:CPU collectives of launcher runs deadlock
otherwise), the session's compilation cache, and the light objectives of test_train (MLP
heads) on its motion-side model: a fixed schedule (--set optim.*, test_train's) so both
budgets of a size share one compiled step, and t1's is test_train's light program."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from train_runs import ROOT, TIMEOUT, tail
from test_train import LIGHT, only
from xefm_jax.train import sweep as sweep_lib

pytestmark = pytest.mark.slow

# model FLOPs per window (LIGHT objectives): t0 0.52 MFLOP, t1 1.8 MFLOP; 8 windows per
# step, so these budgets are 5 to 36 steps per point (t0: 18 and 36, t1: 5 and 10). Points
# run budget-major: t0_7.5e07, t1_7.5e07, t0_1.5e08 (killed after its checkpoint of step 10:
# the sweep checkpoints every max(10, steps // 4) steps), t1_1.5e08.
BUDGETS = "7.5e7,1.5e8"


def sweep_cmd(sweep_dir: pathlib.Path, shards: pathlib.Path, *extra: str) -> list[str]:
  sets = ["train.peak_flops_per_device=2e10", "data.read_threads=2", "data.prefetch=2",
          # test_train's schedule: t1 (the tiny model) with the LIGHT objectives is then
          # the program of test_train's light runs, compiled once for both (the cache)
          "optim.warmup_steps=2", "optim.decay_steps=20",
          f"data.shards={shards}"]
  sets += [flag.removeprefix("--config.") for flag in only(*LIGHT)]
  return [sys.executable, str(ROOT / "launch" / "sweep.py"),
          "--config=tests/motion_ladder.py", "--variants=t0,t1", f"--budgets={BUDGETS}",
          f"--sweep_dir={sweep_dir}", "--min_steps=2", "--eval_batches=1",
          *[f"--set={s}" for s in sets], *extra]


def test_sweep_killed_mid_point_resumes_and_reports(shard_corpus, train_env, tmp_path):
  sweep_dir = tmp_path / "sweep"
  out = open(tmp_path / "sweep.log", "ab")
  proc = subprocess.Popen(sweep_cmd(sweep_dir, shard_corpus), cwd=ROOT, env=train_env,
                          stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
  deadline = time.time() + TIMEOUT
  try:
    while not (sweep_dir / "sweep.json").exists() and time.time() < deadline:
      assert proc.poll() is None, tail(tmp_path, "sweep.log")
      time.sleep(0.2)
    points = json.loads((sweep_dir / "sweep.json").read_text())["points"]
    killed = points[2]["name"]
    # kill once two points are done and the third has committed its checkpoint of step 10
    while time.time() < deadline:
      assert proc.poll() is None, tail(tmp_path, "sweep.log")
      if (sweep_dir / killed / "checkpoints" / "10" / "commit_success.txt").exists():
        break
      time.sleep(0.05)
  finally:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
  assert (sweep_dir / points[1]["name"] / "point.json").exists()
  assert not (sweep_dir / killed / "point.json").exists()

  # resume: the same command, with the last point's run directory made unusable (its
  # checkpoints path a file), so its trainer exits non-zero: the sweep records the exit and
  # the log tail and goes on; the next run trains it
  bad = sweep_dir / points[3]["name"]
  bad.mkdir()
  (bad / "checkpoints").write_text("not a directory")
  rerun = subprocess.run(sweep_cmd(sweep_dir, shard_corpus), cwd=ROOT, env=train_env,
                         capture_output=True, text=True, timeout=TIMEOUT)
  assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
  status = json.loads((sweep_dir / "status.json").read_text())
  assert list(status) == [p["name"] for p in points]
  for p in points[:2]:
    assert status[p["name"]] == {"state": "done", "skipped": True}
  assert status[killed]["state"] == "done"
  failed = status[bad.name]
  assert failed["state"] == "failed" and failed["rc"] != 0 and "checkpoints" in failed["log_tail"]
  assert "failed points: " + bad.name in rerun.stdout
  (bad / "checkpoints").unlink()
  again = subprocess.run(sweep_cmd(sweep_dir, shard_corpus), cwd=ROOT, env=train_env,
                         capture_output=True, text=True, timeout=TIMEOUT)
  assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
  status = json.loads((sweep_dir / "status.json").read_text())
  assert all(status[p["name"]]["state"] == "done" for p in points)
  assert [status[p["name"]].get("skipped") for p in points] == [True, True, True, None]
  assert "failed points" not in again.stdout
  # the finished points' trainers ran once; the killed one twice, resuming at step 10
  for p in points[:2]:
    assert (sweep_dir / p["name"] / "train.log").read_text().count("\n$ ") == 1
  assert (bad / "train.log").read_text().count("\n$ ") == 2  # failed, then trained
  log = (sweep_dir / killed / "train.log").read_text()
  assert log.count("\n$ ") == 2 and "restored step 10" in log
  records = [json.loads((sweep_dir / p["name"] / "point.json").read_text()) for p in points]
  for r in records:
    assert r["val"]["val/loss"] > 0 and str(r["steps"]) in r["val_by_step"]
  # a bigger budget of one size trains more steps; sizes differ in model FLOPs per window
  by_name = {r["name"]: r for r in records}
  assert [p["name"] for p in points] == ["t0_7.5e07", "t1_7.5e07", "t0_1.5e08", "t1_1.5e08"]
  assert by_name["t0_1.5e08"]["steps"] > by_name["t0_7.5e07"]["steps"]
  assert by_name["t0_7.5e07"]["steps"] > by_name["t1_7.5e07"]["steps"] >= 5
  sizes = json.loads((sweep_dir / "sweep.json").read_text())["sizes"]
  assert sizes["t1"]["model_flops_per_window"] > sizes["t0"]["model_flops_per_window"]
  assert sizes["t1"]["params_backbone"] > sizes["t0"]["params_backbone"]

  # an eval job added to the finished sweep, run for one point (--point_index, as a SLURM
  # task): it is evaluated (tests/sweep_eval.py, two feature sets), not retrained
  evaluated = points[0]["name"]
  eval_run = subprocess.run(
      [sys.executable, str(ROOT / "launch" / "sweep.py"), f"--sweep_dir={sweep_dir}",
       "--point_index=0", "--eval_config=tests/sweep_eval.py",
       "--eval_set=feature_sets=('model','handcrafted')"],
      cwd=ROOT, env=train_env, capture_output=True, text=True, timeout=TIMEOUT)
  assert eval_run.returncode == 0, eval_run.stdout[-3000:] + eval_run.stderr[-3000:]
  assert json.loads((sweep_dir / "status.json").read_text())[evaluated]["state"] == "done"
  assert (sweep_dir / evaluated / "train.log").read_text().count("\n$ ") == 1
  record = json.loads((sweep_dir / evaluated / "point.json").read_text())
  assert record["val"] == by_name[evaluated]["val"]  # the training record, kept
  block = record["eval"]
  assert block["definition"] == json.loads((sweep_dir / "sweep.json").read_text())["eval"]
  assert block["step"] == record["steps"] and block["split"] == "test"
  assert list(block["tasks"]) == ["timeline_action", "time_to_transition", "temporal_order"]
  for task in block["tasks"].values():
    assert set(task) == {"metric", "higher_is_better", "model", "handcrafted", "wins"}
  assert (sweep_dir / evaluated / "eval" / str(record["steps"]) / "report.json").exists()

  report = subprocess.run(
      [sys.executable, str(ROOT / "launch" / "sweep.py"), f"--sweep_dir={sweep_dir}",
       "--report", "--stages=configs/local.py:tiny", "--resamples=30"],
      cwd=ROOT, env=train_env, capture_output=True, text=True, timeout=TIMEOUT)
  assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
  text = (sweep_dir / "report.md").read_text()
  data = json.loads((sweep_dir / "report.json").read_text())
  assert len(data["points"]) == 4 and "loss_vs_flops.png" in data["plots"]
  assert 0 < data["loss_vs_compute"]["resamples"] <= 30  # --resamples
  assert (sweep_dir / "loss_vs_flops.png").stat().st_size > 0
  for p in points:
    assert p["name"] in text
  assert len(data["compute_optimal"]) == 2
  assert "Loss vs compute" in text and "fixed tokens" in text
  # the eval tasks: the evaluated point only
  assert [r["point"] for r in data["tasks"]["points"]] == [evaluated]
  assert data["tasks"]["points"][0]["model"] == {n: t["model"]
                                                 for n, t in block["tasks"].items()}
  assert "## Eval tasks" in text and "1 of 4 points evaluated" in text
  assert (sweep_dir / "tasks_vs_flops.png").stat().st_size > 0


def _script(code: str) -> list[str]:
  return [sys.executable, "-c", textwrap.dedent(code)]


def test_a_trained_point_is_evaluated_and_a_failed_eval_does_not_retrain(tmp_path,
                                                                         monkeypatch):
  """The runner's protocol with stand-in trainer and eval commands (no JAX): training
  writes trained.json; a failing eval is recorded (stage, log tail) without point.json;
  the retry evaluates without retraining and writes point.json with the tasks' headline
  scores; a finished point is skipped; another eval definition re-evaluates it."""
  workdir = tmp_path / "p"
  point = {"name": "p", "variant": "t0", "budget": 1.0, "steps": 3, "compute": 3.0,
           "tokens": 30}
  sweep = {"eval": {"config": "tests/sweep_eval.py", "set": []}}
  trainings = tmp_path / "trainings"
  train = _script(f"""
      import json, pathlib
      with open({str(trainings)!r}, "a") as f:
        f.write("trained\\n")
      rows = [{{"step": 3, "loss": 2.0}}, {{"step": 3, "val/loss": 1.5}}]
      pathlib.Path({str(workdir / "metrics.jsonl")!r}).write_text(
          "".join(json.dumps(r) + "\\n" for r in rows))""")
  report = {"step": 3, "splits": {"score": {"split": "test"}},
            "summary": {"test_sessions": 2, "significant_wins": 1},
            "tasks": {"timeline_action": {
                "metric": "macro_f1", "higher_is_better": True, "model": 0.5,
                "model_ema": 0.4, "handcrafted": 0.3, "random_init": 0.2, "wins": True,
                "probe": {}, "details": {}}},
            "extensions": {}}
  good_eval = _script(f"""
      import json, pathlib
      out = pathlib.Path({str(workdir / "eval" / "3")!r})
      out.mkdir(parents=True, exist_ok=True)
      (out / "report.json").write_text({json.dumps(report)!r})""")
  bad_eval = _script("import sys; print('eval broke'); sys.exit(3)")
  evals = iter([bad_eval, good_eval, good_eval])
  monkeypatch.setattr(sweep_lib, "train_command", lambda *a: train)
  monkeypatch.setattr(sweep_lib, "eval_command", lambda *a: next(evals))
  handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    runner = sweep_lib.Runner()
    failed = runner.run(sweep, point, tmp_path, "shards")
    assert failed["state"] == "failed" and failed["stage"] == "eval" and failed["rc"] == 3
    assert "eval broke" in failed["log_tail"]
    assert (workdir / "trained.json").exists() and not (workdir / "point.json").exists()

    done = runner.run(sweep, point, tmp_path, "shards")
    assert done["state"] == "done" and "wall_s" not in done and done["eval_s"] > 0
    assert trainings.read_text() == "trained\n"  # trained once
    record = json.loads((workdir / "point.json").read_text())
    assert record["val"] == {"val/loss": 1.5} and record["train_loss"] == 2.0
    e = record["eval"]
    assert e["definition"] == sweep["eval"] and e["step"] == 3 and e["split"] == "test"
    assert e["significant_wins"] == 1 and e["report"] == "eval/3/report.json"
    assert e["tasks"] == {"timeline_action": {
        "metric": "macro_f1", "higher_is_better": True, "model": 0.5, "model_ema": 0.4,
        "handcrafted": 0.3, "random_init": 0.2, "wins": True}}
    assert runner.run(sweep, point, tmp_path, "shards") == {"state": "done",
                                                            "skipped": True}
    # another eval job (e.g. added to a finished sweep): evaluated again, not retrained
    other = {"eval": {"config": "tests/sweep_eval.py", "set": ["seed=1"]}}
    assert runner.run(other, point, tmp_path, "shards")["state"] == "done"
    assert trainings.read_text() == "trained\n"
    assert json.loads((workdir / "point.json").read_text())["eval"]["definition"] == \
        other["eval"]
    assert (workdir / "eval.log").read_text().count("\n$ ") == 3
  finally:
    for s, h in handlers.items():
      signal.signal(s, h)
