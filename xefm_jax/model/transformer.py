"""The pre-norm transformer stack shared by the fusion transformer and the unimodal encoders.

Scale levers come from the stack's config (configs/common.py `transformer_config`):
`scan_layers` stacks the layers' parameters along a leading "layers" axis and runs them with
`nn.scan` (one compiled layer: compile time independent of depth, MaxText's default);
False unrolls a plain loop (easier to read in a debugger, fine for a few layers).
`remat_policy` names a `jax.checkpoint_policies` entry (or "none"): what the backward pass
may keep instead of recomputing.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from xefm_jax.model import layers

Array = jax.Array

# Config name -> policy. "none": no rematerialisation (fastest, most memory);
# "nothing_saveable": recompute the whole layer (least memory).
REMAT_POLICIES = {
    "none": None,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_with_no_batch_dims": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "nothing_saveable": jax.checkpoint_policies.nothing_saveable,
    "everything_saveable": jax.checkpoint_policies.everything_saveable,
}


def head_dim(cfg: ml_collections.ConfigDict, width: int) -> int:
  """Per-head width: explicit in the config, else width // num_heads."""
  if cfg.get("head_dim"):
    return cfg.head_dim
  if width % cfg.num_heads:
    raise ValueError(f"width {width} is not divisible by num_heads {cfg.num_heads}")
  return width // cfg.num_heads


class Block(nn.Module):
  """One pre-norm layer: x + Attn(Norm(x)), then x + MLP(Norm(x))."""

  cfg: ml_collections.ConfigDict
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  attention: str | None = None
  scanned: bool = False  # nn.scan wants (carry, per-layer output)

  @nn.compact
  def __call__(self, x: Array, mask: layers.AttentionMask, deterministic: bool):
    cfg = self.cfg
    norm = lambda name: layers.make_norm(  # noqa: E731
        cfg.norm, dtype=self.dtype, param_dtype=self.param_dtype, name=name)
    x = layers.constrain(x, layers.ACTIVATION)  # (B, L, D)
    h = norm("pre_attention_norm")(x)
    h = layers.Attention(cfg.num_heads, head_dim(cfg, x.shape[-1]), qk_norm=cfg.qk_norm,
                         implementation=self.attention, dtype=self.dtype,
                         param_dtype=self.param_dtype, name="attention")(h, mask)
    x = x + nn.Dropout(cfg.dropout)(h, deterministic=deterministic)
    h = norm("pre_mlp_norm")(x)
    h = layers.MLP(cfg.mlp_dim, cfg.mlp_activation, cfg.dropout, dtype=self.dtype,
                   param_dtype=self.param_dtype, name="mlp")(h, deterministic)
    x = x + nn.Dropout(cfg.dropout)(h, deterministic=deterministic)
    x = layers.constrain(x, layers.ACTIVATION)
    return (x, None) if self.scanned else x


class TransformerStack(nn.Module):
  """`cfg.num_layers` Blocks (scanned or looped, rematerialised per the config).

  x: (B, L, D); mask: the stack's `layers.AttentionMask` (per-token flags). Zero layers is the
  identity, so a modality can run with a bare tokenizer.
  """

  cfg: ml_collections.ConfigDict
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  attention: str | None = None

  @nn.compact
  def __call__(self, x: Array, mask: layers.AttentionMask, deterministic: bool = True) -> Array:
    cfg = self.cfg
    if cfg.remat_policy not in REMAT_POLICIES:
      raise ValueError(f"unknown remat_policy {cfg.remat_policy!r}; "
                       f"expected one of {sorted(REMAT_POLICIES)}")
    block = Block
    if cfg.remat_policy != "none":
      # static_argnums counts self: (self, x, mask, deterministic)
      block = nn.remat(Block, policy=REMAT_POLICIES[cfg.remat_policy],
                       prevent_cse=not cfg.scan_layers, static_argnums=(3,))
    kw = dict(cfg=cfg, dtype=self.dtype, param_dtype=self.param_dtype, attention=self.attention)
    if cfg.scan_layers and cfg.num_layers:
      stack = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True,
                                                                      "dropout": True},
                      in_axes=(nn.broadcast, nn.broadcast), length=cfg.num_layers,
                      metadata_params={nn.PARTITION_NAME: "layers"})
      x, _ = stack(scanned=True, name="layers", **kw)(x, mask, deterministic)
    else:
      for i in range(cfg.num_layers):
        x = block(name=f"layers_{i}", **kw)(x, mask, deterministic)
    return x
