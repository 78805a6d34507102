"""Word-level text: the tokenizer and vocabulary of caption sentences.

The corpus has about 6K distinct words (XPERIENCE_FORMAT.md), small enough that a word
vocabulary built on the train split (with an unknown token) serves the text encoder and the
captioning decoder without a subword model. Ids 0-3 are PAD, UNK, BOS, EOS in every
vocabulary (spec.py fixes them), so padding and decoding need no vocabulary at hand.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Iterable, Sequence

import numpy as np

from xefm_jax.data import spec

SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>")
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")


def tokenize(text: str) -> list[str]:
  """Lower-cased words and single punctuation marks: "Pour the kettle." -> [pour, the, kettle, .]"""
  return _TOKEN.findall(text.lower())


class Vocab:
  """Word <-> id. Ids of SPECIALS are fixed; words follow by frequency, then alphabetically."""

  def __init__(self, words: Sequence[str]):
    if tuple(words[:len(SPECIALS)]) != SPECIALS:
      raise ValueError(f"a vocabulary must start with {SPECIALS}, got {list(words[:4])}")
    self.words = list(words)
    self._ids = {w: i for i, w in enumerate(self.words)}

  @classmethod
  def build(cls, texts: Iterable[str], max_size: int = 6000, min_count: int = 1) -> "Vocab":
    counts = collections.Counter(t for text in texts for t in tokenize(text))
    ranked = sorted((w for w, c in counts.items() if c >= min_count),
                    key=lambda w: (-counts[w], w))
    return cls(list(SPECIALS) + ranked[:max_size - len(SPECIALS)])

  def __len__(self) -> int:
    return len(self.words)

  def encode(self, text: str, length: int) -> np.ndarray:
    """(length,) int32: BOS, word ids (UNK for unseen), EOS, then PAD; truncated to fit."""
    ids = [self._ids.get(t, spec.UNK_ID) for t in tokenize(text)][:length - 2]
    out = np.full(length, spec.PAD_ID, np.int32)
    out[:len(ids) + 2] = [spec.BOS_ID] + ids + [spec.EOS_ID]
    return out

  def decode(self, ids: Iterable[int]) -> str:
    """Words up to the first EOS, specials dropped, joined by spaces (punctuation attached)."""
    words = []
    for i in ids:
      i = int(i)
      if i == spec.EOS_ID:
        break
      if i >= len(SPECIALS) and i < len(self.words):
        words.append(self.words[i])
      elif i == spec.UNK_ID:
        words.append(SPECIALS[spec.UNK_ID])
    return re.sub(r" ([^\w<])", r"\1", " ".join(words))
