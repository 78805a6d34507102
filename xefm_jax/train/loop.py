"""The training loop (big_vision style: read top to bottom, one sitting).

    loop.train(config, workdir)

config.data.shards names a shard corpus whose label and vocabulary sizes are already in
config.data (`with_corpus_sizes`; launch/train.py does both, after checking the config).
The loop checks the shards it will read (config.data.verify_shards), restores the newest
complete checkpoint in WORKDIR/checkpoints that restores if there is one (a damaged newer
one is reported and set aside), else creates a fresh state (warm-started from the sources
of config.model.init_from, train/warm_start.py), and runs to config.train.steps,
writing WORKDIR/metrics.jsonl and WORKDIR/tensorboard (process 0; a resumed run first drops
the rows past its restored step), checkpoints, and on request a profiler trace in
WORKDIR/profile. A SIGTERM saves the current step and returns; the next start resumes from
it.
"""

from __future__ import annotations

import itertools
import os
import pathlib
import time
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding

from xefm_jax.data import features as features_lib
from xefm_jax.data import pipeline
from xefm_jax.data import shards as shards_lib
from xefm_jax.data import source as source_lib
from xefm_jax.objectives import base as objectives_base
from xefm_jax.parallel import mesh as mesh_lib
from xefm_jax.parallel import sharding
from xefm_jax.train import checkpoint as checkpoint_lib
from xefm_jax.train import flops as flops_lib
from xefm_jax.train import metrics as metrics_lib
from xefm_jax.train import optimizer
from xefm_jax.train import state as state_lib
from xefm_jax.train import step as step_lib
from xefm_jax.train import warm_start

LABEL_SIZES = ("num_objects", "num_actions", "num_subtasks", "num_tasks", "vocab_size")


def log(msg: str, *args: Any) -> None:
  if jax.process_index() == 0:
    logging.info(msg, *args)


def with_corpus_sizes(config: ml_collections.ConfigDict, corpus: source_lib.Corpus) -> None:
  """Copies the corpus' label and vocabulary sizes, and its hands' train statistics
  (hand_stats: the policy objective's metres), into config.data (in place; a locked
  config accepts new values for existing keys). The model's vocabulary follows by
  reference."""
  window = corpus.window_spec(config.data)
  for name in LABEL_SIZES:
    config.data[name] = getattr(window, name)
  config.data.hand_stats = {k: {"mean": list(map(float, corpus.stats[k]["mean"])),
                               "std": list(map(float, corpus.stats[k]["std"]))}
                           for k in ("wrist", "hands_local")}


def without_corpus(config: ml_collections.ConfigDict) -> None:
  """For shape-only work without a corpus (launch/aot_check.py, benchmarks): unit hand
  statistics in config.data.hand_stats where none are set, so the policy objective builds;
  its targets are then not in metres, so never train with them."""
  if config.data.get("hand_stats") is None:
    config.data.hand_stats = {k: {"mean": [0.0] * 3, "std": [1.0] * 3}
                              for k in ("wrist", "hands_local")}


def check_video_features(config: ml_collections.ConfigDict, corpus: source_lib.Corpus
                         ) -> None:
  """Refuses extracted video features (config.data.video_features) made by another encoder
  than the model's: another ViT, patch or dtype, or (when config.model.init_from gives the
  ViT's weights) other weights."""
  name = config.data.video_features
  encoder = features_lib.encoder_description(config.model)
  data = config.data.copy_and_resolve_references()
  data.video_features = None
  params = warm_start.vit_params(config, corpus.window_spec(data))
  sha = features_lib.params_sha256(params) if params else None
  for shard in corpus.manifest["shards"]:
    features_lib.check(features_lib.folder(corpus.root, name) / shard["name"], encoder, sha)
  log("video features '%s' checked: encoder %s, parameters %s", name, encoder,
      sha or "not in config.model.init_from (unchecked)")


def _duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else (
      f"{seconds // 60}m{seconds % 60:02d}s")


def retrieval_at_1(text: np.ndarray, window: np.ndarray, caption: np.ndarray,
                   chunk: int = 1024) -> tuple[float, float]:
  """Text-to-window R@1 and its chance level over N windows with their captions.

  text, window: (N, D) normalised embeddings, row i of both from window i; caption: (N, L)
  token ids. Consecutive windows of one action share a caption word for word, so a query
  is answered correctly by ANY window carrying its caption (matching row i alone would cap
  R@1 at 1 / copies). Chance: the mean share of windows that carry the query's caption.
  Captions are compared as ids of distinct rows and similarities in blocks of `chunk`
  queries, so memory is O(N x chunk), never the N x N x L of comparing token rows.
  """
  _, ids, counts = np.unique(caption, axis=0, return_inverse=True, return_counts=True)
  ids = ids.reshape(-1)
  best = np.concatenate([np.argmax(text[i:i + chunk] @ window.T, axis=1)
                         for i in range(0, len(text), chunk)])
  hits = ids[best] == ids
  return float(hits.mean()), float((counts[ids] / len(ids)).mean())


