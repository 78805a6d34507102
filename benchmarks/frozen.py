"""A frozen video tower against a trained one, and against its extracted features: step
time, FLOPs and per-device memory of the local config's train step, and the loader's
windows/s on pixels vs features, all measured in one run.

    python benchmarks/frozen.py [--variant tiny] [--repeats 20] [--freeze 'model/video/.*']
    python benchmarks/frozen.py --variant tiny,vit --shards SHARDS --features NAME

With --features (a `video_vit` variant, features extracted by data_pipelines/extract.py
into SHARDS), a third step reads the features instead of running the frozen ViT, and the
loader (xefm_jax/data/pipeline.py, config.data's threads) is timed on pixels and on
features over the same train windows.

Both steps are the training step (xefm_jax/train/step.py, every enabled objective, the
EMA target, AdamW, the NaN guard), compiled ahead of time from abstract arguments, the
second with config.optim.trainable = ((FREEZE, "frozen"),): the frozen parameters have no
optimizer state and are not differentiated. Memory is XLA's `memory_analysis()` of each
compiled step (per device; peak = arguments + outputs - aliased + temporaries + code, as
launch/aot_check.py); FLOPs its cost analysis (loops counted, train/flops.py). Step times
are medians over `repeats` steps on synthetic batches already on the device, the two
variants alternating step by step so machine load hits both alike. Ends with one JSON line.
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

host.configure()

import jax  # noqa: E402

from configs import local  # noqa: E402
from xefm_jax.data import pipeline  # noqa: E402
from xefm_jax.data import source as source_lib  # noqa: E402
from xefm_jax.data import spec as spec_lib  # noqa: E402
from xefm_jax.parallel import mesh as mesh_lib  # noqa: E402
from xefm_jax.parallel import sharding  # noqa: E402
from xefm_jax.train import flops as flops_lib  # noqa: E402
from xefm_jax.train import loop  # noqa: E402
from xefm_jax.train import optimizer  # noqa: E402
from xefm_jax.train import step as step_lib  # noqa: E402

MIB = 1024 ** 2


def nbytes(tree) -> int:
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def build(config, window, mesh, rules) -> dict:
  plan = step_lib.StepPlan.make(config, window, mesh, rules)
  start = time.perf_counter()
  compiled = plan.lower().compile()
  compile_s = time.perf_counter() - start
  mem = compiled.memory_analysis()
  peak = (mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes
          + mem.temp_size_in_bytes + mem.generated_code_size_in_bytes)
  groups = optimizer.describe(plan.abstract.params, config.optim)
  state = plan.create_state()
  return dict(plan=plan, step=compiled, state=state, result=dict(
      trained_params=sum(v for k, v in groups.items() if k != optimizer.FROZEN),
      frozen_params=groups.get(optimizer.FROZEN, 0),
      opt_state_bytes=nbytes(plan.abstract.opt_state),
      flops_per_step=flops_lib.step_flops(compiled, jax.device_count()),
      argument_bytes=mem.argument_size_in_bytes, temp_bytes=mem.temp_size_in_bytes,
      peak_bytes_per_device=peak, compile_s=round(compile_s, 1)))


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--variant", default=None, help="configs/local.py variant (e.g. tiny)")
  p.add_argument("--repeats", type=int, default=20)
  p.add_argument("--freeze", default=r"model/video/.*", help="regex of the frozen parameters")
  p.add_argument("--shards", default=None, help="corpus (windows from its sizes; loader)")
  p.add_argument("--features", default=None, help="extracted features in SHARDS/features/")
  p.add_argument("--loader_batches", type=int, default=30)
  args = p.parse_args()

  corpus = source_lib.Corpus(args.shards) if args.shards else None
  variants = [("trained", (), None), ("frozen", ((args.freeze, "frozen"),), None)]
  if args.features:
    variants.append(("features", ((args.freeze, "frozen"),), args.features))
  runs, configs = {}, {}
  for name, trainable, features in variants:
    config = configs[name] = local.get_config(args.variant)
    config.optim.trainable = trainable
    config.data.video_features = features
    if corpus is not None:
      config.data.shards = args.shards
      loop.with_corpus_sizes(config, corpus)
    else:
      loop.without_corpus(config)
    mesh = mesh_lib.make_mesh(config.mesh)
    rules = sharding.rules_from_config(config)
    window = (corpus.window_spec(config.data) if corpus is not None
              else spec_lib.WindowSpec.from_config(config.data))
    runs[name] = build(config, window, mesh, rules)
    runs[name]["batches"] = [jax.device_put(
        spec_lib.fake_batch(window, config.data.batch_size, seed=i),
        runs[name]["plan"].batch_shardings) for i in range(4)]
  times = {name: [] for name in runs}
  for i in range(3 + args.repeats):  # 3 warm-up steps each, then alternate
    for name, run in runs.items():
      t = time.perf_counter()
      run["state"], _ = run["step"](run["state"], run["batches"][i % 4])
      jax.block_until_ready(run["state"])
      if i >= 3:
        times[name].append(time.perf_counter() - t)
  for name, run in runs.items():
    r = run["result"]
    r["median_step_s"] = statistics.median(times[name])
    r["step_s"] = [round(t, 4) for t in times[name]]
    print(f"{name:8s} trained params {r['trained_params'] / 1e6:.2f}M, frozen "
          f"{r['frozen_params'] / 1e6:.2f}M | optimizer state {r['opt_state_bytes'] / MIB:.1f} "
          f"MiB | {r['flops_per_step'] / 1e9:.2f} GFLOP/step | per device: peak "
          f"{r['peak_bytes_per_device'] / MIB:.1f} MiB, temporaries {r['temp_bytes'] / MIB:.1f} "
          f"MiB | median step {r['median_step_s'] * 1e3:.0f} ms over {args.repeats}")
  t = runs["trained"]["result"]
  for name in list(runs)[1:]:
    f = runs[name]["result"]
    print(f"{name} / trained: step time {f['median_step_s'] / t['median_step_s']:.2f}x, FLOPs "
          f"{f['flops_per_step'] / t['flops_per_step']:.2f}x, peak memory "
          f"{f['peak_bytes_per_device'] / t['peak_bytes_per_device']:.2f}x")
  loader = {}
  if args.features:  # the same train windows, read as pixels and as features, alternating
    iters = {name: iter(pipeline.make_dataset(corpus, "train", configs[name].data, train=True,
                                              seed=0)) for name in ("frozen", "features")}
    seconds = {name: 0.0 for name in iters}
    for i in range(2 + args.loader_batches):
      for name, it in iters.items():
        t0 = time.perf_counter()
        next(it)
        if i >= 2:
          seconds[name] += time.perf_counter() - t0
    batch = configs["frozen"].data.batch_size
    loader = {("pixels" if n == "frozen" else n): args.loader_batches * batch / s
              for n, s in seconds.items()}
    print("loader: " + ", ".join(f"{n} {w:.0f} windows/s" for n, w in loader.items())
          + f" ({args.loader_batches} batches of {batch}, after 2 warm-up batches)")
  print(json.dumps({"benchmark": "frozen", "variant": args.variant, "freeze": args.freeze,
                    "devices": jax.device_count(), "loader_windows_per_s": loader,
                    **{name: run["result"] for name, run in runs.items()}}))


if __name__ == "__main__":
  main()
