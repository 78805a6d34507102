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
  # Extracted video features (data_pipelines/extract.py) read instead of pixels: their
  # name under SHARDS/features/ (None: pixels); also config.model.modalities.video.features
  c.video_features = ml_collections.FieldReference(None, field_type=str)
  # Check the shards a run reads against what the shredder wrote (chunk files and their
  # sizes) before reading them: a missing chunk would read as zeros (data/shards.py).
  c.verify_shards = True
  c.synthesize = ml_collections.ConfigDict(dict(
      sessions=8, episodes_per_session=3, seconds=40.0, seed=0, profile="small"))
  c.split = "train=0.8,val=0.1,test=0.1"  # session fractions when this run shreds a corpus
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
  # The hand action space of the policy exports and objective (xefm_jax/data/actions.py):
  # `chunk` actions per prediction, `step` corpus frames apart, wrist rotation deltas as
  # "rotvec" or "rot6d", "all" 20 finger joints or the 5 "tips".
  c.actions = ml_collections.ConfigDict(dict(chunk=16, step=1, rotation="rotvec",
                                             fingers="all"))
  # The manifest's train statistics of the hands (wrist, hands_local: mean and std per axis,
  # metres), copied from the corpus by train.loop.with_corpus_sizes: the policy objective
  # converts the batch's normalised hands back to metres with them.
  c.hand_stats = None
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
  # the attention kernel (xefm_jax/model/attention.py): None or "xla" (any backend, the
  # reference), "cudnn" (GPU flash attention), "splash" (the Pallas TPU kernel)
  m.attention = ml_collections.FieldReference(None, field_type=str)
  m.fusion = transformer_config(num_layers=4, num_heads=4, mlp_dim=512)
  # {name: tokens}; procedure, contact, contrastive and captioning read "window",
  # future_state and forecasting "future", policy "policy". The window embedding (what
  # probes, notebooks and exports read) is the concatenation of every group's mean.
  m.fusion.readouts = ml_collections.ConfigDict({"window": 1, "future": 1, "policy": 1})
  # Sinusoidal time embedding (fusion and encoders): periods from 2 pi to 2 pi x this many
  # frames. The window's length: every channel varies across a window, none is constant.
  m.fusion.time_max_period = data.get_ref("frames")
  # Per window in training: with probability `rate`, keep only one of `groups` (the
  # evaluation's input variants: motion side, visual side), so they are not out of
  # distribution for the trunk.
  m.group_dropout = ml_collections.ConfigDict(dict(
      rate=0.3, groups=ml_collections.ConfigDict(dict(
          motion=("imu", "mocap", "pose"), visual=("depth", "video")))))

  def encoder():
    return transformer_config(num_layers=1, num_heads=2, mlp_dim=256, width=64)

  frame_stride = data.get_ref("frame_stride")
  mods = ml_collections.ConfigDict()
  # `dropout`: per-sample modality dropout rate in training ("masking" rng). Streams are
  # already dropped by the pipeline (data.modality_dropout); language is dropped here, so
  # the supervised heads, captioning and text alignment get windows that did not see their
  # caption (a caption states the window's labels: they train on those windows only).
  mods.video = ml_collections.ConfigDict(dict(tubelet=2, patch=16, dropout=0.0,
                                              features=data.get_ref("video_features")))
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
      vocab_size=data.get_ref("vocab_size"), dropout=0.75,
      window_centre=(data.get_ref("frames") - 1) / 2))
  for name in mods:
    mods[name].encoder = encoder()
  m.modalities = mods
  # Warm start (xefm_jax/train/warm_start.py): sources applied in order to a fresh state
  # before the first step, each dict(path=..., mapping=((regex, target or "skip"), ...),
  # step=...): an XEFM run (default mapping: every parameter to itself) or a big_vision
  # .npz (e.g. a SigLIP image tower for modalities.video.tokenizer="video_vit").
  m.init_from = ()
  return m


def set_encoders(model: ml_collections.ConfigDict, **fields) -> None:
  """Set the same encoder fields (width, num_layers, ...) on every modality."""
  for name in model.modalities:
    model.modalities[name].encoder.update(fields)


def set_head_stacks(objectives: ml_collections.ConfigDict, **fields) -> None:
  """Set the same fields (num_heads, ...) on the objectives' transformers: the masked-modeling
  and captioning decoders and the contrastive text tower."""
  for stack in (objectives.masked_modeling.decoder, objectives.captioning.decoder,
                objectives.contrastive.text):
    stack.update(fields)


def set_stacks(model: ml_collections.ConfigDict, **fields) -> None:
  """Set the same stack fields (scan_layers, remat_policy, ...) on fusion and encoders."""
  model.fusion.update(fields)
  set_encoders(model, **fields)


# ---------------------------------------------------------------------------- mesh, rules


