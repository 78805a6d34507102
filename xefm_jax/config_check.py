"""Config validation at start, before anything is compiled or read: one line per bad key.

    config_check.check(config, num_devices=jax.device_count())   # every launcher
    config_check.check_corpus(config, corpus)                     # once the corpus is known

Ranges and types of the optimizer, schedule, training, data and mesh settings, the
divisibility of the global batch (by grad_accum, the data-parallel devices and the
processes), objective names (a file of xefm_jax/objectives/) and the readouts they read,
and the window against the corpus' episodes. Each problem names the full config key, the
value and what is expected (`errors` prints them as `xefm: ...` lines). A key the config
does not have is refused while the flags are parsed (`errors.run`).
"""

from __future__ import annotations

import math
import pathlib
from typing import Any, Optional

import ml_collections

from xefm_jax import errors
from xefm_jax.data import xperience

RNG_IMPLS = ("threefry2x32", "rbg", "unsafe_rbg")
# mesh axes that split the batch: the rule of "activation_batch" (configs/common.py)
BATCH_LOGICAL_AXIS = "activation_batch"


class ConfigError(errors.Error):
  """Config values out of their range; one line per problem."""


class _Checks:
  """Collects problems of one config, `config.<key>: is <value>, expected <...>; <fix>`."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.found: list[str] = []

  def value(self, key: str) -> Any:
    node = self.config
    for part in key.split("."):
      node = node[part]
    return node

  def fail(self, key: str, value: Any, expected: str, fix: Optional[str] = None) -> None:
    self.found.append(f"config.{key}: is {value!r}, expected {expected}; "
                      f"{fix or f'set --config.{key}'}")

  def number(self, key: str, low: float = -math.inf, high: float = math.inf, *,
             low_open: bool = False, high_open: bool = False, integer: bool = False,
             fix: Optional[str] = None) -> Optional[float]:
    """The value of `key` if it is a number in the range, else None (a problem recorded)."""
    v = self.value(key)
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(v, int) if integer else isinstance(v, (int, float))
    lo = "" if low == -math.inf else f"{'>' if low_open else '>='} {low:g}"
    hi = "" if high == math.inf else f"{'<' if high_open else '<='} {high:g}"
    if low != -math.inf and high != math.inf:
      expected = (f"{kind} in {'(' if low_open else '['}{low:g}, {high:g}"
                  f"{')' if high_open else ']'}")
    else:
      expected = f"{kind} {lo or hi}".strip()
    if isinstance(v, bool) or not ok_type or not math.isfinite(v):
      self.fail(key, v, expected, fix)
      return None
    if (v < low or (low_open and v == low)) or (v > high or (high_open and v == high)):
      self.fail(key, v, expected, fix)
      return None
    return v


def _optim(c: _Checks) -> None:
  c.number("optim.learning_rate", 0, low_open=True,
           fix="give the peak learning rate, e.g. --config.optim.learning_rate=3e-4")
  warmup = c.number("optim.warmup_steps", 0, integer=True)
  decay = c.value("optim.decay_steps")
  if decay != -1:
    c.number("optim.decay_steps", 1, integer=True,
             fix="give a positive cosine length, or -1 for the rest of the run")
  c.number("optim.end_lr_fraction", 0, 1)
  c.number("optim.b1", 0, 1, high_open=True)
  c.number("optim.b2", 0, 1, high_open=True)
  c.number("optim.eps", 0, low_open=True)
  c.number("optim.weight_decay", 0)
  c.number("optim.clip_norm", 0, fix="give a positive global norm, or 0 for no clipping")
  c.number("optim.grad_accum", 1, integer=True)
  from xefm_jax.train import optimizer  # noqa: PLC0415 (jax-free checks stay import-light)
  try:
    optimizer.trainable_rules(c.config.optim)
  except ValueError as e:
    c.found.append(f"{e}; see configs/common.py optim_config")
  steps = c.value("train.steps")
  if warmup is not None and isinstance(steps, int) and 1 <= steps < warmup:
    c.fail("optim.warmup_steps", warmup, f"at most config.train.steps ({steps}): the "
           "learning rate would never reach its peak",
           "lower --config.optim.warmup_steps (0 for a short test run) or train longer")


def _train(c: _Checks) -> None:
  c.number("train.steps", 1, integer=True)
  c.number("train.log_every", 1, integer=True)
  c.number("train.eval_every", 0, integer=True, fix="give a step count, or 0 for none")
  c.number("train.eval_batches", 0, integer=True,
           fix="give a batch count, or 0 for every full batch of the val split")
  if "eval_retrieval_windows" in c.config.train:
    c.number("train.eval_retrieval_windows", 0, integer=True,
             fix="give a window count, or 0 for every captioned window evaluated")
  c.number("train.ckpt_every", 1, integer=True)
  c.number("train.keep", 1, integer=True)
  c.number("train.ema_decay", 0, 1)
  c.number("train.peak_flops_per_device", 0)
  profile = tuple(c.value("train.profile_steps"))
  if profile and not (len(profile) == 2 and all(isinstance(s, int) and s >= 0
                                                for s in profile)
                      and profile[0] <= profile[1]):
    c.fail("train.profile_steps", profile, "(first, last) steps with 0 <= first <= last, "
           "or () for no trace")
  if c.value("train.rng_impl") not in RNG_IMPLS:
    c.fail("train.rng_impl", c.value("train.rng_impl"), f"one of {', '.join(RNG_IMPLS)}")


def _data(c: _Checks) -> None:
  batch = c.number("data.batch_size", 1, integer=True)
  for key in ("frames", "frame_stride", "window_stride", "view_size", "depth_size",
              "read_threads"):
    c.number(f"data.{key}", 1, integer=True)
  for key in ("future", "worker_count", "prefetch"):
    c.number(f"data.{key}", 0, integer=True)
  c.number("data.caption_len", 2, integer=True, fix="leave room for BOS and EOS")
  c.number("data.view_dropout", 0, 1, high_open=True)
  c.number("data.modality_dropout", 0, 1, high_open=True)
  views = tuple(c.value("data.views"))
  unknown = [v for v in views if v not in xperience.VIEWS]
  if not views or unknown or len(set(views)) != len(views):
    c.fail("data.views", views, f"distinct views among {', '.join(xperience.VIEWS)}")
  accum = c.value("optim.grad_accum")
  if batch is not None and isinstance(accum, int) and accum >= 1 and batch % accum:
    c.fail("data.batch_size", batch, f"a multiple of config.optim.grad_accum ({accum}): "
           "the batch is split into that many microbatches",
           "change --config.data.batch_size or --config.optim.grad_accum")


def _mesh(c: _Checks, num_devices: Optional[int], process_count: int) -> None:
  """The mesh fits the devices, and every microbatch splits over the data-parallel ones."""
  from xefm_jax.parallel import mesh as mesh_lib

  if num_devices is None:
    return
  try:
    shape = dict(zip(mesh_lib.MESH_AXES, mesh_lib.mesh_shape(c.config.mesh, num_devices)))
  except ValueError as e:
    c.found.append(f"config.mesh: {e}; set --config.mesh.data/fsdp/tensor (inside a node "
                   "or slice; one may be -1) and --config.mesh.dcn.data/fsdp/tensor (nodes or "
                   "slices each axis spans)")
    return
  rules = {name: axes for name, axes in c.config.logical_axis_rules}
  axes = rules.get(BATCH_LOGICAL_AXIS) or ()
  axes = (axes,) if isinstance(axes, str) else tuple(axes)
  parallel = math.prod(shape[a] for a in axes)
  batch, accum = c.value("data.batch_size"), c.value("optim.grad_accum")
  if not (isinstance(batch, int) and isinstance(accum, int) and batch >= 1 and accum >= 1):
    return  # reported by _data / _optim
  split = " x ".join(f"{a} {shape[a]}" for a in axes) or "none"
  if batch % accum == 0 and (batch // accum) % parallel:
    what = ("the batch" if accum == 1 else
            f"each of its config.optim.grad_accum={accum} microbatches")
    c.fail("data.batch_size", batch,
           f"a multiple of {parallel * accum}: {what} splits over the {parallel} "
           f"data-parallel devices of the mesh ({split}, {num_devices} devices)",
           f"use --config.data.batch_size={max(1, round(batch / (parallel * accum))) * parallel * accum}"
           " or another --config.mesh")
  if batch % process_count:
    c.fail("data.batch_size", batch, f"a multiple of the {process_count} processes (each "
           "reads its share of every batch)")


def _objectives(c: _Checks) -> None:
  from xefm_jax.objectives import base as objectives_base

  files = sorted(p.stem for p in pathlib.Path(objectives_base.__file__).parent.glob("*.py")
                 if not p.stem.startswith("_"))
  enabled = []
  for name, cfg in c.config.objectives.items():
    try:
      objectives_base.get_objective(name)
    except KeyError:
      near = errors.closest(name, files)
      c.found.append(f"config.objectives.{name}: no such objective (no "
                     f"xefm_jax/objectives/{name}.py registers it); "
                     + (f"did you mean config.objectives.{near}?" if near else
                        "remove the entry or add the objective's file"))
      continue
    if c.number(f"objectives.{name}.weight", 0, fix="give a weight >= 0 (0 disables it)"):
      enabled.append(name)
  if not enabled and not any(f.startswith("config.objectives.") for f in c.found):
    c.found.append("config.objectives: no objective has a positive weight; nothing would be "
                   "trained: give one a weight, e.g. --config.objectives.procedure.weight=1")
  readouts = list(c.config.model.fusion.readouts.keys())
  modalities = list(c.config.model.modalities.keys())
  if c.config.model.get("group_dropout") is not None:
    c.number("model.group_dropout.rate", 0.0, 1.0, fix="give a probability in [0, 1]")
    for group, mods in c.config.model.group_dropout.groups.items():
      if not mods or set(mods) - set(modalities):
        c.fail(f"model.group_dropout.groups.{group}", tuple(mods),
               f"a non-empty subset of the model's modalities ({', '.join(modalities)})")
  for name in enabled:
    readout = c.config.objectives[name].get("readout")
    # a readout the model lacks means the window embedding (objectives/heads.py `readout`);
    # a near miss of one it has is a typo
    if isinstance(readout, str) and readout not in readouts:
      near = errors.closest(readout, readouts)
      if near:
        c.fail(f"objectives.{name}.readout", readout, "one of config.model.fusion.readouts "
               f"({', '.join(readouts)})", f"did you mean '{near}'?")
  if "policy" in enabled:  # its chunk comes from the window's future frames
    from xefm_jax.data import actions
    from xefm_jax.objectives import policy
    try:
      policy.future_frames(c.config.data)
    except (actions.ActionError, KeyError, AttributeError, TypeError) as e:
      c.fail("data.actions", dict(c.config.data.get("actions") or {}),
             f"an action space whose chunk fits the future frames ({e})",
             "lower --config.data.actions.chunk or .step, or raise --config.data.future")


def problems(config: ml_collections.ConfigDict, num_devices: Optional[int] = None,
             process_count: int = 1) -> list[str]:
  """Every problem of `config`, one line each ([] when it is valid). `num_devices`: the
  devices the mesh spans (None: the mesh is not checked)."""
  c = _Checks(config)
  _optim(c)
  _train(c)
  _data(c)
  _mesh(c, num_devices, process_count)
  _objectives(c)
  return c.found


def check(config: ml_collections.ConfigDict, num_devices: Optional[int] = None,
          process_count: int = 1) -> None:
  """Raises ConfigError listing every problem of `config` (see `problems`)."""
  found = problems(config, num_devices, process_count)
  if found:
    raise ConfigError("\n".join(found))


def window_span(data: ml_collections.ConfigDict) -> int:
  """Frames of the corpus one window reads (context, future or next window), as
  data/source.py's WindowSource."""
  s, w = int(data.frame_stride), int(data.frames)
  low = s * (w + max(int(data.future), w if data.next_window else 0))
  return max(low, s * (2 * w if data.next_window else w))


def check_corpus(config: ml_collections.ConfigDict, corpus: Any) -> None:
  """The window fits the corpus' train episodes (config.data against `corpus`, a
  data/source.py Corpus)."""
  span = window_span(config.data)
  train = [e["length"] for e in corpus.episodes if e["split"] == "train"]
  if train and max(train) < span:
    raise ConfigError(
        f"config.data.frames: a window reads {span} frames of the corpus (frames "
        f"{config.data.frames} x frame_stride {config.data.frame_stride}, then the future "
        f"{config.data.future} or the next window), longer than every train episode of "
        f"{corpus.root} (the longest: {max(train)} frames); shorten --config.data.frames, "
        "future or frame_stride, or use longer episodes")
