"""Pieces the objectives share: a small MLP head with logical axes, masked losses, readers
of the model output (readouts, visible tokens, caption-blind samples) and contrastive terms.

Losses are means over valid targets only (a label of -1, a missing stream or an untracked
hand contributes nothing), computed in fp32; a batch without any valid target gives 0 and
no gradient rather than NaN.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from xefm_jax.model import layers
from xefm_jax.model.xefm import XEFMOutput
from xefm_jax.objectives import base
from xefm_jax.parallel import sharding

Array = jax.Array


class MLPHead(nn.Module):
  """x (..., D) -> (..., features): norm, one hidden layer (GELU), output projection.
  hidden < 0: no hidden layer, a linear read-out of the normalised input (the supervised
  label heads: what they teach the readout is then linearly readable, as the evaluation's
  linear probes read it)."""

  features: int
  hidden: int = 0  # 0: the input width; < 0: none (linear)
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  out_axis: str = "input"  # logical name of the output dim (vocab for token logits)

  @nn.compact
  def __call__(self, x: Array) -> Array:
    x = layers.make_norm("layer", dtype=self.dtype, param_dtype=self.param_dtype,
                         name="norm")(x)
    if self.hidden < 0:
      return layers.DenseGeneral(self.features, ("embed", self.out_axis), dtype=self.dtype,
                                 param_dtype=self.param_dtype, name="out")(x)
    x = layers.DenseGeneral(self.hidden or x.shape[-1], ("embed", "mlp"), dtype=self.dtype,
                            param_dtype=self.param_dtype, name="hidden")(x)
    x = nn.gelu(x)
    return layers.DenseGeneral(self.features, ("mlp", self.out_axis), dtype=self.dtype,
                               param_dtype=self.param_dtype, name="out")(x)


def masked_mean(values: Array, mask: Array) -> Array:
  """Mean of `values` where `mask`, in fp32; 0 when nothing is valid."""
  mask = jnp.broadcast_to(mask, values.shape).astype(jnp.float32)
  return jnp.sum(values.astype(jnp.float32) * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def top1(logits: Array, labels: Array) -> Array:
  """Whether each label (a valid index) has the largest logit of its row, ties counted as
  right: argmax's accuracy without argmax, whose index reduction XLA:CPU runs as a slow
  variadic reduce (the captioning and language accuracies took ~7 ms of the local step)."""
  picked = jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]
  return picked >= jnp.max(logits, axis=-1)


def classification(logits: Array, labels: Array, mask: Array | bool = True
                   ) -> tuple[Array, Array]:
  """Softmax cross-entropy and accuracy over labels >= 0 (-1: no label) where `mask`."""
  valid = (labels >= 0) & mask
  safe = jnp.where(valid, labels, 0)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), safe)
  correct = top1(logits, safe).astype(jnp.float32)
  return masked_mean(ce, valid), masked_mean(correct, valid)


def binary(logits: Array, targets: Array, mask: Array | bool = True) -> tuple[Array, Array]:
  """Sigmoid cross-entropy and accuracy (at 0.5) where `mask`."""
  targets = targets.astype(jnp.float32)
  bce = optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), targets)
  correct = ((logits > 0) == (targets > 0.5)).astype(jnp.float32)
  return masked_mean(bce, mask), masked_mean(correct, mask)


def regression(pred: Array, target: Array, mask: Array | bool = True, kind: str = "smooth_l1",
               beta: float = 1.0) -> Array:
  """Masked mean of an elementwise regression loss, fp32: "l1", "l2" or "smooth_l1" (Huber
  with threshold `beta`, divided by beta so it is L1-like for large errors). `target` must
  already be zero where masked (a NaN there would poison the gradient through the mask)."""
  diff = pred.astype(jnp.float32) - target.astype(jnp.float32)
  if kind == "l1":
    err = jnp.abs(diff)
  elif kind == "l2":
    err = jnp.square(diff)
  elif kind == "smooth_l1":
    err = optax.huber_loss(diff, delta=beta) / beta
  else:
    raise ValueError(f"unknown regression loss {kind!r}; expected l1, l2 or smooth_l1")
  return masked_mean(err, mask)


def layer_norm(x: Array, eps: float = 1e-6) -> Array:
  """Parameter-free layer norm over the last axis, fp32 (normalised regression targets)."""
  x = x.astype(jnp.float32)
  mean = jnp.mean(x, -1, keepdims=True)
  var = jnp.mean(jnp.square(x - mean), -1, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + eps)


def l2_normalize(x: Array, eps: float = 1e-6) -> Array:
  x = x.astype(jnp.float32)
  return x * jax.lax.rsqrt(jnp.sum(jnp.square(x), -1, keepdims=True) + eps)


# --------------------------------------------------------------- reading the model's output


def readout(out: XEFMOutput, model_config: Any, name: str) -> Array:
  """(B, D) fp32 mean of the readout tokens `name`; the window embedding when the model has
  no such readout (configs that replace config.model.fusion.readouts, e.g. local.py:tiny)."""
  if name in out.readouts:
    return jnp.mean(out.readouts[name].astype(jnp.float32), axis=1)
  return out.embedding


def visible(ctx: base.Context, name: str) -> Array:
  """(B, n) bool: the modality's tokens that exist and whose content the pass saw."""
  mask = ctx.out.fused[name].mask
  return mask & ctx.keep[name] if name in ctx.keep else mask