def mesh_config(data: int = 1, fsdp: int = -1, tensor: int = 1, *, dcn_data: int = 1,
                dcn_fsdp: int = 1, dcn_tensor: int = 1) -> ml_collections.ConfigDict:
  """Mesh axis sizes (xefm_jax/parallel/mesh.py): data/fsdp/tensor inside one node or
  slice (one -1 takes the remaining devices of it), dcn.* how many nodes or slices each
  axis spans over the slow network (MaxText's dcn_*_parallelism); each axis is the
  product of the two."""
  return ml_collections.ConfigDict(dict(
      data=data, fsdp=fsdp, tensor=tensor,
      dcn=dict(data=dcn_data, fsdp=dcn_fsdp, tensor=dcn_tensor)))


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


# ---------------------------------------------------------------------- optimizer, training


def optim_config() -> ml_collections.ConfigDict:
  """config.optim for xefm_jax/train/optimizer.py: AdamW, warmup + cosine, clipping."""
  o = ml_collections.ConfigDict()
  o.learning_rate = 3e-4  # peak, reached after warmup_steps
  o.warmup_steps = 2_000  # linear from 0
  o.decay_steps = -1  # cosine decay length after warmup; -1: to the end of train.steps
  o.end_lr_fraction = 0.1  # final learning rate / peak
  o.b1 = 0.9
  o.b2 = 0.95
  o.eps = 1e-8
  o.weight_decay = 0.05  # decoupled; kernels only (no norms, biases, tables)
  o.clip_norm = 1.0  # global gradient norm; 0 disables clipping
  # Microbatches per step: the global batch is split and gradients accumulated with a scan
  # inside the jitted step (activation memory of one microbatch; see train/step.py).
  o.grad_accum = 1
  # Per parameter group, big_vision style: (regex, rule) pairs over parameter paths
  # ("model/video/.*", "procedure/heads_action/out/kernel"); the first regex that matches
  # the whole path decides, unmatched parameters train fully. Rules: "frozen" (no optimizer
  # state, no gradient computed: the step does not differentiate them), "full", or a
  # learning-rate scale (a float). E.g. (("model/video/.*", "frozen"), ("model/fusion/.*", 0.1)).
  o.trainable = ()
  return o


def train_config() -> ml_collections.ConfigDict:
  """config.train for xefm_jax/train/loop.py: length, cadences, checkpoints, EMA."""
  t = ml_collections.ConfigDict()
  t.steps = 100_000  # optimizer steps (each one global batch)
  t.log_every = 50  # steps between metric lines (metrics.jsonl, TensorBoard, log)
  t.eval_every = 2_000  # steps between val evaluations (and one at the end); 0: none
  # In-loop validation is a bounded check (the full evaluation is launch/eval.py's): at
  # most this many val batches (0: every full batch of the split; local's whole val split
  # is 31), and R@1 over at most this many captioned windows
  t.eval_batches = 32
  t.eval_retrieval_windows = 2048
  t.ckpt_every = 1_000  # steps between checkpoints (and one at the end, one on SIGTERM)
  t.keep = 3  # checkpoints kept
  t.async_checkpoint = True  # write in the background while training goes on
  t.ema_decay = 0.999  # EMA of the trunk: the target encoder of future-state prediction
  t.profile_steps = (0, 0)  # [first, last): a profiler trace of these steps; empty: none
  # MFU's denominator per device; 0: the table's figure (accelerators) or a matmul measured
  # at start (CPU)
  t.peak_flops_per_device = 0.0
  t.rng_impl = "threefry2x32"  # PRNG of dropout and masking (unsafe_rbg: faster on TPU)
  # The initialiser's random bits from one flat draw instead of one per parameter
  # (train/fused_draws.py): compiles far faster on CPU, but the flat draw is not sharded
  # like the parameters, so the stage configs keep the per-parameter draws
  t.fused_init_draws = False
  return t


# ---------------------------------------------------------------------------- objectives


