"""A tiny eval job for the scaling sweep's end-to-end test (tests/test_sweep.py): the quick
eval config (configs/eval.py:quick) cut to three of its tasks (a classification, a
lower-is-better regression and a pair task), no extension probes, no world-model or
robustness passes, no figures, few windows and one probe setting, so evaluating a point
costs seconds."""

from __future__ import annotations

import ml_collections

from configs import eval as eval_configs


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg:
    raise ValueError(f"tests/sweep_eval.py: no variants, got {arg!r}")
  c = eval_configs.get_config("quick")
  keep = ("timeline_action", "time_to_transition", "temporal_order")
  c.tasks = ml_collections.ConfigDict({n: c.tasks[n] for n in keep}, sort_keys=False)
  c.extensions = ml_collections.ConfigDict()
  del c.world_model
  c.robustness.update(inputs=(), random_views=False)
  c.max_windows.update(train=96, val=48, test=48)
  c.probe.update(linear_c=(1.0,), ridge_alpha=(10.0,), max_iter=100)
  c.bootstrap.replicates = 50
  c.figures = False
  return c
