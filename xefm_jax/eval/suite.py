"""The evaluation suite for one checkpoint: embed, probe, score, assemble the report.

    run = suite.open_run(workdir)
    report = suite.evaluate(run, step, eval_config, out_dir)   # report.py writes it

1. Windows: the run's window with 40 future frames at stride max(1, W // 4), per split
   (train: fit, val: select, test: score; by session, never mixed: `check_sessions`).
2. One pass per split (embed.py) computes every feature set and input variant a task needs
   (robustness variants on test only, for the online trunk and the baselines), plus the
   model heads' predictions on test. Baselines (hand-crafted, random init) do not depend on
   the checkpoint: they are cached once per run in DIR/eval/baselines/ (arrays, probe
   scores and bootstrap replicates), the model's (online and EMA trunk) in
   DIR/eval/<step>/.
3. Every task of config.tasks and config.extensions, for every feature set: its evaluator
   fits a probe on train, picks it on val, predicts test once; the metric is taken on all
   test rows, on the bootstrap's session replicates (bootstrap.py), on the held-out
   activity / object subsets; the same probe is applied to the robustness variants.
4. Per task: the intervals of model minus each baseline, the label coverage of class
   tasks, the objectives that supervised the task's label; the protocol extras from the
   model's heads (protocol.py).
5. The world-model evaluation (world_model.py, config.world_model): when the run trains
   future_state, the EMA trunk's latent of every window (the head's target space) is
   computed on every split, and the head's predicted future latent, the equal ridge probe
   on every feature set and the present latent rank each test window's true future.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import multiprocessing
import os
import pathlib
import time
from typing import Any, Mapping, Optional

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh
import threadpoolctl
from tqdm import tqdm

from xefm_jax.data import pipeline
from xefm_jax.data import shards as shards_lib
from xefm_jax.data import source as source_lib
from xefm_jax.data import xperience
from xefm_jax.eval import bootstrap
from xefm_jax.eval import checkpoints
from xefm_jax.eval import embed
from xefm_jax.eval import encode
from xefm_jax.eval import evaluators
from xefm_jax.eval import figures
from xefm_jax.eval import probes
from xefm_jax.eval import protocol
from xefm_jax.eval import report as report_lib
from xefm_jax.eval import variants as variants_lib
from xefm_jax.eval import world_model
from xefm_jax.eval.evaluators import base as evaluators_base
from xefm_jax.eval.evaluators import future_retrieval
from xefm_jax.eval.evaluators import retrieval
from xefm_jax.model import xefm
from xefm_jax.objectives import base as objectives_base
from xefm_jax.parallel import mesh as mesh_lib

PyTree = Any
TABLES = ("tasks", "extensions")
MODELS = ("model", "model_ema")  # the checkpoint's feature sets: its trunk and the EMA's
BASELINES = report_lib.BASELINES
REPLICATES_FILE = "replicates.npz"  # the baselines' bootstrap replicates, beside scores.json
# The cached baseline scores are keyed by the eval config and the corpus, not by the code:
# bump this when the probes or an evaluator change what they score.
SCORES_VERSION = 2
# The same for the checkpoint's cached embeddings (DIR/eval/<step>/embeddings): bump it when
# what a model store holds changes (3: the future-state head and its EMA target latents).
MODEL_STORE_VERSION = 3


@dataclasses.dataclass
class Run:
  """A training run directory: its config (as saved with its checkpoints), corpus, mesh."""

  workdir: pathlib.Path
  config: ml_collections.ConfigDict
  corpus: source_lib.Corpus
  mesh: Mesh
  _encoder: Optional[encode.Encoder] = None

  @property
  def eval_dir(self) -> pathlib.Path:
    return self.workdir / "eval"

  @property
  def encoder(self) -> encode.Encoder:
    """One per run: its compiled passes serve every checkpoint and parameter set."""
    if self._encoder is None:
      self._encoder = encode.Encoder(self.config, self.mesh, tuple(self.config.data.views))
    return self._encoder


def resolve_shards(config: ml_collections.ConfigDict, workdir: pathlib.Path,
                   shards: Optional[str] = None) -> pathlib.Path:
  """The run's corpus: `shards` if given, else config.data.shards as saved (relative to the
  working directory, or else to the run's), else WORKDIR/data/shards."""
  candidates = [pathlib.Path(shards)] if shards else []
  saved = config.data.get("shards")
  if saved:
    candidates += [pathlib.Path(saved), workdir / saved]
  candidates.append(workdir / "data" / "shards")
  for c in candidates:
    if (c / shards_lib.MANIFEST_FILE).is_file():
      return c
  raise FileNotFoundError(f"no shard corpus for the run {workdir}: tried "
                          f"{', '.join(str(c) for c in candidates)} (pass --shards)")


