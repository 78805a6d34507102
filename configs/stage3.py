"""Stage 3: ~4.7B parameters, 128 chips as 2 slices of 64: data 2 across the slices x FSDP 32
x tensor 2 inside each slice.

Video 160 px, 4-frame x 16 px tubelets (6 views x 4 x 100 = 2400 tokens): ~2.7K tokens per
16-frame window; full rematerialisation of the fusion layers.

    python launch/model_summary.py --config=configs/stage3.py
"""

from __future__ import annotations

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg:
    raise ValueError(f"configs/stage3.py has no variants, got {arg!r}")
  c = common.base_config()
  c.data.update(view_size=160, depth_size=64, frames=16, batch_size=1024)
  # Grain worker processes read and decode on the host's cores, away from XLA's threads
  c.data.worker_count = 16
  m = c.model
  m.width = 3072
  m.fusion.update(num_layers=40, num_heads=24, mlp_dim=12288)
  m.fusion.readouts = ml_collections.ConfigDict({"window": 4, "future": 1, "policy": 1})
  common.set_encoders(m, width=1024, num_layers=2, num_heads=16, mlp_dim=4096)
  m.modalities.video.update(tubelet=4, patch=16)
  m.modalities.depth.update(tubelet=2, patch=16)
  common.set_stacks(m, scan_layers=True, remat_policy="dots_with_no_batch_dims")
  # flash attention on the GPUs this stage targets; on TPU: --config.model.attention=splash
  m.attention = "cudnn"
  # head stacks at their 1024 width cap: 8 heads of 128 (flash kernels take head dims <= 128)
  common.set_head_stacks(c.objectives, num_heads=8)
  m.fusion.remat_policy = "nothing_saveable"
  # two slices (TPU pods, or GPU islands) of 64: FSDP and tensor on the fast links inside
  # a slice, data across the slices over the data-centre network
  c.mesh = common.mesh_config(data=1, fsdp=32, tensor=2, dcn_data=2)
  return c
