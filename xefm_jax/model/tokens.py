"""TokenGroup: the contract between every modality encoder and the fusion transformer.

Octo's idea: each input kind becomes a group of tokens plus a validity mask, so a missing
stream, camera view or dropped modality is a mask, not a different graph; one compiled step
serves every mix of available inputs.
"""

from __future__ import annotations

import flax
import jax


@flax.struct.dataclass
class TokenGroup:
  """One modality's tokens at the fusion width.

  tokens: (B, n, D); zero where mask is False.
  mask: (B, n) bool; False = the token does not exist (missing stream, view or frames, or
    the modality was dropped) and must not influence anything.
  time: (n,) or (B, n) float32, the token's centre in context frames (0 = first frame of
    the window, fractional for tubelets and chunks).
  """

  tokens: jax.Array
  mask: jax.Array
  time: jax.Array
