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

A damaged checkpoint (a file deleted or cut short after the save): `restore_latest` reports
the step that does not restore, naming the item and the file, and falls back to the newest
step that does; the damaged steps are renamed `<step>.unrestorable` (never deleted; Orbax
ignores the name, so the resumed run can save those steps again). When no step restores,
nothing is moved and the run stops with every step's cause: a config that no longer matches
its checkpoints fails on every step, and is not a reason to start afresh.

Preemption: a SIGTERM (what SLURM, Kubernetes and TPU maintenance send before killing) asks
the loop to save and stop. With one process a Python handler records it; with several,
JAX's preemption sync manager (started by `jax.distributed.initialize`) catches it on any
process and `reached_preemption(step)` turns true on every process at the same step, so
they all save that step together.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
from typing import Any, Optional

from absl import logging
import grain
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from xefm_jax import errors
from xefm_jax.train.state import TrainState

UNRESTORABLE = ".unrestorable"
# Files each item of a complete step cannot be restored without (Orbax's layout of
# StandardSave, grain's CheckpointSave and JsonSave); the data files of the state's OCDBT
# database are named by the database, not here.
REQUIRED = {"state": ("_METADATA", "manifest.ocdbt"), "config": ("metadata",)}


class CheckpointError(errors.Error):
  """A checkpoint that cannot be restored; the message names the step, item and file."""


def _storage_message(error: BaseException) -> str:
  """The most specific words of the exception chain: the storage layer's (TensorStore,
  the file system) where it said something, without the JSON spec it appends."""
  chain, e = [], error
  while e is not None and len(chain) < 10:
    chain.append(e)
    e = e.__cause__ or e.__context__
  for e in chain:
    if isinstance(e, FileNotFoundError) and e.filename:
      return f"{e.filename} is missing"
  for e in reversed(chain):
    text = str(e).split(" [tensorstore_spec", 1)[0].split("See full TensorStore", 1)[0]
    if re.search(r"NOT_FOUND|DATA_LOSS|FAILED_PRECONDITION|INVALID_ARGUMENT|Truncated|"
                 r"does not exist|No such file", text):
      return " ".join(text.split())[:400]
  text = str(chain[-1]).splitlines()[0] if str(chain[-1]).strip() else ""
  return f"{type(chain[-1]).__name__}: {text}"[:400]


def describe_failure(step_dir: pathlib.Path, item: str, error: BaseException) -> str:
  """`<file>: <what is wrong>` for `item` of a step that did not restore: a file the item
  needs that is missing, else what the storage layer said."""
  item_dir = step_dir / item
  if not item_dir.is_dir():
    return f"{item_dir}: the item's directory is missing"
  names = REQUIRED.get(item, ())
  if item == "data":
    names = (f"process_{jax.process_index()}-of-{jax.process_count()}.json",)
  for name in names:
    if not (item_dir / name).is_file():
      return f"{item_dir / name}: missing"
  said = _storage_message(error)
  # the data files of an OCDBT database are named inside it (not parsed here): name the
  # array that does not read and where its data files lie
  m = re.search(r'Error reading "([^"/]+)[^"]*" in OCDBT database at local file "[^"]*": (.*)',
                said)
  if m:
    return (f"{item_dir}: array '{m.group(1)}' does not read ({m.group(2)}): a data file "
            f"under {item_dir}/ocdbt.process_*/d/ is missing or cut short")
  return f"{item_dir}: {said}"


def restore_item(manager: ocp.CheckpointManager, step: int, item: str, args: Any) -> Any:
  """One item of `step`; a CheckpointError naming the step, the item and the file when it
  does not restore."""
  try:
    return getattr(manager.restore(step, args=ocp.args.Composite(**{item: args})), item)
  except Exception as e:  # noqa: BLE001: Orbax and TensorStore raise many types
    step_dir = pathlib.Path(manager.directory) / str(step)
    raise CheckpointError(f"{describe_failure(step_dir, item, e)} (step {step}, item "
                          f"'{item}' cannot be restored)") from e


def _all_processes(ok: bool) -> bool:
  """True when `ok` on every process (they must agree on the step they resume from)."""
  if jax.process_count() == 1:
    return ok
  return bool(np.all(multihost_utils.process_allgather(np.array(ok))))


class Checkpointer:
  """Save / restore of (state, data iterator, config) under `directory`."""

  def __init__(self, directory: str | os.PathLike, train: ml_collections.ConfigDict):
    if os.path.exists(directory) and not os.path.isdir(directory):
      # refused now, not at the first save after the step has compiled and trained
      raise CheckpointError(f"{directory}: not a directory; the run's checkpoints go there "
                            "(move the file away or give another --workdir)")
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
    DatasetIterator) is moved to where it was at that step. A CheckpointError names the
    item and file when the step does not restore."""
    state = restore_item(self.manager, step, "state",
                         ocp.args.StandardRestore(abstract_state))
    restore_item(self.manager, step, "data", grain.checkpoint.CheckpointRestore(iterator))
    return state

  def restore_latest(self, abstract_state: TrainState, iterator: Any
                     ) -> tuple[Optional[int], Optional[TrainState]]:
    """(step, state) of the newest complete step that restores, or (None, None) when there
    is none; steps newer than it that did not restore are reported and set aside (see the
    module docstring). Raises CheckpointError when steps exist and none restores."""
    failures = []
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        state, ok = self.restore(step, abstract_state, iterator), True
      except CheckpointError as e:
        state, ok, error = None, False, e
      if _all_processes(ok):
        self._set_aside([s for s, _ in failures])
        return step, state
      failures.append((step, str(error) if not ok else "another process could not restore it"))
      logging.warning("checkpoint step %d does not restore: %s; trying the one before",
                      step, failures[-1][1])
    if failures:
      raise CheckpointError(
          f"{self.manager.directory}: no checkpoint restores: " + "; ".join(
              f"step {s}: {why}" for s, why in failures)
          + "; if the config changed since they were written, train with the run's own "
          "config (saved in each step's config/), else restore the checkpoints from a copy "
          "or move them away to start afresh")
    return None, None

  def _set_aside(self, steps: list[int]) -> None:
    """Renames damaged steps `<step>.unrestorable` (process 0), so they are kept for a person
    to inspect and the resumed run can save those steps again."""
    if not steps:
      return
    directory = pathlib.Path(self.manager.directory)
    if jax.process_index() == 0:
      for step in steps:
        target = directory / f"{step}{UNRESTORABLE}"
        n = 1
        while target.exists():
          target, n = directory / f"{step}{UNRESTORABLE}.{n}", n + 1
        os.rename(directory / str(step), target)
        logging.warning("checkpoint step %d set aside as %s (not deleted)", step, target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("checkpoints set aside")
    self.manager.reload()

  def restore_state(self, step: int, abstract_state: TrainState) -> TrainState:
    """The state alone (evaluation, or a resume with a different data pipeline)."""
    return restore_item(self.manager, step, "state", ocp.args.StandardRestore(abstract_state))

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
