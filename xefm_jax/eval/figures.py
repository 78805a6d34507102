"""The report's pictures (PNG, matplotlib's Agg backend, no display needed).

  confusion_timeline_action.png   the model probe's confusion matrix on timeline_action
  retrieval_examples.png          caption grounding: each query sentence -> its top windows
                                  (last context frame of one view; green = relevant)
  forecast_trajectories.png       future ego positions: truth, the forecasting head, the
                                  model probe (top view of the body frame of now)
  robustness.png                  mean change of the test score per dropped input, per
                                  feature set (signed so that up is better)
  future_retrieval.png            world model: per query window its last frame, its true
                                  future's and the top retrieved futures' (the future_state
                                  head's latent; green = the true future)
Each function returns the file name it wrote (or None when it had nothing to draw).
Figures are drawn with matplotlib's object API (no pyplot), so drawing them never changes
the backend of a notebook that imports this module.
"""

from __future__ import annotations

import os
import pathlib
import textwrap
from typing import Any, Mapping, Optional, Sequence

import numpy as np
from matplotlib.figure import Figure

from xefm_jax.data import source as source_lib
from xefm_jax.data import text as text_lib

DPI = 110


def _save(fig, out_dir: pathlib.Path, name: str) -> str:
  out_dir.mkdir(parents=True, exist_ok=True)
  tmp = out_dir / f".tmp-{os.getpid()}-{name}"
  fig.savefig(tmp, dpi=DPI, bbox_inches="tight", format="png")
  os.replace(tmp, out_dir / name)
  return name


def confusion(true: np.ndarray, pred: np.ndarray, names: Sequence[str],
              out_dir: pathlib.Path) -> Optional[str]:
  if not len(true):
    return None
  classes = np.union1d(true, pred)
  index = {c: i for i, c in enumerate(classes)}
  m = np.zeros((len(classes), len(classes)))
  for t, p in zip(true, pred):
    m[index[t], index[p]] += 1
  m = m / np.maximum(m.sum(1, keepdims=True), 1)
  labels = [names[c] if 0 <= c < len(names) else str(c) for c in classes]
  size = 2.5 + 0.35 * len(classes)
  fig = Figure(figsize=(size, size))
  ax = fig.subplots()
  ax.imshow(m, cmap="Blues", vmin=0, vmax=1)
  ax.set_xticks(range(len(classes)), labels, rotation=90, fontsize=7)
  ax.set_yticks(range(len(classes)), labels, fontsize=7)
  ax.set_xlabel("predicted")
  ax.set_ylabel("true")
  ax.set_title("timeline_action (model probe, test; rows normalised)")
  return _save(fig, out_dir, "confusion_timeline_action.png")


def _windows(corpus: source_lib.Corpus, data_cfg: Any, split: str
             ) -> tuple[source_lib.WindowSource, dict[tuple[int, int], int]]:
  """The split's windows at the eval's base stride and each (episode, start)'s index."""
  src = source_lib.WindowSource(corpus, split, corpus.window_spec(data_cfg),
                                int(data_cfg.window_stride))
  return src, {(int(e), int(s)): i for i, (e, s) in enumerate(zip(src.episode_ids,
                                                                   src.starts))}


def _frame(src: source_lib.WindowSource, row_of: Mapping[tuple[int, int], int], episode: int,
           start: int, view: str) -> Optional[np.ndarray]:
  """The window's last context frame from `view`, or from the first view present then."""
  i = row_of.get((episode, start))
  if i is None:
    return None
  window, now = src[i], src.spec.frames - 1
  views = [view] + [v for v in src.spec.views if v != view]
  present = [v for v in views if window["video_valid"][now, list(src.spec.views).index(v)]]
  return window[f"video/{(present or views)[0]}"][now]


def _window_cell(ax: Any, src: source_lib.WindowSource, row_of: Mapping[tuple[int, int], int],
                 store: Any, row: int, view: str, ok: Optional[bool], prefix: str = "") -> None:
  """One retrieved window in a grid: its last frame, a green (ok) or red (not) frame around
  it where `ok` is given, and its episode and start below."""
  episode, start = int(store.arrays["meta/episode"][row]), int(store.arrays["meta/start"][row])
  frame = _frame(src, row_of, episode, start, view)
  if frame is not None:
    ax.imshow(frame)
  if ok is not None:
    for spine in ax.spines.values():
      spine.set_color("green" if ok else "red")
      spine.set_linewidth(3)
  ax.set_xticks([])
  ax.set_yticks([])
  ax.set_xlabel(f"{prefix}ep {episode} @{start}", fontsize=6)


