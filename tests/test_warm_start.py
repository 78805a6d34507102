"""Warm starts (config.model.init_from): an XEFM run into a config with a wider head, and a
big_vision-layout ViT .npz into the video encoder's per-frame tower, checked against an
independent numpy forward of the same weights."""

import pathlib
import re

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import common, local
from xefm_jax.data import source as source_lib
from xefm_jax.data import spec
from xefm_jax.parallel import init as init_lib
from xefm_jax.parallel import mesh as mesh_lib
from xefm_jax.parallel import sharding
from xefm_jax.train import loop, optimizer, warm_start
from xefm_jax.train import state as state_lib


def _names(tree) -> dict:
  return {optimizer.param_name(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _fresh_state(config):
  mesh = mesh_lib.make_mesh(common.mesh_config(2, 2, 2))
  rules = sharding.rules_from_config(config)
  shapes = init_lib.abstract_window_batch(spec.WindowSpec.from_config(config.data),
                                          config.data.batch_size)
  tx, _ = optimizer.make(config.optim, 10)
  return state_lib.create(config, tx, shapes, mesh, rules)


def test_warm_start_from_a_run_into_a_wider_head(reference, shard_corpus):
  config = local.get_config("tiny")
  loop.with_corpus_sizes(config, source_lib.Corpus(shard_corpus))
  config.objectives.policy.hidden = 48  # the run's policy head is 64 wide
  state = _fresh_state(config)
  init = _names(jax.device_get(state.params))
  placed = {n: x.sharding for n, x in _names(state.params).items()}

  # the default (identity) mapping refuses the head, naming it and both shapes
  with pytest.raises(warm_start.WarmStartError) as e:
    warm_start.load(dict(path=str(reference)), _names(state.params))
  assert re.search(r"policy/head/hidden/kernel has shape \(\d+, 64\), this model's "
                   r"policy/head/hidden/kernel has shape \(\d+, 48\)", str(e.value))
  assert "policy/head/out/kernel" in str(e.value)

  config.model.init_from = (dict(path=str(reference), mapping=(
      (r"policy/.*", "skip"), (r".*", r"\g<0>"))),)
  state, (report,) = warm_start.apply(config, state)
  after = _names(jax.device_get(state.params))
  policy = sorted(n for n in after if n.startswith("policy/"))
  assert report.not_written == policy and sorted(report.skipped) == policy
  # what was loaded is the run's last step, read independently (whole, on the host)
  step_dir = pathlib.Path(reference) / "checkpoints" / str(max(
      int(p.name) for p in (pathlib.Path(reference) / "checkpoints").iterdir()
      if p.name.isdigit()))
  checkpointer = ocp.PyTreeCheckpointer()
  meta = checkpointer.metadata(step_dir / "state").item_metadata.tree
  as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), meta)
  saved = _names(checkpointer.restore(step_dir / "state", args=ocp.args.PyTreeRestore(
      restore_args=as_numpy))["params"])
  assert len(report.loaded) == len(after) - len(policy) > 100
  for name in report.loaded:
    np.testing.assert_array_equal(after[name], saved[name], err_msg=name)
    assert not np.array_equal(after[name], init[name]) or name.endswith(("bias", "scale")), name
  for name in policy:  # left at init, bitwise
    np.testing.assert_array_equal(after[name], init[name])
  # the EMA encoder restarts from the loaded trunk; shardings are the target's
  for name, x in _names(state.ema).items():
    np.testing.assert_array_equal(np.asarray(x), saved["model/" + name])
  for name, x in _names(state.params).items():
    assert x.sharding == placed[name], name
