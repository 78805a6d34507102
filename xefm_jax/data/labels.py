"""The label vocabularies of a corpus and the rules that turn a caption timeline into label
ids: light (numpy and the word vocabulary only), so the objectives and the evaluator that
decode label ids never import the raw-episode readers (h5py, PyAV)."""

from __future__ import annotations

import dataclasses

import numpy as np

from xefm_jax.data import text as text_lib

NOT_OBJECTS = frozenset({"hand", "hands"})  # always present: not a relevant-object label
TRANSITION_RADIUS = 10  # raw (20 fps) frames: transition_detection's +-10 frames


def near_boundary(action_start: np.ndarray, radius: int = TRANSITION_RADIUS) -> np.ndarray:
  """(N,) bool per raw frame: an action boundary lies within +-radius frames. A boundary is
  an action start after the episode's first frame (frame 0 starts the recording, not an
  action change)."""
  starts = np.asarray(action_start, bool).copy()
  starts[:1] = False
  kernel = np.ones(2 * radius + 1)
  return np.convolve(starts.astype(np.float64), kernel, mode="same") > 0.5


def action_class(label: str) -> str:
  """The action class of a caption action label: its first word, a verb."""
  words = text_lib.tokenize(label)
  return words[0] if words else ""


@dataclasses.dataclass(frozen=True)
class Labels:
  """Label vocabularies of a corpus (the manifest's), name -> id by position."""

  tasks: tuple[str, ...]
  subtasks: tuple[str, ...]
  actions: tuple[str, ...]  # action classes (verbs)
  objects: tuple[str, ...]
  words: text_lib.Vocab

  @classmethod
  def from_manifest(cls, vocab: dict) -> "Labels":
    return cls(tuple(vocab["task"]), tuple(vocab["subtask"]), tuple(vocab["action"]),
               tuple(vocab["object"]), text_lib.Vocab(vocab["word"]))

  def ids(self, names: tuple[str, ...], table: tuple[str, ...]) -> np.ndarray:
    index = {n: i for i, n in enumerate(table)}
    return np.array([index.get(n, -1) for n in names], np.int32)
