"""FLOPs of a step, two ways, peak FLOP/s per device, and the utilisations.

    MFU = model FLOPs per step / step time / (peak FLOP/s per device x devices)
    HFU = hardware FLOPs per step / step time / (the same peak)

Model FLOPs (`model_flops`, PaLM's definition: what the model needs, whatever the program
does): every matrix multiplication of one training forward pass of the Pretrainer (trunk,
side passes, heads; attention's QK^T and AV included, as PaLM's attention term), counted
from the jaxpr traced at the config's shapes, times 3 (forward, and a backward of twice
the forward: gradients of activations and of weights), plus the EMA target's forward once
(no backward). Rematerialisation, the optimizer and elementwise work are not counted; a
frozen tower is counted as if trained (an overcount of at most a third of its FLOPs).

Hardware FLOPs (`step_flops`) come from XLA's cost analysis of the COMPILED step: what the
program that runs executes, rematerialisation included (MaxText's "TFLOP/s per device").
HFU >= MFU; their ratio shows what remat and everything beside the matmuls cost.
Two corrections make the hardware count honest:
  * `cost_analysis()` of an SPMD program describes one device's partition: it is
    multiplied by the number of devices.
  * XLA counts a while loop's body once, whatever its trip count, so a step that scans
    over layers (`scan_layers`) or microbatches (`grad_accum`) would be undercounted by
    that factor. `loop_factor` reads the compiled HLO, counts the dot FLOPs of every
    computation with each loop body weighted by its known trip count, and scales the cost
    analysis by (dots with trip counts / dots with each body once). Elementwise work inside
    loops is scaled by the same ratio, a small approximation; 1.0 when there are no loops.

Peaks are bf16 dense tensor-core / MXU rates from the vendors' data sheets (sparsity
excluded). On a CPU there is no data sheet that means anything for XLA, so the peak is
measured at start: the FLOP/s of a large jitted matmul in the step's compute dtype.
The log says which peak was used.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import time
from typing import Any, Optional

import jax
import jax.numpy as jnp

# device_kind substring (lower case) -> (bf16 dense peak FLOP/s per device, source).
# Checked in order: the more specific name first.
PEAKS: tuple[tuple[str, float, str], ...] = (
    # NVIDIA H100 data sheet (resources.nvidia.com/en-us-tensor-core): BF16 tensor core
    # 1,979 TFLOP/s SXM, 1,513 PCIe, 1,671 NVL "with sparsity"; dense is half.
    ("h100 pcie", 756e12, "NVIDIA H100 PCIe data sheet, bf16 dense"),
    ("h100 nvl", 835e12, "NVIDIA H100 NVL data sheet, bf16 dense"),
    ("h100", 989e12, "NVIDIA H100 SXM data sheet, bf16 dense"),
    # NVIDIA H200 data sheet (nvidia.com/en-us/data-center/h200): 1,979 with sparsity (SXM).
    ("h200", 989e12, "NVIDIA H200 SXM data sheet, bf16 dense"),
    # NVIDIA A100 data sheet: BF16 tensor core 312 TFLOP/s dense (SXM and PCIe).
    ("a100", 312e12, "NVIDIA A100 data sheet, bf16 dense"),
    # Cloud TPU system architecture pages (cloud.google.com/tpu/docs/v4, v5e, v5p, v6e):
    # peak bf16 compute per chip. JAX device kinds: "TPU v4", "TPU v5 lite", "TPU v5p"
    # (older runtimes "TPU v5"), "TPU v6 lite".
    ("tpu v6 lite", 918e12, "Cloud TPU v6e docs, bf16 per chip"),
    ("tpu v6e", 918e12, "Cloud TPU v6e docs, bf16 per chip"),
    ("tpu v5 lite", 197e12, "Cloud TPU v5e docs, bf16 per chip"),
    ("tpu v5e", 197e12, "Cloud TPU v5e docs, bf16 per chip"),
    ("tpu v5p", 459e12, "Cloud TPU v5p docs, bf16 per chip"),
    ("tpu v5", 459e12, "Cloud TPU v5p docs, bf16 per chip"),
    ("tpu v4", 275e12, "Cloud TPU v4 docs, bf16 per chip"),
)


@dataclasses.dataclass(frozen=True)
class Peak:
  """Peak FLOP/s of the devices a step runs on, and where the number comes from."""

  total: float  # FLOP/s of all devices together
  per_device: float
  devices: int
  source: str

  def describe(self) -> str:
    return (f"{self.total / 1e12:.3g} TFLOP/s peak ({self.devices} x "
            f"{self.per_device / 1e12:.3g}; {self.source})")


def table_peak(device_kind: str) -> Optional[tuple[float, str]]:
  """(peak FLOP/s, source) for a JAX `device_kind`, or None if the table lacks it."""
  kind = device_kind.lower()
  for name, flops, source in PEAKS:
    if name in kind:
      return flops, source
  return None


def measure_matmul_peak(dtype: Any = jnp.float32, n: int = 2048, repeats: int = 3,
                        device: Optional[jax.Device] = None) -> float:
  """FLOP/s of the best of `repeats` runs of a jitted (n x n) @ (n x n) matmul (chained 4
  times per call to amortise dispatch) on one of this process' devices, in `dtype`."""
  device = device or jax.local_devices()[0]
  a = jax.device_put(jnp.ones((n, n), dtype) / n, device)

  @jax.jit
  def chain(x, w):
    for _ in range(4):
      x = x @ w
    return x
  jax.block_until_ready(chain(a, a))
  best = math.inf
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(chain(a, a))
    best = min(best, time.perf_counter() - start)
  return 4 * 2 * n ** 3 / best


