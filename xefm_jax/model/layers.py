"""Transformer layers whose parameters carry logical axis names.

Every parameter is declared through `nn.with_logical_partitioning`, so where it lives on the
mesh is decided by the config's `logical_axis_rules`, never here. Kernels are declared at
full rank (MaxText's DenseGeneral: Linen's own flattens rank-3 kernels and loses their
logical names) and applied as one matrix product of the flattened dims (DenseGeneral).

Parameters are created in `param_dtype` (fp32 master weights) and cast to `dtype` (bf16)
for the matmuls; norms and softmax statistics are computed in fp32.

Logical axis names used here (the rules table in configs/common.py maps each to mesh axes):
  parameters   embed, mlp, heads, kv, vocab, norm, patch (flattened patch pixels),
               input (small low-dimensional input features), table (rows of small learned
               tables: positions, views, modalities, readouts); `layers` is added by scan
  activations  activation_batch, activation_length, activation_embed, activation_heads,
               activation_kv, activation_mlp
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from xefm_jax.model.attention import (  # noqa: F401  (re-exported: callers build masks here)
    AttentionMask, attention_mask, dot_product_attention)

Array = jax.Array
Dtype = Any
Initializer = Callable[..., Array]

# Logical names of the residual stream at block boundaries.
ACTIVATION = ("activation_batch", "activation_length", "activation_embed")
ACTIVATION_HEADS = ("activation_batch", "activation_length", "activation_heads", "activation_kv")
ACTIVATION_MLP = ("activation_batch", "activation_length", "activation_mlp")

EMBED_INIT = nn.initializers.normal(stddev=0.02)  # learned tables added to content
# Token-id embeddings are the content of their tokens: unit scale, like the output of every
# patch projection (variance-scaling init on unit-scale inputs). At 0.02 a caption's word
# vectors drown under the order-1 time embedding added to them, and after the first norm
# every caption token looks alike (T5 and MaxText embed at 1.0 too).
TOKEN_EMBED_INIT = nn.initializers.normal(stddev=1.0)


def constrain(x: Array, names: Sequence[str | None]) -> Array:
  """Sharding constraint by logical names; a no-op outside a mesh + rules context."""
  return nn.with_logical_constraint(x, tuple(names))


def _canonical_axes(axis: int | Sequence[int], ndim: int) -> tuple[int, ...]:
  axes = (axis,) if isinstance(axis, int) else tuple(axis)
  return tuple(sorted(a % ndim for a in axes))


class DenseGeneral(nn.Module):
  """Contracts the trailing `axis` dims of x with a full-rank kernel.

  kernel shape = x.shape[axis] + features, named by `kernel_axes` (one name per kernel dim).
  Used for every projection: (embed -> mlp), (embed -> heads, kv), (heads, kv -> embed),
  (patch -> embed).
  """

  features: int | Sequence[int]
  kernel_axes: Sequence[str | None]
  axis: int | Sequence[int] = -1
  use_bias: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernel_init: Initializer | None = None

  @nn.compact
  def __call__(self, x: Array) -> Array:
    features = (self.features,) if isinstance(self.features, int) else tuple(self.features)
    axes = _canonical_axes(self.axis, x.ndim)
    if axes != tuple(range(x.ndim - len(axes), x.ndim)):
      raise ValueError(f"DenseGeneral contracts trailing axes only, got {self.axis} for {x.shape}")
    in_shape = tuple(x.shape[a] for a in axes)
    kernel_shape = in_shape + features
    if len(self.kernel_axes) != len(kernel_shape):
      raise ValueError(f"{self.name}: kernel {kernel_shape} needs one logical name per dim, "
                       f"got {tuple(self.kernel_axes)}")
    n_in = len(in_shape)
    init = self.kernel_init or nn.initializers.variance_scaling(
        1.0, "fan_in", "truncated_normal", in_axis=tuple(range(n_in)),
        out_axis=tuple(range(n_in, len(kernel_shape))))
    kernel = self.param("kernel", nn.with_logical_partitioning(init, tuple(self.kernel_axes)),
                        kernel_shape, self.param_dtype)
    # One matrix product over the flattened leading (token) dims and the flattened
    # contracted dims: the kernel gradient then contracts over a single dimension, which
    # XLA:CPU's dot takes as it is; contracting over (batch, length) at full rank made it
    # transpose and copy the activations and kernels of every projection in the backward
    # pass (a one-layer fusion stack's gradient: 32 -> 18 copies, 24 -> 10 transposes).
    lead = x.shape[:x.ndim - n_in]
    k, f = int(np.prod(in_shape)), int(np.prod(features))
    y = jnp.dot(x.reshape(-1, k).astype(self.dtype),
                kernel.reshape(k, f).astype(self.dtype)).reshape(lead + features)
    if self.use_bias:
      bias = self.param("bias", nn.with_logical_partitioning(
          nn.initializers.zeros, tuple(self.kernel_axes[n_in:])), features, self.param_dtype)
      y = y + bias.astype(self.dtype)
    return y


class RMSNorm(nn.Module):
  """Root-mean-square norm over the last axis, statistics in fp32 (per token: no leakage)."""

  epsilon: float = 1e-6
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  scale_axis: str = "norm"

  @nn.compact
  def __call__(self, x: Array) -> Array:
    scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones,
                                                             (self.scale_axis,)),
                       (x.shape[-1],), self.param_dtype)
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.epsilon)
    return (y * scale.astype(jnp.float32)).astype(self.dtype)


class LayerNorm(nn.Module):
  """Mean/variance norm over the last axis with scale and bias, statistics in fp32."""

  epsilon: float = 1e-6
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  scale_axis: str = "norm"

  @nn.compact
  def __call__(self, x: Array) -> Array:
    d = x.shape[-1]
    scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones,
                                                             (self.scale_axis,)),
                       (d,), self.param_dtype)
    bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros,
                                                           (self.scale_axis,)),
                      (d,), self.param_dtype)
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + self.epsilon)
    return (y * scale.astype(jnp.float32) + bias.astype(jnp.float32)).astype(self.dtype)


NORMS = {"rms": RMSNorm, "layer": LayerNorm}


def make_norm(kind: str, **kwargs) -> nn.Module:
  """A norm by config name ("rms" or "layer")."""
  if kind not in NORMS:
    raise ValueError(f"unknown norm {kind!r}; expected one of {sorted(NORMS)}")
  return NORMS[kind](**kwargs)


_ACTIVATIONS = {"gelu": nn.gelu, "silu": nn.silu, "relu": nn.relu}


class MLP(nn.Module):
  """Feed-forward block: plain ("gelu") or gated ("swiglu", "geglu", Shazeer 2020)."""

  mlp_dim: int
  activation: str = "gelu"
  dropout_rate: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, deterministic: bool = True) -> Array:
    dense = lambda features, axes, name: DenseGeneral(  # noqa: E731
        features, axes, dtype=self.dtype, param_dtype=self.param_dtype, name=name)
    gated = {"swiglu": "silu", "geglu": "gelu"}.get(self.activation)
    if gated is not None:
      h = (_ACTIVATIONS[gated](dense(self.mlp_dim, ("embed", "mlp"), "wi_0")(x))
           * dense(self.mlp_dim, ("embed", "mlp"), "wi_1")(x))
    elif self.activation in _ACTIVATIONS:
      h = _ACTIVATIONS[self.activation](dense(self.mlp_dim, ("embed", "mlp"), "wi")(x))
    else:
      raise ValueError(f"unknown MLP activation {self.activation!r}")
    h = constrain(h, ACTIVATION_MLP)  # (B, L, mlp)
    h = nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)
    return dense(x.shape[-1], ("mlp", "embed"), "wo")(h)


class Attention(nn.Module):
  """Multi-head self-attention; the kernel is `implementation` (see `dot_product_attention`).

  `mask` is an `AttentionMask` (per-token flags, built once per stack by `attention_mask`)
  or, for masks that are not key padding (the caption decoder's causal mask), a boolean
  (B, 1, L, L) array (True = may attend), which takes the XLA path whatever the config names.
  """

  num_heads: int
  head_dim: int
  qk_norm: bool = True
  implementation: str | None = None
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, mask: AttentionMask | Array | None) -> Array:
    proj = lambda name: DenseGeneral(  # noqa: E731
        (self.num_heads, self.head_dim), ("embed", "heads", "kv"), dtype=self.dtype,
        param_dtype=self.param_dtype, name=name)
    q, k, v = (constrain(proj(n)(x), ACTIVATION_HEADS) for n in ("query", "key", "value"))
    if self.qk_norm:  # bounds the logits; keeps bf16 attention stable at width (Dehghani 2023)
      q = RMSNorm(dtype=self.dtype, param_dtype=self.param_dtype, name="query_norm")(q)
      k = RMSNorm(dtype=self.dtype, param_dtype=self.param_dtype, name="key_norm")(k)
    out = dot_product_attention(q, k, v, mask, self.implementation)  # (B, L, H, K)
    out = constrain(out, ACTIVATION_HEADS)
    return DenseGeneral(x.shape[-1], ("heads", "kv", "embed"), axis=(-2, -1), dtype=self.dtype,
                        param_dtype=self.param_dtype, name="out")(out)


class Embed(nn.Module):
  """Token-id lookup table (num_embeddings, features) named ("vocab", "embed").

  The lookup is a one-hot matmul: with the table sharded over vocab (tensor) and embed
  (fsdp), a gather makes GSPMD replicate the table, a matmul partitions cleanly (MaxText's
  iota embedding). Out-of-range ids embed to zeros instead of NaN.
  """

  num_embeddings: int
  features: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, ids: Array) -> Array:
    table = self.param("embedding", nn.with_logical_partitioning(TOKEN_EMBED_INIT,
                                                                 ("vocab", "embed")),
                       (self.num_embeddings, self.features), self.param_dtype)
    one_hot = jax.nn.one_hot(ids, self.num_embeddings, dtype=self.dtype)  # (..., vocab)
    return jnp.einsum("...v,ve->...e", one_hot, table.astype(self.dtype))


def learned_table(module: nn.Module, name: str, rows: int, features: int,
                  param_dtype: Dtype) -> Array:
  """A small learned table (rows, features) named ("table", "embed"): positions, views,
  body parts, modalities, readouts. Declared from inside a compact method of `module`."""
  return module.param(name, nn.with_logical_partitioning(EMBED_INIT, ("table", "embed")),
                      (rows, features), param_dtype)


def sinusoidal_embedding(t: Array, features: int, max_period: float = 10_000.0) -> Array:
  """Fixed sin/cos features of continuous positions t (..., ) -> (..., features), fp32.

  Time is continuous (tubelet and chunk centres fall between frames), so a fixed function
  of t serves every modality's clock without a table sized to the window.
  """
  if features % 2:
    raise ValueError(f"sinusoidal embedding needs an even width, got {features}")
  half = features // 2
  freqs = np.exp(-np.log(max_period) * np.arange(half, dtype=np.float32) / half)  # (half,)
  angles = jnp.asarray(t, jnp.float32)[..., None] * freqs  # (..., half)
  return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


def masked_mean(x: Array, mask: Array) -> Array:
  """Mean of x (B, n, D) over tokens where mask (B, n); zeros where no token is valid."""
  w = mask.astype(jnp.float32)[..., None]  # (B, n, 1)
  total = jnp.sum(jnp.where(mask[..., None], x.astype(jnp.float32), 0.0), axis=1)  # (B, D)
  return total / jnp.maximum(jnp.sum(w, axis=1), 1.0)
