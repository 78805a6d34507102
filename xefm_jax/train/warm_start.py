"""Warm starts (config.model.init_from): parameters taken from other checkpoints before the
first step, big_vision's `model_init` with a parameter mapping.

    config.model.init_from = (
        dict(path="runs/stage1"),                                  # an XEFM run, identity
        dict(path="siglip.npz", mapping=(                          # a big_vision image tower
            (r"params/img/(embedding/.*|pos_embedding|Transformer/.*)",
             r"model/video/tokenizer/vit/\1"),
            (r"params/.*", "skip"))),
    )
    state = warm_start.apply(config, state)   # train/loop.py, on a fresh state only

A source is an XEFM Orbax checkpoint (a run's workdir, its checkpoints/ folder or one step
folder; the newest step unless `step` is given; its `params` are read, any size or stage)
or a big_vision `.npz` (flattened "/" names, as big_vision and the published ViT / SigLIP
checkpoints write them). `mapping` is (regex, target) pairs over the source's parameter
names: the first regex that matches a whole name decides; the target is a `re` template of
this model's parameter path ("model/fusion/...", "procedure/...") or "skip". The default
maps every name to itself.

Strict where a silent mistake would cost a run: a source parameter that no regex matches,
one mapped to a path the model lacks, or one whose shape differs from its target is an
error naming it and both shapes (add a (regex, "skip") pair to leave it out). This model's
parameters that no source writes (new heads, a wider head that was skipped) are reported
and keep their initial values. Each array is read straight onto the shards of its target
(Orbax restores each device's shard; an `.npz` array is read once on the host and each
device takes its slice), so no whole model is copied onto one host. The EMA encoder starts
from the loaded trunk; the optimizer state stays fresh.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import pathlib
import re
import zipfile
from typing import Any, Optional

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from xefm_jax import errors
from xefm_jax.train import optimizer
from xefm_jax.train.state import TrainState

SKIP = "skip"
IDENTITY = ((r".*", r"\g<0>"),)
VIT_PREFIX = "model/video/tokenizer/vit/"  # modalities/video_vit.py's per-frame ViT


class WarmStartError(errors.Error):
  """A source that cannot be applied; the message names the source and the parameters."""


@dataclasses.dataclass
class Report:
  """What one source did: target <- source names loaded, source names skipped, and this
  model's parameters it did not write."""

  path: str
  loaded: dict[str, str]
  skipped: list[str]
  not_written: list[str]

  def summary(self) -> str:
    return (f"init_from {self.path}: {len(self.loaded)} parameters loaded, "
            f"{len(self.skipped)} source parameters skipped, {len(self.not_written)} of this "
            f"model's parameters not in it (left as they were): "
            + (", ".join(_prefixes(self.not_written)) or "none"))


def _prefixes(names: list[str], depth: int = 2) -> list[str]:
  """Names grouped by their first `depth` path parts, for a readable log line."""
  groups: dict[str, int] = {}
  for n in names:
    key = "/".join(n.split("/")[:depth])
    groups[key] = groups.get(key, 0) + 1
  return [f"{k}/* ({v})" for k, v in groups.items()]