def peak(devices: list[jax.Device], dtype: Any = jnp.float32, matmul_size: int = 2048,
         per_device: float = 0.0) -> Peak:
  """The table's peak for accelerators; on CPU a matmul measured now in `dtype`;
  `per_device` > 0 (config.train.peak_flops_per_device) overrides both.

  CPU "devices" (`--xla_force_host_platform_device_count`) share their process' cores, and
  one XLA:CPU matmul already uses all of them: the measured rate is the process' total, not
  a per-device figure to multiply; with several processes (hosts), each has its own.
  A device kind missing from the table gives a NaN peak (MFU is then reported as NaN, and
  training goes on).
  """
  if per_device > 0:
    return Peak(per_device * len(devices), per_device, len(devices),
                "config.train.peak_flops_per_device")
  kind = devices[0].device_kind
  if devices[0].platform == "cpu":
    measured = measure_matmul_peak(dtype, n=matmul_size) * jax.process_count()
    return Peak(measured, measured / len(devices), len(devices),
                f"CPU: measured {jnp.dtype(dtype).name} matmul of this host x "
                f"{jax.process_count()} process(es), shared by {len(devices)} devices")
  found = table_peak(kind)
  if found is None:
    return Peak(float("nan"), float("nan"), len(devices),
                f"no peak known for {kind!r}: add it to xefm_jax/train/flops.py PEAKS or "
                "set config.train.peak_flops_per_device")
  return Peak(found[0] * len(devices), found[0], len(devices), f"{kind}: {found[1]}")


# ------------------------------------------------------------------------ FLOPs of a step

