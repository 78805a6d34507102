"""The trunk's train step against the same trunk in PyTorch, on this CPU, in one run
(issue 12, item 7: what a user would write instead).

    pip install -e '.[bench]'   # PyTorch: this benchmark only imports it (best in its own
                                # venv: tensorboardX imports torch wherever it is installed)
    python benchmarks/trunk_torch.py [--steps 30] [--rounds 3] [--batch-size 8]

The trunk is configs/local.py's: seven modality encoders, each a projection of its real
tokenizer input size to the encoder width (64) for its real token count (video 96, language
24, depth 16, mocap 8 hand + 4 body, audio 8, pose 4, imu 4), a learned position table, one
encoder layer, a norm and the projection to the fusion width (192); then the fusion stack (4
layers, 4 heads of 48, MLP 768, RMSNorm with query/key norms, tanh GELU) over every token
plus the three readouts (readable by no other token), a final norm, a mean-square loss on
the readouts, and AdamW. The JAX side is xefm_jax's own modules (the model's FusionTransformer,
TransformerStack, Attention, DenseGeneral, RMSNorm, Embed), jitted; the PyTorch
side is written here to the same shapes (nn.Linear, nn.RMSNorm, scaled_dot_product_attention
with the same boolean mask, nn.Embedding), eager and under torch.compile. The parameter
counts must agree (checked). Not in either: the tokenizers' own arithmetic (the audio
log-mel, depth confidence) and the masking of hidden tokens; the fusion's time sinusoid
(an elementwise add) is on the JAX side only; the inputs are random patches. Same batch, float32, both on all cores of this machine.

Timing: `rounds` rounds; each runs every implementation for `steps` steps after warm-up, in
turn, so a noisy machine slows all of them alike; the figure is the median step over all
rounds, with a pause before each block (PAUSE_S). Ends with one JSON line.
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

host.configure()  # the launchers' XLA:CPU settings

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from configs import local  # noqa: E402
from xefm_jax.model import layers  # noqa: E402
from xefm_jax.model.fusion import FusionTransformer  # noqa: E402
from xefm_jax.model.tokens import TokenGroup  # noqa: E402
from xefm_jax.model.transformer import TransformerStack  # noqa: E402

# modality -> ((input field, features per token, tokens), ...) at configs/local.py; features
# 0 marks token ids (the language tokenizer's table lookup)
INPUTS = {
    "audio": (("audio", 160, 8),),
    "depth": (("depth", 258, 16),),
    "imu": (("imu", 122, 4),),
    "language": (("caption", 0, 24),),
    "mocap": (("hands", 128, 8), ("body", 314, 4)),
    "pose": (("pose", 28, 4),),
    "video": (("video", 1536, 96),),
}
LEARNING_RATE, WEIGHT_DECAY = 1e-3, 0.01
# Between implementations: OpenMP (PyTorch) and Eigen (XLA) worker threads spin for a while
# after their last task; measured back to back, JAX's step ran 395 ms after PyTorch's and
# 275 ms alone.
PAUSE_S = 1.0


def make_batch(config, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  out = {}
  for fields in INPUTS.values():
    for field, size, tokens in fields:
      if size:
        out[field] = rng.standard_normal((batch, tokens, size), dtype=np.float32)
      else:
        out[field] = rng.integers(0, config.data.vocab_size, (batch, tokens), dtype=np.int64)
  width = config.model.width
  out["target"] = rng.standard_normal((batch, sum(config.model.fusion.readouts.values()),
                                       width), dtype=np.float32)
  return out


# ------------------------------------------------------------------------------ JAX (ours)


class JaxTrunk(nn.Module):
  config: object  # config.model

  @nn.compact
  def __call__(self, batch):
    m = self.config
    groups = {}
    for name, fields in INPUTS.items():
      enc = m.modalities[name].encoder
      pieces = []
      for field, size, tokens in fields:
        if size:
          pieces.append(layers.DenseGeneral(enc.width, ("input", "embed"), use_bias=True,
                                            name=f"{name}_{field}_embedding")(batch[field]))
        else:
          pieces.append(layers.Embed(m.modalities.language.vocab_size, enc.width,
                                     name=f"{name}_token_embedding")(batch[field]))
      x = jnp.concatenate(pieces, axis=1)
      x = x + layers.learned_table(self, f"{name}_position", x.shape[1], enc.width,
                                   jnp.float32)
      valid = jnp.ones(x.shape[:2], bool)
      x = TransformerStack(enc, name=f"{name}_encoder")(x, layers.attention_mask(valid))
      x = layers.RMSNorm(name=f"{name}_encoder_norm")(x)
      x = layers.DenseGeneral(m.width, ("input", "embed"), name=f"{name}_to_fusion")(x)
      groups[name] = TokenGroup(x, valid, jnp.zeros(x.shape[1], jnp.float32))
    _, readouts = FusionTransformer(m.fusion, tuple(INPUTS), name="fusion")(groups)
    x = jnp.concatenate([readouts[k] for k in sorted(readouts)], axis=1)
    return jnp.mean(jnp.square(x - batch["target"]))


def jax_step_fn(config, batch):
  model = JaxTrunk(config.model)
  params = jax.jit(model.init)(jax.random.key(0), batch)["params"]
  params = nn.unbox(params)
  tx = optax.adamw(LEARNING_RATE, weight_decay=WEIGHT_DECAY)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, batch):
    loss, grads = jax.value_and_grad(lambda p: model.apply({"params": p}, batch))(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  device_batch = jax.device_put(batch)
  state = {"params": params, "opt": opt_state}

  def run():
    state["params"], state["opt"], loss = step(state["params"], state["opt"], device_batch)
    return float(loss)  # waits for the step
  count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
  return run, count


# ---------------------------------------------------------------------------------- PyTorch


def torch_step_fn(config, batch, compile_model: bool):
  import torch
  from torch import nn as tnn
  from torch.nn import functional as F

  class Block(tnn.Module):
    def __init__(self, width, heads, head_dim, mlp_dim):
      super().__init__()
      self.heads, self.head_dim = heads, head_dim
      self.pre_attention_norm = tnn.RMSNorm(width, eps=1e-6)
      self.query = tnn.Linear(width, heads * head_dim, bias=False)
      self.key = tnn.Linear(width, heads * head_dim, bias=False)
      self.value = tnn.Linear(width, heads * head_dim, bias=False)
      self.query_norm = tnn.RMSNorm(head_dim, eps=1e-6)
      self.key_norm = tnn.RMSNorm(head_dim, eps=1e-6)
      self.out = tnn.Linear(heads * head_dim, width, bias=False)
      self.pre_mlp_norm = tnn.RMSNorm(width, eps=1e-6)
      self.wi = tnn.Linear(width, mlp_dim, bias=False)
      self.wo = tnn.Linear(mlp_dim, width, bias=False)

    def forward(self, x, mask):
      b, length, _ = x.shape
      h = self.pre_attention_norm(x)
      split = lambda t: t.view(b, length, self.heads, self.head_dim).transpose(1, 2)  # noqa
      q = self.query_norm(split(self.query(h)))
      k = self.key_norm(split(self.key(h)))
      v = split(self.value(h))
      a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
      x = x + self.out(a.transpose(1, 2).reshape(b, length, -1))
      return x + self.wo(F.gelu(self.wi(self.pre_mlp_norm(x)), approximate="tanh"))

  def stack(cfg, width):
    return tnn.ModuleList([Block(width, cfg.num_heads, width // cfg.num_heads, cfg.mlp_dim)
                           for _ in range(cfg.num_layers)])

  def dense_mask(keys):  # the model's rule: readable keys, and every query itself
    length = keys.shape[1]
    return (keys[:, None, None, :] | torch.eye(length, dtype=torch.bool)[None, None])

  m = config.model

  class TorchTrunk(tnn.Module):
    def __init__(self):
      super().__init__()
      self.embed = tnn.ModuleDict()
      self.position = tnn.ParameterDict()
      self.encoders, self.norms, self.to_fusion = (tnn.ModuleDict(), tnn.ModuleDict(),
                                                   tnn.ModuleDict())
      for name, fields in INPUTS.items():
        enc = m.modalities[name].encoder
        for field, size, _ in fields:
          self.embed[f"{name}_{field}"] = (tnn.Linear(size, enc.width) if size else
                                           tnn.Embedding(m.modalities.language.vocab_size,
                                                         enc.width))
        tokens = sum(t for _, _, t in fields)
        self.position[name] = tnn.Parameter(0.02 * torch.randn(tokens, enc.width))
        self.encoders[name] = stack(enc, enc.width)
        self.norms[name] = tnn.RMSNorm(enc.width, eps=1e-6)
        self.to_fusion[name] = tnn.Linear(enc.width, m.width, bias=False)
      self.modality_embedding = tnn.Parameter(0.02 * torch.randn(len(INPUTS), m.width))
      self.readouts = tnn.Parameter(0.02 * torch.randn(sum(m.fusion.readouts.values()),
                                                       m.width))
      self.fusion = stack(m.fusion, m.width)
      self.final_norm = tnn.RMSNorm(m.width, eps=1e-6)

    def forward(self, batch):
      groups = []
      for i, (name, fields) in enumerate(INPUTS.items()):
        x = torch.cat([self.embed[f"{name}_{field}"](batch[field]) for field, _, _ in fields],
                      1) + self.position[name]
        mask = dense_mask(torch.ones(x.shape[:2], dtype=torch.bool))
        for block in self.encoders[name]:
          x = block(x, mask)
        groups.append(self.to_fusion[name](self.norms[name](x)) + self.modality_embedding[i])
      tokens = torch.cat(groups, 1)
      b, n = tokens.shape[:2]
      x = torch.cat([tokens, self.readouts[None].expand(b, -1, -1)], 1)
      keys = (torch.arange(x.shape[1]) < n)[None].expand(b, -1)
      mask = dense_mask(keys)
      for block in self.fusion:
        x = block(x, mask)
      x = self.final_norm(x)
      return torch.mean(torch.square(x[:, n:] - batch["target"]))

  torch.manual_seed(0)
  model = TorchTrunk()
  count = sum(p.numel() for p in model.parameters())
  opt = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
  forward = torch.compile(model) if compile_model else model
  tbatch = {k: torch.from_numpy(v) for k, v in batch.items()}

  def run():
    opt.zero_grad(set_to_none=True)
    loss = forward(tbatch)
    loss.backward()
    opt.step()
    return loss.item()
  return run, count


# ------------------------------------------------------------------------------------ main


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--steps", type=int, default=30, help="timed steps per round")
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--warmup", type=int, default=5)
  p.add_argument("--batch-size", type=int, default=8)
  p.add_argument("--only", default="jax,torch_eager,torch_compile",
                 help="comma-separated implementations to run")
  args = p.parse_args()
  names = args.only.split(",")
  torch = None
  if any(n.startswith("torch") for n in names):
    try:
      import torch
    except ImportError:
      sys.exit("benchmarks/trunk_torch.py needs PyTorch: pip install -e '.[bench]' (the "
               "project itself does not import it), or --only jax")

  config = local.get_config()
  batch = make_batch(config, args.batch_size)
  runs, counts, compile_s = {}, {}, {}
  makers = {"jax": lambda: jax_step_fn(config, batch),
            "torch_eager": lambda: torch_step_fn(config, batch, False),
            "torch_compile": lambda: torch_step_fn(config, batch, True)}
  makers = {n: makers[n] for n in names}
  for name, make in makers.items():
    t0 = time.perf_counter()
    runs[name], counts[name] = make()
    for _ in range(args.warmup):  # compiles on the first
      runs[name]()
    compile_s[name] = time.perf_counter() - t0
    print(f"{name}: {counts[name]:,} parameters, built and warmed up in "
          f"{compile_s[name]:.1f} s", flush=True)
  if len(set(counts.values())) != 1:
    raise SystemExit(f"the trunks differ in parameter count: {counts}")

  times: dict[str, list[float]] = {name: [] for name in runs}
  for r in range(args.rounds):
    for name, run in runs.items():
      time.sleep(PAUSE_S)  # the previous implementation's spinning threads go to sleep
      for _ in range(args.steps):
        t0 = time.perf_counter()
        run()
        times[name].append(time.perf_counter() - t0)
    print(f"round {r + 1}/{args.rounds}: " + ", ".join(
        f"{n} {1e3 * statistics.median(t[-args.steps:]):.1f} ms" for n, t in times.items()),
        flush=True)
  medians = {n: 1e3 * statistics.median(t) for n, t in times.items()}
  result = {"benchmark": "trunk_torch", "parameters": next(iter(counts.values())),
            "batch_size": args.batch_size, "steps": args.steps * args.rounds,
            "median_step_ms": {n: round(v, 2) for n, v in medians.items()},
            "jax_over": {n: round(medians["jax"] / v, 3) for n, v in medians.items()
                         if n != "jax" and "jax" in medians},
            "cpus": os.cpu_count(), "jax": jax.__version__}
  if torch is not None:
    result.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
  for name, ms in medians.items():
    print(f"{name:>14}: {ms:7.1f} ms per step (median of {len(times[name])})")
  print(json.dumps(result))


if __name__ == "__main__":
  main()
