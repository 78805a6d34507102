"""XLA:CPU settings for a job of several CPU devices (the tests' simulated meshes, a gloo job
of several processes). Every launcher calls `configure()` before the first computation; a
one-device CPU process and GPU and TPU keep XLA's and JAX's defaults (the local config's
train step ran 10% slower with the scheduler below off: 471, 464, 427 ms against 403, 391
ms, `benchmarks/mfu.py`, twelfth session).

- The concurrency-optimized scheduler lets the devices of one process start independent
  collectives in different orders; each blocks a worker thread at its rendezvous and the
  step deadlocks (seen with 8 CPU devices and every objective).
- An asynchronously dispatched step can start on some devices while the previous one still
  runs on others; the two executions' collectives then wait on each other (seen with 8
  devices and the side passes). Accelerators order executions per device.
- The hangs recorded with both rules in place (a collective that not every device
  reaches, then XLA's abort after its 40 s collective timeout: 2 of 4 reference runs of the
  suite, once in CI, twice in test_train_step) ran where the persistent compilation cache
  was on (the tests' launchers share one; a test worker turned it on by calling
  `synthesize()`): the one cause reproduced, next item.
- JAX's persistent compilation cache only where a process runs one CPU device in all
  (`restrict_compilation_cache`): an XLA:CPU program with collectives loaded from the cache
  deadlocks in a collective (jax 0.10.2: test_train_step's sharded step on 8 simulated
  devices, compiled afresh 4 of 4 runs pass, loaded from the cache 7 of 7 stop in a
  collective-permute that 6 of 8 devices reach, and XLA aborts after 40 s), and across a
  gloo job's processes the collectives mismatch. GPU and TPU keep the cache.
  Reproduce: benchmarks/cached_collectives.py.
"""

from __future__ import annotations

import os

CPU_XLA_FLAGS = ("--xla_cpu_enable_concurrency_optimized_scheduler=false",)


def cpu_devices(xla_flags_: str) -> int:
  """The CPU devices a process started with these XLA_FLAGS runs."""
  count = 1
  for flag in xla_flags_.split():
    if flag.startswith("--xla_force_host_platform_device_count="):
      count = int(flag.split("=", 1)[1])
  return count


def needs_settings(xla_flags_: str, multi_process: bool = False) -> bool:
  """Whether a process started with these XLA_FLAGS gets the settings: it runs several CPU
  devices or is one of several processes."""
  return cpu_devices(xla_flags_) > 1 or multi_process


def xla_flags(existing: str = "", *, multi_process: bool = False) -> str:
  """`existing` XLA_FLAGS with the CPU settings added where the caller has not set them, if
  the process `needs_settings`."""
  flags = existing.split()
  if not needs_settings(existing, multi_process):
    return " ".join(flags)
  names = {f.split("=")[0] for f in flags}
  return " ".join(flags + [f for f in CPU_XLA_FLAGS if f.split("=")[0] not in names])


def environment(existing_xla_flags: str = "") -> dict[str, str]:
  """The settings as environment variables for a process about to start with these
  XLA_FLAGS, or this one before it imports jax (jax reads its config from the environment at
  import); those of one device only if a later `configure` gives it several."""
  several = needs_settings(existing_xla_flags)
  return {"XLA_FLAGS": xla_flags(existing_xla_flags),
          "JAX_CPU_ENABLE_ASYNC_DISPATCH": "false" if several else "true"}


def configure(*, multi_process: bool = False) -> None:
  """Set the CPU settings of the module docstring where this process `needs_settings`
  (several CPU devices in XLA_FLAGS, or `multi_process`: it joins a job of several
  processes). Call before the first computation (XLA reads XLA_FLAGS when the backend
  starts, not when jax is imported)."""
  existing = os.environ.get("XLA_FLAGS", "")
  os.environ["XLA_FLAGS"] = xla_flags(existing, multi_process=multi_process)
  if needs_settings(existing, multi_process):
    import jax  # pylint: disable=g-import-not-at-top
    jax.config.update("jax_cpu_enable_async_dispatch", False)


def restrict_compilation_cache() -> bool:
  """Turns JAX's persistent compilation cache off where it is not safe (CPU with more than
  one device in the whole job: module docstring); returns whether it may be used. Starts
  the backend: call after `jax.distributed.initialize` and before the first compilation
  (JAX decides at the first one)."""
  import jax  # pylint: disable=g-import-not-at-top
  if jax.default_backend() != "cpu" or jax.device_count() == 1:
    return True
  jax.config.update("jax_enable_compilation_cache", False)
  return False
