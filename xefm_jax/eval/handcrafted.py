"""Baseline (a): hand-crafted window statistics, computed from the same windows the model sees.

Per modality, a few dozen summary statistics of the kind shallow baselines use (means,
spreads, extremes, speeds, band energies, coarse image and depth grids), each defined by the
modality's stream (`StreamDef.handcrafted`, xefm_jax/data/streams/<name>.py). They are
grouped by modality with the model's modality names, so a task that restricts its input
(motion side only, no language, ...) restricts the baseline the same way. Computed on the
pipeline's window batches (xefm_jax/data/spec.py), which are the shards after the
documented normalisation: deterministic functions of the shard arrays.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from xefm_jax.data import streams as streams_lib
from xefm_jax.data.streams import language as language_stream
from xefm_jax.data.streams import video as video_stream

# (B, V, F) statistics of each camera view (a missing view's row is zeros), and the bag of
# words of caption ids: the parts the eval uses beyond one modality's block
video_per_view = video_stream.Video.per_view
bag_of_words = language_stream.bag_of_words


def statistics(modality: str, batch: Mapping[str, np.ndarray], vocab_size: int) -> np.ndarray:
  """(B, F) hand-crafted statistics of one modality of a window batch."""
  return streams_lib.get(modality).handcrafted(batch, vocab_size)
