"""Branch: NVIDIA GR00T on a LeRobot v2.1 export with modality.json."""

from __future__ import annotations

import ml_collections

from configs.branches import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg
  return common.branch(
      id="gr00t", display_name="GR00T N1 (humanoid policy)", status="planned_adapter",
      model_family="NVIDIA Isaac GR00T", default_model_id="nvidia/GR00T-N1.5-3B",
      dataset_contract="lerobot_v2.1 + meta/modality.json",
      training_objective="observation_to_action_chunk (human hands retargeted)",
      modalities=dict(observations=["egocentric video (stereo_left)", "task description",
                                    "state: wrist poses, finger joints"],
                      excluded_inputs=["visualization.rrd"]),
      entrypoints=dict(export="data_pipelines/export/lerobot.py",
                       neutral_index="data_pipelines/export/window_index.py",
                       train=None, eval=None),
      primary_metrics=["trajectory_mpjpe", "action_accuracy", "held_out_episode_count"],
      checkpoint_gate="policy_checkpoint_action_space_and_normalizer",
      required_eval_files=["metrics.json", "policy_predictions.jsonl", "report.md"],
      required_training_files=["training_metadata.json", "progress.jsonl",
                               "meta/modality.json"],
      public_package="{run}/branches/gr00t",
      public_package_allowed=["metrics", "policy prediction summaries",
                              "action-space definitions"],
      extension_requirements=[
          "The LeRobot v2.1 export with meta/modality.json (issue 15).",
          "State and action slices from action_space.json; normalisation from train only."])
