"""The representation pilot: the Stage-1 recipe at CPU scale, to show that pretraining beats
shallow features before any GPU is booked (the plan's gate to Stage 2).

The local model (a few million parameters, every modality and objective) on a larger
generated corpus, trained ten times longer than the README's run, with a checkpoint every
`ckpt_every` steps so `benchmarks/learning.py` can draw learning curves:

    python launch/train.py --config=configs/pilot.py --workdir runs/pilot
    python launch/eval.py --config=configs/eval.py --workdir runs/pilot --checkpoint all
    python benchmarks/learning.py            # both, the curves, and the ablations

48 one-episode sessions of 20 s are split 24 / 12 / 12 by session: twelve held-out test
sessions for the paired bootstrap. About 25 minutes of training on 2 CPU cores.

Variants s0 .. s4 are the size ladder of the scaling sweep (launch/sweep.py): the pilot's
corpus, window and batch (so tokens per window and per step are fixed), with the fusion
width and depth scaled together (head width 32, MLP 4 x width) and the per-modality
encoders at half the width. `steps` is set by the sweep from each point's FLOP budget.

    python launch/model_summary.py --config=configs/pilot.py:s2   # params, model FLOPs
"""

from __future__ import annotations

import ml_collections

from configs import common
from configs import local

# variant -> (fusion width, fusion layers): ~12 x layers x width^2 fusion parameters grow
# ~3x per rung (s3 is the pilot's fusion width and depth).
LADDER = {"s0": (64, 1), "s1": (96, 2), "s2": (128, 3), "s3": (192, 4), "s4": (256, 6)}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg and arg not in LADDER:
    raise ValueError(f"configs/pilot.py: unknown variant {arg!r} (have: {', '.join(LADDER)})")
  c = local.get_config()
  c.data.synthesize.update(sessions=48, episodes_per_session=1, seconds=20.0, seed=1)
  c.data.split = "train=0.5,val=0.25,test=0.25"
  c.data.batch_size = 16
  c.optim.update(learning_rate=1e-3, warmup_steps=100)
  c.train.update(steps=1500, log_every=50, eval_every=500, ckpt_every=250, keep=8,
                 ema_decay=0.995)
  if arg:
    width, layers = LADDER[arg]
    c.model.width = width
    c.model.fusion.update(num_layers=layers, num_heads=width // 32, mlp_dim=4 * width)
    common.set_encoders(c.model, width=width // 2, num_layers=1, num_heads=width // 32,
                        mlp_dim=2 * width)
  return c
