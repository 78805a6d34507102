"""Branch: Gemini Robotics, compared through the same structured-JSON tasks (no training)."""

from __future__ import annotations

import ml_collections

from configs.branches import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg
  return common.branch(
      id="gemini_robotics", display_name="Gemini Robotics (external comparison)",
      status="planned_adapter", model_family="Gemini Robotics",
      dataset_contract="xperience10m_episode_json_qa_v1",
      training_objective="none: prompted answers to the held-out JSON tasks",
      modalities=dict(direct_inputs=["mosaic video of the context", "audio of the context",
                                     "language prompt and label options"],
                      excluded_inputs=["visualization.rrd", "sensor-bridge features"]),
      entrypoints=dict(export="data_pipelines/export/json_tasks.py", train=None, eval=None,
                       score="launch/score.py"),
      primary_metrics=["json_validity_rate", "action_macro_f1", "subtask_macro_f1",
                       "next_action_macro_f1", "object_micro_f1", "contact_accuracy",
                       "transition_accuracy", "held_out_episode_count"],
      checkpoint_gate="none (hosted model): the model version and date are recorded",
      required_eval_files=["predictions.jsonl", "metrics.json", "report.md"],
      required_training_files=["request_log.jsonl (model version, prompt, time)"],
      public_package="{run}/branches/gemini_robotics",
      public_package_allowed=["metrics", "predictions", "run reports"],
      extension_requirements=[
          "A client that sends each val/test record's messages (video, audio, text) to the "
          "API and writes one {\"id\", \"prediction\"} line per record.",
          "Send only what the gated data's licence allows to leave the machine."])