def objectives_config() -> ml_collections.ConfigDict:
  """config.objectives.<name> for xefm_jax/objectives/<name>.py; weight 0 disables one."""
  o = ml_collections.ConfigDict()

  def head_stack(num_layers: int) -> ml_collections.ConfigDict:
    """A head's transformer (xefm_jax/objectives/heads.py `stack_config`): width 0 is the
    model width up to max_width, mlp_dim 0 is 4 x width."""
    c = transformer_config(num_layers=num_layers, num_heads=4, mlp_dim=0, width=0)
    c.max_width = 1024
    return c

  # Weights: on configs/local.py every weighted loss starts at about 0.5-2.
  # current action, subtask, next action (t + next_horizon frames), transition (the shard's
  # per-frame label: a boundary within +-10 frames of now): the eval suite's definitions,
  # from the `readout` tokens, on windows blind to their caption and not masked; hidden -1:
  # linear heads (labels linearly readable from the readout), else an MLP (0: readout width)
  o.procedure = ml_collections.ConfigDict(dict(weight=1.0, readout="window", next_horizon=20,
                                               hidden=-1))
  # 4M / MultiMAE: in a `window_fraction` of the windows (that many of each device's rows,
  # at least one: a device with one row masks it), hide `mask_ratio` of the tokens of
  # `modalities` with per-window modality budgets ~ Dirichlet(alpha) (every objective then
  # sees those windows masked); a light decoder (width 0: the model width up to max_width;
  # mlp_dim 0: 4 x width) reconstructs the hidden ones, on the masked windows only
  o.masked_modeling = ml_collections.ConfigDict(dict(
      weight=1.0, modalities=("audio", "depth", "imu", "language", "mocap", "pose", "video"),
      mask_ratio=0.75, window_fraction=0.5, dirichlet_alpha=1.0,
      modality_weights=ml_collections.ConfigDict(dict(language=0.5)),
      decoder=head_stack(num_layers=2)))
  # SigLIP: each of `pairs` against the `hub` modality (pooled unimodal embeddings), a
  # caption text tower against the "window" readout of windows that did not see it,
  # and the fused window embeddings of two sides of the window (extra passes over only those
  # modalities, on every `side_every`-th window; side_weight 0 turns them off)
  o.contrastive = ml_collections.ConfigDict(dict(
      weight=0.2, hub="video", pairs=("audio", "depth", "imu", "language", "mocap", "pose"),
      dim=128, hidden=512, text_weight=1.0, init_temperature=10.0, init_bias=-10.0,
      text=head_stack(num_layers=1), side_weight=1.0, side_every=4,
      sides=ml_collections.ConfigDict(dict(motion=("imu", "mocap", "pose"),
                                           visual=("depth", "video")))))
  # V-JEPA / BYOL: from the `readout` tokens, predict the EMA encoder's layer-normalised
  # latents of the next window (its embedding and its fused tokens pooled per modality);
  # smooth-L1, plus a variance hinge on this window's own latents against collapse
  o.future_state = ml_collections.ConfigDict(dict(
      weight=2.0, readout="future", modalities=("depth", "imu", "mocap", "pose", "video"),
      hidden=0, beta=1.0, variance_weight=1.0, variance_floor=0.25))
  # future camera motion relative to the last context frame (regressed as average rates in
  # units of speed_scale m/s and turn_scale /s) and both hands' joints over `horizon` future
  # frames (0: all of data.future), from the `readout` tokens
  o.forecasting = ml_collections.ConfigDict(dict(
      weight=2.0, readout="future", horizon=0, hidden=0, speed_scale=1.0, turn_scale=1.0,
      ego_weight=1.0, hands_weight=1.0))
  # left/right wrist contact (contacts > threshold) and the relevant-object set at now, from
  # the `readout` tokens, on windows blind to their caption and not masked
  o.contact = ml_collections.ConfigDict(dict(weight=1.0, readout="window", threshold=0.5,
                                             hidden=-1))
  # action chunks in the hand action space (data.actions: chunk steps of `step` frames,
  # within data.future), from the `readout` tokens; the target is normalised by fixed scales:
  # wrist translation by speed_scale m/s and rotation by turn_scale rad/s times the step's
  # seconds, fingers (wrist frame) by finger_scale m
  o.policy = ml_collections.ConfigDict(dict(weight=1.0, readout="policy", hidden=0,
                                            loss="l1", speed_scale=0.5, turn_scale=2.0,
                                            finger_scale=0.1))
  # a causal decoder with cross-attention to the fused tokens writes the structured answer
  # (up to max_objects objects) and the caption; labels as procedure's and contact's
  o.captioning = ml_collections.ConfigDict(dict(
      weight=0.5, max_objects=4, next_horizon=o.procedure.get_ref("next_horizon"),
      contact_threshold=o.contact.get_ref("threshold"),
      decoder=head_stack(num_layers=2)))
  # VICReg's variance and covariance terms on the window embedding that the evaluation
  # probes (model.xefm.window_embedding), over the global batch: every dimension's std
  # across windows >= gamma (hinge), and the squared off-diagonal covariance / dim, of the
  # correlation when `standardise` (scale-free); against the dimensional collapse of the
  # embedding (effective rank 1.4 of 576 without it: benchmarks/grounding.py). The weights
  # keep VICReg's 25 : 1 ratio of variance to covariance. Off by default: at weight 1 the
  # README job's effective rank rose from 1.4 to 20.3 but its wins did not (0 of 12, 0 of
  # 20 against 1 of 20 without; benchmarks/RESULTS.md "VICReg ...").
  o.vicreg = ml_collections.ConfigDict(dict(weight=0.0, gamma=1.0, standardise=True,
                                            variance_weight=1.0, covariance_weight=0.04))
  return o


def base_config() -> ml_collections.ConfigDict:
  """Everything a run needs: seed, data, model, objectives, optim, train, mesh, rules."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.data = data_config()
  c.model = model_config(c.data)
  c.objectives = objectives_config()
  c.optim = optim_config()
  c.train = train_config()
  c.mesh = mesh_config()
  c.logical_axis_rules = logical_axis_rules()
  return c
