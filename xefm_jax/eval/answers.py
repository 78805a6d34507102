"""The structured-JSON task set's answer (../shared/DOWNSTREAM.md), and XEFM's own answers.

One window's answer, as the public suite's records carry it (`answer_json`) and as any model
must return it (one JSON object):

  {"action": str, "subtask": str, "objects": [str, ...] (at most 8),
   "contact": "yes" | "no" | "unknown", "transition": "yes" | "no" | "unknown",
   "next_action": str, "evidence_window": {"start_frame": int, "end_frame": int}}

Labels are names from the corpus' vocabularies (action classes, subtasks, objects: the shard
manifest's) or "unknown". `answer_text` is the assistant turn's form: compact JSON, sorted
keys. The export (data_pipelines/export/json_tasks.py), the scorer (launch/score.py) and
the eval job's decoder predictions all use this module, so the three cannot drift apart.

XEFM answers with its captioning decoder (xefm_jax/objectives/captioning.py): for each
record the model window whose last context frame is the record's last frame (its "now",
moved inside the episode where it would overrun) is decoded greedily with language
dropped, and the decoded sequence is rendered into the answer above. The decoder does not
generate `evidence_window`: the record's own window is attached. A sequence that breaks the
decoder's grammar is written as it is (a non-JSON line naming the token ids), so the
scorer counts it as invalid instead of it being dropped.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Optional, Sequence

import ml_collections
import numpy as np

from xefm_jax.data import labels as labels_lib
from xefm_jax.data import source as source_lib
from xefm_jax.data import spec as spec_lib
from xefm_jax.eval import embed
from xefm_jax.eval import variants as variants_lib
from xefm_jax.objectives import captioning

KEYS = ("action", "subtask", "objects", "contact", "transition", "next_action",
        "evidence_window")
LABEL_FIELDS = ("action", "subtask", "next_action")  # one label of a vocabulary each
BINARY_FIELDS = ("contact", "transition")
UNKNOWN = "unknown"
YES_NO = ("yes", "no", UNKNOWN)
MAX_OBJECTS = 8
PREDICTIONS_FILE = "json_task_predictions.jsonl"  # what the eval job writes


def answer_text(answer: Mapping[str, Any]) -> str:
  """The assistant turn: compact JSON with sorted keys."""
  return json.dumps(answer, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def decoder_answer(tokens: Sequence[int] | np.ndarray, labels: labels_lib.Labels,
                   evidence_window: Mapping[str, int]) -> str:
  """One decoded sequence -> the answer text (module docstring), or a non-JSON line naming
  the tokens where the sequence breaks the decoder's grammar."""
  fields = captioning.parse(tokens, captioning.Layout.from_labels(labels))
  if fields is None:
    ids = " ".join(str(int(t)) for t in np.asarray(tokens).reshape(-1))
    return f"<no valid answer: decoder tokens {ids}>"
  name = lambda table, i: UNKNOWN if i is None else table[i]  # noqa: E731
  yes = lambda b: "yes" if b else "no"  # noqa: E731
  return answer_text({
      "action": name(labels.actions, fields["action"]),
      "subtask": name(labels.subtasks, fields["subtask"]),
      "objects": [labels.objects[i] for i in fields["objects"]],
      "contact": yes(fields["contact"]), "transition": yes(fields["transition"]),
      "next_action": name(labels.actions, fields["next_action"]),
      "evidence_window": {"start_frame": int(evidence_window["start_frame"]),
                          "end_frame": int(evidence_window["end_frame"])}})


def model_window(end_frame: int, length: int, spec: spec_lib.WindowSpec, span: int) -> int:
  """First shard frame of the model window that answers a record whose last frame (20 fps
  clock) is `end_frame`: its last context frame is that frame, moved so that the window's
  `span` shard frames fit the episode's `length`."""
  now = int(end_frame) // spec.shard_stride
  start = now - spec.frame_stride * (spec.frames - 1)
  return int(min(max(start, 0), max(length - span, 0)))


def record_windows(corpus: source_lib.Corpus, data_cfg: ml_collections.ConfigDict,
                   records: Sequence[Mapping[str, Any]]
                   ) -> dict[str, tuple[list[int], np.ndarray, np.ndarray]]:
  """{split: (positions in `records`, corpus episode ids, window starts)} of the model
  windows that answer the records (`model_window`); records name their corpus episode by
  `source_episode_id` (the manifest's episode name) and their window by `center_window`."""
  spec = corpus.window_spec(data_cfg)
  by_name = {e["episode"]: i for i, e in enumerate(corpus.episodes)}
  out: dict[str, tuple[list[int], list[int], list[int]]] = {}
  spans: dict[str, int] = {}
  for k, r in enumerate(records):
    ep = by_name.get(r.get("source_episode_id"))
    if ep is None:
      raise ValueError(f"record {r.get('id')!r}: episode {r.get('source_episode_id')!r} is "
                       f"not in the corpus {corpus.root}")
    split = corpus.episodes[ep]["split"]
    if r.get("split") != split:
      raise ValueError(f"record {r.get('id')!r}: split {r.get('split')!r}, but its episode is "
                       f"in split {split!r} of the corpus {corpus.root} (another corpus?)")
    if split not in spans:
      spans[split] = source_lib.WindowSource(corpus, split, spec, spec.frames).span
    start = model_window(r["center_window"]["end_frame"], corpus.episodes[ep]["length"], spec,
                         spans[split])
    pos, eps, starts = out.setdefault(split, ([], [], []))
    pos.append(k)
    eps.append(ep)
    starts.append(start)
  return {s: (p, np.asarray(e, np.int32), np.asarray(a, np.int32))
          for s, (p, e, a) in out.items()}


def decode(corpus: source_lib.Corpus, data_cfg: ml_collections.ConfigDict, encoder: Any,
           params: Any, variant: variants_lib.Variant, records: Sequence[Mapping[str, Any]],
           seed: int = 0, progress: bool = False) -> list[dict[str, Any]]:
  """XEFM's answers to `records`: [{"id", "split", "prediction"}] in the records' order.

  data_cfg: the run's window for evaluation (embed.data_config); variant: the window side
  the decoder reads (the eval's "full": every modality but language); params: the
  Pretrainer's parameters (the run's checkpoint).
  """
  out: list[Optional[dict[str, Any]]] = [None] * len(records)
  for split, (pos, eps, starts) in record_windows(corpus, data_cfg, records).items():
    plan = embed.Plan(embed={}, handcrafted={}, heads=params, predict=("captioning",),
                      full_variant=variant, targets=False)
    store = embed.run(corpus, split, data_cfg, embed.Selection.at(split, eps, starts), encoder,
                      plan, seed, progress, describe=f"json tasks {split}")
    tokens = store.arrays["predictions/captioning/tokens"]
    for k, t in zip(pos, tokens):
      r = records[k]
      out[k] = {"id": r["id"], "split": r["split"],
                "prediction": decoder_answer(t, corpus.labels, r["center_window"])}
  return out  # type: ignore[return-value]
