"""Mesh, rules, sharded initialisation on 8 fake devices, mesh-independent results, reports."""

import json
import subprocess
import sys

import flax.linen as nn
import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from configs import common, local
from model_helpers import host_params
from xefm_jax.data import spec
from xefm_jax.model.xefm import XEFM
from xefm_jax.parallel import init, mesh as mesh_lib, report, sharding

CONFIG = local.get_config("tiny")
SPEC = spec.WindowSpec.from_config(CONFIG.data)
MODEL = XEFM(CONFIG.model)
RULES = sharding.rules_from_config(CONFIG)
BATCH = spec.fake_batch(SPEC, 8)


def _mesh(data, fsdp, tensor):
  return mesh_lib.make_mesh(common.mesh_config(data, fsdp, tensor))


def test_mesh_shape_fills_one_axis_and_names_bad_meshes():
  assert mesh_lib.mesh_shape(common.mesh_config(1, -1, 2), 8) == (1, 4, 2)
  assert mesh_lib.mesh_shape(common.mesh_config(2, 2, 2), 8) == (2, 2, 2)
  with pytest.raises(ValueError, match="at most one -1"):
    mesh_lib.mesh_shape(common.mesh_config(-1, -1, 1), 8)
  with pytest.raises(ValueError, match="needs 4 devices"):
    mesh_lib.mesh_shape(common.mesh_config(1, 2, 2), 8)
  mesh = _mesh(1, -1, 1)
  assert dict(mesh.shape) == {"data": 1, "fsdp": 8, "tensor": 1}
  assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)


def test_sharded_init_places_every_parameter_by_the_rules_and_the_report_agrees():
  mesh = _mesh(2, 2, 2)
  key = jax.random.key(0, impl=CONFIG.train.rng_impl)
  # the local configs' fused draws (the eval job's random trunk): each output on its shards
  variables, _ = init.init_sharded(MODEL, BATCH, mesh, RULES, key,
                                   CONFIG.train.fused_init_draws)
  boxed = init.abstract_variables(MODEL, BATCH)
  flat = jax.tree_util.tree_flatten_with_path(
      boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))[0]
  arrays = jax.tree.leaves(variables)
  assert len(flat) == len(arrays)
  used = set()
  for (path, box), array in zip(flat, arrays):
    where = jax.tree_util.keystr(path)
    assert isinstance(box, nn.LogicallyPartitioned), f"{where} has no logical names"
    assert len(box.names) == array.ndim, where
    expected = NamedSharding(mesh, nn.logical_to_mesh_axes(box.names, RULES))
    assert array.sharding.is_equivalent_to(expected, array.ndim), (
        where, box.names, array.sharding.spec)
    used.update(n for n in box.names if n)
  assert used <= {name for name, _ in RULES}  # the table names every axis the model uses
  kernel = variables["params"]["fusion"]["transformer"]["layers"]["attention"]["query"]["kernel"]
  assert kernel.sharding.spec == P(None, "fsdp", "tensor", None)  # layers, embed, heads, kv
  assert kernel.addressable_shards[0].data.shape == (2, 16, 1, 16)

  # the report, computed from names and an AbstractMesh only, matches the real shards
  rows = report.module_rows(variables, sharding.mesh_specs(boxed, RULES),
                            mesh_lib.abstract_mesh(common.mesh_config(2, 2, 2), 8), depth=1)
  assert {r.module for r in rows} == set(variables["params"])
  assert report.total(rows).params == report.count_params(variables)
  on_device0 = sum(x.addressable_shards[0].data.nbytes for x in jax.tree.leaves(variables))
  assert report.total(rows).bytes_per_device == on_device0
  assert "| total |" in report.format_rows(rows)


def test_forward_is_the_same_on_8x1x1_and_2x2x2_meshes():
  host = host_params(MODEL, BATCH)
  boxed = init.abstract_variables(MODEL, BATCH)
  outs = []
  for mesh in (_mesh(8, 1, 1), _mesh(2, 2, 2)):
    variables = jax.device_put(host, sharding.param_shardings(boxed, mesh, RULES))
    with sharding.activate(mesh, RULES):
      batch = sharding.shard_batch(BATCH, mesh, RULES)
      out = jax.jit(lambda v, b: MODEL.apply(v, b))(variables, batch)
    assert out.embedding.sharding.is_equivalent_to(NamedSharding(mesh, P(("data", "fsdp"))), 2)
    outs.append(jax.device_get(out))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), *outs)


def test_batch_is_split_over_data_and_fsdp():
  mesh = _mesh(2, 2, 2)
  shardings = sharding.batch_shardings(BATCH, mesh, RULES)
  assert shardings["video"].spec == P(("data", "fsdp"))
  placed = sharding.shard_batch({"pose": BATCH["pose"]}, mesh, RULES)
  assert placed["pose"].addressable_shards[0].data.shape == (2,) + BATCH["pose"].shape[1:]


def test_indivisible_parameters_are_named():
  config = local.get_config("tiny")
  config.model.fusion.num_heads = 3  # 3 heads over tensor = 2
  config.model.fusion.head_dim = 8
  model = XEFM(config.model)
  boxed = init.abstract_variables(model, BATCH)
  mesh = mesh_lib.abstract_mesh(common.mesh_config(2, 2, 2), 8)
  with pytest.raises(ValueError, match=r"fusion.*attention.*dimension 3 does not split over"):
    sharding.check_divisible(nn.unbox(boxed), sharding.mesh_specs(boxed, RULES), mesh)


def test_model_summary_ends_with_a_json_line():
  result = subprocess.run(
      [sys.executable, "launch/model_summary.py", "--config=configs/local.py", "--depth=1"],
      capture_output=True, text=True, check=True, timeout=300,
      env={"JAX_PLATFORMS": "cpu", "PATH": ""})
  summary = json.loads(result.stdout.strip().splitlines()[-1])
  assert 1e6 < summary["params"] < 1e7
  assert summary["tokens_per_window"]["video"] == 96
  assert summary["forward_flops_per_window"] > 2 * summary["params_fusion"] * 96
