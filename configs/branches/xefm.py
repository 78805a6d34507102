"""Branch: XEFM itself (this repository), judged on the same windows and splits as every
other branch. See configs/branches/common.py for the keys; `python launch/branches.py
--validate` runs the `checks` on the generated corpus."""

from __future__ import annotations

import ml_collections

from configs.branches import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg
  c = common.branch(
      id="xefm", display_name="XEFM (JAX/Flax, this repository)", status="implemented",
      model_family="XEFM: multimodal egocentric foundation model",
      dataset_contract="xefm_shards_v1 (TensorStore shards) + xperience10m_episode_json_qa_v1",
      training_objective="multimodal self-supervised pretraining: contrastive, masked "
                         "modeling, forecasting, future state, procedure, contact, policy, "
                         "captioning (the JSON answer decoder)",
      modalities=dict(
          direct_inputs=["six camera views", "audio", "depth and confidence",
                         "camera pose (SLAM)", "hand and body mocap", "IMU",
                         "task / subtask / action / object language"],
          excluded_inputs=["visualization.rrd"]),
      entrypoints=dict(
          export="data_pipelines/export/json_tasks.py",
          neutral_index="data_pipelines/export/window_index.py",
          train="launch/train.py", eval="launch/eval.py", score="launch/score.py"),
      primary_metrics=["the 20 window tasks (model vs hand-crafted and random-init "
                       "baselines)", "json_validity_rate", "action_macro_f1",
                       "subtask_macro_f1", "next_action_macro_f1", "object_micro_f1",
                       "contact_accuracy", "transition_accuracy", "held_out_episode_count"],
      checkpoint_gate="orbax_checkpoint_restores_onto_the_eval_mesh",
      required_eval_files=["report.json", "report.md", "json_task_predictions.jsonl",
                           "metrics.json"],
      required_training_files=["metrics.jsonl", "checkpoints/<step>/ (Orbax, with the "
                               "config JSON)", "tensorboard/"],
      public_package="{run}/eval",
      public_package_allowed=["metrics", "predictions", "evaluation reports", "figures",
                              "window embeddings of held-out windows",
                              "export and dataset manifests"],
  )
  # Run on the generated corpus by `launch/branches.py --validate`, in order; placeholders
  # {python} {shards} {run} {tmp} {train_config} {eval_config}.
  c.checks = ml_collections.ConfigDict(dict(
      export="{python} data_pipelines/export/json_tasks.py --shards {shards} "
             "--out {tmp}/json_tasks --checkpoint {run} --no-media --quiet",
      neutral_index="{python} data_pipelines/export/window_index.py --tasks {tmp}/json_tasks "
                    "--quiet",
      train="{python} launch/train.py --config={train_config} --workdir {tmp}/run "
            "--config.data.shards={shards} --config.train.steps=2 "
            "--config.train.ckpt_every=2 --config.train.eval_every=0",
      eval="{python} launch/eval.py --config={eval_config} --workdir {tmp}/run "
           "--json_tasks {tmp}/json_tasks --config.progress=false",
      score="{python} launch/score.py --tasks {tmp}/json_tasks "
            "--predictions xefm={tmp}/run/eval/2/json_task_predictions.jsonl "
            "--out {tmp}/scores"), sort_keys=False)
  return c
