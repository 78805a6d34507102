"""The evaluation suite for one checkpoint: embed, probe, score, assemble the report.

    run = suite.open_run(workdir)
    report = suite.evaluate(run, step, eval_config, out_dir)   # report.py writes it

1. Windows: the run's window with 40 future frames at stride max(1, W // 4), per split
   (train: fit, val: select, test: score; by session, never mixed: `check_sessions`).
2. One pass per split (embed.py) computes every feature set and input variant a task needs
   (robustness variants on test only), plus the model heads' predictions on test. Baselines
   (hand-crafted, random init) do not depend on the checkpoint: they are cached once per run
   in DIR/eval/baselines/ (arrays and probe scores), the model's in DIR/eval/<step>/.
3. Every task of config.tasks and config.extensions, for every feature set: its evaluator
   fits a probe on train, picks it on val, scores test once; the same probe is then
   applied to the robustness variants and to the held-out activity / object subsets.
4. The protocol extras from the model's heads (protocol.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import time
from typing import Any, Mapping, Optional

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import Mesh

from xefm_jax.data import pipeline
from xefm_jax.data import shards as shards_lib
from xefm_jax.data import source as source_lib
from xefm_jax.data import xperience
from xefm_jax.eval import checkpoints
from xefm_jax.eval import embed
from xefm_jax.eval import encode
from xefm_jax.eval import evaluators
from xefm_jax.eval import figures
from xefm_jax.eval import probes
from xefm_jax.eval import protocol
from xefm_jax.eval import report as report_lib
from xefm_jax.eval import variants as variants_lib
from xefm_jax.eval.evaluators import base as evaluators_base
from xefm_jax.eval.evaluators import retrieval
from xefm_jax.model import xefm
from xefm_jax.objectives import base as objectives_base
from xefm_jax.parallel import mesh as mesh_lib

PyTree = Any
TABLES = ("tasks", "extensions")


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
    extra.update(variants_lib.robustness_variants(v, tuple(rob.drop), bool(rob.random_views)))
  if "with_language" in bases and "language" in names:
    extra["with_language"] = bases["with_language"]
  return used, extra


def _split_arrays(store: embed.Store, prefixes: tuple[str, ...]) -> embed.Store:
  return embed.Store({k: v for k, v in store.arrays.items()
                      if k.startswith("meta/") or k.startswith(prefixes)})


def _stores(run: Run, step: int, params: Optional[PyTree], eval_cfg: ml_collections.ConfigDict,
            out_dir: pathlib.Path, progress: bool, timings: dict[str, float]
            ) -> tuple[dict[str, embed.Store], dict[str, Any]]:
  """Each split's store (model + baselines), from the caches or computed."""
  config, corpus = run.config, run.corpus
  devices = jax.device_count()
  data_cfg = embed.data_config(config.data, eval_cfg, devices)
  names = xefm.modality_names(config.model)
  used, extra = _variants(eval_cfg, names)
  enabled = objectives_base.enabled(config)
  encoder = run.encoder
  feature_sets = tuple(eval_cfg.feature_sets)
  settings = {k: v for k, v in eval_cfg.to_dict().items() if k not in ("progress", "figures")}
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
    model = embed.Store.load(model_path, embed.fingerprint(key, step))
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
        model = _split_arrays(computed, ("features/model/", "predictions/", "recon/"))
        model.fingerprint = embed.fingerprint(key, step)
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


def score_tasks(data: evaluators.Data, eval_cfg: ml_collections.ConfigDict,
                feature_sets: tuple[str, ...], stores: Mapping[str, embed.Store],
                subsets: Mapping[str, Any], progress: bool = False
                ) -> tuple[dict[str, Any], dict[str, Any]]:
  """{table: {task: {feature set: result}}} and artifacts for the figures.

  result: {"test": metrics, "probe": how it was chosen, "robustness": {label: metrics},
  "subsets": {name: metrics}}.
  """
  results: dict[str, Any] = {t: {} for t in TABLES}
  artifacts: dict[str, Any] = {}
  for table in TABLES:
    for name, task in eval_cfg[table].items():
      ev = evaluators.get(task.evaluator)
      swaps = _robustness_swaps(task, stores, eval_cfg)
      for fs in feature_sets:
        t0 = time.perf_counter()
        fitted = ev.fit(task, data, fs)
        r: dict[str, Any] = {"test": ev.score(task, data, fs, fitted),
                             "probe": ev.describe(fitted)}
        r["robustness"] = {label: ev.score(task, data, fs, fitted, swap=swap)
                           for label, swap in swaps.items()
                           if all(data.test.has(f"features/{fs}/{v}") for v in swap.values())}
        if table == "tasks":
          r["subsets"] = {s: ev.score(task, data, fs, fitted, rows=rows)
                          for s, rows in subsets.items() if not isinstance(rows, str)}
        r["seconds"] = time.perf_counter() - t0
        results[table].setdefault(name, {})[fs] = r
        if progress:
          logging.info("%s %s: %s %.4g (%.1f s)", name, fs, task.metric,
                       _primary(r["test"], task.metric), r["seconds"])
        if fs == "model" and name == "timeline_action":
          y = data.test.target(task.target).astype(int)
          ok = y >= 0
          pred = fitted.predict(evaluators_base.features(data.test, fs, task.inputs[0])[ok])
          artifacts["confusion"] = {"true": y[ok], "pred": np.asarray(pred)}
        if fs == "model" and name == "caption_grounding":
          artifacts["grounding"] = retrieval.grounding_examples(task, data, fs, fitted)
        if fs == "model" and name == "ego_motion_forecast":
          x = evaluators_base.features(data.test, fs, task.inputs[0])
          artifacts["ego_probe"] = fitted.predict(x).reshape(
              data.test.target(task.target).shape)
  return results, artifacts


