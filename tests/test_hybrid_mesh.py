"""The hybrid (ICI x DCN) mesh on 8 fake devices as 2 "nodes" of 4, and the collectives
report that shows which device groups a compiled program's collectives span."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from configs import common
from xefm_jax.parallel import collectives, mesh as mesh_lib

NODES = common.mesh_config(1, -1, 1, dcn_data=2)  # data 2 across nodes x fsdp 4 inside


def _ids(mesh):
  return np.vectorize(lambda d: d.id)(mesh.devices)


def test_dcn_axes_multiply_the_node_axes_and_each_fsdp_group_is_one_node():
  assert mesh_lib.ici_shape(NODES, 8) == (1, 4, 1)
  assert mesh_lib.mesh_shape(NODES, 8) == (2, 4, 1)
  mesh = mesh_lib.make_mesh(NODES)
  assert dict(mesh.shape) == {"data": 2, "fsdp": 4, "tensor": 1}
  np.testing.assert_array_equal(_ids(mesh)[..., 0], [[0, 1, 2, 3], [4, 5, 6, 7]])
  np.testing.assert_array_equal(mesh_lib.granule_of(mesh, NODES), [0] * 4 + [1] * 4)
  # data and fsdp both across: 4 granules of 2 devices, tensor inside
  mixed = common.mesh_config(1, 1, 2, dcn_data=2, dcn_fsdp=2)
  mesh = mesh_lib.make_mesh(mixed)
  assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
  granule = mesh_lib.granule_of(mesh, mixed).reshape(2, 2, 2)
  assert (granule[..., 0] == granule[..., 1]).all()  # a tensor pair shares its node
  assert len(set(granule.ravel().tolist())) == 4
  assert mesh_lib.abstract_mesh(mixed, 8).shape == mesh.shape
  with pytest.raises(ValueError, match="do not split into 3 granules"):
    mesh_lib.mesh_shape(common.mesh_config(1, -1, 1, dcn_data=3), 8)
  with pytest.raises(ValueError, match="needs 16 devices"):
    mesh_lib.mesh_shape(common.mesh_config(1, 4, 1, dcn_fsdp=4), 8)


def test_compiled_fsdp_gather_stays_in_a_node_and_the_batch_reduction_crosses():
  mesh = mesh_lib.make_mesh(NODES)
  w = jax.device_put(jnp.ones((64, 32)), NamedSharding(mesh, P("fsdp", None)))
  x = jax.device_put(jnp.ones((16, 64)), NamedSharding(mesh, P(("data", "fsdp"), None)))

  @jax.jit
  def loss(w, x):  # the FSDP pattern: gather the weight, reduce over the whole batch
    return jnp.sum(x @ jax.lax.with_sharding_constraint(w, NamedSharding(mesh, P())))

  text = loss.lower(w, x).compile().as_text()
  rows = collectives.from_hlo(text, 8)
  granule = mesh_lib.granule_of(mesh, NODES)
  shape = (2, 4, 1)
  gathers = [r for r in rows if r.kind == "all-gather"]
  assert gathers, text
  for r in gathers:
    assert sorted(r.groups) == [(0, 1, 2, 3), (4, 5, 6, 7)]
    assert collectives.axes_of(r, shape, mesh_lib.MESH_AXES) == ("fsdp",)
    assert collectives.span(r, granule) == 1
  reduces = [r for r in rows if r.kind == "all-reduce"]
  assert reduces and max(collectives.span(r, granule) for r in reduces) == 2
  table, summary = collectives.report(rows, shape, mesh_lib.MESH_AXES, granule)
  assert "all-gather over fsdp" in summary and "inside one" in table


@pytest.mark.parametrize("line,groups", [
    ("x = f32[8] all-reduce(y), replica_groups={{0,2},{1,3}}", ((0, 2), (1, 3))),
    ("x = f32[8] all-reduce(y), replica_groups=[2,2]<=[4]", ((0, 1), (2, 3))),
    ("x = f32[8] all-reduce(y), replica_groups=[2,2]<=[2,2]T(1,0)", ((0, 2), (1, 3))),
    ("x = f32[8] all-gather(y), replica_groups=mesh['axis_0'=2,'axis_1'=2] {'axis_0'}",
     ((0, 2), (1, 3))),
    ("x = f32[8] all-gather(y), replica_groups=mesh['axis_0'=2,'axis_1'=2], "
     "device_ids=([2,2]T(1,0)) {'axis_1'}", ((0, 2), (1, 3))),
    ("x = f32[8] all-reduce(y), replica_groups={}", None),
])
def test_every_printed_form_of_device_groups_expands(line, groups):
  (row,) = collectives.from_hlo(line, 4)
  assert row.groups == groups and row.bytes == 32


def test_nodes_are_blocks_of_processes_and_an_unmatched_dcn_size_is_refused():
  import dataclasses

  @dataclasses.dataclass(frozen=True)
  class Gpu:  # what _granules reads of a jax.Device on a multi-process GPU job
    id: int
    process_index: int
    platform: str = "gpu"

  # one process per GPU, 4 GPUs per node (SLURM block distribution): 2 nodes
  devices = [Gpu(i, i) for i in range(8)]
  groups, what = mesh_lib._granules(devices, 2)
  assert [[d.id for d in g] for g in groups] == [[0, 1, 2, 3], [4, 5, 6, 7]]
  assert what.startswith("node")
  with pytest.raises(ValueError, match="1 process"):  # one GPU process cannot be 2 nodes
    mesh_lib._granules([Gpu(i, 0) for i in range(8)], 2)


def test_log_mel_spectrogram_stays_on_the_batch_shards_and_matches_one_device():
  from configs import local
  from xefm_jax.modalities import audio
  from xefm_jax.parallel import sharding
  config = local.get_config("tiny")
  cfg = config.model.modalities.audio
  rules = sharding.rules_from_config(config)
  mesh = mesh_lib.make_mesh(NODES)
  samples = np.random.default_rng(0).normal(size=(16, 1600)).astype(np.float32)

  def spectrogram(a):
    return audio.log_mel_spectrogram(a, n_fft=cfg.n_fft, win_length=cfg.win_length,
                                     hop_length=cfg.hop_length, n_mels=cfg.n_mels,
                                     fmin=cfg.fmin, fmax=cfg.fmax)
  want = jax.jit(spectrogram)(samples)
  x = jax.device_put(samples, NamedSharding(mesh, P(("data", "fsdp"))))
  with sharding.activate(mesh, rules):
    f = jax.jit(spectrogram)
    text = f.lower(x).compile().as_text()
    got = f(x)
  assert collectives.from_hlo(text, 8) == []  # no batch gathered onto every device
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
