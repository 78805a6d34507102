"""Reproduces the deadlock behind xefm_jax/host.py's compilation-cache rule: an XLA:CPU
program with collectives, loaded from JAX's persistent compilation cache, stops in a
collective that not every device reaches (XLA aborts it with SIGABRT after 40 s).

    python benchmarks/cached_collectives.py [--runs 3] [--cache DIR]

Each run is a fresh process on 8 simulated CPU devices that executes test_train_step's
NaN-guard test (three sharded train steps on a 2x2x2 mesh) with the persistent cache
forced on at DIR: the first run compiles and writes it, the later ones load from it.
Prints one line per run and one JSON line. Takes about 1 min per aborting run.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
RUN = """
import os, sys
sys.path[:0] = [{root!r}, {tests!r}]
from xefm_jax import host
os.environ.update(host.environment(os.environ.get("XLA_FLAGS", "")
                                   + " --xla_force_host_platform_device_count=8"))
import jax
jax.config.update("jax_compilation_cache_dir", {cache!r})
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
import test_train_step
test_train_step.test_nan_guard_skips_the_update_and_counts_it()
"""


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--runs", type=int, default=3)
  p.add_argument("--cache", default=None, help="cache folder (default: a new temporary one)")
  args = p.parse_args()
  cache = args.cache or tempfile.mkdtemp(prefix="xefm-cached-collectives-")
  code = RUN.format(root=str(ROOT), tests=str(ROOT / "tests"), cache=cache)
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  results = []
  for i in range(args.runs):
    start = time.time()
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=600)
    stuck = [l for l in proc.stderr.splitlines() if "Termination timeout" in l]
    results.append(dict(run=i + 1, returncode=proc.returncode,
                        seconds=round(time.time() - start, 1), stuck=stuck[:1]))
    print(f"run {i + 1}: exit {proc.returncode} in {results[-1]['seconds']} s"
          + (f"; {stuck[0][:200]}" if stuck else ""), flush=True)
  print(json.dumps(dict(cache=cache, runs=results)))


if __name__ == "__main__":
  main()
