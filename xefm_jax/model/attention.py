"""Attention kernels behind one mask format: per-token flags instead of a dense (B, 1, L, L) mask.

The model's rule (fusion, encoders, masked-modeling decoder, text tower): a query reads every
key its `AttentionMask` marks readable, and itself. Readouts, hidden (masked-modeling) and
missing tokens are not readable; they still read the readable tokens and themselves, so no
softmax row is empty (a fully masked row is uniform in XLA and undefined in cuDNN).

Implementations (config.model.attention):
  None / "xla"  `jax.nn.dot_product_attention`'s XLA numerics (as two einsums, `_xla`) with
                the dense mask built from the flags (any backend): the reference every other
                path is tested against.
  "cudnn"       cuDNN flash attention (GPU) through `jax.nn.dot_product_attention`: the
                readable keys first (a stable per-sample sort of keys and values only; queries
                keep their order, so callers see nothing), `key_value_seq_lengths`, and the
                token count padded to a multiple of 128.
  "splash"      the Pallas splash-attention kernel (TPU, jax.experimental.pallas.ops.tpu):
                readable keys as kv segment ids, the token count padded to a multiple of 128.
Off their platform both names take the XLA path (see `kernels_off_platform`).

Both kernels attend over the readable keys only. The "and itself" term of a query that is not
readable is added exactly afterwards from the kernel's log-sum-exp lse_i over those keys:
  out_i = (1 - w_i) o_i + w_i v_i,   w_i = sigmoid(s_ii - lse_i),   s_ii = q_i . k_i / sqrt(d)
(the softmax over the readable keys plus one more logit). Kernels return lse without a
gradient, so its gradient is put back with a second attention A = attn(q, k, values=k) with
q and k held constant: d lse_i/d q_i = A_i / sqrt(d), d lse_i/d k_j = sum_i p_ij q_i / sqrt(d)
(the value gradient of A), which makes outputs and gradients equal to the dense rule.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from typing import Iterator

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

IMPLEMENTATIONS = (None, "xla", "cudnn", "splash")
BLOCK = 128  # token-count multiple the flash kernels tile by


@flax.struct.dataclass
class AttentionMask:
  """keys: (B, L) bool, the tokens other tokens may read (valid and attendable)."""

  keys: Array

  def dense(self) -> Array:
    """The (B, 1, L, L) boolean mask of the rule: readable keys, and every query itself."""
    length = self.keys.shape[1]
    eye = jnp.eye(length, dtype=jnp.bool_)
    return self.keys[:, None, None, :] | eye[None, None]


def attention_mask(key_valid: Array, key_attendable: Array | np.ndarray | None = None
                   ) -> AttentionMask:
  """The mask of a stack from per-token flags.

  key_valid: (B, L) the token exists (stream present, view present, modality kept, visible).
  key_attendable: (L,) static flags; False for tokens nobody else may read (readouts).
  """
  keys = key_valid
  if key_attendable is not None:
    keys = keys & jnp.asarray(key_attendable)[None, :]
  return AttentionMask(keys)


def dot_product_attention(q: Array, k: Array, v: Array, mask: AttentionMask | Array | None,
                          implementation: str | None = None) -> Array:
  """q, k, v (B, L, H, D) -> (B, L, H, D) under `mask` with the named implementation.

  q and k may differ in length (cross-attention). A dense boolean mask array (B, 1, Lq, Lk)
  (the caption decoder's causal self-attention and its cross-attention: a few dozen queries)
  takes the XLA path whatever the implementation: cuDNN would take it as a bias, which it
  refuses in training for odd lengths (a window's memory of 1094 tokens + 1).
  """
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f"unknown attention implementation {implementation!r}; expected one of "
                     f"{IMPLEMENTATIONS}")
  if not isinstance(mask, AttentionMask):
    return _xla(q, k, v, mask)
  if not _runs_kernel(implementation):
    return _xla(q, k, v, mask.dense())
  kernel = _cudnn if implementation == "cudnn" else _splash
  return _keys_then_self(q, k, v, mask.keys, kernel)


# Off their platform ("cudnn" without a GPU, "splash" without a TPU) the kernels' names take
# the XLA path: a stage config then compiles on CPU (launch/aot_check.py, tests) as it did
# before it named a kernel. Inside `kernels_off_platform()` they run their own code instead:
# cuDNN's call on jax's XLA implementation of the same API, splash in Pallas interpret mode
# (slow), which is how the tests compare them with the XLA path on CPU.
_OFF_PLATFORM = contextvars.ContextVar("attention_kernels_off_platform", default=False)
_PLATFORMS = {"cudnn": "gpu", "splash": "tpu"}


@contextlib.contextmanager
def kernels_off_platform() -> Iterator[None]:
  """Trace the named kernels' code paths even where their hardware is absent (tests)."""
  token = _OFF_PLATFORM.set(True)
  try:
    yield
  finally:
    _OFF_PLATFORM.reset(token)


def _runs_kernel(implementation: str | None) -> bool:
  if implementation in (None, "xla"):
    return False
  return jax.default_backend() == _PLATFORMS[implementation] or _OFF_PLATFORM.get()


def _xla(q: Array, k: Array, v: Array, mask: Array | None) -> Array:
  """`jax.nn.dot_product_attention`'s XLA path, same numerics (fp32 logits and softmax, large
  negative masked logits), written as two einsums whose dot operands XLA takes as they are.

  jax's version vmaps over query groups (for grouped-query attention, unused here), and its
  reshapes make XLA:CPU copy the (B, H, L, L) logits and their gradients between layouts
  (copies of that size in the compiled backward; none here, only (B, L, H, D)-sized ones).
  """
  scale = jnp.asarray(q.shape[-1] ** -0.5, jnp.float32)
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * scale
  if mask is not None:
    logits = jnp.where(mask, logits, -0.7 * jnp.finfo(jnp.float32).max)
  # softmax with the division after the second product, as flash attention does: the
  # (B, H, L, L) probabilities are never divided (XLA:CPU materialised the broadcast
  # denominator at that size for every layer), the (B, L, H, D) output is
  peak = jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
  unnormalised = jnp.exp(logits - peak)  # (B, H, Lq, Lk), as jax.nn.softmax
  total = jnp.einsum("bhqk->bqh", unnormalised)[..., None]  # (B, Lq, H, 1)
  out = jnp.einsum("bhqk,bkhd->bqhd", unnormalised.astype(k.dtype), v,
                   preferred_element_type=jnp.float32)
  return (out / total).astype(v.dtype)


def kernel_name(implementation: str | None) -> str:
  """What `implementation` runs on this backend (benchmarks report it)."""
  if implementation in (None, "xla"):
    return "xla"
  if jax.default_backend() == _PLATFORMS[implementation]:
    return implementation
  if not _OFF_PLATFORM.get():
    return f"xla ({implementation} named, no {_PLATFORMS[implementation].upper()})"
  return {"cudnn": "cudnn's call on xla", "splash": "splash in Pallas interpret mode"}[
      implementation]


def padded_length(implementation: str | None, length: int) -> int:
  """The token count the kernel runs at: the flash kernels tile by BLOCK."""
  return length + (-length) % BLOCK if _runs_kernel(implementation) else length


def _keys_then_self(q: Array, k: Array, v: Array, keys: Array, kernel) -> Array:
  """Attention over the readable keys by `kernel`, plus each unreadable query's own key."""
  length, dim = q.shape[1], q.shape[-1]
  scale = dim ** -0.5
  empty = ~jnp.any(keys, axis=1)  # (B,) no readable token: every query reads only itself
  # the kernels need a readable key per row: an empty sample reads its first token, then is
  # replaced by v below
  readable = keys | (empty[:, None] & (jnp.arange(length) == 0)[None])
  pad = (-length) % BLOCK
  if pad:
    widen = lambda t: jnp.pad(t, ((0, 0), (0, pad)) + ((0, 0),) * (t.ndim - 2))  # noqa: E731
    q, k, v, readable = widen(q), widen(k), widen(v), widen(readable)
  sg = jax.lax.stop_gradient
  out, lse = kernel(q, k, v, readable)  # (B, Lp, H, D), (B, Lp, H) without gradient
  moments, _ = kernel(sg(q), sg(k), k, readable)  # A_i = sum_j p_ij k_j
  q32, k32 = q.astype(jnp.float32), k.astype(jnp.float32)
  a32 = moments.astype(jnp.float32)
  lse = (sg(lse.astype(jnp.float32))
         + scale * jnp.sum((q32 - sg(q32)) * sg(a32) + (a32 - sg(a32)) * sg(q32), axis=-1))
  self_logit = scale * jnp.sum(q32 * k32, axis=-1)  # (B, Lp, H)
  w = jax.nn.sigmoid(self_logit - lse)[..., None]
  with_self = ((1.0 - w) * out.astype(jnp.float32) + w * v.astype(jnp.float32)).astype(out.dtype)
  out = jnp.where(readable[:, :, None, None], out, with_self)
  out = jnp.where(empty[:, None, None, None], v, out)
  return out[:, :length]


def _cudnn(q: Array, k: Array, v: Array, readable: Array) -> tuple[Array, Array]:
  """cuDNN flash attention over the readable keys, moved first per sample."""
  order = jnp.argsort(~readable, axis=1, stable=True)[:, :, None, None]  # readable first
  k, v = (jnp.take_along_axis(t, order, axis=1) for t in (k, v))
  lengths = jnp.sum(readable, axis=1, dtype=jnp.int32)
  return jax.nn.dot_product_attention(q, k, v, key_value_seq_lengths=lengths,
                                      implementation=_cudnn_backend(), return_residual=True)


def _cudnn_backend() -> str:
  """"cudnn" on GPU; elsewhere the same call on XLA, so the sort, padding and self term run
  (and are tested) on CPU with jax's own implementation of the same API."""
  return "cudnn" if jax.default_backend() == "gpu" else "xla"


def _splash(q: Array, k: Array, v: Array, readable: Array) -> tuple[Array, Array]:
  """The splash kernel over the readable keys. A Pallas kernel is not partitioned by GSPMD:
  under a mesh it runs per shard (`shard_map`, batch and heads as the logical rules place
  the activations; the token axis must be whole on each device)."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh is None or mesh.empty:
    return _splash_local(q, k, v, readable)
  import flax.linen as nn
  from jax.sharding import PartitionSpec as P
  rules = nn.get_logical_axis_rules()
  heads = nn.logical_to_mesh_axes(
      ("activation_batch", "activation_length", "activation_heads", "activation_kv"), rules)
  if heads[1] is not None or heads[3] is not None:
    raise ValueError(f"splash attention needs whole tokens and head dims per device; the "
                     f"rules shard (B, L, H, D) as {heads}")
  tokens, lse = P(heads[0], None), P(heads[0], None, heads[2])
  return jax.shard_map(_splash_local, mesh=mesh, in_specs=(heads, heads, heads, tokens),
                       out_specs=(heads, lse), check_vma=False)(q, k, v, readable)


def _splash_local(q: Array, k: Array, v: Array, readable: Array) -> tuple[Array, Array]:
  """The splash kernel per sample (heads-major, as it takes them), readable keys by segment."""
  _, length, heads, dim = q.shape
  interpret = jax.default_backend() != "tpu"
  segments = _segment_ids(readable)
  to_heads = lambda t: jnp.swapaxes(t, 1, 2)  # noqa: E731  (B, H, L, D)
  q = q * jnp.asarray(dim ** -0.5, q.dtype)  # splash does not scale the logits
  out = jax.vmap(_splash_kernel(length, heads, interpret, residuals=False))(
      to_heads(q), to_heads(k), to_heads(v), segment_ids=segments)
  sg = jax.lax.stop_gradient
  _, (lse,) = jax.vmap(_splash_kernel(length, heads, interpret, residuals=True))(
      to_heads(sg(q)), to_heads(sg(k)), to_heads(sg(v)), segment_ids=segments)
  return to_heads(out), jnp.swapaxes(lse, 1, 2)


def _segment_ids(readable: Array):
  from jax.experimental.pallas.ops.tpu import splash_attention as splash
  zeros = jnp.zeros(readable.shape, jnp.int32)
  return splash.SegmentIds(q=zeros, kv=jnp.where(readable, 0, 1).astype(jnp.int32))


@functools.lru_cache(maxsize=None)
def _splash_kernel(length: int, heads: int, interpret: bool, residuals: bool):
  from jax.experimental.pallas.ops.tpu import splash_attention as splash
  block = next(b for b in (512, 256, BLOCK) if length % b == 0)
  sizes = splash.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block,
                            block_q_dkv=block, block_kv_dkv=block, block_kv_dkv_compute=block,
                            block_q_dq=block, block_kv_dq=block)
  mask = splash.MultiHeadMask([splash.FullMask((length, length))] * heads)
  with jax.ensure_compile_time_eval():  # cached across traces: its block tables are constants
    return splash.make_splash_mha(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1,
                                  save_residuals=residuals, interpret=interpret)