def open_run(workdir: str | os.PathLike, step: Optional[int] = None,
             shards: Optional[str] = None) -> Run:
  """The run of `workdir`, with the config saved at `step` (default: the latest)."""
  workdir = pathlib.Path(workdir)
  if step is None:
    steps = checkpoints.steps(workdir)
    if not steps:
      raise checkpoints.train_checkpoint.CheckpointError(
          f"{workdir / checkpoints.CHECKPOINTS}: no complete checkpoint; train first")
    step = steps[-1]
  config = checkpoints.run_config(workdir, step)
  corpus = source_lib.Corpus(resolve_shards(config, workdir, shards))
  return Run(workdir, config, corpus, mesh_lib.make_mesh(config.mesh))


def check_sessions(corpus: source_lib.Corpus, splits: Mapping[str, str]) -> dict[str, Any]:
  """Sessions and episodes per split; raises if a session has episodes in two splits."""
  seen: dict[str, str] = {}
  counts = {}
  for role, split in splits.items():
    episodes = [corpus.episodes[i] for i in corpus.split_episodes(split)]
    sessions = {e["session"] for e in episodes}
    for s in sessions:
      if seen.get(s, split) != split:
        raise ValueError(f"{corpus.root}: session {s} is in splits '{seen[s]}' and '{split}'"
                         " (a split must be by session)")
      seen[s] = split
    counts[role] = {"split": split, "sessions": len(sessions), "episodes": len(episodes)}
  return counts


# ---------------------------------------------------------------------------------- plan


def _variants(eval_cfg: ml_collections.ConfigDict, names: tuple[str, ...]
              ) -> tuple[dict[str, variants_lib.Variant], dict[str, variants_lib.Variant]]:
  """(the variants task inputs use, on every split; the test-only ones: robustness and the
  language pass)."""
  bases = variants_lib.base_variants(eval_cfg, names)
  used = {}
  for table in TABLES:
    for task in eval_cfg[table].values():
      for v in task.inputs:
        used[v] = bases[v]
  extra = {}
  rob = eval_cfg.robustness
  for v in list(used.values()):
    if v.name in rob.inputs:
      extra.update(variants_lib.robustness_variants(v, tuple(rob.drop),
                                                    bool(rob.random_views)))
  if "with_language" in bases and "language" in names:
    extra["with_language"] = bases["with_language"]
  return used, extra


def _split_arrays(store: embed.Store, prefixes: tuple[str, ...]) -> embed.Store:
  return embed.Store({k: v for k, v in store.arrays.items()
                      if k.startswith("meta/") or k.startswith(prefixes)})


