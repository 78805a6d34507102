"""Language: the token ids of the interaction sentence at each output frame (BOS ... EOS PAD,
caption_len ids, the train split's word vocabulary); caption_valid where a sentence applies.
A window's caption is that of its last context frame."""

from __future__ import annotations

import numpy as np

from xefm_jax.data import spec as spec_lib
from xefm_jax.data.streams import base


def bag_of_words(ids: np.ndarray, vocab: int) -> np.ndarray:
  """(N, L) caption ids -> (N, vocab) counts; special tokens and ids >= vocab (words the
  train captions never use) are left out."""
  out = np.zeros((len(ids), vocab), np.float64)
  rows = np.repeat(np.arange(len(ids)), ids.shape[1])
  flat = ids.ravel()
  known = (flat > spec_lib.EOS_ID) & (flat < vocab)
  np.add.at(out, (rows[known], flat[known]), 1.0)
  return out


class Language(base.StreamDef):
  name = "language"
  group = "language"
  stored = (base.Stream("caption", lambda o, k: (o.caption_len,), "int32"),  # sentence ids
            base.Stream("caption_valid", base.fixed(), "bool"))
  flags = (("caption_valid", "caption_valid", None),)
  valid = ("caption_valid",)
  values = {"caption": "caption_valid"}

  def fields(self, spec, t):
    return {"caption": ((spec.caption_len,), np.int32),  # token ids, BOS ... EOS PAD ...
            "caption_valid": ((), np.bool_)}

  def read(self, es, state, start, stop):
    tl = es.timeline()
    if "sentences" not in state:  # each distinct sentence encoded once, row -1 all PAD
      state["sentences"] = np.stack(
          [es.labels.words.encode(x, es.options.caption_len) for x in tl.interactions]
          + [np.zeros(es.options.caption_len, np.int32)])
    a, b = es.raw(start, stop)
    frames = np.arange(a, b, es.options.frame_stride)
    return {"caption": state["sentences"][tl.interaction[frames]],  # (n, L)
            "caption_valid": tl.interaction[frames] >= 0}

  def inputs(self, raw, sl, sig, spec, stats):
    last = (sl.start or 0) + spec.frames - 1
    caption_valid = raw["caption_valid"][:, last]  # (B,)
    caption = raw["caption"][:, last].copy()  # (B, L)
    base.zero_masked(caption, caption_valid)
    return {"caption": caption, "caption_valid": caption_valid}

  def handcrafted(self, batch, vocab_size):
    """Bag of words of the window's caption (what a shallow text baseline has)."""
    return bag_of_words(batch["caption"], vocab_size).astype(np.float32)


LANGUAGE = base.register(Language())
