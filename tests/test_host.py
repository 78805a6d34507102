"""xefm_jax/host.py: the XLA:CPU settings against multi-device deadlocks apply to jobs of
several CPU devices or processes only; a one-device process keeps XLA's defaults (its step
runs ~10% faster with the concurrency-optimized scheduler)."""

from __future__ import annotations

from xefm_jax import host

OFF = "--xla_cpu_enable_concurrency_optimized_scheduler=false"


def test_one_device_keeps_the_defaults():
  assert host.xla_flags("") == ""
  assert host.xla_flags("--xla_force_host_platform_device_count=1 --foo=1").split() == [
      "--xla_force_host_platform_device_count=1", "--foo=1"]
  assert host.environment("")["JAX_CPU_ENABLE_ASYNC_DISPATCH"] == "true"


def test_several_devices_or_processes_get_the_settings():
  eight = "--xla_force_host_platform_device_count=8"
  assert host.cpu_devices(eight) == 8
  assert OFF in host.xla_flags(eight).split()
  assert OFF in host.xla_flags("", multi_process=True).split()
  assert host.environment(eight)["JAX_CPU_ENABLE_ASYNC_DISPATCH"] == "false"
  # a caller's own value wins
  own = "--xla_cpu_enable_concurrency_optimized_scheduler=true"
  assert host.xla_flags(f"{eight} {own}").split() == [eight, own]
