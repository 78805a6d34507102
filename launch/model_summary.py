"""Model summary: parameters per module, tokens per window per modality and per step, forward
FLOPs, and model FLOPs per window (forward + backward, PaLM's 6ND count: the one compute
budgets and scaling fits use, xefm_jax/train/flops.py `model_flops_per_window`).

    python launch/model_summary.py --config=configs/stage1.py [--depth=2] [--num_devices=N]

Nothing is allocated, so stage3 runs on a laptop: shapes come from `jax.eval_shape`, bytes
per device from the rules on an AbstractMesh of the config's mesh, and forward FLOPs from
XLA's cost analysis of the lowered (not compiled) forward pass for one window, with the
layers unrolled (a scanned loop's body would be counted once). Model FLOPs are 3 x the
matmul FLOPs of the training forward pass (objective heads included), traced, not compiled.
The last line is JSON.
"""

from __future__ import annotations

import json
import math

from absl import flags
import flax.linen as nn
import jax
from ml_collections import config_flags

from configs import common
from xefm_jax import config_check
from xefm_jax import errors
from xefm_jax.data import spec as spec_lib
from xefm_jax.model.xefm import XEFM
from xefm_jax.parallel import init, mesh as mesh_lib, report, sharding
from xefm_jax.train import flops as flops_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_DEPTH = flags.DEFINE_integer("depth", 2, "Module path depth of the parameter table.")
_NUM_DEVICES = flags.DEFINE_integer(
    "num_devices", None, "Devices for a -1 mesh axis (default: this machine's).")


def forward_flops(config, batch) -> float:
  """XLA's count for one forward pass of `batch`, with every stack unrolled."""
  model_cfg = config.model.copy_and_resolve_references()
  common.set_stacks(model_cfg, scan_layers=False, remat_policy="none")
  model = XEFM(model_cfg)
  variables = nn.unbox(jax.eval_shape(model.init, jax.random.key(0), batch))
  lowered = jax.jit(lambda v, b: model.apply(v, b, method=XEFM.encode)).lower(variables, batch)
  return float(lowered.cost_analysis()["flops"])


def main(argv):
  del argv
  config = _CONFIG.value
  window = spec_lib.WindowSpec.from_config(config.data)
  batch = init.abstract_window_batch(window, 1)
  model = XEFM(config.model)
  boxed = init.abstract_variables(model, batch)
  variables = nn.unbox(boxed)
  num_devices = _NUM_DEVICES.value or (
      math.prod(config.mesh[a] for a in mesh_lib.MESH_AXES)
      if all(config.mesh[a] > 0 for a in mesh_lib.MESH_AXES) else jax.device_count())
  config_check.check(config, num_devices=num_devices)
  mesh = mesh_lib.abstract_mesh(config.mesh, num_devices)
  rules = sharding.rules_from_config(config)
  specs = sharding.mesh_specs(boxed, rules)
  sharding.check_divisible(variables, specs, mesh)
  rows = report.module_rows(variables, specs, mesh, _DEPTH.value)
  params = report.total(rows).params

  out = jax.eval_shape(lambda v, b: model.apply(v, b, method=XEFM.encode), variables, batch)
  tokens = {name: int(g.mask.shape[1]) for name, g in out.tokens.items()}
  tokens["readouts"] = sum(int(r.shape[1]) for r in out.readouts.values())
  tokens["total"] = sum(tokens.values())
  flops = forward_flops(config, batch)
  model_flops = flops_lib.model_flops_per_window(config)
  tokens_per_step = tokens["total"] * int(config.data.batch_size)

  print(f"mesh {dict(mesh.shape)} ({num_devices} devices), params in {config.model.param_dtype}")
  print(report.format_rows(rows))
  print("\n| modality | tokens / window |\n|---|---:|")
  for name, n in tokens.items():
    print(f"| {name} | {n} |")
  print(f"\nforward FLOPs / window: {flops / 1e9:.1f} GFLOP "
        f"({window.frames} frames, {len(window.views)} views of {window.view_size} px)")
  print(f"model FLOPs / window (forward + backward, 3 x forward matmuls): "
        f"{model_flops / 1e9:.3f} GFLOP; per step ({config.data.batch_size} windows, "
        f"{tokens_per_step:,} tokens): {model_flops * config.data.batch_size / 1e9:.1f} GFLOP")
  print(json.dumps({
      "params": params,
      "params_fusion": sum(r.params for r in rows if r.module.split("/")[0] == "fusion"),
      "tokens_per_window": tokens,
      "forward_flops_per_window": flops,
      "model_flops_per_window": model_flops,
      "windows_per_step": int(config.data.batch_size),
      "tokens_per_step": tokens_per_step,
      "param_bytes_per_device": report.total(rows).bytes_per_device,
      "mesh": dict(mesh.shape),
  }))


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  errors.run(main)