def _stores(run: Run, step: int, params: Optional[PyTree], ema: Optional[PyTree],
            eval_cfg: ml_collections.ConfigDict, out_dir: pathlib.Path, progress: bool,
            timings: dict[str, float]) -> tuple[dict[str, embed.Store], dict[str, Any]]:
  """Each split's store (model, its EMA, baselines), from the caches or computed."""
  config, corpus = run.config, run.corpus
  devices = jax.device_count()
  data_cfg = embed.data_config(config.data, eval_cfg, devices)
  names = xefm.modality_names(config.model)
  used, extra = _variants(eval_cfg, names)
  enabled = objectives_base.enabled(config)
  encoder = run.encoder
  feature_sets = tuple(eval_cfg.feature_sets)
  settings = {k: v for k, v in eval_cfg.to_dict().items() if k not in ("progress", "figures")}
  settings["probe"] = {k: v for k, v in settings["probe"].items() if k != "workers"}
  base_key = embed.fingerprint(settings, config.model.to_dict(),
                               config.data.to_dict(), str(corpus.root),
                               corpus.manifest.get("created"))
  random = None
  stores, info = {}, {}
  for role, split in eval_cfg.splits.items():
    t0 = time.perf_counter()
    selection = embed.select(corpus, split, data_cfg, int(eval_cfg.max_windows.get(split, 1000)))
    wanted = dict(used)
    if role == "score":
      wanted.update(extra)
    key = embed.fingerprint(base_key, split, selection.indices.tolist())
    base_path = run.eval_dir / "baselines" / f"{split}.npz"
    model_path = out_dir / "embeddings" / f"{split}.npz"
    baselines = embed.Store.load(base_path, key)
    model_key = embed.fingerprint(key, step, MODEL_STORE_VERSION)
    model = embed.Store.load(model_path, model_key)
    plan = embed.Plan(embed={}, handcrafted={}, targets=baselines is None)
    if baselines is None:
      if "handcrafted" in feature_sets:
        plan.handcrafted = {n: v for n, v in wanted.items() if n != "with_language"}
      if "random_init" in feature_sets:
        if random is None:
          t1 = time.perf_counter()
          random = checkpoints.random_params(config, run.mesh, int(eval_cfg.random_init_seed))
          timings["random_init_s"] = time.perf_counter() - t1
        # with language is the model's leak check ("add language"), not a baseline's
        plan.embed["random_init"] = (random, {n: v for n, v in wanted.items()
                                              if n != "with_language"})
    if model is None and "model_ema" in feature_sets:
      plan.embed["model_ema"] = (ema, used)  # the tasks' own inputs, no robustness variants
    if model is None and "future_state" in enabled and ema is not None:
      # the future-state target space: the EMA pass on every modality (encode_next's)
      kept = plan.embed.get("model_ema", (ema, {}))[1]
      plan.embed["model_ema"] = (ema, {**kept, future_retrieval.TARGET_VARIANT:
                                       variants_lib.Variant(future_retrieval.TARGET_VARIANT,
                                                            tuple(names))})
    if model is None and "model" in feature_sets:
      plan.embed["model"] = (params["model"], wanted)
      if role == "score":
        plan.heads = params
        plan.predict = tuple(h for h in encode.PREDICT_HEADS if h in enabled)
        plan.full_variant = used.get("full") if plan.predict else None
        if "masked_modeling" in enabled:
          recon_mods = tuple(config.objectives.masked_modeling.modalities)
          plan.reconstruct = {m: used.get(src) or extra.get(src) or
                              variants_lib.base_variants(eval_cfg, names)[src]
                              for m, src in eval_cfg.protocol.reconstruct.items()
                              if m in recon_mods and m in names}
    if plan.embed or plan.heads is not None or plan.handcrafted:
      computed = embed.run(corpus, split, data_cfg, selection, encoder, plan,
                           int(eval_cfg.seed), progress, describe=f"step {step} {split}")
      if baselines is None:
        baselines = _split_arrays(computed, ("targets/", "features/handcrafted/",
                                             "features/random_init/"))
        baselines.fingerprint = key
        if jax.process_index() == 0:
          baselines.save(base_path)
      if model is None:
        model = _split_arrays(computed, ("features/model/", "features/model_ema/",
                                         "predictions/", "recon/"))
        model.fingerprint = model_key
        if jax.process_index() == 0:
          model.save(model_path)
    stores[role] = baselines.merge(model) if model is not None else baselines
    info[role] = {"split": split, "windows": len(stores[role]), "stride": selection.stride,
                  "base_stride": selection.base_stride}
    timings[f"embed_{split}_s"] = time.perf_counter() - t0
  info["_fingerprint"] = base_key
  info["_data_cfg"] = data_cfg
  return stores, info


# ------------------------------------------------------------------------------ scoring


def _primary(result: Mapping[str, Any], metric: str) -> float:
  v = result.get(metric, float("nan"))
  return float(v) if v is not None else float("nan")


def _robustness_swaps(task: ml_collections.ConfigDict, stores: Mapping[str, embed.Store],
                      eval_cfg: ml_collections.ConfigDict) -> dict[str, dict[str, str]]:
  """{label: swap} of the robustness runs that apply to the task's inputs."""
  test = stores["score"]
  out = {}
  for m in eval_cfg.robustness.drop:
    swap = {v: f"{v}-{m}" for v in task.inputs if test.has(f"features/handcrafted/{v}-{m}")
            or test.has(f"features/model/{v}-{m}") or test.has(f"features/random_init/{v}-{m}")}
    if swap:
      out[f"drop {m}"] = swap
  if eval_cfg.robustness.random_views:
    swap = {v: f"{v}~views" for v in task.inputs
            if any(test.has(f"features/{fs}/{v}~views") for fs in eval_cfg.feature_sets)}
    if swap:
      out["random views"] = swap
  if "full" in task.inputs and any(test.has(f"features/{fs}/with_language")
                                   for fs in eval_cfg.feature_sets):
    out["add language"] = {"full": "with_language"}  # how much the caption gives away
  return out


