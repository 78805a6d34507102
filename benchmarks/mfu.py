"""MFU and HFU of the local config's train step on this CPU, against a matmul peak measured
in the same run.

    python benchmarks/mfu.py [--config configs/local.py] [--steps 20] [--batch-size N]
                             [--objectives all|procedure,...]

The step is the training step (xefm_jax/train/step.py, every enabled objective, AdamW, EMA,
NaN guard), compiled ahead of time with the launchers' XLA settings (xefm_jax/host.py). Two
FLOP counts (train/flops.py): model FLOPs (PaLM's definition: the matmuls of the loss and
its gradient, no remat, traced from the config) and hardware FLOPs (the compiled program's
cost analysis, loops counted). Batches are synthetic (`spec.fake_batch`) and already on the
device, so this measures the step alone; the data path's cost is the `data_wait_s` of the
training logs. The peak is the best FLOP/s of a jitted 2048^3 matmul chain in the step's
compute dtype, measured before and after the steps (the better of the two: a busy machine
lowers both). MFU = model FLOPs per step / median step time / peak; HFU the same with the hardware FLOPs.
Goal (issue 12): HFU at least 50%.
Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from xefm_jax import host  # noqa: E402

host.configure()  # the launchers' XLA:CPU settings (none for one device)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from configs import local  # noqa: E402
from xefm_jax.train import loop  # noqa: E402
from xefm_jax.data import spec as spec_lib  # noqa: E402
from xefm_jax.objectives import base as objectives_base  # noqa: E402
from xefm_jax.parallel import mesh as mesh_lib  # noqa: E402
from xefm_jax.parallel import sharding  # noqa: E402
from xefm_jax.train import flops as flops_lib  # noqa: E402
from xefm_jax.train import step as step_lib  # noqa: E402


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--variant", default=None, help="configs/local.py variant (e.g. tiny)")
  p.add_argument("--steps", type=int, default=20)
  p.add_argument("--batch-size", type=int, default=None)
  p.add_argument("--objectives", default="all",
                 help="comma-separated objectives to keep enabled (default: the config's)")
  p.add_argument("--profile", default=None, help="write a profiler trace of 3 steps here")
  args = p.parse_args()

  config = local.get_config(args.variant)
  if args.batch_size:
    config.data.batch_size = args.batch_size
  if args.objectives != "all":
    keep = set(args.objectives.split(","))
    for name in config.objectives:
      if name not in keep:
        config.objectives[name].weight = 0.0
  loop.without_corpus(config)  # synthetic batches: unit hand statistics (shapes only)
  mesh = mesh_lib.make_mesh(config.mesh)
  rules = sharding.rules_from_config(config)
  window = spec_lib.WindowSpec.from_config(config.data)
  plan = step_lib.StepPlan.make(config, window, mesh, rules)
  batch_shardings = plan.batch_shardings
  dtype = jnp.dtype(config.model.dtype)

  peak_before = flops_lib.measure_matmul_peak(dtype)
  state = plan.create_state()
  start = time.perf_counter()
  traced = plan.trace()
  with sharding.activate(mesh, rules):
    step = traced.lower().compile()
  compile_s = time.perf_counter() - start
  step_flops = flops_lib.step_flops(step, jax.device_count())
  model_flops = flops_lib.step_model_flops(config, traced.jaxpr)  # as the training log
  batches = [jax.device_put(spec_lib.fake_batch(window, config.data.batch_size, seed=i),
                            batch_shardings) for i in range(4)]
  for i in range(3):  # warm up
    state, metrics = step(state, batches[i % 4])
  jax.block_until_ready(state)
  times = []
  for i in range(args.steps):
    t = time.perf_counter()
    state, metrics = step(state, batches[i % 4])
    jax.block_until_ready(state)
    times.append(time.perf_counter() - t)
  if args.profile:
    with jax.profiler.trace(args.profile):
      for i in range(3):
        state, metrics = step(state, batches[i % 4])
      jax.block_until_ready(state)
  peak_after = flops_lib.measure_matmul_peak(dtype)
  peak = max(peak_before, peak_after)
  seconds = statistics.median(times)
  hfu = step_flops / seconds / peak
  mfu = model_flops / seconds / peak
  print(f"config local{':' + args.variant if args.variant else ''}, batch "
        f"{config.data.batch_size}, {dtype.name}, objectives "
        f"{', '.join(objectives_base.enabled(config))}; compiled in {compile_s:.0f} s")
  print(f"step: median {seconds * 1e3:.0f} ms over {args.steps} steps; model "
        f"{model_flops / 1e9:.2f} GFLOP ({model_flops / seconds / 1e9:.1f} GFLOP/s), hardware "
        f"{step_flops / 1e9:.2f} GFLOP ({step_flops / seconds / 1e9:.1f} GFLOP/s)")
  print(f"peak: {peak / 1e9:.1f} GFLOP/s ({dtype.name} 2048^3 matmul; before "
        f"{peak_before / 1e9:.1f}, after {peak_after / 1e9:.1f})")
  print(f"MFU (model FLOPs): {100 * mfu:.1f}% | HFU (hardware FLOPs): {100 * hfu:.1f}% "
        "(goal: HFU >= 50%)")
  print(json.dumps({
      "benchmark": "mfu", "variant": args.variant, "batch_size": config.data.batch_size,
      "dtype": dtype.name, "objectives": list(objectives_base.enabled(config)),
      "flops_per_step": step_flops, "model_flops_per_step": model_flops,
      "median_step_s": seconds,
      "step_s": [round(t, 4) for t in times], "peak_flops": peak,
      "peak_before": peak_before, "peak_after": peak_after, "mfu": mfu, "hfu": hfu,
      "hfu_ratio_to_goal": hfu / 0.5}))


if __name__ == "__main__":
  main()
