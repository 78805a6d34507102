"""The evaluation suite (../shared/EVAL_SUITE.md) as a table: every task is a config entry.

    python launch/eval.py --config=configs/eval.py --workdir runs/local [--checkpoint STEP]
    configs/eval.py:quick   fewer windows, a sparser probe grid, fewer bootstrap replicates
                            (tests, notebooks)

A task names its evaluator (xefm_jax/eval/evaluators/<kind>.py), its target (a key of
xefm_jax/eval/targets.py's `window_targets`, or `handcrafted:<modalities>` for a fixed
target made of baseline statistics), its input variant(s) (xefm_jax/eval/variants.py) and
its metric. Adding a task is one entry here; adding a kind of task is one evaluator file.
Every task is scored for four feature sets: the checkpoint's trunk ("model"), the EMA of
that trunk saved beside it ("model_ema"), hand-crafted window statistics ("handcrafted",
baseline a) and a fresh init of the same config ("random_init", baseline b), with the same
linear probe and the same regularisation grid, fitted on train, chosen on val, scored once
on test; a paired bootstrap over test sessions gives each model-minus-baseline difference
its 95% interval. `supervised_by` names the objectives that train the task's own label
(the report tells supervised transfer from what pretraining alone learned).
"""

from __future__ import annotations

import ml_collections

# Modality groups of the contracts, "motion" (motion + IMU + camera pose) and "visual"
# (video, depth): the input streams whose definition is on that side
# (xefm_jax/data/streams/<name>.py, StreamDef.group), restricted to the model's modalities.


# Objectives whose supervised heads read a task's label: procedure (action, subtask, next
# action, transition), contact (contact, relevant objects) and the captioning decoder's
# structured fields (action, subtask, objects, contact, transition, next action).
PROCEDURE = ("procedure", "captioning")
CONTACT = ("contact", "captioning")


def _task(evaluator: str, target: str, inputs: tuple[str, ...], metric: str,
          higher_is_better: bool = True, supervised_by: tuple[str, ...] = (),
          **extra) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      evaluator=evaluator, target=target, inputs=inputs, metric=metric,
      higher_is_better=higher_is_better, supervised_by=supervised_by, **extra))


def tasks() -> ml_collections.ConfigDict:
  """The 20 window tasks of the public task-suite contracts (12, then the 8 additional)."""
  t = ml_collections.ConfigDict(sort_keys=False)  # the contracts' order
  t.timeline_action = _task("classify", "action", ("full",), "macro_f1",
                            supervised_by=PROCEDURE)
  t.timeline_subtask = _task("classify", "subtask", ("full",), "macro_f1",
                             supervised_by=PROCEDURE)
  t.transition_detection = _task("classify", "transition", ("full",), "macro_f1",
                                 supervised_by=PROCEDURE)
  t.next_action = _task("classify", "next_action", ("full",), "macro_f1",
                        supervised_by=PROCEDURE)
  # both hands' 21 joints over the next 10 frames, metres; a probe per feature set
  t.hand_trajectory_forecast = _task("regress", "hands_future", ("full",), "mpjpe",
                                     higher_is_better=False)
  t.contact_prediction = _task("classify", "contact", ("full",), "macro_f1",
                               supervised_by=CONTACT)
  t.object_relevance = _task("multilabel", "objects", ("full",), "micro_f1",
                             supervised_by=CONTACT)
  # a sentence (fixed TF-IDF of its words) -> its window among the test windows; a ridge
  # map takes the window side into the text space; windows with the same sentence count
  t.caption_grounding = _task("retrieval", "caption", ("full",), "mrr", query="text", pool=0)
  # motion side -> its visual side among `pool` random test windows (0: all of them)
  t.cross_modal_retrieval = _task("retrieval", "window", ("motion", "visual"), "r@5",
                                  query="motion", pool=100)
  # motion side -> a FIXED target (hand-crafted depth and video statistics of the window),
  # so scores compare across feature sets
  t.modality_reconstruction = _task("regress", "handcrafted:depth,video", ("motion",), "r2")
  # windows t and t + W (W = the window's frames), in order or swapped (seeded)
  t.temporal_order = _task("pairs", "order", ("full",), "f1", offset="window")
  # motion side of t with the visual side of t, or of t + 8 windows (seeded); positive =
  # misaligned
  t.misalignment_detection = _task("pairs", "misaligned", ("motion", "visual"), "f1",
                                   offset="8_windows")
  # Tasks 13-20. Labels 5 s (100 frames) after now come from the episode's whole timeline
  # (targets.horizon_targets), so windows keep their 40 future frames; a horizon past the
  # episode's end is unknown and left out.
  t.long_horizon_next_action = _task("classify", "action_5s", ("full",), "macro_f1")
  t.next_subtask_forecast = _task("classify", "subtask_5s", ("full",), "macro_f1")
  # the interaction sentence at now, and (action, object set) at now, as classes
  t.interaction_text_prediction = _task("classify", "interaction", ("full",), "macro_f1")
  t.action_object_relation = _task("classify", "action_objects", ("full",), "macro_f1")
  t.object_set_forecast = _task("multilabel", "objects_5s", ("full",), "micro_f1")
  # both hands' 21 joints at now from the IMU alone; mean absolute error, metres
  t.imu_to_hand_pose = _task("regress", "hands_now", ("imu",), "mae", higher_is_better=False)
  # fisheye camera 1 of a window -> its synchronized fisheye camera 3 among `pool` windows
  t.camera_view_sync_retrieval = _task("retrieval", "window", ("cam1", "cam3"), "mrr",
                                       probes=("linear",), query="cam1", pool=100)
  # 20 fps frames to the next action start, capped at 200
  t.time_to_transition = _task("regress", "time_to_transition", ("full",), "mae",
                               higher_is_better=False)
  return t