# ---------------------------------------------------------------------------- the report


def _entry(task: ml_collections.ConfigDict, per_fs: Mapping[str, Any],
           feature_sets: tuple[str, ...]) -> dict[str, Any]:
  """One task's row of report.json."""
  out: dict[str, Any] = {"metric": task.metric, "higher_is_better": task.higher_is_better,
                         "evaluator": task.evaluator, "target": task.target,
                         "inputs": list(task.inputs)}
  for fs in feature_sets:
    out[fs] = _primary(per_fs[fs]["test"], task.metric)
  if all(fs in per_fs for fs in ("model", "handcrafted", "random_init")):
    m, sign = out["model"], 1 if task.higher_is_better else -1
    out["beats_both"] = bool(np.isfinite(m) and all(
        np.isfinite(out[b]) and sign * (m - out[b]) > 0 for b in ("handcrafted", "random_init")))
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
  if not path.is_file():
    return None
  saved = json.loads(path.read_text())
  return saved["results"] if saved.get("fingerprint") == key else None


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
             params: Optional[PyTree] = None, progress: bool = True
             ) -> tuple[dict[str, Any], dict[str, Any]]:
  """The report of checkpoint `step` (a JSON-able dict) and the figures' artifacts."""
  t_start = time.perf_counter()
  timings: dict[str, float] = {}
  sessions = check_sessions(run.corpus, dict(eval_cfg.splits))
  feature_sets = tuple(eval_cfg.feature_sets)
  if params is None and "model" in feature_sets:
    t0 = time.perf_counter()
    params = checkpoints.restore_params(run.config, run.workdir, step, run.mesh)
    timings["restore_s"] = time.perf_counter() - t0
  stores, info = _stores(run, step, params, eval_cfg, out_dir, progress, timings)
  data_cfg = info.pop("_data_cfg")
  base_key = info.pop("_fingerprint")
  fps = xperience.FPS / (int(data_cfg.frame_stride) * run.corpus.options.frame_stride)
  data = evaluators.Data(stores["fit"], stores["select"], stores["score"],
                         probes.Grid.from_config(eval_cfg.probe), int(eval_cfg.seed),
                         int(data_cfg.frames), int(data_cfg.window_stride), fps,
                         int(eval_cfg.probe.max_train))
  subsets = _subsets(run.corpus, stores["score"])
  t0 = time.perf_counter()
  scores_path = run.eval_dir / "baselines" / "scores.json"
  baselines = tuple(fs for fs in feature_sets if fs != "model")
  cached = _load_scores(scores_path, base_key)
  todo = tuple(fs for fs in feature_sets if fs == "model" or cached is None)
  with probes.blas_limit():
    results, artifacts = score_tasks(data, eval_cfg, todo, stores, subsets, progress)
  if cached is not None:
    for table in TABLES:
      for name, per_fs in cached[table].items():
        results[table].setdefault(name, {}).update({fs: per_fs[fs] for fs in baselines})
  elif baselines and jax.process_index() == 0:
    saved = {t: {n: {fs: r for fs, r in per.items() if fs in baselines}
                 for n, per in results[t].items()} for t in TABLES}
    report_lib.write_text_atomic(scores_path, json.dumps({"fingerprint": base_key,
                                                          "results": _json_safe(saved)}))
  timings["probes_s"] = time.perf_counter() - t0
  report: dict[str, Any] = {
      "step": int(step), "run": str(run.workdir), "corpus": str(run.corpus.root),
      "feature_sets": list(feature_sets),
      "splits": {role: {**sessions[role], **info[role]} for role in sessions},
  }
  for table in TABLES:
    report[table] = {name: _entry(eval_cfg[table][name], results[table][name], feature_sets)
                     for name in eval_cfg[table]}
  beats = [n for n, e in report["tasks"].items() if e.get("beats_both")]
  report["summary"] = {"tasks_model_beats_both": len(beats), "tasks": len(report["tasks"]),
                       "which": beats}
  if "model" in feature_sets:
    report["protocol"] = _protocol(run, stores, eval_cfg, results, subsets, feature_sets, fps)
  timings["total_s"] = time.perf_counter() - t_start
  report["timings"] = timings
  artifacts["stores"] = stores
  artifacts["robustness"] = report.get("protocol", {}).get("robustness", {})
  return _json_safe(report), artifacts


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
  report["figures"] = [n for n in names if n]
  return report_lib.write(out_dir, report)
