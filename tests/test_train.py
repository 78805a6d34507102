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
import shutil
import signal
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
import tensorstore as ts
from jax.sharding import PartitionSpec as P

from configs import common, local
import motion_ladder
from xefm_jax.data import source
from xefm_jax.objectives import base as objectives_base
from xefm_jax.parallel import init as init_lib
from xefm_jax.parallel import mesh as mesh_lib
from xefm_jax.parallel import sharding
from xefm_jax.train import checkpoint, loop, optimizer
from xefm_jax.train import state as state_lib
from train_runs import (MOTION, ROOT, STEPS, TIMEOUT, finish, launch, train_rows,
                        wait_for_step, with_devices, locked)

pytestmark = pytest.mark.slow
# Tests that read the shared reference run go to one xdist worker (pyproject: --dist
# loadgroup): the other keeps running the rest instead of waiting on the run's lock.
REFERENCE_RUN = pytest.mark.xdist_group("reference_run")
# The interrupted and damaged runs train these objectives only (MLP heads, the EMA target of
# future_state included) of the motion-side model (MOTION, tests/motion_ladder.py): a launch
# costs a fraction of an all-objective one of every modality (the reference run's).
LIGHT = ("contact", "future_state", "procedure")


def only(*names: str) -> list[str]:
  """Launcher flags that train `names` and no other objective."""
  return [f"--config.objectives.{n}.weight=0" for n in local.get_config("tiny").objectives
          if n not in names]


def run_config(shards: pathlib.Path, objectives: tuple[str, ...] = (), motion: bool = False):
  """The config a launcher run with FLAGS (+ `only(*objectives)`; on MOTION if `motion`)
  builds (sizes from the corpus)."""
  config = motion_ladder.get_config("t1") if motion else local.get_config("tiny")
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
                  objectives: tuple[str, ...] = (), motion: bool = False
                  ) -> state_lib.TrainState:
  """The saved state of `step`, placed on a (data, fsdp, tensor) mesh of this process
  (cached: the reference's state is compared against more than once)."""
  config = run_config(shards, objectives, motion)
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


LIGHT_FLAGS = ["--config.train.eval_every=0", *only(*LIGHT)]


@pytest.fixture(scope="module")
def light_reference(shared_dir, shard_corpus, train_env) -> pathlib.Path:
  """An uninterrupted run of the LIGHT objectives, which the interrupted runs must equal."""
  workdir = shared_dir / "train-light"
  with locked(shared_dir / "train-light.lock"):
    if not (workdir / "done").exists():
      shutil.rmtree(workdir, ignore_errors=True)
      finish(launch(workdir, shard_corpus, train_env, *LIGHT_FLAGS, config=MOTION), workdir)
      (workdir / "done").touch()
  return workdir


def test_sigterm_then_kill_9_then_resume_matches_the_uninterrupted_run_bitwise(
    shard_corpus, train_env, light_reference, tmp_path):
  """One run interrupted twice, as a preemptible job is: SIGTERM (saves, exits 0), a
  restart that resumes there, kill -9 at a random later step (no handler, maybe mid-save),
  and a restart from the last complete checkpoint to the end. Per-step losses and the
  final state equal an uninterrupted run's, bit for bit."""
  config = run_config(shard_corpus, LIGHT, motion=True)
  flags = LIGHT_FLAGS
  uninterrupted = light_reference

  workdir = tmp_path / "interrupted"
  proc = launch(workdir, shard_corpus, train_env, *flags, config=MOTION)
  wait_for_step(proc, workdir, 1)
  proc.send_signal(signal.SIGTERM)
  finish(proc, workdir)
  preempted = max(train_rows(workdir))
  ckpt = checkpoint.Checkpointer(workdir / "checkpoints", config.train)
  saved = ckpt.latest_step()
  ckpt.close()
  assert saved == preempted and saved <= STEPS - 4, (saved, preempted)

  kill_at = random.randint(saved + 2, STEPS - 2)
  proc = launch(workdir, shard_corpus, train_env, *flags, config=MOTION)
  seen = wait_for_step(proc, workdir, kill_at)
  proc.kill()  # SIGKILL
  proc.wait()
  log = (workdir / "train.log").read_text()
  assert f"restored step {saved}" in log and seen < STEPS, (saved, seen)

  finish(launch(workdir, shard_corpus, train_env, *flags, config=MOTION), workdir)
  resumed = [int(line.split("restored step ")[1].split()[0])
             for line in (workdir / "train.log").read_text().splitlines()
             if "restored step" in line]
  # from the newest checkpoint that was complete at the kill (a save in flight is not)
  assert resumed[0] == saved and saved <= resumed[1] <= seen, (saved, seen, resumed)
  assert resumed[1] == saved or resumed[1] % 3 == 0, (saved, seen, resumed)
  # the rows past each restored step were dropped at the restart: no step is logged twice
  logged = [json.loads(line)["step"] for line in
            (workdir / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
  assert logged == list(range(1, STEPS + 1)), logged
  assert_same_losses(train_rows(workdir), train_rows(uninterrupted), config)
  assert_same_state(restore_state(workdir, shard_corpus, STEPS, objectives=LIGHT, motion=True),
                    restore_state(uninterrupted, shard_corpus, STEPS, objectives=LIGHT,
                                  motion=True))


def stored_arrays(step_dir: pathlib.Path) -> dict[str, np.ndarray]:
  """Every array of a checkpoint's state read straight from its files with TensorStore
  (Orbax's OCDBT database of zarr arrays named by tree path), without Orbax's restore."""
  base = {"driver": "ocdbt", "base": f"file://{(step_dir / 'state').absolute()}/"}
  keys = ts.KvStore.open(base).result().list().result()
  names = sorted({k.decode().rsplit("/", 1)[0] for k in keys if k.endswith(b"/.zarray")})
  return {n: ts.open({"driver": "zarr", "kvstore": dict(base, path=f"{n}/")}).result()
          .read().result() for n in names}


def _orbax_name(path) -> str:
  return ".".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))))
                  for k in path)


