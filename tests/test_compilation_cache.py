"""JAX's persistent compilation cache only where it is safe: a CPU process with several
devices must neither write nor load programs (XLA:CPU programs with collectives loaded from
the cache deadlock, xefm_jax/host.py); a one-device process keeps it (restarts and the
renderer's worker processes skip compiling)."""

import os
import subprocess
import sys

import pytest

import train_runs

# A sharded sum (an all-reduce over every device), compiled after the launchers' cache setup.
PROGRAM = """
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from data_pipelines import synthesize
synthesize.enable_compilation_cache()
mesh = Mesh(np.array(jax.devices()), ("data",))
x = jax.device_put(jnp.arange(8.0 * jax.device_count()), NamedSharding(mesh, P("data")))
print(float(jax.jit(jnp.sum)(x)), jax.config.jax_enable_compilation_cache)
"""


@pytest.mark.parametrize("devices,from_env", [(1, False), (2, False), (2, True)])
def test_cache_only_for_one_cpu_device(devices, from_env, tmp_path):
  cache = tmp_path / "cache"
  env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
  env = train_runs.with_devices(env, devices)
  env.update(JAX_PLATFORMS="cpu", XEFM_JAX_CACHE="" if from_env else str(cache),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  if from_env:  # a cache set by the caller (the tests' launchers, a user's environment)
    env["JAX_COMPILATION_CACHE_DIR"] = str(cache)
  proc = subprocess.run([sys.executable, "-c", PROGRAM], env=env, cwd=train_runs.ROOT,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  total, enabled = proc.stdout.split()
  n = 8 * devices
  assert float(total) == n * (n - 1) / 2
  written = sorted(cache.glob("*-cache")) if cache.exists() else []
  if devices == 1:
    assert enabled == "True" and written, "a one-device process keeps the cache"
  else:
    assert enabled == "False" and not written, [p.name for p in written]