def caption_blind(ctx: base.Context) -> Array:
  """(B,) bool: the window's forward pass did not see its caption (the model dropped
  language, masked modeling hid all of it, or there is no caption). Captioning, text
  alignment and object relevance train on these samples only, else the answer is an input."""
  valid = ctx.batch["caption_valid"]
  if "language" not in ctx.out.fused:
    return jnp.ones_like(valid)
  return ~(visible(ctx, "language").any(axis=1) & valid)


def unmasked(ctx: base.Context) -> Array:
  """(B,) bool: masked modeling hid none of the window's tokens."""
  rows = jnp.ones(ctx.batch["caption_valid"].shape, jnp.bool_)
  for k in ctx.keep.values():
    rows = rows & k.all(axis=1)
  return rows


def supervised_rows(ctx: base.Context) -> Array:
  """(B,) bool: the windows a supervised label loss (procedure, contact, captioning's
  structured answer) may train on: the pass did not see the window's caption, which states
  its action, subtask and objects (else the label is an input: leakage), and masked
  modeling hid nothing (the heads train on the input the evaluation gives them)."""
  return caption_blind(ctx) & unmasked(ctx)


def sub_batch(ctx: base.Context, masked: bool) -> Callable[[Array], Array]:
  """x (B, ...) -> its rows in the static sub-batch of the windows masked modeling masked
  (`masked`; every row in a pass that hid nothing) or of the others: a decoder that scores
  only those windows runs on only those rows (sharding.block_rows)."""
  m = ctx.masked_rows
  rows = (slice(None, m) if m else slice(None)) if masked else slice(m, None)
  shards = sharding.batch_shards()
  return lambda x: sharding.block_rows(x, rows, shards)


def fused_sequence(ctx: base.Context
                   ) -> tuple[Array, Array, Array, list[tuple[str, int]]]:
  """Every modality's fused tokens as one sequence (the memory of the decoders).

  Returns tokens (B, N, D), visible (B, N) (exists and not hidden), time (B, N) and the
  layout [(modality, n_m)] in the model's order (sum of n_m = N).
  """
  tokens, vis, time, layout = [], [], [], []
  for name, group in ctx.out.fused.items():
    tokens.append(group.tokens)
    vis.append(visible(ctx, name))
    time.append(jnp.broadcast_to(group.time, group.mask.shape))
    layout.append((name, group.mask.shape[1]))
  return (jnp.concatenate(tokens, 1), jnp.concatenate(vis, 1), jnp.concatenate(time, 1),
          layout)


# ---------------------------------------------------------------------------- contrastive


def sigmoid_contrastive(x: Array, y: Array, positives: Array, x_valid: Array, y_valid: Array,
                        log_scale: Array, bias: Array, ignore: Array | None = None
                        ) -> tuple[Array, Array]:
  """SigLIP's pairwise sigmoid loss between L2-normalised x (B, E) and y (B, E).

  positives: (B, B) bool, True where x_i and y_j belong together (the diagonal, or any pair
  with the same caption). Pairs with an invalid side contribute nothing, and so do pairs in
  `ignore` (B, B) that are not positives: neither positive nor negative (overlapping windows
  of one episode share most of their frames; calling them negatives teaches the model to
  tell apart what is the same). The loss is summed over the columns and averaged over valid
  rows (SigLIP's normalisation). Returns the loss and the top-1 retrieval accuracy of x -> y
  over valid rows with a positive, among the non-ignored candidates.
  """
  logits = jnp.exp(log_scale) * jnp.einsum("ie,je->ij", x.astype(jnp.float32),
                                           y.astype(jnp.float32)) + bias  # (B, B)
  labels = jnp.where(positives, 1.0, -1.0)
  pair = x_valid[:, None] & y_valid[None, :]  # (B, B)
  if ignore is not None:
    pair = pair & (positives | ~ignore)
  nll = jnp.where(pair, -jax.nn.log_sigmoid(labels * logits), 0.0)
  rows = x_valid & (positives & pair).any(axis=1)  # (B,)
  loss = jnp.sum(nll) / jnp.maximum(jnp.sum(rows), 1.0)
  best = jnp.argmax(jnp.where(pair, logits, -jnp.inf), axis=1)  # (B,)
  hit = jnp.take_along_axis(positives, best[:, None], axis=1)[:, 0]
  return loss, masked_mean(hit, rows)


