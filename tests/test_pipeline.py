"""The Grain pipeline: the window contract, determinism, per-process slices, masks, global
arrays on a mesh, and exact resumption from an Orbax-saved iterator state."""

from absl import flags
import grain
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import common
from xefm_jax.data import pipeline
from xefm_jax.data import source as source_lib
from xefm_jax.data import spec as spec_lib


def _data_cfg(**kw) -> ml_collections.ConfigDict:
  c = common.data_config()
  c.update(view_size=16, depth_size=8, frames=4, future=6, caption_len=8, batch_size=4,
           read_threads=2, prefetch=2, window_stride=3)
  c.update(kw)
  return c


@pytest.fixture(scope="module")
def corpus(shard_corpus):
  return source_lib.Corpus(shard_corpus)


def _take(ds, n):
  it = iter(ds)
  return [next(it) for _ in range(n)]


def _ids(batch):
  return list(zip(batch["episode"].tolist(), batch["start"].tolist()))


def test_batch_follows_the_window_contract(corpus):
  cfg = _data_cfg()
  [batch] = _take(pipeline.make_dataset(corpus, "train", cfg, train=True, seed=0,
                                        process_index=0, process_count=1), 1)
  want = spec_lib.batch_shapes(corpus.window_spec(cfg), cfg.batch_size)

  def check(got, expect, path=""):
    assert set(got) == set(expect), path
    for k, v in expect.items():
      if isinstance(v, dict):
        check(got[k], v, path + k + "/")
      else:
        assert got[k].shape == v[0] and got[k].dtype == v[1], (path + k, got[k].shape, v)
  check(batch, want)


def test_deterministic_for_a_seed(corpus):
  cfg = _data_cfg()
  a = _take(pipeline.make_dataset(corpus, "train", cfg, train=True, seed=5, process_index=0,
                                  process_count=1), 3)
  b = _take(pipeline.make_dataset(corpus, "train", cfg, train=True, seed=5, process_index=0,
                                  process_count=1), 3)
  c = _take(pipeline.make_dataset(corpus, "train", cfg, train=True, seed=6, process_index=0,
                                  process_count=1), 3)
  for x, y in zip(a, b):
    jax.tree.map(np.testing.assert_array_equal, x, y)
  assert [_ids(x) for x in a] != [_ids(x) for x in c]


def test_processes_read_disjoint_slices(corpus):
  cfg = _data_cfg(batch_size=4)
  p0 = _take(pipeline.make_dataset(corpus, "val", cfg, train=False, seed=0, process_index=0,
                                   process_count=2), 1)
  p1 = _take(pipeline.make_dataset(corpus, "val", cfg, train=False, seed=0, process_index=1,
                                   process_count=2), 1)
  ids0, ids1 = set(_ids(p0[0])), set(_ids(p1[0]))
  assert len(ids0) == 2 and len(ids1) == 2 and not ids0 & ids1


def test_view_dropout_keeps_a_view(corpus):
  cfg = _data_cfg(view_dropout=0.95, modality_dropout=0.0)
  for batch in _take(pipeline.make_dataset(corpus, "train", cfg, train=True, seed=1,
                                           process_index=0, process_count=1), 4):
    assert batch["video_valid"].any(1).all()
    assert batch["video_valid"].sum() < batch["video_valid"].size / 2


def test_masked_values_are_zero(corpus):
  cfg = _data_cfg(view_dropout=0.5, modality_dropout=0.5)
  for batch in _take(pipeline.make_dataset(corpus, "train", cfg, train=True, seed=1,
                                           process_index=0, process_count=1), 4):
    v = batch["video_valid"]  # (B, V)
    assert (batch["video"][~v] == 0).all()
    assert (batch["audio"][~batch["audio_valid"]] == 0).all()
    assert (batch["imu"][~batch["imu_valid"]] == 0).all()
    assert (batch["depth"][~batch["depth_valid"]] == 0).all()
    assert (batch["hands"][~batch["hands_valid"]] == 0).all()
    assert (batch["caption"][~batch["caption_valid"]] == 0).all()
    # the EMA target input is never dropped
    assert batch["next"]["audio_valid"].all()


def test_normaliser_round_trip(corpus):
  norm = pipeline.Normaliser(corpus.stats)
  rng = np.random.default_rng(0)
  joints = rng.normal(size=(5, 2, 21, 3)).astype(np.float32)
  valid = np.ones((5, 2), bool)
  np.testing.assert_allclose(norm.hands_to_metres(norm.hands(joints, valid)), joints,
                             rtol=1e-5, atol=1e-5)


def test_global_batch_on_a_mesh(corpus):
  cfg = _data_cfg(batch_size=8)
  [batch] = _take(pipeline.make_dataset(corpus, "train", cfg, train=True, seed=0), 1)
  mesh = jax.make_mesh((4, 2), ("data", "fsdp"))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp")))
  g = pipeline.make_global_batch(batch, sharding)
  assert g["video"].shape == batch["video"].shape
  assert len(g["video"].addressable_shards) == 8
  np.testing.assert_array_equal(np.asarray(g["next"]["imu"]), batch["next"]["imu"])


def test_iterator_state_restores_exact_batches(corpus, tmp_path):
  cfg = _data_cfg()

  def fresh():
    return iter(pipeline.make_dataset(corpus, "train", cfg, train=True, seed=2,
                                      process_index=0, process_count=1))
  it = fresh()
  for _ in range(3):
    next(it)
  with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
    mngr.save(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
    mngr.wait_until_finished()
  expected = [next(it) for _ in range(4)]
  restored = fresh()
  with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
    mngr.restore(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(restored)))
  got = [next(restored) for _ in range(4)]
  for x, y in zip(expected, got):
    jax.tree.map(np.testing.assert_array_equal, x, y)


def test_worker_processes_read_the_same_batches_and_resume(corpus, tmp_path):
  """Grain worker processes (data.worker_count, what the stage configs use so host reads do
  not compete with XLA's threads): the same batches as in-process reads, and the iterator
  state saved with the workers running restores the exact next batches."""
  parsed = flags.FLAGS.is_parsed()  # launchers parse absl flags; Grain's workers read them
  if not parsed:
    flags.FLAGS.mark_as_parsed()
  try:
    _worker_batches_match(corpus, tmp_path)
  finally:
    if not parsed:
      flags.FLAGS.unparse_flags()


def _worker_batches_match(corpus, tmp_path):
  def fresh(workers):
    return iter(pipeline.make_dataset(corpus, "train", _data_cfg(worker_count=workers),
                                      train=True, seed=2, process_index=0, process_count=1))
  reference = [next(it) for it in [fresh(0)] for _ in range(5)]
  it = fresh(1)
  got = [next(it) for _ in range(2)]
  with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
    mngr.save(2, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
    mngr.wait_until_finished()
  restored = fresh(1)
  with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
    mngr.restore(2, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(restored)))
  got += [next(restored) for _ in range(3)]
  for x, y in zip(reference, got):
    jax.tree.map(np.testing.assert_array_equal, x, y)
