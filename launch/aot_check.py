"""Ahead-of-time fit check: a stage's FULL train step compiled for D devices, on this CPU.

    python launch/aot_check.py --config=configs/stage2.py --devices=32 [--budget_gib=64]

The step is the one training runs (xefm_jax/train/step.py): the Pretrainer with every
enabled objective, the EMA target, AdamW, the EMA update and the NaN guard, under the
stage's mesh and rules, with the state donated. It is lowered from abstract arguments that
carry their shardings (`jax.jit(...).lower(...).compile()`, MaxText's AOT check), on D fake
CPU devices, so nothing is allocated and no accelerator is needed. Printed: parameters,
FLOPs per step (compiled cost analysis, loops counted; see train/flops.py) and per-device
memory from `compiled.memory_analysis()`; the last line is JSON.

XLA's CPU backend plans memory like a GPU/TPU compiler but not identically: fusion,
rematerialisation, buffer assignment and collective implementations differ, so the
per-device figure is an estimate of the accelerator's (good to tens of percent), not a
guarantee. Label and vocabulary sizes are the config's defaults (no corpus is read).
"""

from __future__ import annotations

import os
import sys

from xefm_jax import errors  # before jax: it imports nothing heavy


def _devices_from_argv(argv: list[str]) -> int:
  """--devices must be known before jax is imported (it sizes the fake CPU platform)."""
  for i, arg in enumerate(argv):
    value = (arg.split("=", 1)[1] if arg.startswith("--devices=") else
             argv[i + 1] if arg == "--devices" and i + 1 < len(argv) else None)
    if value is not None:
      if not value.isdigit() or int(value) < 1:
        sys.exit(errors.report(errors.UsageError(
            f"--devices={value}: not a device count; give a positive integer")))
      return int(value)
  return 8


os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_"
                           f"device_count={_devices_from_argv(sys.argv)}").strip()
os.environ["JAX_PLATFORMS"] = "cpu"

import json  # noqa: E402
import time  # noqa: E402

from absl import flags  # noqa: E402
import jax  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from xefm_jax import config_check  # noqa: E402
from xefm_jax.data import spec as spec_lib  # noqa: E402
from xefm_jax.objectives import base as objectives_base  # noqa: E402
from xefm_jax.parallel import collectives  # noqa: E402
from xefm_jax.parallel import mesh as mesh_lib  # noqa: E402
from xefm_jax.parallel import report, sharding  # noqa: E402
from xefm_jax.train import flops as flops_lib  # noqa: E402
from xefm_jax.train import loop  # noqa: E402
from xefm_jax.train import step as step_lib  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
flags.DEFINE_integer("devices", 8, "Fake CPU devices to compile for (the mesh's size).")
_BUDGET = flags.DEFINE_float("budget_gib", 64.0, "Memory per device the step must fit in.")
_HLO_OUT = flags.DEFINE_string("hlo_out", None, "Write the compiled HLO text here.")

GIB = 1024 ** 3


def main(argv):
  del argv
  config = _CONFIG.value
  devices = jax.devices()
  config_check.check(config, num_devices=len(devices))
  loop.without_corpus(config)  # no corpus: unit hand statistics (shapes only)
  mesh = mesh_lib.make_mesh(config.mesh, devices)
  plan = step_lib.StepPlan.make(config, spec_lib.WindowSpec.from_config(config.data), mesh,
                                sharding.rules_from_config(config))
  params = report.count_params({"params": plan.abstract.params})

  start = time.perf_counter()
  compiled = plan.lower().compile()
  seconds = time.perf_counter() - start
  mem = compiled.memory_analysis()
  flops = flops_lib.step_flops(compiled, len(devices))
  text = compiled.as_text()
  if _HLO_OUT.value:
    with open(_HLO_OUT.value, "w") as f:
      f.write(text)
  rows = collectives.from_hlo(text, len(devices))
  granule = mesh_lib.granule_of(mesh, config.mesh)
  shape = tuple(mesh.shape[a] for a in mesh_lib.MESH_AXES)
  table, summary = collectives.report(rows, shape, mesh_lib.MESH_AXES, granule)
  # FSDP's per-layer traffic: all-gathers / reduce-scatters over the fsdp (and tensor)
  # axes only; they must stay inside a node or slice
  fsdp_across = sum(1 for r in rows if r.kind in ("all-gather", "reduce-scatter")
                    and "data" not in collectives.axes_of(r, shape, mesh_lib.MESH_AXES)
                    and collectives.span(r, granule) > 1)
  # Live at once: arguments + outputs not aliased onto donated arguments + temporaries +
  # code. Donation lets the new state reuse the old one's buffers (alias bytes).
  peak = (mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes
          + mem.temp_size_in_bytes + mem.generated_code_size_in_bytes)
  fits = peak <= _BUDGET.value * GIB

  name = os.path.basename(config_flags.get_config_filename(flags.FLAGS["config"]))
  ici, dcn = mesh_lib.ici_shape(config.mesh, len(devices)), mesh_lib.dcn_shape(config.mesh)
  print(f"{name}: mesh {dict(mesh.shape)} = inside a node/slice "
        f"{dict(zip(mesh_lib.MESH_AXES, ici))} x across {dict(zip(mesh_lib.MESH_AXES, dcn))} "
        f"on {len(devices)} fake CPU devices, "
        f"objectives {', '.join(objectives_base.enabled(config))}, global batch "
        f"{config.data.batch_size} x grad_accum {config.optim.grad_accum}")
  print(f"parameters        {params / 1e9:.3f} B")
  print(f"FLOPs / step      {flops / 1e15:.2f} PFLOP (all devices; compiled in {seconds:.0f} s)")
  print("per device        arguments {:.2f} GiB | outputs {:.2f} GiB (aliased {:.2f}) | "
        "temporaries {:.2f} GiB | code {:.3f} GiB".format(
            mem.argument_size_in_bytes / GIB, mem.output_size_in_bytes / GIB,
            mem.alias_size_in_bytes / GIB, mem.temp_size_in_bytes / GIB,
            mem.generated_code_size_in_bytes / GIB))
  print(f"peak per device   {peak / GIB:.2f} GiB of {_BUDGET.value:g} GiB: "
        f"{'fits' if fits else 'DOES NOT FIT'} (XLA:CPU's estimate of the accelerator's)")
  print(table)
  print(f"FSDP all-gathers / reduce-scatters that cross a node or slice: {fsdp_across}")
  print(json.dumps({
      "config": name, "devices": len(devices), "mesh": dict(mesh.shape), "params": params,
      "flops_per_step": flops, "argument_bytes": mem.argument_size_in_bytes,
      "output_bytes": mem.output_size_in_bytes, "alias_bytes": mem.alias_size_in_bytes,
      "temp_bytes": mem.temp_size_in_bytes, "code_bytes": mem.generated_code_size_in_bytes,
      "peak_bytes_per_device": peak, "budget_bytes": int(_BUDGET.value * GIB), "fits": fits,
      "compile_seconds": round(seconds, 1), "ici": list(ici), "dcn": list(dcn),
      "collectives": summary, "fsdp_collectives_across_granules": fsdp_across}))
  return 0 if fits else 1


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  errors.run(main)
