"""Branch: policy models (OpenVLA/OFT, openpi pi0, Octo, SmolVLA) on RLDS / LeRobot exports."""

from __future__ import annotations

import ml_collections

from configs.branches import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg
  return common.branch(
      id="policy_vla", display_name="VLA / policy models", status="planned_adapter",
      model_family="OpenVLA/OFT, openpi pi0, Octo, SmolVLA",
      dataset_contract="xperience10m_observation_action_v0 (RLDS, LeRobot)",
      training_objective="observation_to_action_chunk (human hands retargeted)",
      modalities=dict(observations=["egocentric video", "language instruction (subtask)",
                                    "state: wrist poses, finger joints"],
                      candidate_targets=["hand trajectory chunk", "action label",
                                         "contact state"],
                      excluded_inputs=["visualization.rrd"]),
      entrypoints=dict(export="data_pipelines/export/rlds.py",
                       export_lerobot="data_pipelines/export/lerobot.py",
                       neutral_index="data_pipelines/export/window_index.py",
                       train=None, eval=None),
      primary_metrics=["action_accuracy", "trajectory_mpjpe", "contact_accuracy",
                       "held_out_episode_count"],
      checkpoint_gate="policy_checkpoint_action_space_and_normalizer",
      required_eval_files=["metrics.json", "policy_predictions.jsonl", "report.md"],
      required_training_files=["training_metadata.json", "progress.jsonl",
                               "action_space.json", "normalization_stats.json"],
      public_package="{run}/branches/policy_vla",
      public_package_allowed=["metrics", "policy prediction summaries",
                              "action-space definitions", "normalisation metadata"],
      extension_requirements=[
          "Define action_space.json (wrist pose deltas, finger joints, chunk, rate, units) "
          "before exporting (issue 15: RLDS and LeRobot exports).",
          "Normalisation statistics from train episodes only, written beside the data."])