def evaluate(config: ml_collections.ConfigDict, corpus: source_lib.Corpus, eval_step: Any,
             state: state_lib.TrainState, batch_sharding: NamedSharding
             ) -> dict[str, float]:
  """In-loop validation, bounded: mean val losses over the first config.train.eval_batches
  full batches of the val split (0: all of them; every process runs the same number; the
  objectives not scored in evaluation are not run), and text-to-window R@1 over the first
  config.train.eval_retrieval_windows val windows that have a caption when the contrastive
  objective is enabled (see `retrieval_at_1`). The val stream's order is fixed (seed 0,
  no shuffling), so every evaluation of a run sees the same windows. The full evaluation is
  launch/eval.py's."""
  window = corpus.window_spec(config.data)
  try:
    windows = len(source_lib.WindowSource(corpus, "val", window, config.data.window_stride,
                                          verify=bool(config.data.verify_shards)))
  except shards_lib.ShardError as e:
    log("evaluation skipped: %s", e)
    return {}
  batches = windows // config.data.batch_size
  if config.train.eval_batches:
    batches = min(batches, int(config.train.eval_batches))
  if not batches:
    log("evaluation skipped: %d val windows make no full batch of %d", windows,
        config.data.batch_size)
    return {}
  cap = int(config.train.get("eval_retrieval_windows", 0) or 0) or None
  data = pipeline.make_dataset(corpus, "val", config.data, train=False, seed=0)
  sums: dict[str, float] = {}
  text, emb, caption, kept = [], [], [], 0
  for local in itertools.islice(data, batches):
    out = eval_step(state.params, state.ema, pipeline.make_global_batch(local, batch_sharding))
    for name, value in jax.device_get(out["metrics"]).items():
      sums[name] = sums.get(name, 0.0) + float(value)
    if "retrieval" in out and (cap is None or kept < cap):
      r = jax.device_get(out["retrieval"])
      valid = r["caption_valid"]
      take = slice(None) if cap is None else slice(0, cap - kept)
      text.append(r["text"][valid][take])
      emb.append(r["window"][valid][take])
      caption.append(r["caption"][valid][take])
      kept += len(text[-1])
  result = {f"val/{name}": value / batches for name, value in sums.items()}
  if "contrastive" not in objectives_base.enabled(config):
    log("val R@1 skipped: the contrastive objective is not enabled")
  elif kept:
    result["val/retrieval_r1"], result["val/retrieval_r1_chance"] = retrieval_at_1(
        np.concatenate(text), np.concatenate(emb), np.concatenate(caption))
    result["val/retrieval_windows"] = float(kept)
  return result


