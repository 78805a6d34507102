"""XLA:CPU settings for a process that runs several CPU devices (the tests' and the README's
simulated meshes). Every launcher calls `configure()` before the first computation; on GPU
and TPU it changes nothing that they read.

- The concurrency-optimized scheduler lets the devices of one process start independent
  collectives in different orders; each blocks a worker thread at its rendezvous and the
  step deadlocks (seen with 8 CPU devices and every objective).
- An asynchronously dispatched step can start on some devices while the previous one still
  runs on others; the two executions' collectives then wait on each other (seen with 8
  devices and the side passes). Accelerators order executions per device.
- Neither removes every hang: on a loaded 2-core machine an execution can still
  stop in an all-gather with devices at different collectives (2 of 4 reference runs of the
  suite here, and once in CI); XLA then aborts the process after its
  collective timeout (40 s). A simulated-mesh limitation (NOTES.md), not one of GPU or TPU.
"""

from __future__ import annotations

import os

CPU_XLA_FLAGS = ("--xla_cpu_enable_concurrency_optimized_scheduler=false",)


def xla_flags(existing: str = "") -> str:
  """`existing` XLA_FLAGS with the CPU settings added where the caller has not set them."""
  flags = existing.split()
  names = {f.split("=")[0] for f in flags}
  return " ".join(flags + [f for f in CPU_XLA_FLAGS if f.split("=")[0] not in names])


def environment(existing_xla_flags: str = "") -> dict[str, str]:
  """The settings as environment variables: for a process about to start, or this one
  before it imports jax (jax reads its config from the environment at import)."""
  return {"XLA_FLAGS": xla_flags(existing_xla_flags), "JAX_CPU_ENABLE_ASYNC_DISPATCH": "false"}


def configure() -> None:
  """Set the CPU settings of the module docstring. Call before the first computation (XLA
  reads XLA_FLAGS when the backend starts, not when jax is imported)."""
  os.environ["XLA_FLAGS"] = xla_flags(os.environ.get("XLA_FLAGS", ""))
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update("jax_cpu_enable_async_dispatch", False)