_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s*\((.*)\)\s*->.*\{\s*$")
_DEF = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(\w+)\[([\d,]*)\]")
_PARAM = re.compile(r"([\w.\-]+):\s*(\w+)\[([\d,]*)\]")
_DOT = re.compile(r"=\s*\w+\[([\d,]*)\][^ ]*\s+dot\(\s*(?:\w+\[([\d,]*)\]\S*\s+)?%?([\w.\-]+)")
_CONTRACT = re.compile(r"lhs_contracting_dims=\{([\d,]*)\}")
_CALLS = re.compile(r"(?:calls|to_apply|body|condition|true_computation|false_computation)"
                    r"=%?([\w.\-]+)")
_BRANCHES = re.compile(r"branch_computations=\{([^}]*)\}")
_BODY = re.compile(r"body=%?([\w.\-]+)")
_TRIPS = re.compile(r'"known_trip_count"\s*:\s*\{\s*"n"\s*:\s*"(\d+)"')


def _dims(text: str) -> list[int]:
  return [int(d) for d in text.split(",") if d]


def _parse_hlo(text: str) -> dict[str, tuple[float, list[tuple[str, int]]]]:
  """computation -> (its own dot FLOPs, [(called computation, times), ...])."""
  comps: dict[str, tuple[float, list[tuple[str, int]]]] = {}
  name, shapes, flops, calls = None, {}, 0.0, []
  for line in text.splitlines():
    m = _COMPUTATION.match(line)
    if m:
      name, flops, calls = m.group(1), 0.0, []
      shapes = {p: _dims(d) for p, _, d in _PARAM.findall(m.group(2))}
      continue
    if name is None:
      continue
    if line.strip() == "}":
      comps[name] = (flops, calls)
      name = None
      continue
    d = _DEF.match(line)
    if d:
      shapes[d.group(1)] = _dims(d.group(3))
    dot = _DOT.search(line)
    if dot:
      out = _dims(dot.group(1))
      lhs = _dims(dot.group(2)) if dot.group(2) is not None else shapes.get(dot.group(3), [])
      contract = _CONTRACT.search(line)
      k = math.prod(lhs[i] for i in _dims(contract.group(1))) if contract and lhs else 1
      flops += 2.0 * math.prod(out) * k
    body, trips = None, 1
    if " while(" in line:
      found, t = _BODY.search(line), _TRIPS.search(line)
      body, trips = (found.group(1) if found else None), (int(t.group(1)) if t else 1)
    calls.extend((c, trips if c == body else 1) for c in _CALLS.findall(line))
    b = _BRANCHES.search(line)
    if b:
      calls.extend((c.strip().lstrip("%"), 1) for c in b.group(1).split(","))
  return comps


def hlo_dot_flops(text: str, with_trip_counts: bool = True) -> float:
  """Dot FLOPs of the entry computation of an HLO module's text, callees included; loop
  bodies weighted by their known trip count (or once, with_trip_counts=False)."""
  comps = _parse_hlo(text)
  entry = None
  for line in text.splitlines():
    if line.startswith("ENTRY"):
      entry = _COMPUTATION.match(line).group(1)
  if entry is None:
    return 0.0

  @functools.lru_cache(maxsize=None)
  def total(name: str) -> float:
    own, calls = comps.get(name, (0.0, []))
    return own + sum(total(c) * (n if with_trip_counts else 1) for c, n in calls)
  return total(entry)


def loop_factor(compiled: Any) -> float:
  """(dot FLOPs with loop trip counts) / (dot FLOPs with each loop body once)."""
  text = compiled.as_text()
  once = hlo_dot_flops(text, with_trip_counts=False)
  return hlo_dot_flops(text) / once if once else 1.0


def step_flops(compiled: Any, num_devices: int) -> float:
  """FLOPs of one call of a compiled SPMD program, over all devices, loops counted."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # older JAX: one dict per partition
    analysis = analysis[0]
  return float(analysis.get("flops", 0.0)) * num_devices * loop_factor(compiled)


def mfu(flops_per_step: float, seconds_per_step: float, peak_: Peak) -> float:
  """Utilisation: FLOPs per step over step time, over the devices' peak (MFU with
  `model_flops`, HFU with `step_flops`)."""
  return flops_per_step / seconds_per_step / peak_.total


# ---------------------------------------------------------------- model FLOPs (PaLM, 6ND)


def jaxpr_dot_flops(jaxpr: Any) -> float:
  """2 x M x N x K of every dot_general (and 2 x outputs x kernel taps x input features of
  every convolution) in a jaxpr, sub-jaxprs included, a scan's body times its length.

  Read from the traced program rather than a parameter count: the tokens each stack sees
  differ (per-modality encoders see their own tokens, fusion all of them, heads only theirs;
  masked tokens are dropped), and the attention score and value matmuls are dots too.
  A while loop (unknown trip count) is counted once; of a cond's branches, the largest."""
  jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
  total = 0.0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "dot_general":
      (lhs_contract, _), _ = eqn.params["dimension_numbers"]
      lhs = eqn.invars[0].aval.shape
      out = eqn.outvars[0].aval.shape
      total += 2.0 * math.prod(out) * math.prod(lhs[i] for i in lhs_contract)
    elif name == "conv_general_dilated":
      rhs = eqn.invars[1].aval.shape
      spec = eqn.params["dimension_numbers"].rhs_spec  # (out feature, in feature, spatial..)
      taps = math.prod(rhs[i] for i in spec[2:])
      out = eqn.outvars[0].aval.shape
      total += 2.0 * math.prod(out) * taps * rhs[spec[1]]
    subs = _sub_jaxprs(eqn)
    if name == "cond":
      total += max((jaxpr_dot_flops(s) for s in subs), default=0.0)
    else:
      factor = float(eqn.params.get("length", 1)) if name == "scan" else 1.0
      total += factor * sum(jaxpr_dot_flops(s) for s in subs)
  return total


