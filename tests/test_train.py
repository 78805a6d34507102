"""Training as processes: the launcher end to end, resumption after kill -9 and after SIGTERM
(bitwise equal to an uninterrupted run), restore onto other meshes, two processes with
jax.distributed, and a checkpoint in flight at a crash never taken for complete.

Every launcher run is a real subprocess sharing one persistent compilation cache (under the
session's shared dir), so the train step compiles once per program for the whole session;
the uninterrupted reference run is made once and shared by the xdist workers (a file lock).
"""

import functools
import json
import os
import pathlib
import random
import signal
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from configs import common, local
from xefm_jax.data import source
from xefm_jax.objectives import base as objectives_base
from xefm_jax.parallel import init as init_lib
from xefm_jax.parallel import mesh as mesh_lib
from xefm_jax.parallel import sharding
from xefm_jax.train import checkpoint, loop, optimizer
from xefm_jax.train import state as state_lib
from train_runs import ROOT, STEPS, TIMEOUT, finish, launch, train_rows, wait_for_step

pytestmark = pytest.mark.slow
# Tests that read the shared reference run go to one xdist worker (pyproject: --dist
# loadgroup): the other keeps running the rest instead of waiting on the run's lock.
REFERENCE_RUN = pytest.mark.xdist_group("reference_run")
# The interrupted-run test trains these objectives only (MLP heads, the EMA target of
# future_state included): a launch costs a third of an all-objective one.
LIGHT = ("contact", "future_state", "procedure")


def only(*names: str) -> list[str]:
  """Launcher flags that train `names` and no other objective."""
  return [f"--config.objectives.{n}.weight=0" for n in local.get_config("tiny").objectives
          if n not in names]


def run_config(shards: pathlib.Path, objectives: tuple[str, ...] = ()):
  """The config a launcher run with FLAGS (+ `only(*objectives)`) builds (sizes from the
  corpus)."""
  config = local.get_config("tiny")
  if objectives:
    for name in config.objectives:
      if name not in objectives:
        config.objectives[name].weight = 0.0
  config.optim.update(warmup_steps=2, decay_steps=20)
  config.train.update(steps=STEPS, ckpt_every=3, keep=5)
  config.data.shards = str(shards)
  loop.with_corpus_sizes(config, source.Corpus(shards))
  return config


@functools.lru_cache(maxsize=4)
def restore_state(workdir: pathlib.Path, shards: pathlib.Path, step: int,
                  mesh_shape: tuple[int, int, int] = (1, 8, 1),
                  objectives: tuple[str, ...] = ()) -> state_lib.TrainState:
  """The saved state of `step`, placed on a (data, fsdp, tensor) mesh of this process
  (cached: the reference's state is compared against more than once)."""
  config = run_config(shards, objectives)
  mesh = mesh_lib.make_mesh(common.mesh_config(*mesh_shape))
  rules = sharding.rules_from_config(config)
  batch = init_lib.abstract_window_batch(source.Corpus(shards).window_spec(config.data),
                                         config.data.batch_size)
  tx, _ = optimizer.make(config.optim, config.train.steps)
  abstract, _ = state_lib.abstract_state(config, tx, batch, mesh, rules)
  ckpt = checkpoint.Checkpointer(workdir / "checkpoints", config.train)
  try:
    return ckpt.restore_state(step, abstract)
  finally:
    ckpt.close()


def assert_same_state(a: state_lib.TrainState, b: state_lib.TrainState) -> None:
  flat_a = jax.tree_util.tree_flatten_with_path(jax.device_get(a))[0]
  flat_b = jax.tree.leaves(jax.device_get(b))
  assert len(flat_a) == len(flat_b)
  for (path, x), y in zip(flat_a, flat_b):
    assert np.array_equal(x, y), f"{jax.tree_util.keystr(path)} differs"


def assert_same_losses(got: dict[int, dict], want: dict[int, dict], config) -> None:
  keys = ["loss"] + [f"{n}/loss" for n in objectives_base.enabled(config)]
  assert sorted(got) == sorted(want) == list(range(1, STEPS + 1))
  for step in want:
    for k in keys:
      assert got[step][k] == want[step][k], (step, k, got[step][k], want[step][k])


