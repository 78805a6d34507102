"""The pretraining protocol's extras, scored from the model's own heads on the test windows.

EVAL_SUITE.md "Beyond the 12 tasks": structured generation (the captioning decoder's JSON
answers), text-to-window and window-to-text retrieval (the contrastive embeddings), future
ego-motion and hand forecasting (the forecasting head, metres), cross-modal reconstruction
(the masked-modeling decoder, R^2), and the procedure / contact heads read directly. Each
function takes the test `Store` (embed.py) and returns a JSON-able dict; an extra whose
objective the run did not train says so (`available: False` and the reason) instead of a
number. Robustness and generalization reuse the task probes and live in suite.py.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from xefm_jax.data import labels as labels_lib
from xefm_jax.data import pipeline
from xefm_jax.eval import embed
from xefm_jax.eval import metrics
from xefm_jax.objectives import captioning

NOT_TRAINED = "objective '{}' is disabled (weight 0) in the run's config"


def unavailable(reason: str) -> dict[str, Any]:
  return {"available": False, "reason": reason}


def _labels_f1(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
  ok = true >= 0
  if not ok.any():
    return {"macro_f1": float("nan"), "accuracy": float("nan")}
  s = metrics.f1_scores(true[ok], pred[ok])
  return {"macro_f1": s["macro_f1"], "accuracy": s["micro_f1"]}


def structured_generation(test: embed.Store, labels: labels_lib.Labels, max_examples: int = 3
                          ) -> dict[str, Any]:
  """JSON validity rate of the greedy decodings and a score per field, over every test
  window (an invalid answer counts as wrong in every field).

  Fields against targets.py: action, subtask, next_action (macro-F1 and accuracy, windows
  with a label), objects (micro-F1 of the sets), contact (accuracy against any body contact
  at now: the head's definition), transition (F1 and accuracy), caption (exact match and
  word-set F1 where the window has a caption). evidence_window is not generated: the
  renderer attaches the window's own [episode, first frame, last frame].
  """
  tokens = test.arrays["predictions/captioning/tokens"]  # (N, Lc)
  layout = captioning.Layout.from_labels(labels)
  parsed = [captioning.parse(t, layout) for t in tokens]
  valid = np.array([p is not None for p in parsed])
  n = len(parsed)

  def field(name, default):
    return [p[name] if p is not None else default for p in parsed]

  out: dict[str, Any] = {"available": True, "windows": n,
                         "json_validity_rate": float(valid.mean()) if n else float("nan")}
  fields: dict[str, Any] = {}
  for name in ("action", "subtask", "next_action"):
    pred = np.array([-1 if v is None else v for v in field(name, None)])
    fields[name] = _labels_f1(pred, test.target(name).astype(int))
  num_objects = len(labels.objects)
  pred_objects = np.zeros((n, num_objects), int)
  for i, objs in enumerate(field("objects", [])):
    pred_objects[i, [o for o in objs if o < num_objects]] = 1
  fields["objects"] = {"micro_f1": metrics.multilabel_micro_f1(
      test.target("objects").astype(int), pred_objects)}
  contact = np.array(field("contact", None), dtype=object)
  truth = test.target("contact").astype(bool)  # hand contact, as the captioning head writes
  fields["contact"] = {"accuracy": float(np.mean([c is not None and c == t
                                                  for c, t in zip(contact, truth)]))}
  transition = np.array([bool(v) if v is not None else None for v in field("transition", None)],
                        dtype=object)
  true_t = test.target("transition").astype(bool)
  pred_t = np.array([v is True for v in transition])
  wrong = np.array([v is None for v in transition])
  fields["transition"] = {"f1": metrics.binary_f1(true_t, pred_t & ~wrong),
                          "accuracy": float(np.mean((pred_t == true_t) & ~wrong))}
  has = test.target("caption_valid").astype(bool)
  caps = test.target("caption")
  exact, word_f1 = [], []
  for i in np.flatnonzero(has):
    true_words = [int(w) for w in caps[i] if w > 3]
    words = parsed[i]["caption"] if parsed[i] is not None else None
    exact.append(words == true_words)
    if words is None:
      word_f1.append(0.0)
      continue
    common = len(set(words) & set(true_words))
    word_f1.append(2 * common / max(len(set(words)) + len(set(true_words)), 1))
  fields["caption"] = {"exact_match": float(np.mean(exact)) if exact else float("nan"),
                       "word_f1": float(np.mean(word_f1)) if word_f1 else float("nan"),
                       "windows": int(has.sum())}
  fields["evidence_window"] = {"generated": False,
                               "note": "attached by the renderer (the window's own span)"}
  out["fields"] = fields
  examples = []
  for i in np.flatnonzero(valid)[:max_examples]:
    episode, start = int(test.arrays["meta/episode"][i]), int(test.arrays["meta/start"][i])
    examples.append(captioning.render_json(tokens[i], labels, evidence_window=[episode, start]))
  out["examples"] = examples
  return out


def text_window_retrieval(test: embed.Store, ks: Sequence[int] = (1, 5, 10)
                          ) -> dict[str, Any]:
  """Contrastive embeddings: each distinct test caption -> the windows that carry it
  (text-to-window), and each window -> its caption among the distinct ones
  (window-to-text). The window side is the pass with language dropped (it never saw its
  caption); the text side is the caption tower on the sentence."""
  has = test.target("caption_valid").astype(bool)
  if has.sum() < 2:
    return unavailable("fewer than two test windows have a caption")
  ids = test.target("caption")[has]
  window = test.arrays["predictions/contrastive/window"][has]
  text = test.arrays["predictions/contrastive/text"][has]
  _, first, inverse = np.unique(ids, axis=0, return_index=True, return_inverse=True)
  inverse = inverse.reshape(-1)
  relevant = inverse[None, :] == np.arange(len(first))[:, None]  # (S, N)
  sim = text[first] @ window.T  # (S, N) cosine (both L2-normalised)

  def summary(ranks):
    out = {f"r@{k}": metrics.recall_at_k(ranks, k) for k in ks}
    out["mrr"] = metrics.mean_reciprocal_rank(ranks)
    return out
  return {"available": True, "sentences": int(len(first)), "windows": int(has.sum()),
          "text_to_window": summary(metrics.retrieval_ranks(sim, relevant)),
          "window_to_text": summary(metrics.retrieval_ranks(sim.T, relevant.T))}


def forecasting(test: embed.Store, norm: pipeline.Normaliser, fps: float,
                horizons_s: Sequence[float], hand_horizon: int) -> dict[str, Any]:
  """The forecasting head against the truth: ego ADE/FDE (metres) at each horizon the head
  covers, hands MPJPE (metres) over its first `hand_horizon` frames (or all it has)."""
  pred = test.arrays["predictions/forecasting/ego/translation"]  # (N, K, 3)
  k = pred.shape[1]
  true = test.target("ego_future")[:, :k]
  valid = test.target("ego_future_valid")[:, :k].astype(bool)
  ego: dict[str, Any] = {}
  for h in horizons_s:
    frames = int(round(h * fps))
    if frames > k:
      ego[f"{h:g}s"] = unavailable(f"the head forecasts {k} frames ({k / fps:g} s)")
      continue
    ade, fde = metrics.ade_fde(pred[:, :frames], true[:, :frames], valid[:, :frames])
    ego[f"{h:g}s"] = {"ade": ade, "fde": fde}
  ade, fde = metrics.ade_fde(pred, true, valid)
  ego[f"head_horizon_{k / fps:g}s"] = {"ade": ade, "fde": fde}
  hands = norm.hands_to_metres(test.arrays["predictions/forecasting/hands"])  # (N, K, 2, 21, 3)
  kh = min(hand_horizon, hands.shape[1], test.target("hands_future").shape[1])
  mpjpe = metrics.mpjpe(hands[:, :kh], test.target("hands_future")[:, :kh],
                        test.target("hands_future_valid")[:, :kh].astype(bool))
  return {"available": True, "frames": int(k), "ego": ego,
          "hands": {"mpjpe": mpjpe, "frames": int(kh)}}


def reconstruction(test: embed.Store, sources: Mapping[str, str]) -> dict[str, Any]:
  """R^2 of the masked-modeling decoder's reconstruction of each target modality from the
  source variant (the modality itself removed), over every valid target element (the
  per-patch normalised targets of masked_modeling.reconstruction_targets)."""
  out: dict[str, Any] = {"available": True}
  for m, source in sources.items():
    key = f"recon/{m}"
    if not test.has(key):
      out[m] = unavailable(f"{m} is not a masked-modeling target of the run")
      continue
    n, s1, s2, sse = test.arrays[key].astype(np.float64).sum(0)
    out[m] = {"from": source, "r2": metrics.r2_from_sums(n, s1, s2, sse), "elements": int(n)}
  return out


def heads(test: embed.Store) -> dict[str, Any]:
  """The procedure and contact heads read directly (no probe): what pretraining learned
  for exactly these labels."""
  out: dict[str, Any] = {}
  if test.has("predictions/procedure/action"):
    for name in ("action", "subtask", "next_action"):
      pred = test.arrays[f"predictions/procedure/{name}"].argmax(-1)
      out[name] = _labels_f1(pred, test.target(name).astype(int))
    pred = test.arrays["predictions/procedure/transition"] > 0
    out["transition"] = {"f1": metrics.binary_f1(test.target("transition"), pred)}
  if test.has("predictions/contact/contact"):
    out["any_contact"] = {"f1": metrics.binary_f1(test.target("any_contact"),
                                                  test.arrays["predictions/contact/contact"] > 0)}
    hand = (test.arrays["predictions/contact/hand_contact"] > 0).any(1)
    out["hand_contact"] = {"f1": metrics.binary_f1(test.target("contact"), hand)}
    out["objects"] = {"micro_f1": metrics.multilabel_micro_f1(
        test.target("objects"), test.arrays["predictions/contact/objects"] > 0)}
  return out or unavailable("neither the procedure nor the contact objective is enabled")

