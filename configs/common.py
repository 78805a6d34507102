"""Pieces shared by every config: the data section, and (below) model, mesh and rules.

Configs are Python files with `get_config(arg)` (big_vision style), read by
`ml_collections.config_flags` with `lock_config=True`; `--config.a.b=value` overrides.
"""

from __future__ import annotations

import ml_collections

from xefm_jax.data import spec, xperience


def data_config() -> ml_collections.ConfigDict:
  """Where windows come from and what they hold (see xefm_jax/data/spec.py)."""
  c = ml_collections.ConfigDict()
  # Corpus. With `shards` unset and `raw` unset, the local run synthesizes a corpus.
  c.raw = ml_collections.FieldReference(None, field_type=str)  # raw episode root
  c.shards = ml_collections.FieldReference(None, field_type=str)  # shard corpus root
  c.synthesize = ml_collections.ConfigDict(dict(
      sessions=8, episodes_per_session=3, seconds=40.0, seed=0, profile="small"))
  # Window contract (WindowSpec); label/vocabulary sizes are replaced by the manifest's.
  c.views = xperience.VIEWS
  c.view_size = 64
  c.depth_size = 32
  c.frames = 16  # W context frames
  c.frame_stride = 1
  c.window_stride = 5  # frames between consecutive window starts
  c.future = 40  # F future frames of low-dim streams (2 s)
  c.next_window = True
  c.caption_len = 24
  c.num_objects = 64
  c.num_actions = 32
  c.num_subtasks = 128
  c.num_tasks = 32
  c.vocab_size = 6000
  # Loading.
  c.batch_size = 32  # global batch
  c.shuffle_seed = 0
  c.worker_count = 0  # Grain worker processes (0: in-process)
  c.read_threads = 8
  c.prefetch = 8
  # Training-time augmentation (masks only; values of a dropped stream are zeroed).
  c.view_dropout = 0.15  # probability that a view is dropped
  c.modality_dropout = 0.1  # probability that a whole modality is dropped
  return c


# ----------------------------------------------------------------------------------- model


def transformer_config(num_layers: int, num_heads: int, mlp_dim: int,
                       width: int | None = None) -> ml_collections.ConfigDict:
  """One transformer stack (xefm_jax/model/transformer.py). `width` only for encoders: the
  fusion stack runs at config.model.width."""
  c = ml_collections.ConfigDict()
  if width is not None:
    c.width = width
  c.num_layers = num_layers
  c.num_heads = num_heads
  c.head_dim = 0  # 0: width // num_heads
  c.mlp_dim = mlp_dim
  c.mlp_activation = "gelu"  # gelu | swiglu | geglu | silu | relu
  c.norm = "rms"  # rms | layer
  c.qk_norm = True
  c.dropout = 0.0
  c.scan_layers = True  # nn.scan over layers (compile once); False: a plain loop
  c.remat_policy = "none"  # none | dots | dots_with_no_batch_dims | nothing_saveable | ...
  return c


def model_config(data: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """XEFM (xefm_jax/model/xefm.py) at the local size; stage configs override the sizes.

  Window-dependent values (vocabulary, frame rate, audio samples per frame, window centre)
  are FieldReferences into `data`, so a manifest or a data override updates the model too.
  """
  m = ml_collections.ConfigDict()
  m.width = 128  # fusion width D; every TokenGroup is projected to it
  m.dtype = "bfloat16"  # compute
  m.param_dtype = "float32"  # master weights
  m.attention = ml_collections.FieldReference(None, field_type=str)  # None|xla|cudnn (GPU)
  m.embedding_readout = "window"  # the readout whose mean is the window embedding
  m.fusion = transformer_config(num_layers=4, num_heads=4, mlp_dim=512)
  m.fusion.readouts = ml_collections.ConfigDict({"window": 1})  # {name: tokens}
  m.fusion.time_max_period = 10_000.0  # frames; sinusoidal time embedding

  def encoder():
    return transformer_config(num_layers=1, num_heads=2, mlp_dim=256, width=64)

  frame_stride = data.get_ref("frame_stride")
  mods = ml_collections.ConfigDict()
  # `dropout`: per-sample modality dropout rate in training ("masking" rng). Streams are
  # already dropped by the pipeline (data.modality_dropout); only language is dropped here,
  # so captioning/grounding objectives get windows that did not see their caption.
  mods.video = ml_collections.ConfigDict(dict(tubelet=2, patch=16, dropout=0.0))
  mods.audio = ml_collections.ConfigDict(dict(
      n_fft=512, win_length=400, hop_length=160, n_mels=64, fmin=20.0, fmax=8000.0,
      patch_time=10, patch_freq=16, dropout=0.0,
      samples_per_frame=frame_stride * int(spec.AUDIO_RATE_HZ / xperience.FPS)))
  mods.depth = ml_collections.ConfigDict(dict(tubelet=2, patch=8, dropout=0.0))
  mods.pose = ml_collections.ConfigDict(dict(frames_per_token=2, dropout=0.0,
                                             frame_rate=xperience.FPS / frame_stride))
  mods.mocap = ml_collections.ConfigDict(dict(frames_per_token=2, dropout=0.0))
  mods.imu = ml_collections.ConfigDict(dict(frames_per_token=2, dropout=0.0))
  mods.language = ml_collections.ConfigDict(dict(
      vocab_size=data.get_ref("vocab_size"), dropout=0.5,
      window_centre=(data.get_ref("frames") - 1) / 2))
  for name in mods:
    mods[name].encoder = encoder()
  m.modalities = mods
  return m


def set_encoders(model: ml_collections.ConfigDict, **fields) -> None:
  """Set the same encoder fields (width, num_layers, ...) on every modality."""
  for name in model.modalities:
    model.modalities[name].encoder.update(fields)


def set_stacks(model: ml_collections.ConfigDict, **fields) -> None:
  """Set the same stack fields (scan_layers, remat_policy, ...) on fusion and encoders."""
  model.fusion.update(fields)
  set_encoders(model, **fields)


# ---------------------------------------------------------------------------- mesh, rules


def mesh_config(data: int = 1, fsdp: int = -1, tensor: int = 1) -> ml_collections.ConfigDict:
  """Mesh axis sizes (xefm_jax/parallel/mesh.py); one -1 takes the remaining devices."""
  return ml_collections.ConfigDict(dict(data=data, fsdp=fsdp, tensor=tensor))


def logical_axis_rules() -> tuple[tuple[str, str | tuple[str, ...] | None], ...]:
  """Logical axis name -> mesh axes (MaxText's table). First matching rule wins per dim, and
  a mesh axis is used once per array. Every logical name the model uses is listed."""
  return (
      # activations: batch over data x fsdp; heads and mlp over tensor (Megatron)
      ("activation_batch", ("data", "fsdp")),
      ("activation_length", None),
      ("activation_embed", None),
      ("activation_heads", "tensor"),
      ("activation_kv", None),
      ("activation_mlp", "tensor"),
      # parameters: FSDP over the model width, tensor parallel over heads / mlp / vocab
      ("embed", "fsdp"),
      ("mlp", "tensor"),
      ("heads", "tensor"),
      ("kv", None),
      ("vocab", "tensor"),
      ("layers", None),
      ("norm", None),
      ("patch", None),
      ("input", None),
      ("table", None),
  )


def base_config() -> ml_collections.ConfigDict:
  """Everything a run needs from the model's side: seed, data, model, mesh, rules."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.data = data_config()
  c.model = model_config(c.data)
  c.mesh = mesh_config()
  c.logical_axis_rules = logical_axis_rules()
  return c
