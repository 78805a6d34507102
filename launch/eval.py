"""Evaluate a training run: every checkpoint (or one) through the suite of EVAL_SUITE.md.

    python launch/eval.py --config=configs/eval.py --workdir runs/local [--checkpoint STEP]

    python launch/eval.py ... --json_tasks EXPORT   also XEFM's answers to a JSON-task export

--checkpoint: a step, `latest` (the default: what a finished run is judged by) or `all`
(every complete checkpoint, oldest first). Writes DIR/eval/<step>/report.json, report.md
and figures; a step whose report.json exists is skipped (--force redoes it), so an
interrupted `all` job resumes where it stopped. Embeddings
are cached per split in DIR/eval/<step>/embeddings/ and the baselines (hand-crafted
statistics, a random init of the run's config) once per run in DIR/eval/baselines/.
The run's own config (saved with its checkpoints) decides the model, the mesh and the
window; the eval config decides the tasks, probes and seeds. The console shows progress
bars, one line per evaluated step (its significant wins) and the report paths at the end;
the libraries' INFO chatter is filtered (xefm_jax/console.py).

--json_tasks: a structured-JSON task export (data_pipelines/export/json_tasks.py); the
captioning decoder answers every record (xefm_jax/eval/answers.py) into
DIR/eval/<step>/json_task_predictions.jsonl, which launch/score.py scores beside any other
model's answers.
"""

from __future__ import annotations

import pathlib
import time

from xefm_jax import host

host.configure()  # XLA:CPU settings, before the first computation (xefm_jax/host.py)

from absl import flags, logging
import jax
from ml_collections import config_flags
from tqdm import tqdm

from data_pipelines.export import common as export_common
from data_pipelines.export import json_tasks
from xefm_jax import console
from xefm_jax import errors
from xefm_jax.eval import answers
from xefm_jax.eval import checkpoints
from xefm_jax.eval import embed
from xefm_jax.eval import report as report_lib
from xefm_jax.eval import suite
from xefm_jax.eval import variants as variants_lib
from xefm_jax.model import xefm
from xefm_jax.objectives import base as objectives_base

_CONFIG = config_flags.DEFINE_config_file("config", None, "Eval config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "The training run's directory.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "latest", "A step, `latest` or `all`.")
_SHARDS = flags.DEFINE_string("shards", None, "The corpus, if not where the run had it.")
_FORCE = flags.DEFINE_bool("force", False, "Re-evaluate steps that have a report.")
_JSON_TASKS = flags.DEFINE_string(
    "json_tasks", None, "A JSON-task export: write the captioning decoder's answers to its "
    "records beside the report (launch/score.py scores them).")


def json_task_predictions(run: suite.Run, step: int, cfg, out_dir: pathlib.Path,
                          export: str) -> pathlib.Path:
  """XEFM's answers to every record of the JSON-task export `export` (module docstring)."""
  path = out_dir / answers.PREDICTIONS_FILE
  if path.is_file() and not _FORCE.value:
    logging.info("step %d: %s exists, skipped", step, path)
    return path
  if "captioning" not in objectives_base.enabled(run.config):
    raise errors.UsageError(f"--json_tasks: the run {run.workdir} did not train the "
                            "captioning decoder (objectives.captioning.weight is 0): it "
                            "cannot answer")
  try:
    records = export_common.read_jsonl(pathlib.Path(export) / json_tasks.DATASET)
  except export_common.ExportError as e:
    raise errors.UsageError(f"--json_tasks: {e}") from None
  params = checkpoints.restore_params(run.config, run.workdir, step, run.mesh)
  data_cfg = embed.data_config(run.config.data, cfg, jax.device_count())
  data_cfg.future = 1  # the decoder reads the window only: records near an episode's end fit
  variant = variants_lib.base_variants(cfg, xefm.modality_names(run.config.model))["full"]
  try:
    rows = answers.decode(run.corpus, data_cfg, run.encoder, params, variant, records,
                          int(cfg.seed), progress=cfg.progress)
  except ValueError as e:
    raise errors.UsageError(f"--json_tasks {export}: {e}") from None
  if jax.process_index() == 0:
    export_common.write_jsonl(path, rows)
  return path


def main(argv):
  del argv
  console.quiet_libraries()
  host.restrict_compilation_cache()  # a cache from the environment: one-device CPU only
  cfg = _CONFIG.value
  steps = checkpoints.steps(_WORKDIR.value)
  which = _CHECKPOINT.value
  if not steps:
    raise checkpoints.train_checkpoint.CheckpointError(
        f"{_WORKDIR.value}: no complete checkpoint to evaluate; train first")
  if which == "latest":
    steps = steps[-1:]
  elif which != "all":
    if not which.isdigit() or int(which) not in steps:
      raise errors.UsageError(f"--checkpoint={which}: not a complete checkpoint of "
                              f"{_WORKDIR.value}; give one of {steps}, `latest` or `all`")
    steps = [int(which)]
  run = suite.open_run(_WORKDIR.value, steps[-1], _SHARDS.value)
  show = cfg.progress and jax.process_index() == 0
  written = []
  predictions = []
  for step in tqdm(steps, desc="checkpoints", unit="ckpt", disable=not show):
    out_dir = run.eval_dir / str(step)
    if _JSON_TASKS.value:
      predictions.append(json_task_predictions(run, step, cfg, out_dir, _JSON_TASKS.value))
    if report_lib.load(out_dir) is not None and not _FORCE.value:
      logging.info("step %d: %s exists, skipped", step, out_dir / report_lib.REPORT_JSON)
      written.append(out_dir / report_lib.REPORT_JSON)
      continue
    t0 = time.perf_counter()
    report, artifacts = suite.evaluate(run, step, cfg, out_dir, progress=cfg.progress)
    path = suite.write(run, report, artifacts, cfg, out_dir)
    written.append(path)
    s = report["summary"]
    logging.info("step %d evaluated in %.1f s: significant wins against both baselines on "
                 "%d of %d tasks (EMA trunk: %d), %d test session(s)%s", step,
                 time.perf_counter() - t0, s["significant_wins"], s["tasks"],
                 s["ema_significant_wins"], s["test_sessions"],
                 "" if s["intervals"] is None else " (no intervals: fewer than 2)")
  if jax.process_index() == 0:
    for path in written:
      print(f"eval report: {path} ({path.with_name(report_lib.REPORT_MD)})")
    for path in predictions:
      print(f"json task predictions: {path}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  errors.run(main)
