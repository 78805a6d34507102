"""The branch registry's contract: one config per branch of the plan (../shared/DOWNSTREAM.md),
with the public task suite's required keys, validated by `python launch/branches.py
--validate`.

Keys (the public registry's): id, display_name, status ("implemented" | "planned_adapter"),
model_family, dataset_contract, training_objective, split_policy, modalities, entrypoints
(script paths, None where the branch has none yet), primary_metrics (with
held_out_episode_count), artifact_contract (checkpoint_gate, required_eval_files,
required_training_files, public_package_allowed, public_package_forbidden; and
public_package: the folder the branch publishes, `{run}` the training run), and
extension_requirements. An implemented branch also has `checks`: the commands that show
its entrypoints run on the generated corpus.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import ml_collections

REQUIRED_KEYS = ("id", "display_name", "status", "model_family", "dataset_contract",
                 "training_objective", "split_policy", "modalities", "entrypoints",
                 "primary_metrics", "artifact_contract", "extension_requirements")
ARTIFACT_KEYS = ("checkpoint_gate", "required_eval_files", "required_training_files",
                 "public_package_allowed", "public_package_forbidden")
STATUSES = ("implemented", "planned_adapter")
# Every branch publishes derived results only (DOWNSTREAM.md: the export guard).
FORBIDDEN = ["raw MP4 (and any video rendered from it)", "annotation HDF5", "Rerun RRD",
             "model weights (base or adapter)", "checkpoints", "archives of any of these"]


def split_policy() -> dict[str, Any]:
  """The corpus' session split, shared by every branch: the shard manifest's assignment."""
  return dict(
      unit="session", source="corpus",
      # sessions a split must hold at least (the generated corpus has more)
      default_counts=dict(train=1, val=1, test=1),
      leakage_guard="splits come from the shard manifest (data_pipelines/validate.py): no "
                    "session has episodes in two splits; exports, probes and normalisation "
                    "statistics fit on train only; future windows stay in their episode")


def branch(*, id: str, display_name: str, status: str, model_family: str,  # noqa: A002
           dataset_contract: str, training_objective: str, modalities: dict,
           entrypoints: dict, primary_metrics: Sequence[str], checkpoint_gate: str,
           required_eval_files: Sequence[str], required_training_files: Sequence[str],
           public_package: Optional[str], public_package_allowed: Sequence[str],
           extension_requirements: Sequence[str] = (), default_model_id: Optional[str] = None
           ) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict(dict(
      id=id, display_name=display_name, status=status, model_family=model_family,
      default_model_id=default_model_id, dataset_contract=dataset_contract,
      training_objective=training_objective, split_policy=split_policy(),
      modalities=modalities, entrypoints=entrypoints, primary_metrics=list(primary_metrics),
      artifact_contract=dict(
          checkpoint_gate=checkpoint_gate, required_eval_files=list(required_eval_files),
          required_training_files=list(required_training_files),
          public_package=public_package, public_package_allowed=list(public_package_allowed),
          public_package_forbidden=list(FORBIDDEN)),
      extension_requirements=list(extension_requirements)), sort_keys=False)
  return c