def _subsets(corpus: source_lib.Corpus, test: embed.Store) -> dict[str, Any]:
  """Generalization subsets of the test windows: held-out activities / objects named by the
  corpus' split spec (and the rest), or why there are none."""
  spec = corpus.manifest.get("splits", {}).get("spec", {})
  out: dict[str, Any] = {}
  acts = [corpus.labels.tasks.index(a) for a in spec.get("holdout_activities", [])
          if a in corpus.labels.tasks]
  if acts:
    held = np.isin(test.target("task"), acts)
    out["heldout_activities"], out["seen_activities"] = held, ~held
  else:
    out["heldout_activities"] = "the corpus' split spec holds out no activity"
  objs = [corpus.labels.objects.index(o) for o in spec.get("holdout_objects", [])
          if o in corpus.labels.objects]
  if objs:
    episodes = test.arrays["meta/episode"]
    has = test.target("objects")[:, objs].any(1)
    held_eps = np.unique(episodes[has])
    held = np.isin(episodes, held_eps)
    out["heldout_objects"], out["seen_objects"] = held, ~held
  else:
    out["heldout_objects"] = "the corpus' split spec holds out no object"
  return out


def session_ids(corpus: source_lib.Corpus, store: embed.Store) -> np.ndarray:
  """(N,) the session of each row of a split's store (its episode's session)."""
  return np.array([str(corpus.episodes[int(e)]["session"]) for e in store.arrays["meta/episode"]])


# What each probe job reads (score_tasks): set once per process (a worker's initializer).
_JOB_INPUTS: dict[str, Any] = {}


def _set_job_inputs(inputs: dict[str, Any]) -> None:
  _JOB_INPUTS.clear()
  _JOB_INPUTS.update(inputs)
  if multiprocessing.parent_process() is not None:  # a worker: one BLAS thread for good
    threadpoolctl.threadpool_limits(probes.BLAS_THREADS, user_api="blas")