def extensions() -> ml_collections.ConfigDict:
  """The four extension probes."""
  t = ml_collections.ConfigDict(sort_keys=False)
  t.motion_intensity = _task("regress", "motion_intensity", ("full",), "r2")
  t.multi_view_retrieval = _task("retrieval", "window", ("view_a", "view_b"), "r@5",
                                 query="view_a", pool=100)
  t.action_phase = _task("regress", "action_phase", ("full",), "r2")
  t.ego_motion_forecast = _task("regress", "ego_future", ("full",), "ade@2s",
                                higher_is_better=False)
  return t


def variants() -> ml_collections.ConfigDict:
  """Input variants: which modalities (and camera views) a task's window side keeps.

  "full" leaves out language: a window's caption names its action and objects, so it
  would leak the labels. Views of view_a / view_b are the multi-view pair, cam1 / cam3
  the synchronized fisheye pair of camera_view_sync_retrieval.
  """
  v = ml_collections.ConfigDict()
  v.full = dict(modalities=("video", "audio", "depth", "pose", "mocap", "imu"))
  v.with_language = dict(modalities=("video", "audio", "depth", "pose", "mocap", "imu",
                                     "language"))
  v.motion = dict(group="motion")
  v.visual = dict(group="visual")
  v.view_a = dict(modalities=("video",), views=("stereo_left",))
  v.view_b = dict(modalities=("video",), views=("fisheye_cam0",))
  v.cam1 = dict(modalities=("video",), views=("fisheye_cam1",))
  v.cam3 = dict(modalities=("video",), views=("fisheye_cam3",))
  v.imu = dict(modalities=("imu",))
  return v


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0  # pair sampling, random views, retrieval pools
  c.random_init_seed = 1234  # baseline (b): a fresh init of the run's config
  c.batch_size = 64  # windows per forward pass (global; padded to a multiple of devices)
  # Windows: the run's window (frames, sizes) with 40 future frames (ego-motion 2 s), no
  # next window; stride = max(1, frames // 4) (EVAL_SUITE's 20 frames at stride 5, scaled).
  # A split with more than max_windows windows is read at a larger stride (up to W, which
  # keeps every pair task's partner window), then with fewer episodes.
  c.future = 40
  c.max_windows = ml_collections.ConfigDict(dict(train=2000, val=600, test=600))
  c.splits = ml_collections.ConfigDict(dict(fit="train", select="val", score="test"),
                                       sort_keys=False)
  # "model": the trunk the optimizer trained (wins are counted on it); "model_ema": the
  # EMA of that trunk (train/state.py), scored beside it on the tasks' own inputs
  c.feature_sets = ("model", "model_ema", "handcrafted", "random_init")
  c.variants = variants()
  c.tasks = tasks()
  c.extensions = extensions()
  # The world-model evaluation (its own report section; runs with a future_state head):
  # window t's predicted future latent -> its true future (the EMA latent of the window
  # s W frames later) among every test window's, by cosine; the head read directly, and
  # the equal ridge probe (train -> val alpha by `metric`) from `inputs[0]` of every
  # feature set (xefm_jax/eval/evaluators/future_retrieval.py).
  c.world_model = _task("future_retrieval", "future_window", ("full",), "mrr")
  # Probes (xefm_jax/eval/probes.py): linear only, one log grid of seven orders of
  # magnitude for every feature set, chosen on val (class-balanced for macro-F1 tasks);
  # `workers` probes fitted at once in worker processes (0: one per CPU core; the results
  # do not depend on it).
  c.probe = ml_collections.ConfigDict(dict(
      linear_c=(1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3),
      ridge_alpha=(1e-1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6),
      max_iter=500, max_train=4000, workers=0))
  # Paired bootstrap over test sessions (xefm_jax/eval/bootstrap.py): replicates, seed.
  c.bootstrap = ml_collections.ConfigDict(dict(replicates=1000, seed=0))
  # A classification task whose test labels occur in train for less than this fraction of
  # its test windows is flagged in the report (still scored and counted).
  c.min_label_coverage = 0.8
  # Missing-modality robustness: each modality dropped in turn from the task inputs named in
  # `inputs` (the whole window; add "motion", "visual" ... for theirs, at one test pass per
  # dropped modality each), and a random half of the camera views dropped; the probes
  # fitted on whole inputs are applied unchanged.
  c.robustness = ml_collections.ConfigDict(dict(
      inputs=("full",), drop=("video", "audio", "depth", "pose", "mocap", "imu"),
      random_views=True))
  # The pretraining protocol's extras (model heads only).
  c.protocol = ml_collections.ConfigDict(dict(
      ego_horizons_s=(0.5, 1.0, 2.0), hand_horizon=10, retrieval_ks=(1, 5, 10),
      reconstruct=ml_collections.ConfigDict(dict(depth="motion", video="motion"))))
  c.figures = True
  c.progress = True

  if arg == "quick":  # tests and notebooks: small, the same span of the grid, sparser
    c.batch_size = 32
    c.max_windows.update(train=400, val=160, test=160)
    c.probe.update(linear_c=(1e-3, 1e-1, 10.0), ridge_alpha=(1.0, 100.0, 1e4),
                   workers=1)  # small probes: starting worker processes costs more
    c.bootstrap.replicates = 200
  elif arg:
    raise ValueError(f"configs/eval.py: unknown variant {arg!r} (have: quick)")
  return c