def train(config: ml_collections.ConfigDict, workdir: str | os.PathLike
          ) -> state_lib.TrainState:
  """Trains to config.train.steps (or until SIGTERM); returns the final state."""
  workdir = pathlib.Path(workdir)
  cfg = config.train
  corpus = source_lib.Corpus(config.data.shards)
  mesh = mesh_lib.make_mesh(config.mesh)
  rules = sharding.rules_from_config(config)
  log("mesh %s over %d devices (%d processes); objectives: %s", dict(mesh.shape),
      jax.device_count(), jax.process_count(), ", ".join(objectives_base.enabled(config)))
  if config.data.verify_shards:  # a missing chunk would read as zeros: refuse it now
    t0 = time.perf_counter()
    checked = corpus.verify(("train", "val") if cfg.eval_every else ("train",))
    log("shards checked against what the shredder wrote (chunk files and sizes): %d in "
        "%.2f s", len(checked), time.perf_counter() - t0)

  if config.data.get("video_features"):
    check_video_features(config, corpus)

  ckpt = checkpoint_lib.Checkpointer(workdir / "checkpoints", cfg)

  # Abstract shapes and shardings of everything the step touches.
  plan = step_lib.StepPlan.make(config, corpus.window_spec(config.data), mesh, rules)
  batch_sharding, batch_shardings = plan.batch_sharding, plan.batch_shardings

  # Data, then the state: restored (with the data's position) or fresh.
  train_iter = iter(pipeline.make_dataset(corpus, "train", config.data, train=True,
                                          seed=config.data.shuffle_seed))
  ckpt.watch_sigterm()
  restored, state = ckpt.restore_latest(plan.abstract, train_iter)
  if restored is not None:
    log("restored step %d from %s", restored, workdir / "checkpoints")
  else:
    state = plan.create_state()
    if config.model.get("init_from"):
      state, _ = warm_start.apply(config, state)
  start = int(jax.device_get(state.step))
  if config.optim.get("trainable"):
    log("parameters per group (config.optim.trainable): %s", ", ".join(
        f"{k} {v:,}" for k, v in optimizer.describe(plan.abstract.params, config.optim).items()))

  # The step, compiled ahead of time: its cost analysis gives the FLOPs for MFU.
  t0 = time.perf_counter()
  traced = plan.trace()
  with sharding.activate(mesh, rules):
    lowered = traced.lower()
  t1 = time.perf_counter()
  train_step = lowered.compile()  # from the persistent cache when one is configured
  t2 = time.perf_counter()
  eval_step = step_lib.jit_eval_step(step_lib.make_eval_step(config), plan.shardings,
                                     batch_shardings)
  step_flops = flops_lib.step_flops(train_step, jax.device_count())
  model_flops = flops_lib.step_model_flops(config, traced.jaxpr)
  peak = flops_lib.peak(jax.devices(), jnp.dtype(config.model.dtype),
                        per_device=float(cfg.peak_flops_per_device))
  log("train step traced in %.1f s, compiled in %.1f s: %.3g GFLOP per step of the model "
      "(MFU), %.3g executed (HFU, the compiled cost analysis); against %s (%.1f s)",
      t1 - t0, t2 - t1, model_flops / 1e9, step_flops / 1e9, peak.describe(),
      time.perf_counter() - t2)

  writer = metrics_lib.MetricWriter(workdir, resume_step=start)
  profile = tuple(cfg.profile_steps)
  tracing = False
  try:
    last_time, data_wait, since = time.perf_counter(), 0.0, 0
    for step in range(start, cfg.steps):
      if len(profile) == 2 and step == profile[0] < profile[1] and jax.process_index() == 0:
        jax.profiler.start_trace(str(workdir / "profile"))
        tracing = True
      fetch = time.perf_counter()
      batch = pipeline.make_global_batch(next(train_iter), batch_shardings)
      data_wait += time.perf_counter() - fetch
      with jax.profiler.StepTraceAnnotation("train", step_num=step):
        state, metrics = train_step(state, batch)
      done, since = step + 1, since + 1
      if tracing and done >= profile[1]:
        jax.block_until_ready(state)
        jax.profiler.stop_trace()
        tracing = False
        log("profile of steps [%d, %d) written to %s", profile[0], profile[1],
            workdir / "profile")

      if done % cfg.log_every == 0 or done == cfg.steps or done == start + 1:
        metrics = dict(metrics, param_norm=step_lib.param_norm(state.params))
        metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        elapsed = time.perf_counter() - last_time
        seconds_per_step = elapsed / since
        metrics.update(steps_per_s=1.0 / seconds_per_step, data_wait_s=data_wait / since,
                       mfu=flops_lib.mfu(model_flops, seconds_per_step, peak),
                       hfu=flops_lib.mfu(step_flops, seconds_per_step, peak),
                       eta_s=(cfg.steps - done) * seconds_per_step)
        writer.write(done, metrics)
        losses = " ".join(f"{k} {metrics[k]:.4g}" for k in
                          ["loss"] + [f"{n}/loss" for n in objectives_base.enabled(config)])
        log("step %d/%d | %s | lr %.3g | grad %.3g | %.2f steps/s | MFU %.1f%% HFU %.1f%% | "
            "data %.3f s/step | skipped %d | ETA %s", done, cfg.steps, losses, metrics["lr"],
            metrics["grad_norm"], metrics["steps_per_s"], 100 * metrics["mfu"],
            100 * metrics["hfu"],
            metrics["data_wait_s"], metrics["skipped_total"], _duration(metrics["eta_s"]))
        last_time, data_wait, since = time.perf_counter(), 0.0, 0

      if cfg.eval_every and (done % cfg.eval_every == 0 or done == cfg.steps):
        with sharding.activate(mesh, rules):
          result = evaluate(config, corpus, eval_step, state, batch_sharding)
        if result:
          writer.write(done, result)
          log("step %d val | %s", done, " ".join(
              f"{k} {v:.4g}" for k, v in result.items()
              if k.endswith("/loss") or k.startswith("val/retrieval")))
        last_time = time.perf_counter()  # evaluation time is not training time

      if ckpt.preempted(done):
        ckpt.save(done, state, train_iter, config, force=True)
        ckpt.wait()
        log("preempted: saved step %d, stopping", done)
        return state
      ckpt.save(done, state, train_iter, config, force=done == cfg.steps)
  finally:
    if tracing:
      jax.profiler.stop_trace()
    writer.close()
    ckpt.close()
  log("done: %d steps, %d skipped", int(jax.device_get(state.step)),
      int(jax.device_get(state.skipped)))
  return state
