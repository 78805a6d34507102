"""A run's checkpoints as evaluation sees them: steps, the saved config, parameters.

    steps(workdir)                                      complete steps, oldest first
    config = run_config(workdir, step)                  the run's own config (as saved)
    params = restore_params(config, workdir, step, mesh)  the Pretrainer's parameters
    params, ema = restore(config, workdir, step, mesh)   ... and the EMA of the trunk
    params = random_params(config, mesh, seed)          baseline (b): a fresh trunk

The layout and the restore are the trainer's (xefm_jax/train/checkpoint.py: items "state",
"data", "config"; `StandardRestore` onto the shardings of `state.abstract_state`, so a run
saved on one mesh is read onto another). The manager here is read-only: an evaluation that
runs beside a training job must never clean up the trainer's in-flight temporary
checkpoints, nor take over its SIGTERM handling. A step that does not restore is a
CheckpointError naming the step, the item and the file (`checkpoint.restore_item`).
"""

from __future__ import annotations

import os
import pathlib
from typing import Any, Optional

import flax.linen as nn
import jax
import ml_collections
import orbax.checkpoint as ocp
from jax.sharding import Mesh

from xefm_jax.data import spec as spec_lib
from xefm_jax.model.xefm import XEFM
from xefm_jax.parallel import init as init_lib
from xefm_jax.parallel import sharding
from xefm_jax.train import checkpoint as train_checkpoint
from xefm_jax.train import optimizer
from xefm_jax.train import state as state_lib

PyTree = Any
CHECKPOINTS = "checkpoints"
ITEMS = ("state", "data", "config")


def _manager(workdir: str | os.PathLike) -> ocp.CheckpointManager:
  directory = pathlib.Path(workdir).absolute() / CHECKPOINTS
  if not directory.is_dir():
    raise train_checkpoint.CheckpointError(f"{directory}: no checkpoints; train first "
                                           f"(python launch/train.py --workdir {workdir})")
  options = ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0,
                                         cleanup_tmp_directories=False)
  return ocp.CheckpointManager(directory, options=options, item_names=ITEMS)


def steps(workdir: str | os.PathLike) -> list[int]:
  """Complete checkpoint steps (Orbax lists renamed, finished steps only)."""
  manager = _manager(workdir)
  try:
    return sorted(manager.all_steps())
  finally:
    manager.close()


def run_config(workdir: str | os.PathLike, step: int) -> ml_collections.ConfigDict:
  """The config the run saved with `step` (lists where the original had tuples)."""
  manager = _manager(workdir)
  try:
    saved = train_checkpoint.restore_item(manager, step, "config", ocp.args.JsonRestore())
  finally:
    manager.close()
  return ml_collections.ConfigDict(saved)


def _batch_shapes(config: ml_collections.ConfigDict) -> PyTree:
  """Abstract window batch at the run's window (parameter shapes follow its sizes)."""
  window = spec_lib.WindowSpec.from_config(config.data)
  return init_lib.abstract_window_batch(window, int(config.data.batch_size))


def restore(config: ml_collections.ConfigDict, workdir: str | os.PathLike, step: int,
            mesh: Mesh) -> tuple[PyTree, PyTree]:
  """(the Pretrainer's parameters of `step` ({"model": trunk, "<objective>": head}), the
  exponential moving average of the trunk (train/state.py `ema`, shaped like
  params["model"])), each on its shards of `mesh` (the config's logical-axis rules)."""
  abstract = _abstract_state(config, mesh)
  manager = _manager(workdir)
  try:
    restored = train_checkpoint.restore_item(manager, step, "state",
                                             ocp.args.StandardRestore(abstract))
  finally:
    manager.close()
  return restored.params, restored.ema


_ABSTRACT: dict[tuple[str, Mesh], Any] = {}


def _abstract_state(config: ml_collections.ConfigDict, mesh: Mesh) -> Any:
  """The run's abstract train state on `mesh` (state.abstract_state), memoised per (config,
  mesh): it traces the Pretrainer's initialiser, seconds that every further checkpoint of
  the same run (--checkpoint=all, a learning curve) would otherwise repeat."""
  key = (config.to_json_best_effort(sort_keys=True), mesh)
  if key not in _ABSTRACT:
    rules = sharding.rules_from_config(config)
    tx, _ = optimizer.make(config.optim, int(config.train.steps))
    _ABSTRACT[key] = state_lib.abstract_state(config, tx, _batch_shapes(config), mesh,
                                              rules)[0]
  return _ABSTRACT[key]


def restore_params(config: ml_collections.ConfigDict, workdir: str | os.PathLike, step: int,
                   mesh: Mesh) -> PyTree:
  """The Pretrainer's parameters of `step` (see `restore`)."""
  return restore(config, workdir, step, mesh)[0]


def random_params(config: ml_collections.ConfigDict, mesh: Mesh, seed: int,
                  impl: Optional[str] = None) -> PyTree:
  """A fresh trunk of the run's config (baseline b), created on its shards."""
  rules = sharding.rules_from_config(config)
  key = jax.random.key(seed, impl=impl or config.train.get("rng_impl", "threefry2x32"))
  variables, _ = init_lib.init_sharded(XEFM(config.model), _batch_shapes(config), mesh, rules,
                                       key, bool(config.train.get("fused_init_draws", False)))
  return nn.unbox(variables)["params"]