def retrieval_examples(examples: Sequence[Mapping[str, Any]], store: Any,
                       corpus: source_lib.Corpus, data_cfg: Any, split: str,
                       out_dir: pathlib.Path, view: str = "stereo_left") -> Optional[str]:
  if not examples:
    return None
  src, row_of = _windows(corpus, data_cfg, split)
  vocab = text_lib.Vocab(corpus.manifest["vocabularies"]["word"])
  k = max(len(e["top_rows"]) for e in examples)
  fig = Figure(figsize=(2.2 * k, 2.6 * len(examples)))
  axes = fig.subplots(len(examples), k, squeeze=False)
  for r, ex in enumerate(examples):
    sentence = vocab.decode(store.target("caption")[ex["query_row"]][1:])
    axes[r, 0].set_title("\n".join(textwrap.wrap(sentence, 40)[:3]), fontsize=7, loc="left")
    for c, (row, ok) in enumerate(zip(ex["top_rows"], ex["relevant"])):
      _window_cell(axes[r, c], src, row_of, store, row, view, ok, f"#{c + 1} ")
  fig.suptitle("caption grounding (model): sentence -> top windows (green: relevant)",
               fontsize=9)
  return _save(fig, out_dir, "retrieval_examples.png")


def future_retrieval(examples: Sequence[Mapping[str, Any]], store: Any,
                     corpus: source_lib.Corpus, data_cfg: Any, split: str,
                     out_dir: pathlib.Path, view: str = "stereo_left") -> Optional[str]:
  """examples: world_model.evaluate's (query_row, future_row, top_rows, rank) per query."""
  if not examples:
    return None
  src, row_of = _windows(corpus, data_cfg, split)
  k = max(len(e["top_rows"]) for e in examples)
  fig = Figure(figsize=(2.0 * (k + 2), 2.2 * len(examples)))
  axes = fig.subplots(len(examples), k + 2, squeeze=False)
  for r, ex in enumerate(examples):
    cells = [("now", ex["query_row"], None), (f"true future (rank {ex['rank']})",
                                              ex["future_row"], True)]
    cells += [(f"#{c + 1}", row, row == ex["future_row"]) for c, row in enumerate(ex["top_rows"])]
    for ax, (title, row, ok) in zip(axes[r], cells):
      _window_cell(ax, src, row_of, store, row, view, ok)
      ax.set_title(title, fontsize=7)
  fig.suptitle("world model: the future_state head's predicted latent -> retrieved future "
               "windows (last frame; green: the true future)", fontsize=9)
  return _save(fig, out_dir, "future_retrieval.png")


def forecast_trajectories(truth: np.ndarray, valid: np.ndarray,
                          predictions: Mapping[str, np.ndarray], out_dir: pathlib.Path,
                          count: int = 4) -> Optional[str]:
  """truth (N, F, 3), valid (N, F); predictions {name: (N, K, 3)} in the same frame."""
  if not len(truth):
    return None
  moving = np.linalg.norm(truth[:, -1], axis=-1) * valid[:, -1]
  rows = np.argsort(-moving)[:count]
  fig = Figure(figsize=(3 * len(rows), 3))
  axes = fig.subplots(1, len(rows), squeeze=False)
  for ax, i in zip(axes[0], rows):
    t = truth[i][valid[i]]
    ax.plot(t[:, 0], t[:, 1], "k.-", label="truth", markersize=3)
    for (name, p), style in zip(predictions.items(), ("C0.-", "C1.-", "C2.-")):
      ax.plot(p[i, :, 0], p[i, :, 1], style, label=name, markersize=3)
    ax.plot([0], [0], "ko")
    ax.set_aspect("equal", "datalim")
    ax.set_xlabel("x (m, body frame of now)")
  axes[0, 0].set_ylabel("y (m)")
  axes[0, 0].legend(fontsize=7)
  fig.suptitle("future ego positions over the next 2 s (test windows that move most)",
               fontsize=9)
  return _save(fig, out_dir, "forecast_trajectories.png")


def robustness(rob: Mapping[str, Any], out_dir: pathlib.Path) -> Optional[str]:
  """Mean over tasks of the signed change (up = better) per dropped input and feature set."""
  changes: dict[str, dict[str, list[float]]] = {}
  for task in rob.values():
    sign = 1.0 if task["higher_is_better"] else -1.0
    for fs, d in task.items():
      if not isinstance(d, Mapping):
        continue
      for label, r in d.items():
        if r["change"] is not None and np.isfinite(r["change"]):
          changes.setdefault(label, {}).setdefault(fs, []).append(sign * r["change"])
  if not changes:
    return None
  labels = sorted(changes)
  sets = sorted({fs for d in changes.values() for fs in d})
  fig = Figure(figsize=(1.2 + 0.9 * len(labels), 3.2))
  ax = fig.subplots()
  width = 0.8 / len(sets)
  for j, fs in enumerate(sets):
    means = [np.mean(changes[lb].get(fs, [np.nan])) for lb in labels]
    ax.bar(np.arange(len(labels)) + j * width, means, width, label=fs.replace("_", " "))
  ax.axhline(0, color="k", linewidth=0.8)
  ax.set_xticks(np.arange(len(labels)) + 0.4 - width / 2, labels, rotation=30, ha="right")
  ax.set_ylabel("mean change of the score\n(signed: up is better)")
  ax.legend(fontsize=7)
  ax.set_title("missing-modality robustness (test, no refit)", fontsize=9)
  return _save(fig, out_dir, "robustness.png")