def _flat(tree: Any) -> dict[str, Any]:
  return {optimizer.param_name(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def nested(flat: dict[str, Any]) -> dict:
  out: dict = {}
  for name, x in flat.items():
    node = out
    *parents, last = name.split("/")
    for part in parents:
      node = node.setdefault(part, {})
    node[last] = x
  return out


# ------------------------------------------------------------------------------- sources


def xefm_step_dir(path: pathlib.Path, step: Optional[int]) -> pathlib.Path:
  """The step folder of an XEFM run: `path` is the workdir, its checkpoints/ or a step."""
  if (path / "state").is_dir():
    return path
  if (path / "checkpoints").is_dir():
    path = path / "checkpoints"
  steps = sorted(int(p.name) for p in path.iterdir() if p.name.isdigit()) if path.is_dir() else []
  if not steps:
    raise WarmStartError(f"{path}: no complete checkpoint step (a folder <step>/state) in it; "
                         "give a run's workdir, its checkpoints/ folder or one step folder")
  if step is None:
    return path / str(steps[-1])
  if step not in steps:
    raise WarmStartError(f"{path}: has no step {step}; it has {steps}")
  return path / str(step)


def _xefm_shapes(step_dir: pathlib.Path) -> dict[str, tuple[tuple[int, ...], Any]]:
  meta = ocp.PyTreeCheckpointer().metadata(step_dir / "state").item_metadata
  tree = meta.tree if hasattr(meta, "tree") else meta
  if "params" not in tree:
    raise WarmStartError(f"{step_dir / 'state'}: not an XEFM train state (no 'params'); "
                         f"it holds {sorted(tree)}")
  return {n: (tuple(m.shape), m.dtype) for n, m in _flat(tree["params"]).items()}


def _npz_shapes(path: pathlib.Path) -> dict[str, tuple[tuple[int, ...], Any]]:
  """Shapes and dtypes from the .npy headers (no array is read)."""
  fmt = np.lib.format
  readers = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}
  out = {}
  with zipfile.ZipFile(path) as z:
    for info in z.infolist():
      if not info.filename.endswith(".npy"):
        continue
      with z.open(info) as f:
        version = fmt.read_magic(f)
        if version in readers:
          shape, _, dtype = readers[version](f)
        else:  # a newer header version: read the array itself
          f.seek(0)
          array = fmt.read_array(f)
          shape, dtype = array.shape, array.dtype
      out[info.filename[:-4]] = (tuple(shape), dtype)
  return out


def _load_xefm(step_dir: pathlib.Path, plan: dict[str, str], targets: dict[str, Any]
               ) -> dict[str, jax.Array]:
  """The planned source parameters, each restored onto its target's sharding and dtype."""
  by_source = {s: targets[t] for t, s in plan.items()}
  item = {"params": nested({s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
                             for s, x in by_source.items()})}
  restored = ocp.PyTreeCheckpointer().restore(
      step_dir / "state", args=ocp.args.PyTreeRestore(
          item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
          partial_restore=True))
  flat = _flat(restored["params"])
  return {t: flat[s] for t, s in plan.items()}


def _load_npz(path: pathlib.Path, plan: dict[str, str], targets: dict[str, Any]
              ) -> dict[str, jax.Array]:
  out = {}
  with np.load(path) as npz:
    for t, s in plan.items():
      value = np.asarray(npz[s]).astype(targets[t].dtype)
      out[t] = jax.make_array_from_callback(value.shape, targets[t].sharding,
                                            lambda index, v=value: v[index])
  return out


# ------------------------------------------------------------------------------- mapping


def compile_mapping(mapping: Any, where: str) -> tuple[tuple[re.Pattern, str], ...]:
  out = []
  for i, entry in enumerate(tuple(mapping)):
    if not (isinstance(entry, (tuple, list)) and len(entry) == 2
            and all(isinstance(e, str) for e in entry)):
      raise WarmStartError(f"{where}.mapping[{i}]: is {entry!r}, expected a (regex, target "
                           "template or 'skip') pair")
    try:
      out.append((re.compile(entry[0]), entry[1]))
    except re.error as e:
      raise WarmStartError(f"{where}.mapping[{i}]: {entry[0]!r} is not a regular expression "
                           f"({e})") from None
  return tuple(out)


def plan_mapping(source: dict[str, tuple[tuple[int, ...], Any]], targets: dict[str, Any],
                 mapping: tuple[tuple[re.Pattern, str], ...], where: str,
                 absent_ok: tuple[str, ...] = ()) -> tuple[dict[str, str], list[str]]:
  """({target name: source name}, skipped source names); every problem in one error.
  A target under one of the `absent_ok` prefixes that the model lacks is skipped (the
  frozen ViT of a model that reads its extracted features instead)."""
  plan: dict[str, str] = {}
  skipped, problems = [], []
  for name, (shape, _) in sorted(source.items()):
    for pattern, to in mapping:
      if m := pattern.fullmatch(name):
        break
    else:
      problems.append(f"source parameter {name} {shape}: no regex of the mapping matches it; "
                      f"map it or add ({re.escape(name)!r}, 'skip')")
      continue
    if to == SKIP:
      skipped.append(name)
      continue
    target = m.expand(to)
    if target not in targets and target.startswith(absent_ok or ("\0",)):
      skipped.append(name)
    elif target not in targets:
      near = errors.closest(target, targets)
      problems.append(f"source parameter {name} {shape} maps to {target}, which this model "
                      "does not have" + (f" (did you mean {near}?)" if near else "")
                      + f"; fix the mapping or add ({re.escape(name)!r}, 'skip')")
    elif tuple(targets[target].shape) != shape:
      problems.append(f"source parameter {name} has shape {shape}, this model's {target} has "
                      f"shape {tuple(targets[target].shape)}; add ({re.escape(name)!r}, "
                      "'skip') to leave it at its initial value")
    elif target in plan:
      problems.append(f"source parameters {plan[target]} and {name} both map to {target}")
    else:
      plan[target] = name
  if problems:
    raise WarmStartError("\n".join(f"{where}: {p}" for p in problems))
  return plan, skipped


# --------------------------------------------------------------------------------- apply


def load(source: Any, targets: dict[str, Any], where: str = "config.model.init_from[0]",
         absent_ok: tuple[str, ...] = ()) -> tuple[dict[str, jax.Array], Report]:
  """One source's arrays {target name: array on the target's sharding} and its report.

  targets: {this model's parameter name: an array or ShapeDtypeStruct with a sharding}.
  """
  source = dict(source)
  if "path" not in source:
    raise WarmStartError(f"{where}: has no 'path'; expected dict(path=..., mapping=...)")
  if unknown := set(source) - {"path", "mapping", "step"}:
    raise WarmStartError(f"{where}: unknown keys {sorted(unknown)}; expected path, mapping, "
                         "step")
  path = pathlib.Path(os.path.expanduser(str(source["path"])))
  where = f"{where} ({path})"
  mapping = compile_mapping(source.get("mapping") or IDENTITY, where)
  if path.suffix == ".npz":
    if not path.is_file():
      raise WarmStartError(f"{path}: no such file (config.model.init_from)")
    shapes = _npz_shapes(path)
    plan, skipped = plan_mapping(shapes, targets, mapping, where, absent_ok)
    arrays = _load_npz(path, plan, targets)
  else:
    step_dir = xefm_step_dir(path, source.get("step"))
    where = f"{where.rsplit(' (', 1)[0]} ({step_dir})"
    plan, skipped = plan_mapping(_xefm_shapes(step_dir), targets, mapping, where, absent_ok)
    arrays = _load_xefm(step_dir, plan, targets) if plan else {}
  report = Report(str(path), plan, skipped, sorted(set(targets) - set(plan)))
  return arrays, report


def apply(config: ml_collections.ConfigDict, state: TrainState
          ) -> tuple[TrainState, list[Report]]:
  """`state` with the parameters of config.model.init_from's sources (in order, a later
  one overriding an earlier), the EMA restarted from them; the reports are logged."""
  params = _flat(state.params)
  reports = []
  # a model reading extracted video features has no ViT: its weights are the features'
  absent_ok = (VIT_PREFIX,) if config.data.get("video_features") else ()
  for i, source in enumerate(tuple(config.model.get("init_from") or ())):
    arrays, report = load(source, params, f"config.model.init_from[{i}]", absent_ok)
    params.update(arrays)
    reports.append(report)
    logging.info("%s", report.summary())
  treedef = jax.tree.structure(state.params)
  names = list(_flat(state.params))
  new = jax.tree.unflatten(treedef, [params[n] for n in names])
  return state.replace(params=new, ema=jax.tree.map(jnp.copy, new["model"])), reports


# ----------------------------------------------------- the frozen video encoder's weights


@functools.lru_cache(maxsize=4)
def pixel_model_targets(model_json: str, window) -> dict[str, jax.ShapeDtypeStruct]:
  """The parameter shapes by name (on one device) of the model reading pixels (with its
  ViT, when video features replace them in training): what extraction loads. Cached."""
  from xefm_jax.model.xefm import XEFM  # noqa: PLC0415
  from xefm_jax.parallel import init as init_lib  # noqa: PLC0415
  model = XEFM(ml_collections.ConfigDict(json.loads(model_json)))
  window = dataclasses.replace(window, video_features="", feature_shape=())
  batch = init_lib.abstract_window_batch(window, 1)
  shapes = jax.eval_shape(model.init, jax.random.key(0), batch)["params"]
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return {"model/" + n: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device)
          for n, x in _flat(nn.unbox(shapes)).items()}


def vit_params(config: ml_collections.ConfigDict, window) -> dict[str, np.ndarray]:
  """The video ViT's parameters {name below VIT_PREFIX: array} from config.model.init_from
  (as training loads them); {} when no source gives any, an error when some are missing."""
  targets = pixel_model_targets(config.model.to_json(), window)
  loaded: dict[str, np.ndarray] = {}
  for i, source in enumerate(tuple(config.model.get("init_from") or ())):
    arrays, report = load(source, targets, f"config.model.init_from[{i}]")
    loaded.update({n: np.asarray(x) for n, x in arrays.items() if n.startswith(VIT_PREFIX)})
    logging.info("%s", report.summary())
  missing = sorted(n for n in targets if n.startswith(VIT_PREFIX) and n not in loaded)
  if loaded and missing:
    raise WarmStartError(f"config.model.init_from: gives some of the video ViT's parameters "
                         f"but not {missing[:4]}{' ...' if len(missing) > 4 else ''}")
  return {n[len(VIT_PREFIX):]: x for n, x in loaded.items()}