def _score_job(job: tuple[str, str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
  """One (table, task, feature set): its result (score_tasks) and figure artifacts."""
  table, name, fs = job
  data, eval_cfg = _JOB_INPUTS["data"], _JOB_INPUTS["eval_cfg"]
  replicates, subsets = _JOB_INPUTS["replicates"], _JOB_INPUTS["subsets"]
  task = eval_cfg[table][name]
  ev = evaluators.get(task.evaluator)
  t0 = time.perf_counter()
  fitted = ev.fit(task, data, fs)
  pred = ev.predict(task, data, fs, fitted)
  rows = evaluators_base.row_weights(len(data.test), None)
  r: dict[str, Any] = {"test": ev.metrics(task, data, pred, rows[pred.rows]),
                       "probe": ev.describe(fitted)}
  if replicates is not None:
    r["replicates"] = bootstrap.replicate_metric(ev, task, data, pred, replicates,
                                                 task.metric)
  r["robustness"] = {label: ev.score(task, data, fs, fitted, swap=swap)
                     for label, swap in _JOB_INPUTS["swaps"][table, name].items()
                     if all(data.test.has(f"features/{fs}/{v}") for v in swap.values())}
  if table == "tasks":
    r["subsets"] = {s: ev.metrics(task, data, pred,
                                  evaluators_base.row_weights(len(data.test), m)[pred.rows])
                    for s, m in subsets.items() if not isinstance(m, str)}
  art: dict[str, Any] = {}
  if fs == "model" and name == "timeline_action":
    art["confusion"] = {"true": pred.values["true"], "pred": pred.values["pred"]}
  if fs == "model" and name == "caption_grounding":
    art["grounding"] = retrieval.grounding_examples(task, data, fs, fitted)
  if fs == "model" and name == "ego_motion_forecast":
    x = evaluators_base.features(data.test, fs, task.inputs[0])
    art["ego_probe"] = fitted.predict(x).reshape(data.test.target(task.target).shape)
  r["seconds"] = time.perf_counter() - t0
  return r, art


def score_tasks(data: evaluators.Data, eval_cfg: ml_collections.ConfigDict,
                feature_sets: tuple[str, ...], stores: Mapping[str, embed.Store],
                subsets: Mapping[str, Any], replicates: Optional[np.ndarray] = None,
                progress: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
  """{table: {task: {feature set: result}}} and artifacts for the figures.

  result: {"test": metrics, "probe": how it was chosen, "robustness": {label: metrics},
  "subsets": {name: metrics}, "replicates": (R,) the primary metric in each bootstrap
  replicate of `replicates` ((R, N test rows) weights; absent when None), "seconds"}.

  The (task, feature set) jobs are independent: with `probe.workers` > 1 they run in that
  many worker processes (spawned: this process runs XLA's threads; one BLAS thread each).
  Threads would not do: the solvers hold the GIL about half the time (1.15x with two
  threads here). The results do not depend on the number of workers.
  """
  results: dict[str, Any] = {t: {} for t in TABLES}
  artifacts: dict[str, Any] = {}
  jobs = [(table, name, fs) for table in TABLES for name in eval_cfg[table]
          for fs in feature_sets]
  inputs = dict(data=data, eval_cfg=eval_cfg, subsets=subsets, replicates=replicates,
                swaps={(t, n): _robustness_swaps(eval_cfg[t][n], stores, eval_cfg)
                       for t, n, _ in jobs})
  workers = min(int(eval_cfg.probe.get("workers", 0)) or os.cpu_count() or 1, len(jobs))
  bar = tqdm(total=len(jobs), desc="probes", unit="probe", leave=False, disable=not progress)
  done: dict[tuple[str, str, str], Any] = {}
  if workers <= 1:
    _set_job_inputs(inputs)
    try:
      for job in jobs:
        bar.set_postfix_str(" ".join(job[1:]))
        done[job] = _score_job(job)
        bar.update()
    finally:
      _JOB_INPUTS.clear()
  else:
    with concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"),
        initializer=_set_job_inputs, initargs=(inputs,)) as pool:
      futures = {pool.submit(_score_job, job): job for job in jobs}
      for future in concurrent.futures.as_completed(futures):
        done[futures[future]] = future.result()
        bar.set_postfix_str(" ".join(futures[future][1:]))
        bar.update()
  bar.close()
  for (table, name, fs) in jobs:  # the jobs' order
    r, art = done[table, name, fs]
    results[table].setdefault(name, {})[fs] = r
    artifacts.update(art)
  return results, artifacts


# ---------------------------------------------------------------------------- the report


def _interval(task: ml_collections.ConfigDict, model: Mapping[str, Any],
              baseline: Mapping[str, Any], sessions: int) -> Optional[tuple[float, float]]:
  """The bootstrap interval of model minus baseline (positive: the model is better), None
  without replicates or with fewer than two test sessions (no interval to speak of)."""
  if sessions < 2 or "replicates" not in model or "replicates" not in baseline:
    return None
  return bootstrap.interval(bootstrap.signed_difference(
      model["replicates"], baseline["replicates"], task.higher_is_better))


def _entry(task: ml_collections.ConfigDict, per_fs: Mapping[str, Any],
           feature_sets: tuple[str, ...], sessions: int = 0, enabled: tuple[str, ...] = (),
           coverage: Optional[Mapping[str, Any]] = None, min_coverage: float = 0.0
           ) -> dict[str, Any]:
  """One task's row of report.json (report.py's docstring)."""
  out: dict[str, Any] = {"metric": task.metric, "higher_is_better": task.higher_is_better,
                         "evaluator": task.evaluator, "target": task.target,
                         "inputs": list(task.inputs)}
  for fs in feature_sets:
    out[fs] = _primary(per_fs[fs]["test"], task.metric)
  if all(fs in per_fs for fs in ("model",) + BASELINES):
    m, sign = out["model"], 1 if task.higher_is_better else -1
    out["beats_both"] = bool(np.isfinite(m) and all(
        np.isfinite(out[b]) and sign * (m - out[b]) > 0 for b in BASELINES))
  if all(b in per_fs for b in BASELINES):
    for fs in MODELS:
      if fs not in per_fs:
        continue
      block: dict[str, Any] = {f"ci95_vs_{b}": _interval(task, per_fs[fs], per_fs[b], sessions)
                               for b in BASELINES}
      block["wins"] = all(bootstrap.significant(block[f"ci95_vs_{b}"]) for b in BASELINES)
      if fs == "model":
        out.update(block)
      else:
        out["ema"] = block
  out["supervised_by"] = [o for o in task.get("supervised_by", ()) if o in enabled]
  if coverage is not None:
    out["label_coverage"] = dict(coverage)
    out["low_label_coverage"] = bool(coverage["labels"] < min_coverage)  # NaN: not low
  out["probe"] = {fs: per_fs[fs]["probe"] for fs in feature_sets}
  out["details"] = {fs: per_fs[fs]["test"] for fs in feature_sets}
  return out


def _robustness(eval_cfg, results, feature_sets) -> dict[str, Any]:
  out: dict[str, Any] = {}
  for table in TABLES:
    for name, per_fs in results[table].items():
      metric = eval_cfg[table][name].metric
      for fs in feature_sets:
        full = _primary(per_fs[fs]["test"], metric)
        for label, r in per_fs[fs]["robustness"].items():
          s = _primary(r, metric)
          out.setdefault(name, {"metric": metric,
                                "higher_is_better": eval_cfg[table][name].higher_is_better}
                         ).setdefault(fs, {})[label] = {"score": s, "change": s - full}
  return out


def _generalization(eval_cfg, results, subsets, feature_sets) -> dict[str, Any]:
  out: dict[str, Any] = {"heldout_sessions": "the test split (every number of `tasks`)"}
  for s, rows in subsets.items():
    if isinstance(rows, str):
      out[s] = protocol.unavailable(rows)
      continue
    entry: dict[str, Any] = {"windows": int(np.sum(rows))}
    for name, per_fs in results["tasks"].items():
      metric = eval_cfg.tasks[name].metric
      entry[name] = {fs: _primary(per_fs[fs]["subsets"][s], metric) for fs in feature_sets}
    out[s] = entry
  return out


def _protocol(run: Run, stores, eval_cfg, results, subsets, feature_sets, fps
              ) -> dict[str, Any]:
  enabled = objectives_base.enabled(run.config)
  test = stores["score"]
  p = eval_cfg.protocol
  out: dict[str, Any] = {}
  no = lambda name: protocol.unavailable(protocol.NOT_TRAINED.format(name))  # noqa: E731
  out["structured_generation"] = (protocol.structured_generation(test, run.corpus.labels)
                                  if "captioning" in enabled and
                                  test.has("predictions/captioning/tokens")
                                  else no("captioning"))
  out["text_window_retrieval"] = (protocol.text_window_retrieval(test, tuple(p.retrieval_ks))
                                  if "contrastive" in enabled and
                                  test.has("predictions/contrastive/text")
                                  else no("contrastive"))
  out["forecasting"] = (protocol.forecasting(test, pipeline.Normaliser(run.corpus.stats), fps,
                                             tuple(p.ego_horizons_s), int(p.hand_horizon))
                        if "forecasting" in enabled else no("forecasting"))
  out["reconstruction"] = (protocol.reconstruction(test, dict(p.reconstruct))
                           if "masked_modeling" in enabled else no("masked_modeling"))
  out["heads"] = protocol.heads(test)
  out["robustness"] = _robustness(eval_cfg, results, feature_sets)
  out["generalization"] = _generalization(eval_cfg, results, subsets, feature_sets)
  return out


def _load_scores(path: pathlib.Path, key: str) -> Optional[dict]:
  """The cached baseline results (scores.json, and the bootstrap replicates beside it in
  replicates.npz), or None when either is absent or of another fingerprint."""
  reps_path = path.with_name(REPLICATES_FILE)
  if not path.is_file() or not reps_path.is_file():
    return None
  saved = json.loads(path.read_text())
  if saved.get("fingerprint") != key:
    return None
  results = saved["results"]
  with np.load(reps_path, allow_pickle=False) as z:
    if str(z["__fingerprint__"]) != key:
      return None
    for k in z.files:
      if k != "__fingerprint__":
        table, name, fs = k.split("/")
        results[table][name][fs]["replicates"] = z[k]
  return results


def _save_scores(path: pathlib.Path, key: str, results: Mapping[str, Any]) -> None:
  """scores.json and replicates.npz (see _load_scores), each written atomically."""
  reps = {}
  saved: dict[str, Any] = {}
  for table, per_task in results.items():
    for name, per_fs in per_task.items():
      for fs, r in per_fs.items():
        r = dict(r)
        if "replicates" in r:
          reps[f"{table}/{name}/{fs}"] = np.asarray(r.pop("replicates"))
        saved.setdefault(table, {}).setdefault(name, {})[fs] = r
  tmp = path.with_name(f".tmp-{REPLICATES_FILE}-{os.getpid()}")
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(tmp, "wb") as f:
    np.savez(f, __fingerprint__=np.asarray(key), **reps)
  os.replace(tmp, path.with_name(REPLICATES_FILE))
  report_lib.write_text_atomic(path, json.dumps({"fingerprint": key,
                                                 "results": _json_safe(saved)}))


def _json_safe(x: Any) -> Any:
  if isinstance(x, dict):
    return {str(k): _json_safe(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_json_safe(v) for v in x]
  if isinstance(x, np.ndarray):
    return _json_safe(x.tolist())
  if isinstance(x, (np.floating, float)):
    return float(x) if np.isfinite(x) else None
  if isinstance(x, np.integer):
    return int(x)
  if isinstance(x, np.bool_):
    return bool(x)
  return x


def evaluate(run: Run, step: int, eval_cfg: ml_collections.ConfigDict, out_dir: pathlib.Path,
             params: Optional[PyTree] = None, progress: bool = True,
             ema: Optional[PyTree] = None) -> tuple[dict[str, Any], dict[str, Any]]:
  """The report of checkpoint `step` (a JSON-able dict) and the figures' artifacts.

  params, ema: the Pretrainer's parameters and the EMA trunk (default: restored from the
  checkpoint)."""
  t_start = time.perf_counter()
  timings: dict[str, float] = {}
  sessions = check_sessions(run.corpus, dict(eval_cfg.splits))
  feature_sets = tuple(eval_cfg.feature_sets)
  if params is None and any(fs in feature_sets for fs in MODELS):
    t0 = time.perf_counter()
    params, ema = checkpoints.restore(run.config, run.workdir, step, run.mesh)
    timings["restore_s"] = time.perf_counter() - t0
  if "model_ema" in feature_sets and ema is None:
    raise ValueError("feature set 'model_ema' needs the EMA trunk: pass ema= with params=, "
                     "or leave both to the checkpoint")
  stores, info = _stores(run, step, params, ema, eval_cfg, out_dir, progress, timings)
  data_cfg = info.pop("_data_cfg")
  base_key = info.pop("_fingerprint")
  fps = xperience.FPS / (int(data_cfg.frame_stride) * run.corpus.options.frame_stride)
  data = evaluators.Data(stores["fit"], stores["select"], stores["score"],
                         probes.Grid.from_config(eval_cfg.probe), int(eval_cfg.seed),
                         int(data_cfg.frames), int(data_cfg.window_stride), fps,
                         int(eval_cfg.probe.max_train), int(data_cfg.frame_stride))
  subsets = _subsets(run.corpus, stores["score"])
  test_sessions = session_ids(run.corpus, stores["score"])
  n_sessions = len(np.unique(test_sessions))
  replicates = bootstrap.session_weights(test_sessions, int(eval_cfg.bootstrap.replicates),
                                         int(eval_cfg.bootstrap.seed))
  t0 = time.perf_counter()
  scores_path = run.eval_dir / "baselines" / "scores.json"
  baselines = tuple(fs for fs in feature_sets if fs not in MODELS)
  scores_key = embed.fingerprint(base_key, SCORES_VERSION)
  cached = _load_scores(scores_path, scores_key)
  todo = tuple(fs for fs in feature_sets if fs in MODELS or cached is None)
  with probes.blas_limit():
    results, artifacts = score_tasks(data, eval_cfg, todo, stores, subsets, replicates,
                                     progress)
  if cached is not None:
    for table in TABLES:
      for name, per_fs in cached[table].items():
        results[table].setdefault(name, {}).update({fs: per_fs[fs] for fs in baselines})
  elif baselines and jax.process_index() == 0:
    _save_scores(scores_path, scores_key,
                 {t: {n: {fs: r for fs, r in per.items() if fs in baselines}
                      for n, per in results[t].items()} for t in TABLES})
  timings["probes_s"] = time.perf_counter() - t0
  report: dict[str, Any] = {
      "step": int(step), "run": str(run.workdir), "corpus": str(run.corpus.root),
      "feature_sets": list(feature_sets),
      "splits": {role: {**sessions[role], **info[role]} for role in sessions},
  }
  enabled = objectives_base.enabled(run.config)
  min_coverage = float(eval_cfg.min_label_coverage)
  for table in TABLES:
    report[table] = {}
    for name, task in eval_cfg[table].items():
      coverage = evaluators.get(task.evaluator).coverage(task, data)
      report[table][name] = _entry(task, results[table][name], feature_sets, n_sessions,
                                   enabled, coverage, min_coverage)
  report["summary"] = _summary(report, n_sessions, eval_cfg)
  if "model" in feature_sets:
    report["protocol"] = _protocol(run, stores, eval_cfg, results, subsets, feature_sets, fps)
  if "model" in feature_sets and "world_model" in eval_cfg:
    t0 = time.perf_counter()
    with probes.blas_limit():
      report["world_model"], artifacts["future_examples"] = world_model.evaluate(
          eval_cfg.world_model, data, feature_sets, replicates, n_sessions)
    timings["world_model_s"] = time.perf_counter() - t0
  timings["total_s"] = time.perf_counter() - t_start
  report["timings"] = timings
  artifacts["stores"] = stores
  artifacts["robustness"] = report.get("protocol", {}).get("robustness", {})
  return _json_safe(report), artifacts


def _summary(report: Mapping[str, Any], sessions: int, eval_cfg: ml_collections.ConfigDict
             ) -> dict[str, Any]:
  """The counts: significant wins of the online trunk (the headline) and of its EMA over
  the 12 tasks (and the extensions), point-estimate leads, the bootstrap, flagged tasks."""
  tasks, ext = report["tasks"], report["extensions"]
  wins = [n for n, e in tasks.items() if e.get("wins")]
  ema_wins = [n for n, e in tasks.items() if e.get("ema", {}).get("wins")]
  beats = [n for n, e in tasks.items() if e.get("beats_both")]
  return {
      "significant_wins": len(wins), "which_wins": wins,
      "ema_significant_wins": len(ema_wins), "ema_which_wins": ema_wins,
      "extension_significant_wins": sum(bool(e.get("wins")) for e in ext.values()),
      "extensions": len(ext), "tasks": len(tasks),
      # point estimates ahead of both baselines, whatever the noise
      "tasks_model_beats_both": len(beats), "which": beats,
      "test_sessions": sessions,
      "bootstrap": {"unit": "test session", "replicates": int(eval_cfg.bootstrap.replicates),
                    "seed": int(eval_cfg.bootstrap.seed), "level": bootstrap.LEVEL},
      "intervals": (None if sessions >= 2 else
                    f"{sessions} test session; a bootstrap over sessions needs at least 2, "
                    "so no task counts as a significant win"),
      "low_label_coverage": [n for t in (tasks, ext) for n, e in t.items()
                             if e.get("low_label_coverage")],
  }


def write(run: Run, report: dict[str, Any], artifacts: Mapping[str, Any],
          eval_cfg: ml_collections.ConfigDict, out_dir: pathlib.Path) -> pathlib.Path:
  """The figures (when configured), then report.md and report.json (process 0 only)."""
  if jax.process_index() != 0:
    return out_dir / report_lib.REPORT_JSON
  names = []
  if eval_cfg.figures:
    test = artifacts["stores"]["score"]
    if "confusion" in artifacts:
      names.append(figures.confusion(artifacts["confusion"]["true"],
                                     artifacts["confusion"]["pred"], run.corpus.labels.actions,
                                     out_dir))
    data_cfg = embed.data_config(run.config.data, eval_cfg, jax.device_count())
    names.append(figures.retrieval_examples(artifacts.get("grounding", []), test, run.corpus,
                                            data_cfg, eval_cfg.splits.score, out_dir))
    predictions = {}
    if test.has("predictions/forecasting/ego/translation"):
      predictions["forecasting head"] = test.arrays["predictions/forecasting/ego/translation"]
    if "ego_probe" in artifacts:
      predictions["model probe"] = artifacts["ego_probe"]
    names.append(figures.forecast_trajectories(
        test.target("ego_future"), test.target("ego_future_valid").astype(bool), predictions,
        out_dir))
    names.append(figures.robustness(artifacts.get("robustness", {}), out_dir))
    names.append(figures.future_retrieval(artifacts.get("future_examples", []), test,
                                          run.corpus, data_cfg, eval_cfg.splits.score,
                                          out_dir))
  report["figures"] = [n for n in names if n]
  return report_lib.write(out_dir, report)
