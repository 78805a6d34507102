"""Test setup: 8 fake CPU devices (set before anything imports jax), and one small generated
corpus (raw episodes and their shards) built once per test run and shared by every test
worker through a lock, so pytest-xdist does not build it twice."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import contextlib  # noqa: E402
import fcntl  # noqa: E402
import pathlib  # noqa: E402

import pytest  # noqa: E402

# The shared corpus: 4 sessions x 2 episodes x 8 s, with the small profile's quirks, shredded
# at the sizes of configs/local.py:tiny.
RAW = dict(sessions=4, episodes_per_session=2, seconds=8.0, seed=3)
SHRED = dict(video_size=16, depth_size=8, caption_len=8, episodes_per_shard=2)


@contextlib.contextmanager
def _locked(path: pathlib.Path):
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, "w") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def shared_dir(tmp_path_factory) -> pathlib.Path:
  # getbasetemp() is per xdist worker; its parent is shared by the workers of one run.
  root = tmp_path_factory.getbasetemp()
  return (root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root) / "shared-corpus"


@pytest.fixture(scope="session")
def raw_corpus(shared_dir) -> pathlib.Path:
  from data_pipelines import synthesize
  raw = shared_dir / "raw"
  with _locked(shared_dir / "raw.lock"):
    if not (raw / ".complete").exists():
      synthesize.synthesize(raw, progress=False, **RAW)
      (raw / ".complete").touch()
  return raw


@pytest.fixture(scope="session")
def shard_corpus(raw_corpus, shared_dir) -> pathlib.Path:
  from data_pipelines import shred
  from xefm_jax.data import shards
  out = shared_dir / "shards"
  with _locked(shared_dir / "shards.lock"):
    if not (out / shards.MANIFEST_FILE).exists():
      shred.run(raw_corpus, out, options=shards.ShredOptions(**SHRED), progress=False)
  return out