@REFERENCE_RUN
def test_end_to_end_run_writes_metrics_events_and_checkpoints(reference, shard_corpus):
  config = run_config(shard_corpus)
  rows = train_rows(reference)
  assert sorted(rows) == list(range(1, STEPS + 1))
  want = {"step", "loss", "lr", "grad_norm", "steps_per_s", "mfu", "data_wait_s", "eta_s",
          "skipped", "skipped_total"} | {f"{n}/loss" for n in objectives_base.enabled(config)}
  assert want <= set(rows[1]), want - set(rows[1])
  assert all(np.isfinite(r["loss"]) and r["skipped"] == 0 for r in rows.values())
  assert rows[1]["lr"] == 0.0 and rows[3]["lr"] > rows[2]["lr"] > 0  # warmup
  assert all(0 < r["mfu"] < 1 for r in rows.values())
  val = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()
         if "val/loss" in line]
  assert [r["step"] for r in val] == [4, 8]
  if "contrastive" in objectives_base.enabled(config):
    assert 0.0 <= val[-1]["val/retrieval_r1"] <= 1.0 and val[-1]["val/retrieval_windows"] > 0
    assert 0.0 < val[-1]["val/retrieval_r1_chance"] <= 1.0
  assert list((reference / "tensorboard").glob("events.out.tfevents.*"))
  steps = sorted(int(p.name) for p in (reference / "checkpoints").iterdir() if p.name.isdigit())
  assert steps == [3, 6, 8]
  saved = json.loads((reference / "checkpoints" / "8" / "config" / "metadata").read_text())
  assert saved["train"]["steps"] == STEPS
  assert list((reference / "checkpoints" / "8" / "data").glob("process_0-of-1.json"))


def test_sigterm_then_kill_9_then_resume_matches_the_uninterrupted_run_bitwise(
    shard_corpus, train_env, tmp_path):
  """One run interrupted twice, as a preemptible job is: SIGTERM (saves, exits 0), a
  restart that resumes there, kill -9 at a random later step (no handler, maybe mid-save),
  and a restart from the last complete checkpoint to the end. Per-step losses and the
  final state equal an uninterrupted run's, bit for bit."""
  config = run_config(shard_corpus, LIGHT)
  flags = ["--config.train.eval_every=0", *only(*LIGHT)]
  uninterrupted = tmp_path / "uninterrupted"
  finish(launch(uninterrupted, shard_corpus, train_env, *flags), uninterrupted)

  workdir = tmp_path / "interrupted"
  proc = launch(workdir, shard_corpus, train_env, *flags)
  wait_for_step(proc, workdir, 1)
  proc.send_signal(signal.SIGTERM)
  finish(proc, workdir)
  preempted = max(train_rows(workdir))
  ckpt = checkpoint.Checkpointer(workdir / "checkpoints", config.train)
  saved = ckpt.latest_step()
  ckpt.close()
  assert saved == preempted and saved <= STEPS - 4, (saved, preempted)

  kill_at = random.randint(saved + 2, STEPS - 2)
  proc = launch(workdir, shard_corpus, train_env, *flags)
  seen = wait_for_step(proc, workdir, kill_at)
  proc.kill()  # SIGKILL
  proc.wait()
  log = (workdir / "train.log").read_text()
  assert f"restored step {saved}" in log and seen < STEPS, (saved, seen)

  finish(launch(workdir, shard_corpus, train_env, *flags), workdir)
  resumed = [int(line.split("restored step ")[1].split()[0])
             for line in (workdir / "train.log").read_text().splitlines()
             if "restored step" in line]
  # from the newest checkpoint that was complete at the kill (a save in flight is not)
  assert resumed[0] == saved and saved <= resumed[1] <= seen, (saved, seen, resumed)
  assert resumed[1] == saved or resumed[1] % 3 == 0, (saved, seen, resumed)
  assert_same_losses(train_rows(workdir), train_rows(uninterrupted), config)
  assert_same_state(restore_state(workdir, shard_corpus, STEPS, objectives=LIGHT),
                    restore_state(uninterrupted, shard_corpus, STEPS, objectives=LIGHT))


