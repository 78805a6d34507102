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
"""

from __future__ import annotations

import ml_collections

from configs import local


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg:
    raise ValueError(f"configs/pilot.py has no variants, got {arg!r}")
  c = local.get_config()
  c.data.synthesize.update(sessions=48, episodes_per_session=1, seconds=20.0, seed=1)
  c.data.split = "train=0.5,val=0.25,test=0.25"
  c.data.batch_size = 16
  c.optim.update(learning_rate=1e-3, warmup_steps=100)
  c.train.update(steps=1500, log_every=50, eval_every=500, ckpt_every=250, keep=8,
                 ema_decay=0.995)
  return c
