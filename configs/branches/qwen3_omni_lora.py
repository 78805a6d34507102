"""Branch: Qwen3-Omni fine-tuned with LoRA on the structured-JSON task set.

This repository exports its data (the JSON tasks with mosaic video, audio and the XEFM
sensor bridge) and scores its answers; the fine-tuning runs in Qwen's own stack."""

from __future__ import annotations

import ml_collections

from configs.branches import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg
  return common.branch(
      id="qwen3_omni_lora", display_name="Qwen3-Omni LoRA", status="planned_adapter",
      model_family="Qwen3-Omni", default_model_id="Qwen/Qwen3-Omni-30B-A3B-Instruct",
      dataset_contract="xperience10m_episode_json_qa_v1",
      training_objective="structured_episode_understanding_json_qa",
      modalities=dict(
          direct_inputs=["six views as a 2x3 mosaic MP4 of the context",
                         "audio of the context (WAV)", "language prompt and label options"],
          bridged_inputs=["depth, pose, mocap and IMU through the sensor-bridge npz (XEFM "
                          "window embeddings with --checkpoint)"],
          excluded_inputs=["visualization.rrd"]),
      entrypoints=dict(export="data_pipelines/export/json_tasks.py",
                       neutral_index="data_pipelines/export/window_index.py",
                       train=None, eval=None, score="launch/score.py"),
      primary_metrics=["json_validity_rate", "action_macro_f1", "subtask_macro_f1",
                       "next_action_macro_f1", "object_micro_f1", "contact_accuracy",
                       "transition_accuracy", "held_out_episode_count"],
      checkpoint_gate="lora_safetensors_shape_check",
      required_eval_files=["predictions.jsonl", "metrics.json", "report.md"],
      required_training_files=["training_metadata.json", "progress.jsonl",
                               "adapter_config.json"],
      public_package="{run}/branches/qwen3_omni_lora",
      public_package_allowed=["metrics", "predictions", "run reports", "dataset manifests",
                              "training metadata"],
      extension_requirements=[
          "LoRA fine-tuning on the train split's `messages` of dataset.jsonl (Qwen's "
          "trainer; not in this repository).",
          "Answer every val/test record: one {\"id\", \"prediction\"} line per record; score "
          "with launch/score.py beside XEFM's decoder and the two reference floors.",
          "Never train on val/test records: the split of each record is its session's."])
