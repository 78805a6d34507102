"""Branch: Cosmos world models on future-window pairs of the same episodes."""

from __future__ import annotations

import ml_collections

from configs.branches import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg
  return common.branch(
      id="cosmos_world_model", display_name="Cosmos future-window world model",
      status="planned_adapter", model_family="Cosmos (NVIDIA world foundation models)",
      dataset_contract="xperience10m_future_window_world_model_v0",
      training_objective="future_window_and_action_conditioned_world_modeling",
      modalities=dict(direct_inputs=["camera video clips"],
                      conditioning_inputs=["camera-pose forward dynamics (9-D actions)",
                                           "language prompt", "procedure labels"],
                      targets=["the window 5 windows later in the same episode"],
                      excluded_inputs=["visualization.rrd"]),
      entrypoints=dict(export="data_pipelines/export/cosmos.py",
                       neutral_index="data_pipelines/export/window_index.py",
                       train=None, eval=None),
      primary_metrics=["future_retrieval_mrr", "future_retrieval_recall_at_5",
                       "transition_accuracy", "contact_accuracy", "held_out_episode_count"],
      checkpoint_gate="world_model_checkpoint_and_generation_config",
      required_eval_files=["metrics.json", "future_predictions.jsonl", "report.md"],
      required_training_files=["training_metadata.json", "progress.jsonl"],
      public_package="{run}/branches/cosmos_world_model",
      public_package_allowed=["metrics", "future-window prediction summaries",
                              "dataset manifests"],
      extension_requirements=[
          "The Cosmos export (issue 15): dataset.jsonl of future-window pairs and the "
          "videos/ + metas/ post-training layout.",
          "Future windows stay inside their episode; test episodes never condition training."])
