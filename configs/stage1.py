"""Stage 1: ~0.5B parameters, one 8-GPU node (FSDP over 8).

Video 96 px, 4-frame x 16 px tubelets (6 views x 4 x 36 = 864 tokens) plus depth, audio,
pose, mocap, IMU and caption: ~1.1K tokens per 16-frame window.

    python launch/model_summary.py --config=configs/stage1.py
"""

from __future__ import annotations

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg:
    raise ValueError(f"configs/stage1.py has no variants, got {arg!r}")
  c = common.base_config()
  c.data.update(view_size=96, depth_size=64, frames=16, batch_size=256)
  # Grain worker processes read and decode on the host's cores, away from XLA's threads
  c.data.worker_count = 16
  m = c.model
  m.width = 1024
  m.fusion.update(num_layers=32, num_heads=16, mlp_dim=4096)
  m.fusion.readouts = ml_collections.ConfigDict({"window": 4, "future": 1, "policy": 1})
  common.set_encoders(m, width=512, num_layers=2, num_heads=8, mlp_dim=2048)
  m.modalities.video.update(tubelet=4, patch=16)
  m.modalities.depth.update(tubelet=2, patch=16)
  common.set_stacks(m, scan_layers=True, remat_policy="dots_with_no_batch_dims")
  # flash attention on the GPUs this stage targets; on TPU: --config.model.attention=splash
  m.attention = "cudnn"
  # head stacks at their 1024 width cap: 8 heads of 128 (flash kernels take head dims <= 128)
  common.set_head_stacks(c.objectives, num_heads=8)
  c.mesh = common.mesh_config(data=1, fsdp=8, tensor=1)
  # 32 windows per device at once need 64.3 GiB (launch/aot_check.py, all objectives): two
  # microbatches of 16 keep the global batch and fit in 64 GiB
  c.optim.grad_accum = 2
  return c