@REFERENCE_RUN
@pytest.mark.parametrize("mesh_shape", [(8, 1, 1), (2, 2, 2)])
def test_restore_onto_a_different_mesh(reference, shard_corpus, mesh_shape):
  saved = restore_state(reference, shard_corpus, STEPS, (1, 8, 1))  # as it was trained
  moved = restore_state(reference, shard_corpus, STEPS, mesh_shape)
  assert_same_state(moved, saved)
  kernel = moved.params["model"]["fusion"]["transformer"]["layers"]["mlp"]["wi"]["kernel"]
  mu = moved.opt_state[1][0].mu["model"]["fusion"]["transformer"]["layers"]["mlp"]["wi"][
      "kernel"]
  want = P(None, "fsdp", "tensor") if mesh_shape == (2, 2, 2) else P(None, None, None)
  for x in (kernel, mu):
    assert x.sharding.mesh.devices.shape == mesh_shape
    assert x.sharding.is_equivalent_to(jax.sharding.NamedSharding(x.sharding.mesh, want), 3)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_train_and_resume_together(shard_corpus, train_env, tmp_path):
  """2 processes x 4 CPU devices, gloo collectives; each reads half of every batch. One
  objective only (procedure): the point is the processes, and each compiles its step."""
  env = dict(train_env, XLA_FLAGS=train_env["XLA_FLAGS"].replace("count=8", "count=4"))
  workdir = tmp_path / "two"

  def run(steps: int) -> None:
    port = _free_port()
    procs = [launch(workdir, shard_corpus, env, f"--coordinator_address=localhost:{port}",
                    "--num_processes=2", f"--process_id={i}", f"--config.train.steps={steps}",
                    "--config.train.eval_every=0", *only("procedure"), log_name=f"process{i}.log")
             for i in range(2)]
    for i, proc in enumerate(procs):
      finish(proc, workdir, f"process{i}.log")

  run(4)
  data = workdir / "checkpoints" / "4" / "data"
  assert sorted(p.name for p in data.glob("*.json")) == ["process_0-of-2.json",
                                                         "process_1-of-2.json"]
  assert sorted(train_rows(workdir)) == [1, 2, 3, 4]  # process 0 alone writes metrics
  run(6)
  assert "restored step 4" in (workdir / "process0.log").read_text()
  rows = train_rows(workdir)
  assert sorted(rows) == list(range(1, 7)) and all(np.isfinite(r["loss"])
                                                     for r in rows.values())
  assert not (workdir / "process1.log").read_text().count("step 5/6")  # process 0 logs


IN_FLIGHT = textwrap.dedent("""
    import os, signal, sys
    import grain, jax, jax.numpy as jnp, ml_collections
    from xefm_jax.train import checkpoint, state
    train = ml_collections.ConfigDict(dict(ckpt_every=1, keep=5, async_checkpoint=True))
    ckpt = checkpoint.Checkpointer(sys.argv[1], train)
    it = iter(grain.MapDataset.range(100).to_iter_dataset())
    def make(v):  # a few hundred MB, so the write of step 2 is still going when we die
      return state.TrainState(step=jnp.int32(v), params={"w": jnp.full((96, 1024, 1024), v)},
                              opt_state=(), ema={}, rng=jnp.zeros(2, jnp.uint32),
                              skipped=jnp.int32(0))
    next(it)
    ckpt.save(1, make(1), it, train, force=True)
    ckpt.wait()
    next(it)
    ckpt.save(2, make(2), it, train, force=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """)


def test_a_checkpoint_in_flight_at_a_crash_is_never_taken_as_complete(tmp_path):
  directory = tmp_path / "ckpt"
  proc = subprocess.run([sys.executable, "-c", IN_FLIGHT, str(directory)], cwd=ROOT,
                        capture_output=True, text=True, timeout=TIMEOUT,
                        env=dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu"))
  assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
  leftovers = [p.name for p in directory.iterdir() if not p.name.isdigit()]
  assert any(name.startswith("2.") for name in leftovers), sorted(os.listdir(directory))
  train = local.get_config("tiny").train
  ckpt = checkpoint.Checkpointer(directory, train)
  try:
    assert ckpt.latest_step() == 1 and ckpt.manager.all_steps() == [1]
    abstract = state_lib.TrainState(
        step=jax.ShapeDtypeStruct((), np.int32),
        params={"w": jax.ShapeDtypeStruct((96, 1024, 1024), np.float32)}, opt_state=(),
        ema={}, rng=jax.ShapeDtypeStruct((2,), np.uint32),
        skipped=jax.ShapeDtypeStruct((), np.int32))
    restored = ckpt.restore_state(1, abstract)
    assert int(restored.step) == 1 and float(restored.params["w"][0, 0, 0]) == 1.0
  finally:
    ckpt.close()
  assert not [p for p in directory.iterdir() if not p.name.isdigit()]  # cleaned up