@REFERENCE_RUN
@pytest.mark.parametrize("mesh_shape", [(8, 1, 1), (2, 2, 2)])
def test_restore_onto_a_different_mesh(reference, shard_corpus, mesh_shape):
  """Every leaf restored onto another mesh equals the bytes in the checkpoint's files, read
  without Orbax (and the trained values, not an init: they differ from step 3's)."""
  moved = restore_state(reference, shard_corpus, STEPS, mesh_shape)
  stored = stored_arrays(reference / "checkpoints" / str(STEPS))
  leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(moved))[0]
  assert {_orbax_name(p) for p, _ in leaves} == set(stored)
  for path, x in leaves:
    assert np.array_equal(x, stored[_orbax_name(path)]), _orbax_name(path)
  assert int(moved.step) == STEPS
  earlier = stored_arrays(reference / "checkpoints" / "3")
  name = "params.model.fusion.transformer.layers.mlp.wi.kernel"
  assert not np.array_equal(stored[name], earlier[name])
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
  """2 processes x 1 CPU device, gloo collectives, FSDP across the processes (parameters and
  optimizer state sharded between them, gathered in every step, saved and restored by both);
  each reads half of every batch. (FSDP across the processes aborted with a "collective
  mismatch" in 2 of 3 runs on 2026-12-06, with the cache off already, and the test ran data
  parallel since; at c709ab9 it passed in 11 of 11 runs; the earlier cause is not known,
  NOTES.md.) One objective only (forecasting: trained on every window, so its loss and
  gradient are never zero, unlike the caption-blind-gated heads), on the motion-side model
  (MOTION): the point is the processes, and each compiles its step (no persistent cache
  across gloo processes). Its losses equal a one-process, one-device run's on the same global batch (no
  per-window randomness, so which process reads a window does not matter; the sums differ
  in order)."""
  env = train_env
  workdir = tmp_path / "two"
  same = ["--config.train.eval_every=0", *only("forecasting"), "--config.data.view_dropout=0",
          "--config.model.group_dropout.rate=0", "--config.data.modality_dropout=0"]

  def run(steps: int) -> None:
    port = _free_port()
    procs = [launch(workdir, shard_corpus, env, f"--coordinator_address=localhost:{port}",
                    "--num_processes=2", f"--process_id={i}", f"--config.train.steps={steps}",
                    "--config.mesh.data=1", "--config.mesh.fsdp=2", *same,
                    log_name=f"process{i}.log", config=MOTION)
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

  one = tmp_path / "one"
  finish(launch(one, shard_corpus, train_env, "--config.train.steps=6", *same, config=MOTION),
         one)
  single = train_rows(one)
  for step in range(1, 7):
    for k in ("loss", "forecasting/loss", "grad_norm"):
      assert rows[step][k] > 0, (step, k, rows[step][k])
      np.testing.assert_allclose(rows[step][k], single[step][k], rtol=2e-5,
                                 err_msg=f"step {step} {k}")


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


def _small_state(v: float) -> state_lib.TrainState:
  import jax.numpy as jnp
  noise = np.random.default_rng(0).random((256, 1024), np.float32)  # incompressible
  return state_lib.TrainState(step=jnp.int32(v), params={"w": jnp.asarray(noise + v)},
                              opt_state=(), ema={}, rng=jnp.zeros(2, jnp.uint32),
                              skipped=jnp.int32(0))


def _damage(step_dir: pathlib.Path) -> pathlib.Path:
  """Deletes the largest data file of the step's state (its OCDBT database's d/ folders)."""
  victim = max((p for p in (step_dir / "state").rglob("*") if p.is_file()
                and p.parent.name == "d"), key=lambda p: p.stat().st_size)
  victim.unlink()
  return victim


def test_a_damaged_latest_checkpoint_falls_back_and_none_restoring_stops(tmp_path):
  import grain
  train = local.get_config("tiny").train.copy_and_resolve_references()
  train.update(ckpt_every=1, keep=5, async_checkpoint=False)
  abstract = jax.eval_shape(lambda: _small_state(0.0))

  def saved(directory, steps):
    ckpt = checkpoint.Checkpointer(directory, train)
    it = iter(grain.MapDataset.range(100).to_iter_dataset())
    for step in steps:
      next(it)
      ckpt.save(step, _small_state(step), it, train, force=True)
    ckpt.wait()
    return ckpt, it

  ckpt, it = saved(tmp_path / "a", [1, 2, 3])
  _damage(tmp_path / "a" / "3")
  step, state = ckpt.restore_latest(abstract, it)
  assert step == 2 and np.array_equal(state.params["w"], _small_state(2).params["w"])
  assert next(it) == 2
  assert ckpt.manager.all_steps() == [1, 2]
  assert (tmp_path / "a" / f"3{checkpoint.UNRESTORABLE}" / "state").is_dir()  # kept
  assert ckpt.save(3, _small_state(3), it, train, force=True)  # step 3 can be saved again
  ckpt.close()

  ckpt, it = saved(tmp_path / "b", [1, 2])
  for step in (1, 2):
    _damage(tmp_path / "b" / str(step))
  with pytest.raises(checkpoint.CheckpointError,
                     match=r"no checkpoint restores: step 2: .*/b/2/state: array 'params.w' "
                           r"does not read .* step 1: "):
    ckpt.restore_latest(abstract, it)
  assert ckpt.manager.all_steps() == [1, 2]  # nothing moved: maybe the config changed
  (tmp_path / "b" / "2" / "state" / "_METADATA").unlink()
  with pytest.raises(checkpoint.CheckpointError, match=r"/b/2/state/_METADATA: missing "
                                                       r"\(step 2, item 'state'"):
    ckpt.restore(2, abstract, it)
  ckpt.close()


@REFERENCE_RUN
def test_eval_names_a_damaged_checkpoint(reference, train_env, tmp_path):
  """The reference run's last checkpoint loses a data file: eval names the step, the item
  and where, in one line."""
  workdir = tmp_path / "run"
  shutil.copytree(reference / "checkpoints" / str(STEPS), workdir / "checkpoints" / str(STEPS))
  _damage(workdir / "checkpoints" / str(STEPS))
  proc = subprocess.run([sys.executable, "launch/eval.py", "--config=configs/eval.py:quick",
                         f"--workdir={workdir}", f"--checkpoint={STEPS}"], cwd=ROOT,
                        env=train_env, capture_output=True, text=True, timeout=TIMEOUT)
  errors = [line for line in proc.stderr.splitlines() if line.startswith("xefm: ")]
  assert proc.returncode == 1 and len(errors) == 1, proc.stderr[-3000:]
  assert f"checkpoints/{STEPS}/state: array '" in errors[0], errors[0]
  assert f"(step {STEPS}, item 'state' cannot be restored)" in errors[0]


def test_a_run_resumes_from_the_checkpoint_before_a_damaged_latest_one(
    shard_corpus, train_env, light_reference, tmp_path):
  """An uninterrupted run's last checkpoint (8) loses a data file: training again resumes
  from step 6, sets 8 aside, and ends with the uninterrupted run's state, bit for bit."""
  workdir = tmp_path / "run"
  shutil.copytree(light_reference, workdir, ignore=shutil.ignore_patterns("train.log", "done"))
  _damage(workdir / "checkpoints" / str(STEPS))
  finish(launch(workdir, shard_corpus, train_env, *LIGHT_FLAGS, config=MOTION), workdir)
  log = (workdir / "train.log").read_text()
  assert f"checkpoint step {STEPS} does not restore" in log and "restored step 6" in log
  assert (workdir / "checkpoints" / f"{STEPS}{checkpoint.UNRESTORABLE}").is_dir()
  logged = [json.loads(line)["step"] for line in
            (workdir / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
  assert logged == list(range(1, STEPS + 1)), logged
  assert_same_state(restore_state(workdir, shard_corpus, STEPS, objectives=LIGHT, motion=True),
                    restore_state(light_reference, shard_corpus, STEPS, objectives=LIGHT,
                                  motion=True))


def test_a_resumed_writer_drops_the_rows_past_its_step(tmp_path):
  from xefm_jax.train import metrics as metrics_lib
  path = tmp_path / "metrics.jsonl"
  rows = [json.dumps({"step": s, "loss": 1.0}) for s in (1, 2, 3, 4)]
  path.write_text("\n".join(rows) + '\n{"step": 5, "lo')  # a line cut by kill -9
  writer = metrics_lib.MetricWriter(tmp_path, enabled=True, resume_step=2)
  writer.write(3, {"loss": 0.5})
  writer.close()
  assert [json.loads(x) for x in path.read_text().splitlines()] == [
      {"step": 1, "loss": 1.0}, {"step": 2, "loss": 1.0}, {"step": 3, "loss": 0.5}]
