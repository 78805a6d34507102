"""Local run: a few million parameters on generated data, trains on 2 CPU cores in minutes.

    python launch/model_summary.py --config=configs/local.py
    configs/local.py:tiny  is the test size (tests/): the smallest model that still has every
                           modality, two layers and two tensor shards.
    configs/local.py:vit   (or tiny,vit) the video encoder's tokenizer is a per-frame ViT
                           (modalities/video_vit.py), frozen: Stage 1's pretrained image tower;
                           give its weights with config.model.init_from.
"""

from __future__ import annotations

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = common.base_config()
  c.data.view_size = 32
  c.data.depth_size = 16
  c.data.frames = 8
  c.data.batch_size = 8  # ~0.3 s per training step on 2 CPU cores
  m = c.model
  m.dtype = "float32"  # CPUs have no fast bf16 matmul (bf16: 1.3x slower steps, 2x compile)
  m.width = 192
  m.fusion.update(num_layers=4, num_heads=4, mlp_dim=768)
  common.set_encoders(m, width=64, num_layers=1, num_heads=2, mlp_dim=256)
  m.modalities.video.update(tubelet=2, patch=16)  # 6 views x 4 x 4 = 96 tokens
  m.modalities.depth.update(tubelet=2, patch=8)  # 4 x 4 = 16 tokens
  m.modalities.audio.update(n_mels=32, patch_time=10, patch_freq=16)  # 4 x 2 = 8 tokens
  common.set_stacks(m, scan_layers=False)  # a few layers: a loop compiles as fast
  # and the heads' two-layer decoders too: a scanned stack's backward fills stacked buffers
  # (zeros, then copies of them) and runs a while loop, ~20 ms of a ~420 ms step here
  common.set_head_stacks(c.objectives, scan_layers=False)
  c.mesh = common.mesh_config(data=1, fsdp=-1, tensor=1)
  # The embedded default run (README): with no corpus given, synthesize 24 sessions x 1
  # episode x 15 s (~1-2 min on 2 cores), split 12 / 6 / 6 sessions (six held-out test
  # sessions: enough for a paired bootstrap over sessions to tell a difference from
  # noise), then train every enabled objective for a few minutes.
  c.data.synthesize.update(sessions=24, episodes_per_session=1, seconds=15.0)
  c.data.split = "train=0.5,val=0.25,test=0.25"
  # fused-side alignment on half of the 8 windows of a step (4 pairs, not 2)
  c.objectives.contrastive.side_every = 2
  c.optim.update(learning_rate=1e-3, warmup_steps=20)
  c.train.update(steps=150, log_every=10, eval_every=150, ckpt_every=75, keep=2,
                 ema_decay=0.99)
  c.train.rng_impl = "unsafe_rbg"  # CPU: dropout and masking bits compile faster
  c.train.fused_init_draws = True  # the initialiser compiles in seconds (fused_draws.py)

  variants = set((arg or "").split(",")) - {""}
  if unknown := variants - {"tiny", "vit"}:
    raise ValueError(f"configs/local.py: unknown variant {sorted(unknown)} (have: tiny, vit)")
  if "tiny" in variants:  # tests: smallest shapes that still exercise everything
    c.data.update(view_size=16, depth_size=8, frames=4, future=4, caption_len=8,
                  vocab_size=100, batch_size=8)
    c.data.actions.chunk = 4  # within the 4 future frames (the policy objective)
    m.width = 32
    m.fusion.update(num_layers=2, num_heads=2, mlp_dim=64, scan_layers=True)
    common.set_head_stacks(c.objectives, scan_layers=True)  # the tests cover scanned stacks
    m.fusion.readouts = ml_collections.ConfigDict({"window": 2, "future": 1})
    common.set_encoders(m, width=16, num_layers=1, num_heads=2, mlp_dim=32)
    m.modalities.video.update(tubelet=2, patch=8)  # 6 x 2 x 4 = 48 tokens
    m.modalities.depth.update(tubelet=2, patch=4)  # 2 x 4 = 8 tokens
    m.modalities.audio.update(n_mels=16, n_fft=256, win_length=200, hop_length=80,
                              patch_time=10, patch_freq=8)  # 4 x 2 = 8 tokens
  if "vit" in variants:  # a frozen per-frame ViT (big_vision's image tower) for video
    video = m.modalities.video
    video.tokenizer = "video_vit"
    width = 16 if "tiny" in variants else 64
    video.vit = ml_collections.ConfigDict(dict(width=width, depth=2, num_heads=2,
                                               mlp_dim=2 * width))
    c.optim.trainable = ((r"model/video/tokenizer/vit/.*", "frozen"),)
    # the ViT sees every patch of a frame: hidden video tokens would leak (video_vit.py)
    c.objectives.masked_modeling.modalities = tuple(
        n for n in c.objectives.masked_modeling.modalities if n != "video")
  return c
