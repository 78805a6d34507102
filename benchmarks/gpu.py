"""A stage1-shaped slice of the trunk on one device: step time, MFU, attention kernel, memory.

    python benchmarks/gpu.py                      # stage1 fusion stack, one GPU
    python benchmarks/gpu.py --tiny --steps 3     # the same script at test size (CPU)

The slice is configs/stage1.py's fusion transformer (its width, depth, heads, MLP, norms,
remat policy and attention kernel) on the token count of one stage1 window (every
modality's tokens, from the model's shapes, plus the readouts), with a tenth of the tokens
missing (key padding) and the readouts unreadable, as in training; bf16 compute, fp32
master weights, a mean-square loss on the outputs and AdamW. Inputs are random and on the
device, so this measures the step alone.

Model FLOPs follow the PaLM definition (Chowdhury et al. 2022, appendix B): per token,
6 x (matmul parameters) + 12 x layers x (heads x head_dim) x sequence length, counted from
the config by `model_flops` below (the trunk's own count; no other model-FLOP count exists
in the repository yet); what XLA executed (remat included) is `hardware_flops`, from the
compiled cost analysis (xefm_jax/train/flops.py). MFU = model FLOPs per step / median step
time / the device's bf16 peak (flops.PEAKS; on CPU a matmul measured in the same run).
Memory: the device's peak bytes in use where it reports them (GPU, TPU), and XLA's compiled
memory analysis everywhere. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import stage1  # noqa: E402
from xefm_jax.data import spec as spec_lib  # noqa: E402
from xefm_jax.model import attention, layers, transformer  # noqa: E402
from xefm_jax.model.xefm import XEFM, token_counts  # noqa: E402
from xefm_jax.train import flops as flops_lib  # noqa: E402


def model_flops(stack, width: int, length: int, batch: int) -> float:
  """PaLM model FLOPs of one training step of a stack on `batch` sequences of `length`."""
  inner = stack.num_heads * transformer.head_dim(stack, width)
  gated = stack.mlp_activation in ("swiglu", "geglu")
  matmul_params = stack.num_layers * (4 * width * inner
                                      + (3 if gated else 2) * width * stack.mlp_dim)
  per_token = 6 * matmul_params + 12 * stack.num_layers * inner * length
  return float(per_token * length * batch)


def window_tokens(config) -> int:
  """Tokens of one window in the fusion sequence: every modality's plus the readouts."""
  window = spec_lib.WindowSpec.from_config(config.data)
  counts = token_counts(XEFM(config.model), spec_lib.fake_batch(window, 1))
  return sum(counts.values()) + sum(dict(config.model.fusion.readouts).values())


class Slice(nn.Module):
  """The fusion stack and its final norm on given tokens (B, L, D)."""

  stack: object
  attention: str | None
  dtype: object = jnp.bfloat16

  @nn.compact
  def __call__(self, x, mask):
    x = transformer.TransformerStack(self.stack, dtype=self.dtype, attention=self.attention,
                                     name="transformer")(x, mask)
    return layers.make_norm(self.stack.norm, dtype=self.dtype, name="final_norm")(x)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--batch", type=int, default=16, help="windows per step (one device)")
  p.add_argument("--steps", type=int, default=20, help="timed steps (median reported)")
  p.add_argument("--attention", default="config",
                 help="xla | cudnn | splash, or 'config' (stage1's: cudnn)")
  p.add_argument("--tiny", action="store_true",
                 help="test size: width 64, 2 layers, 2 heads, 96 tokens, batch 2")
  p.add_argument("--width", type=int, default=None)
  p.add_argument("--layers", type=int, default=None)
  p.add_argument("--heads", type=int, default=None)
  p.add_argument("--tokens", type=int, default=None, help="sequence length (default: a window)")
  args = p.parse_args()

  config = stage1.get_config()
  stack = config.model.fusion.copy_and_resolve_references()
  width = config.model.width
  readouts = sum(dict(config.model.fusion.readouts).values())
  if args.tiny:
    width, length, args.batch = 64, 96, 2
    stack.update(num_layers=2, num_heads=2, mlp_dim=256)
  else:
    length = None
  if args.width:
    width, stack.mlp_dim = args.width, 4 * args.width
  if args.layers:
    stack.num_layers = args.layers
  if args.heads:
    stack.num_heads = args.heads
  length = args.tokens or length or window_tokens(config)
  impl = config.model.attention if args.attention == "config" else args.attention
  impl = None if impl == "xla" else impl

  device = jax.devices()[0]
  model = Slice(stack, impl)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(args.batch, length, width)), jnp.bfloat16)
  valid = jnp.asarray(rng.random((args.batch, length)) > 0.1)  # missing tokens: key padding
  mask = layers.attention_mask(valid, np.arange(length) < length - readouts)
  params = jax.jit(model.init)(jax.random.key(0), x, mask)["params"]
  optimizer = optax.adamw(1e-4, weight_decay=0.05)
  opt_state = jax.jit(optimizer.init)(params)

  def step(params, opt_state, x, mask):
    def loss_fn(p):
      y = model.apply({"params": p}, x, mask).astype(jnp.float32)
      return jnp.mean(jnp.square(y))
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, opt_state, x, mask).compile()
  params, opt_state, loss = compiled(params, opt_state, x, mask)  # warm-up
  jax.block_until_ready(loss)
  times = []
  for _ in range(args.steps):
    start = time.perf_counter()
    params, opt_state, loss = compiled(params, opt_state, x, mask)
    jax.block_until_ready(loss)
    times.append(time.perf_counter() - start)
  seconds = statistics.median(times)

  peak = flops_lib.peak([device], jnp.bfloat16, matmul_size=256 if args.tiny else 2048)
  flops = model_flops(stack, width, length, args.batch)
  hardware = flops_lib.step_flops(compiled, 1)
  stats = device.memory_stats() or {}
  analysis = compiled.memory_analysis()
  compiled_bytes = (None if analysis is None else
                    int(analysis.argument_size_in_bytes + analysis.output_size_in_bytes
                        + analysis.temp_size_in_bytes - analysis.alias_size_in_bytes))
  result = dict(
      device=device.device_kind, platform=device.platform,
      attention=impl or "xla", kernel=attention.kernel_name(impl),
      width=width, layers=stack.num_layers, heads=stack.num_heads,
      head_dim=transformer.head_dim(stack, width), mlp_dim=stack.mlp_dim, tokens=length,
      padded_tokens=attention.padded_length(impl, length), batch=args.batch,
      remat=stack.remat_policy, steps=args.steps, step_s=seconds,
      step_s_min=min(times), model_flops=flops, hardware_flops=hardware,
      peak_flops=peak.per_device, peak_source=peak.source,
      mfu=flops_lib.mfu(flops, seconds, peak),
      hardware_utilisation=flops_lib.mfu(hardware, seconds, peak),
      peak_bytes_in_use=stats.get("peak_bytes_in_use"), compiled_bytes=compiled_bytes,
      loss=float(loss))
  print(json.dumps(result))


if __name__ == "__main__":
  main()
