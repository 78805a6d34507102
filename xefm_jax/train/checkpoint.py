"""Checkpoints: one Orbax CheckpointManager (async) with three items per step.

    state   the TrainState (StandardSave; restored with StandardRestore onto the shardings
            of an abstract state, so a run saved on one mesh resumes on another)
    data    the Grain iterator's position (grain.checkpoint.CheckpointSave, one small JSON
            per process), so a resumed run reads exactly the batches it would have
    config  the run's config as JSON, for people and tools reading a checkpoint later

Completeness is Orbax's: a step is written under a temporary name and renamed when every
process has finished it, and `all_steps()` / `latest_step()` list renamed steps only. A
process killed mid-save leaves a temporary directory that is never restored from (and is
removed at the next start, `cleanup_tmp_directories`).

Preemption: a SIGTERM (what SLURM, Kubernetes and TPU maintenance send before killing) asks
the loop to save and stop. With one process a Python handler records it; with several,
JAX's preemption sync manager (started by `jax.distributed.initialize`) catches it on any
process and `reached_preemption(step)` turns true on every process at the same step, so
they all save that step together.
"""

from __future__ import annotations

import json
import os
import signal
from typing import Any, Optional

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp

from xefm_jax.train.state import TrainState


class Checkpointer:
  """Save / restore of (state, data iterator, config) under `directory`."""

  def __init__(self, directory: str | os.PathLike, train: ml_collections.ConfigDict):
    policies = ocp.checkpoint_managers
    options = ocp.CheckpointManagerOptions(
        # every ckpt_every steps and at a preemption (not Orbax's default first-step save)
        save_decision_policy=policies.AnySavePolicy([
            policies.FixedIntervalPolicy(int(train.ckpt_every)),
            policies.PreemptionCheckpointingPolicy()]),
        max_to_keep=int(train.keep), enable_async_checkpointing=bool(train.async_checkpoint),
        cleanup_tmp_directories=True, create=True)
    self.manager = ocp.CheckpointManager(os.path.abspath(directory), options=options,
                                         item_names=("state", "data", "config"))
    self._sigterm = False

  def watch_sigterm(self) -> None:
    """From now on a SIGTERM makes `preempted` true (one process; with several, JAX's
    preemption service already watches for it and must keep its own handler)."""
    if jax.process_count() == 1:
      signal.signal(signal.SIGTERM, self._on_sigterm)

  def _on_sigterm(self, signum, frame) -> None:
    del signum, frame
    self._sigterm = True

  def latest_step(self) -> Optional[int]:
    """The newest COMPLETE step, or None."""
    return self.manager.latest_step()

  def restore(self, step: int, abstract_state: TrainState, iterator: Any) -> TrainState:
    """The state of `step` on the shardings `abstract_state` carries; `iterator` (a Grain
    DatasetIterator) is moved to where it was at that step."""
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        data=grain.checkpoint.CheckpointRestore(iterator)))
    return restored.state

  def restore_state(self, step: int, abstract_state: TrainState) -> TrainState:
    """The state alone (evaluation, or a resume with a different data pipeline)."""
    return self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state))).state

  def save(self, step: int, state: TrainState, iterator: Any,
           config: ml_collections.ConfigDict, force: bool = False) -> bool:
    """Starts a save if `step` is due (every `ckpt_every`, or a preemption, or force);
    returns whether it did. Returns once the arrays are copied off the devices: the state
    may be donated to the next step while the files are still being written."""
    if not (force or self.manager.should_save(step)):
      return False
    return self.manager.save(step, force=force, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=grain.checkpoint.CheckpointSave(iterator),
        config=ocp.args.JsonSave(json.loads(config.to_json_best_effort()))))

  def preempted(self, step: int) -> bool:
    """True when the run must save `step` and stop (all processes agree on the step)."""
    if jax.process_count() == 1:
      return self._sigterm
    return self.manager.reached_preemption(step)

  def wait(self) -> None:
    """Blocks until the save in flight (if any) is complete on disk."""
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