def _without_remat(config: Any) -> Any:
  """A copy of the config with every stack's remat_policy "none"."""
  config = config.copy_and_resolve_references()

  def walk(node):
    for key in list(node.keys()):
      if key == "remat_policy":
        node[key] = "none"
      elif hasattr(node[key], "keys"):
        walk(node[key])
  walk(config)
  return config


def model_flops(config: Any, batch_size: Optional[int] = None) -> float:
  """Model FLOPs of one training step on a global batch of `batch_size` windows (default
  config.data.batch_size): the matmul FLOPs of the loss and its gradient with respect to
  the trained parameters, rematerialisation off, the EMA target's forward included (as the
  train step computes them). Traced at abstract shapes (nothing is allocated or compiled);
  the config must have its label sizes and hand statistics (a run's, or
  `loop.without_corpus`)."""
  # the model's imports stay out of launchers that only need the peaks
  import flax.linen as nn
  from xefm_jax.data import spec as spec_lib
  from xefm_jax.model.xefm import XEFM
  from xefm_jax.objectives.pretrainer import Pretrainer
  from xefm_jax.parallel import init as init_lib
  from xefm_jax.train import optimizer

  config = _without_remat(config)
  batch = init_lib.abstract_window_batch(spec_lib.WindowSpec.from_config(config.data),
                                         int(batch_size or config.data.batch_size))
  pretrainer = Pretrainer(config)
  model = XEFM(config.model)

  def zeros(tree):
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), tree)
  target = None
  if pretrainer.needs_target:
    target = jax.eval_shape(
        lambda b: model.init_with_output(jax.random.key(0), b, method=XEFM.encode_next)[0],
        batch)
  keys = {"params": jax.random.key(0), "masking": jax.random.key(1),
          "dropout": jax.random.key(2)}
  params = jax.eval_shape(lambda: nn.unbox(pretrainer.init(
      keys, zeros(batch), None if target is None else zeros(target), train=True))["params"])
  frozen = jax.tree.leaves(optimizer.frozen_mask(params, config.optim))
  leaves, treedef = jax.tree.flatten(params)

  def loss(trained, fixed, batch):
    it_t, it_f = iter(trained), iter(fixed)
    full = jax.tree.unflatten(treedef, [next(it_f) if f else next(it_t) for f in frozen])
    full = jax.tree.unflatten(treedef, [jax.lax.stop_gradient(x) if f else x
                                        for x, f in zip(jax.tree.leaves(full), frozen)])
    tgt = None
    if target is not None:
      tgt = jax.lax.stop_gradient(model.apply({"params": full["model"]}, batch,
                                              method=XEFM.encode_next))
    rngs = {"masking": jax.random.key(1), "dropout": jax.random.key(2)}
    return pretrainer.apply({"params": full}, batch, tgt, train=True, rngs=rngs)[0]
  trained = [x for x, f in zip(leaves, frozen) if not f]
  fixed = [x for x, f in zip(leaves, frozen) if f]
  return jaxpr_dot_flops(jax.make_jaxpr(jax.value_and_grad(loss))(trained, fixed, batch))


