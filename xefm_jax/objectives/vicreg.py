"""Anti-collapse of the window embedding (VICReg's variance and covariance terms).

Why: the embedding the evaluation probes (`XEFMOutput.embedding`, the one definition in
`model/xefm.window_embedding`: the concatenated means of the readout groups) collapsed in
training to an effective rank of 1.4 of 576 (benchmarks/grounding.py, RESULTS.md): one
"hands in view vs walking" direction held 90% of its variance, and what the tasks need sat
in directions a ridge probe shrinks away. future_state's variance hinge acts on layer-
normalised latents, where one direction can satisfy it; nothing asked the dimensions to
carry different things.

On the training pass's window embedding (B, E), over every window of the global batch:
  variance    mean over the E dimensions of relu(gamma - std over the batch) (the hinge of
              heads.variance_hinge): no dimension is constant across windows;
  covariance  heads.covariance_penalty: the squared off-diagonal covariance / E, of the
              correlation when `standardise` (scale-free: shrinking or growing the features
              cannot lower it), so the dimensions carry decorrelated information.
loss = variance_weight * variance + covariance_weight * covariance. No parameters.

Batch statistics are over the global batch (jnp reductions of the batch-sharded array under
jit; the train step's microbatches, config.optim.grad_accum, are each their own batch). A
batch of B windows has a correlation matrix of rank B - 1, so the covariance term's least
value is about E / (B - 1) - 1, not 0; the gradient, not the value, is what matters.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from xefm_jax.objectives import base
from xefm_jax.objectives import heads

Array = jax.Array


@base.register("vicreg")
class VICReg(base.Objective):

  def __call__(self, ctx: base.Context, *, train: bool) -> tuple[Array, dict[str, Array]]:
    c = self.config
    x = ctx.out.embedding.astype(jnp.float32)  # (B, E): what the probes read
    valid = jnp.ones(x.shape[:1], jnp.bool_)
    variance = heads.variance_hinge(x, valid, c.gamma)
    covariance = heads.covariance_penalty(x, valid, standardise=c.standardise)
    metrics = {"variance_loss": variance, "covariance_loss": covariance,
               "std": jnp.mean(jnp.std(x, axis=0)),
               "batch_rank": heads.batch_rank(x, valid)}
    return c.variance_weight * variance + c.covariance_weight * covariance, metrics
