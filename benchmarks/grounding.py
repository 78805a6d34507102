"""Why caption_grounding and modality_reconstruction lose: diagnostics on the eval stores.

    python benchmarks/grounding.py --workdir runs/local [--step STEP] [--json OUT.json]

Reads what `launch/eval.py` cached (WORKDIR/eval/baselines/<split>.npz and
WORKDIR/eval/<step>/embeddings/<split>.npz), fits nothing new beyond linear probes of the
same family and grid as the suite, and prints for every feature set:

1. caption_grounding as the suite scores it (the Retrieval evaluator, unchanged), and the
   same retrieval from parts of the feature (each readout group of the model embedding);
2. the caption's parts probed one at a time (logistic regression, class-balanced, C on val,
   macro-F1 on test): the hand phrase ("the left hand", "both hands", "the wearer ... out
   of view", ...), the verb, and the object phrase; which part a feature set cannot read is
   where its grounding loses;
3. modality_reconstruction (the Regress evaluator, unchanged) with its R^2 per target
   column on test, and the columns whose test variance is a small fraction of the train
   variance (a uniformly averaged R^2 is dominated by them).

Nothing here changes a score: it only explains them.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from configs import eval as eval_config  # noqa: E402
from xefm_jax.data import text as text_lib  # noqa: E402
from xefm_jax.eval import embed  # noqa: E402
from xefm_jax.eval import metrics  # noqa: E402
from xefm_jax.eval import probes  # noqa: E402
from xefm_jax.eval import evaluators  # noqa: E402
from xefm_jax.eval.evaluators import regress  # noqa: E402

FEATURE_SETS = ("model", "model_ema", "handcrafted", "random_init")
SPLITS = {"train": "train", "val": "val", "test": "test"}


def load_stores(workdir: pathlib.Path, step: str | None) -> tuple[dict[str, embed.Store], str]:
  """{split: baselines merged with the checkpoint's store}, and the step read."""
  steps = sorted((p.name for p in (workdir / "eval").iterdir()
                  if p.is_dir() and p.name.isdigit()), key=int)
  step = step or steps[-1]
  out = {}
  for split in SPLITS:
    base = embed.Store.load(workdir / "eval" / "baselines" / f"{split}.npz")
    model = embed.Store.load(workdir / "eval" / step / "embeddings" / f"{split}.npz")
    out[split] = base.merge(model)
  return out, step


def vocabulary(workdir: pathlib.Path) -> text_lib.Vocab:
  manifest = json.loads((workdir / "data" / "shards" / "manifest.json").read_text())
  return text_lib.Vocab(manifest["vocabularies"]["word"])


_SIDE = (("left", r"^the left hand is "), ("right", r"^the right hand is "),
         ("both", r"^both hands are "), ("out_of_view", r"^the wearer is .* out of view"),
         ("none_visible", r"^the wearer is .*no hands are in view"),
         ("wearer", r"^the wearer is "))


def caption_parts(sentence: str) -> dict[str, str]:
  """The generator's sentence (data_pipelines/synth/language.py) split into its parts."""
  s = sentence.lower().rstrip(". ")
  side = next((name for name, pat in _SIDE if re.search(pat, s)), "other")
  m = re.search(r"\b(\w+ing)\b(.*)$", s)
  verb = m.group(1) if m else ""
  rest = (m.group(2) if m else s)
  rest = re.sub(r"( with the hands out of view|\s*; no hands are in view)$", "", rest).strip()
  return {"side": side, "verb": verb, "object": rest}


def probe_part(x: dict[str, np.ndarray], y: dict[str, np.ndarray], grid: probes.Grid
               ) -> dict[str, float]:
  score = lambda t, p: metrics.f1_scores(t, p)["macro_f1"]  # noqa: E731
  p = probes.fit("classify", x["train"], y["train"], x["val"], y["val"], score, True, grid,
                 balanced=True)
  pred = p.predict(x["test"])
  return {"macro_f1": float(score(y["test"], pred)),
          "accuracy": float(np.mean(pred == y["test"])), "C": p.params.get("C")}


def readout_slices(workdir: pathlib.Path, step: str) -> dict[str, slice]:
  """Columns of each readout group in the model embedding (xefm.window_embedding: the
  groups' means in sorted name order, each the model width)."""
  from xefm_jax.eval import checkpoints  # noqa: PLC0415  (jax and orbax: only here)
  cfg = checkpoints.run_config(workdir, int(step))
  width = int(cfg.model.width)
  return {n: slice(i * width, (i + 1) * width)
          for i, n in enumerate(sorted(cfg.model.fusion.readouts))}


def effective_rank(x: np.ndarray) -> float:
  """exp(entropy of the principal components' variance shares) of the rows of x."""
  s = np.linalg.svd(x - x.mean(0), compute_uv=False) ** 2
  p = s / s.sum()
  return float(np.exp(-(p * np.log(p + 1e-30)).sum()))


def whitener(x_train: np.ndarray, floor: float = 1e-6):
  """x -> its train principal components scaled to unit variance (components whose
  variance is below `floor` x the largest are left out)."""
  mean = x_train.mean(0)
  _, s, vt = np.linalg.svd(x_train - mean, full_matrices=False)
  var = s ** 2 / len(x_train)
  keep = var > floor * var.max()
  proj = vt[keep].T / np.sqrt(var[keep])
  return lambda x: (x - mean) @ proj


def main(argv=None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--workdir", default="runs/local")
  ap.add_argument("--step", default=None)
  ap.add_argument("--json", default=None)
  args = ap.parse_args(argv)
  workdir = pathlib.Path(args.workdir)
  stores, step = load_stores(workdir, args.step)
  cfg = eval_config.get_config()
  grid = probes.Grid.from_config(cfg.probe)
  data = evaluators.Data(stores["train"], stores["val"], stores["test"], grid, int(cfg.seed))
  sets = [fs for fs in FEATURE_SETS if stores["test"].has(f"features/{fs}/full")]
  out: dict = {"step": int(step)}

  # 1. caption_grounding, as scored, and from parts of the model feature
  task = cfg.tasks.caption_grounding
  ret = evaluators.get("retrieval")
  out["caption_grounding"] = {}
  with probes.blas_limit():
    for fs in sets:
      fitted = ret.fit(task, data, fs)
      out["caption_grounding"][fs] = {k: round(v, 4) for k, v in
                                      ret.score(task, data, fs, fitted).items()
                                      if isinstance(v, float)}
      out["caption_grounding"][fs]["alpha"] = fitted.probe.params["alpha"]
  print("caption_grounding (as scored):")
  for fs, r in out["caption_grounding"].items():
    print(f"  {fs:12s} mrr {r['mrr']:.3f}  r@1 {r['r@1']:.3f}  r@5 {r['r@5']:.3f}  "
          f"alpha {r['alpha']:g}  chance {r['chance_mrr']:.3f}")
  for fs in sets:
    d = stores["test"].features(fs, "full").shape[1]
    print(f"  dims {fs}: {d}")
  for fs in ("model", "random_init"):
    for name, cols in readout_slices(workdir, step).items():
      key = f"{fs}[{name}]"
      for s in SPLITS:
        stores[s].arrays[f"features/{key}/full"] = stores[s].features(fs, "full")[:, cols]
      with probes.blas_limit():
        fitted = ret.fit(task, data, key)
        r = ret.score(task, data, key, fitted)
      out["caption_grounding"][key] = {"mrr": r["mrr"], "alpha": fitted.probe.params["alpha"]}
      print(f"  {key:20s} mrr {r['mrr']:.3f}  alpha {fitted.probe.params['alpha']:g}")

  # 2. the caption's parts, probed one at a time
  vocab = vocabulary(workdir)
  ok = {s: stores[s].target("caption_valid").astype(bool) for s in SPLITS}
  parts = {s: [caption_parts(vocab.decode(ids)) for ids in stores[s].target("caption")[ok[s]]]
           for s in SPLITS}
  out["parts"] = {}
  print("caption parts (test windows with a caption), macro-F1 / accuracy of a balanced "
        "logistic probe:")
  for part in ("side", "verb", "object"):
    values = [p[part] for s in SPLITS for p in parts[s]]
    names = sorted(set(values))
    y = {s: np.array([names.index(p[part]) for p in parts[s]]) for s in SPLITS}
    test_counts = np.bincount(y["test"], minlength=len(names))
    print(f"  {part}: {len(names)} classes; test counts "
          + ", ".join(f"{names[i]}={test_counts[i]}" for i in np.argsort(-test_counts)[:8]))
    out["parts"][part] = {"classes": names, "test_counts": test_counts.tolist()}
    for fs in sets:
      x = {s: np.nan_to_num(stores[s].features(fs, "full")[ok[s]].astype(np.float64))
           for s in SPLITS}
      r = probe_part(x, y, grid)
      out["parts"][part][fs] = r
      print(f"    {fs:12s} macro-F1 {r['macro_f1']:.3f}  acc {r['accuracy']:.3f}  C {r['C']:g}")

  # 3. modality_reconstruction per column
  task = cfg.tasks.modality_reconstruction
  reg = evaluators.get("regress")
  y_tr, _, _ = regress.target(stores["train"], task.target)
  y_te, _, _ = regress.target(stores["test"], task.target)
  var_tr, var_te = y_tr.var(0), y_te.var(0)
  ratio = np.where(var_tr > 0, var_te / np.maximum(var_tr, 1e-30), np.nan)
  out["modality_reconstruction"] = {"columns": int(y_te.shape[1]),
                                    "test_over_train_variance": ratio.tolist()}
  print(f"modality_reconstruction: {y_te.shape[1]} target columns; test/train variance "
        f"ratio < 0.01 in {int(np.sum(ratio < 0.01))}, < 0.1 in {int(np.sum(ratio < 0.1))}, "
        f"test variance 0 in {int(np.sum(var_te == 0))}")
  with probes.blas_limit():
    for fs in sets:
      fitted = reg.fit(task, data, fs)
      pred = fitted.predict(np.nan_to_num(stores["test"].features(fs, "motion").astype(
          np.float64)))
      col = np.array([metrics.r2_score(y_te[:, j], pred[:, j]) for j in range(y_te.shape[1])])
      healthy = ratio >= 0.1
      out["modality_reconstruction"][fs] = {
          "r2": metrics.r2_score(y_te, pred), "r2_columns": col.tolist(),
          "r2_median_column": float(np.median(col)),
          "r2_columns_test_variance_ge_0.1_train": float(col[healthy].mean()),
          "alpha": fitted.probe.params["alpha"]}
      worst = np.argsort(col)[:3]
      print(f"  {fs:12s} r2 {metrics.r2_score(y_te, pred):8.3f}  median column "
            f"{np.median(col):6.3f}  columns with test var >= 0.1 train: "
            f"{col[healthy].mean():6.3f}  worst " + ", ".join(
                f"#{j} {col[j]:.1f} (var ratio {ratio[j]:.3g})" for j in worst))
  # 4. spectra, and both tasks on whitened features
  out["spectrum"] = {}
  print("effective rank on train (raw / per-column standardised):")
  for fs in sets:
    for v in ("full", "motion"):
      x = np.nan_to_num(stores["train"].features(fs, v).astype(np.float64))
      z = (x - x.mean(0)) / np.maximum(x.std(0), 1e-8)
      out["spectrum"][f"{fs}/{v}"] = [effective_rank(x), effective_rank(z), x.shape[1]]
      print(f"  {fs:12s} {v:7s} dims {x.shape[1]:4d}  {effective_rank(x):6.1f} / "
            f"{effective_rank(z):6.1f}")
  out["whitened"] = {}
  print("on train-PCA-whitened features (caption_grounding mrr, modality_reconstruction r2):")
  for fs in sets:
    for v in ("full", "motion"):
      w = whitener(np.nan_to_num(stores["train"].features(fs, v).astype(np.float64)))
      for s in SPLITS:
        stores[s].arrays[f"features/{fs}+white/{v}"] = w(
            np.nan_to_num(stores[s].features(fs, v).astype(np.float64)))
    key = f"{fs}+white"
    with probes.blas_limit():
      cg = cfg.tasks.caption_grounding
      mrr = ret.score(cg, data, key, ret.fit(cg, data, key))["mrr"]
      mr = cfg.tasks.modality_reconstruction
      r2 = reg.score(mr, data, key, reg.fit(mr, data, key))["r2"]
    out["whitened"][fs] = {"caption_grounding_mrr": mrr, "modality_reconstruction_r2": r2}
    print(f"  {fs:12s} mrr {mrr:.3f}  r2 {r2:.3f}")
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(out, indent=1, default=float))
  return out


if __name__ == "__main__":
  main()