def overlapping_windows(batch: Any, frames: int) -> Array:
  """(B, B) bool: windows i != j of the same episode whose context frames overlap (starts
  fewer than `frames` shard frames apart)."""
  episode, start = batch["episode"], batch["start"]
  same = episode[:, None] == episode[None, :]
  close = jnp.abs(start[:, None] - start[None, :]) < frames
  return same & close & ~jnp.eye(episode.shape[0], dtype=jnp.bool_)


def _centred(x: Array, valid: Array) -> tuple[Array, Array]:
  """(x - the mean of its valid rows, zero on invalid rows; the count of valid rows) for
  x (B, E) in float32: the batch statistics of the VICReg terms and the batch rank."""
  w = valid.astype(jnp.float32)[:, None]  # (B, 1)
  count = jnp.sum(w)
  x = x.astype(jnp.float32)
  return (x - jnp.sum(x * w, 0) / jnp.maximum(count, 1.0)) * w, count


def variance_hinge(x: Array, valid: Array, floor: float) -> Array:
  """VICReg's variance term: mean over features of relu(floor - std over valid samples).
  x: (B, E); valid: (B,). Keeps a prediction or representation from collapsing to one
  point (every sample the same)."""
  xc, n = _centred(x, valid)
  var = jnp.sum(jnp.square(xc), 0) / jnp.maximum(n - 1.0, 1.0)
  hinge = jax.nn.relu(floor - jnp.sqrt(var + 1e-4))
  return jnp.where(n > 1, jnp.mean(hinge), 0.0)


def covariance_penalty(x: Array, valid: Array, standardise: bool = True, eps: float = 1e-4
                       ) -> Array:
  """VICReg's covariance term: the sum of the squared off-diagonal entries of the (B, E)
  features' covariance over valid samples, divided by E. standardise: of their correlation
  instead (each column centred and divided by sqrt(var + eps) first), so the penalty
  does not depend on the features' scale (for variances well above eps; a column far below
  it fades out of the term, and the variance hinge is what lifts it) and cannot be lowered
  by shrinking them. 0 for
  decorrelated features (up to sampling noise: with n samples and E > n columns the
  correlation matrix has rank n - 1, so the least value is about E / (n - 1) - 1);
  E - 1 for rank-1 features when standardised.

  Batch statistics over the whole array: under jit with the batch sharded over the data
  axes, XLA reduces across devices. The Frobenius norm is taken through the (B, B) Gram
  matrix when B < E (the same value: ||X^T X||_F = ||X X^T||_F)."""
  xc, n = _centred(x, valid)
  var = jnp.sum(jnp.square(xc), 0) / jnp.maximum(n - 1.0, 1.0)  # (E,)
  if standardise:
    xc = xc * jax.lax.rsqrt(var + eps)
    var = var / (var + eps)
  rows, dim = x.shape
  if rows < dim:
    gram = xc @ xc.T  # (B, B)
    total = jnp.sum(jnp.square(gram)) / jnp.square(jnp.maximum(n - 1.0, 1.0))
  else:
    cov = xc.T @ xc / jnp.maximum(n - 1.0, 1.0)  # (E, E)
    total = jnp.sum(jnp.square(cov))
  off = (total - jnp.sum(jnp.square(var))) / dim
  return jnp.where(n > 1, off, 0.0)


def batch_rank(x: Array, valid: Array) -> Array:
  """exp(entropy of the principal components' variance shares) of the valid rows of x
  (B, E): the effective rank of the batch (at most its number of rows; what
  benchmarks/grounding.py measures on the whole train split), from the (B, B) Gram
  matrix or the (E, E) scatter matrix, whichever is smaller (the same nonzero spectrum)."""
  xc, _ = _centred(x, valid)
  eig = jnp.maximum(jnp.linalg.eigvalsh(xc @ xc.T if x.shape[0] < x.shape[1] else xc.T @ xc),
                    0.0)
  p = eig / jnp.maximum(jnp.sum(eig), 1e-30)
  return jnp.exp(-jnp.sum(p * jnp.log(p + 1e-30)))


def stack_config(cfg: Any, model_width: int) -> Any:
  """A head's transformer config (configs/common.py `transformer_config`) with its zeros
  resolved: width 0 -> the model width, capped at `max_width` when set (a decoder stays
  light as the trunk grows: MAE's 512-wide decoder under a 1024-wide ViT-L), mlp_dim 0 ->
  4 x width."""
  cfg = cfg.copy_and_resolve_references()
  with cfg.unlocked():
    cfg.width = cfg.get("width") or min(model_width, cfg.get("max_width") or model_width)
    cfg.mlp_dim = cfg.mlp_dim or 4 * cfg.width
  return cfg