def _sub_jaxprs(eqn: Any) -> list[Any]:
  """The jaxprs an equation carries in its parameters (scan and cond bodies, pjit, remat)."""
  return [v for value in eqn.params.values()
          for v in (value if isinstance(value, (tuple, list)) else (value,))
          if hasattr(v, "eqns") or hasattr(getattr(v, "jaxpr", None), "eqns")]


def has_remat(jaxpr: Any) -> bool:
  """Whether a jaxpr (sub-jaxprs included) rematerialises anything (jax.checkpoint)."""
  jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
  return any(eqn.primitive.name in ("checkpoint", "remat", "remat2")
             or any(has_remat(sub) for sub in _sub_jaxprs(eqn)) for eqn in jaxpr.eqns)


def step_model_flops(config: Any, step_jaxpr: Any) -> float:
  """`model_flops(config)`, read from the train step's own jaxpr when that is the same
  count: a step that rematerialises nothing and takes one microbatch computes exactly the
  dots model_flops traces (the loss, its gradient with respect to the trained parameters,
  the EMA target's forward; the optimizer and the guard have none), so the launcher does
  not trace the model a second time (seconds at tiny size, minutes at stage scale).
  Otherwise the model is traced afresh without remat."""
  if int(config.optim.grad_accum) == 1 and not has_remat(step_jaxpr):
    return jaxpr_dot_flops(step_jaxpr)
  return model_flops(config)


def model_flops_per_window(config: Any) -> float:
  """Model FLOPs of training on one window, forward + backward, PaLM's definition:
  3 x the forward pass' matmul FLOPs (2 x matmul parameters x tokens + the attention
  matmuls; the backward pass costs twice the forward), rematerialisation and the EMA
  target's no-gradient forward excluded. This is the count a compute budget and the scaling
  fits use: it depends on the model and the window, not on the mesh, remat policy or
  compiler (unlike `step_flops`, the hardware's work for MFU).

  Traced (not compiled) on abstract shapes with one batch of config.data.batch_size windows
  (in-batch objectives such as the contrastive one scale with it), divided per window."""
  # imported here: the model's modules are heavy, and MFU accounting does not need them
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from xefm_jax.data import spec as spec_lib  # pylint: disable=g-import-not-at-top
  from xefm_jax.objectives.pretrainer import Pretrainer  # pylint: disable=g-import-not-at-top
  from xefm_jax.parallel import init as init_lib  # pylint: disable=g-import-not-at-top
  from xefm_jax.train import state as state_lib  # pylint: disable=g-import-not-at-top
  config = config.copy_and_resolve_references()
  if config.data.get("hand_stats") is None:  # shapes only: unit statistics build the heads
    config.data.hand_stats = {k: {"mean": [0.0] * 3, "std": [1.0] * 3}
                              for k in ("wrist", "hands_local")}
  batch_size = int(config.data.batch_size)
  batch = init_lib.abstract_window_batch(spec_lib.WindowSpec.from_config(config.data),
                                         batch_size)
  target = state_lib.target_shapes(config, batch)
  pretrainer = Pretrainer(config)
  key = jax.random.key(0)

  def init(k, b, t):
    return pretrainer.init({"params": k, "masking": k, "dropout": k}, b, t, train=True)
  params = nn.unbox(jax.eval_shape(init, key, batch, target)["params"])

  def loss(p, b, t, k):
    k_mask, k_drop = jax.random.split(k)
    return pretrainer.apply({"params": p}, b, t, train=True,
                            rngs={"masking": k_mask, "dropout": k_drop})[0]
  return 3.0 * jaxpr_dot_flops(jax.make_jaxpr(loss)(params, batch, target, key)) / batch_size
