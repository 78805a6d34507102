"""Test setup: 8 fake CPU devices (set before anything imports jax); one small generated
corpus (raw episodes and their shards) and one tiny training run, each built once per test
run and shared by every test worker through a lock, so pytest-xdist does not build them
twice."""

import os

from xefm_jax import host  # imports no jax

# The launchers' XLA:CPU settings (xefm_jax/host.py), for the tests that run steps in this
# process and the subprocesses they start.
os.environ.update(host.environment(
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pathlib  # noqa: E402

import pytest  # noqa: E402

import train_runs  # noqa: E402

# The shared corpus: 4 sessions x 2 episodes x 8 s, with the small profile's quirks, shredded
# at the sizes of configs/local.py:tiny.
RAW = dict(sessions=4, episodes_per_session=2, seconds=8.0, seed=3)
SHRED = dict(video_size=16, depth_size=8, caption_len=8, episodes_per_shard=2)


@pytest.fixture(scope="session")
def shared_dir(tmp_path_factory) -> pathlib.Path:
  # getbasetemp() is per xdist worker; its parent is shared by the workers of one run.
  root = tmp_path_factory.getbasetemp()
  return (root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root) / "shared-corpus"


@pytest.fixture(scope="session", autouse=True)
def session_compilation_cache(shared_dir):
  """The renderer's worker processes (synthesize() called here) keep their compiled kernels
  in the session's compilation cache, not the user's (~/.cache/xefm_jax)."""
  os.environ["XEFM_JAX_CACHE"] = str(shared_dir / "jax-cache")


@pytest.fixture(scope="session")
def raw_corpus(shared_dir) -> pathlib.Path:
  from data_pipelines import synthesize
  raw = shared_dir / "raw"
  with train_runs.locked(shared_dir / "raw.lock"):
    if not (raw / ".complete").exists():
      synthesize.synthesize(raw, progress=False, **RAW)
      (raw / ".complete").touch()
  return raw


@pytest.fixture(scope="session")
def shard_corpus(raw_corpus, shared_dir) -> pathlib.Path:
  from data_pipelines import shred
  from xefm_jax.data import shards
  out = shared_dir / "shards"
  with train_runs.locked(shared_dir / "shards.lock"):
    if not (out / shards.MANIFEST_FILE).exists():
      shred.run(raw_corpus, out, options=shards.ShredOptions(**SHRED), progress=False)
  return out


@pytest.fixture(scope="session")
def train_env(shared_dir) -> dict:
  """Subprocess environment: one CPU device, one compilation cache for the session, and
  settings that compile faster (tiny steps: compile time is all that matters): LLVM's
  cheapest optimisation level without its expensive passes (a cold light step 21 -> 16 s
  here) and XLA:CPU's older loop emitters (the reference run alone 126 -> 120 s, the tiny
  model's train step 49 -> 37 s, its eval step 9.0 -> 5.8 s).
  This process keeps XLA's defaults: the in-process tests run enough steps that both
  settings made them slower in the suite (test_objectives' setup 51 -> 138 s).

  Launcher runs use one device: on 2 cores a simulated multi-device step costs several
  times a one-device step, and XLA:CPU's in-process collectives of a launcher run deadlocked
  (8 devices: the reference run, 2 of 4 times; 2 devices: the eval job, 2 of 3 runs;
  NOTES.md). Sharding over a mesh is tested in this process (test_parallel,
  test_train_step, restore onto other meshes) and across processes by the two-process run."""
  env = dict(os.environ)
  env.update(JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=str(shared_dir / "jax-cache"),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             **host.environment("--xla_backend_optimization_level=0 "
                                "--xla_llvm_disable_expensive_passes=true "
                                "--xla_cpu_use_fusion_emitters=false"))
  return train_runs.with_devices(env, 1)


@pytest.fixture(scope="session")
def reference(shared_dir, shard_corpus, train_env) -> pathlib.Path:
  """One uninterrupted launcher run (train_runs.STEPS steps, with evaluation), made once per
  session: the trainer's, evaluator's and notebook's tests read it."""
  from train_runs import finish, launch
  workdir = shared_dir / "train-reference"
  with train_runs.locked(shared_dir / "train-reference.lock"):
    if not (workdir / "done").exists():
      proc = launch(workdir, shard_corpus, train_env, "--config.train.eval_every=4")
      finish(proc, workdir)
      (workdir / "done").touch()
  return workdir


# The JSON-task export of the shared corpus (small media: tests decode it back).
JSON_TASKS = dict(context_frames=40, max_video_frames=8, tile=(32, 24))


@pytest.fixture(scope="session")
def json_task_export(shard_corpus, shared_dir) -> pathlib.Path:
  from data_pipelines.export import json_tasks
  out = shared_dir / "json-tasks"
  with train_runs.locked(shared_dir / "json-tasks.lock"):
    if not (out / json_tasks.MANIFEST).exists():
      json_tasks.run(str(shard_corpus), str(out), json_tasks.Options(**JSON_TASKS),
                     progress=False)
  return out


def pytest_collection_modifyitems(items):
  """The long tests first (the xdist groups, whose tests run in sequence on one worker, and
  the `slow` end-to-end runs), collection order otherwise: pytest-xdist hands out work in
  this order, so the long runs start at once and the short tests fill the other worker,
  instead of a long run starting last and running alone (the two-process test did)."""
  def long(item) -> bool:
    return any(item.get_closest_marker(m) for m in ("xdist_group", "slow"))
  items.sort(key=lambda item: not long(item))
