"""Stage 2: ~1.8B parameters, 32 GPUs: 4 nodes x 8 (data 4 across nodes x FSDP 8 inside).

Video 128 px, 4-frame x 16 px tubelets (6 views x 4 x 64 = 1536 tokens): ~1.8K tokens per
16-frame window.

    python launch/model_summary.py --config=configs/stage2.py
"""

from __future__ import annotations

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg:
    raise ValueError(f"configs/stage2.py has no variants, got {arg!r}")
  c = common.base_config()
  c.data.update(view_size=128, depth_size=64, frames=16, batch_size=512)
  # Grain worker processes read and decode on the host's cores, away from XLA's threads
  c.data.worker_count = 16
  m = c.model
  m.width = 2048
  m.fusion.update(num_layers=32, num_heads=16, mlp_dim=8192)
  m.fusion.readouts = ml_collections.ConfigDict({"window": 4, "future": 1, "policy": 1})
  common.set_encoders(m, width=768, num_layers=2, num_heads=12, mlp_dim=3072)
  m.modalities.video.update(tubelet=4, patch=16)
  m.modalities.depth.update(tubelet=2, patch=16)
  common.set_stacks(m, scan_layers=True, remat_policy="dots_with_no_batch_dims")
  # flash attention on the GPUs this stage targets; on TPU: --config.model.attention=splash
  m.attention = "cudnn"
  # head stacks at their 1024 width cap: 8 heads of 128 (flash kernels take head dims <= 128)
  common.set_head_stacks(c.objectives, num_heads=8)
  # FSDP inside a node (its per-layer all-gathers and reduce-scatters on NVLink), data
  # across the 4 nodes (one gradient all-reduce per step on the network)
  c.mesh = common.mesh_config(data=1, fsdp=8, tensor=1, dcn_data=4)
  # 16 windows per device at once need 91 GiB (launch/aot_check.py, all objectives): two
  # microbatches of 8 keep the global batch of 512
  c.optim.grad_accum = 2
  return c
