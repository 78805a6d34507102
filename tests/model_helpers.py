"""Shared by the model tests: parameters without compiling the initialisers."""

import flax.linen as nn
import jax
import numpy as np


def host_params(model: nn.Module, batch, seed: int = 0):
  """Variables at the shapes `model.init` gives, drawn with numpy (fan-in scaled normals).

  Tests about masks, shapes and plumbing need parameters, not the initialisers: on a 2-core
  CPU, compiling ~170 initialisers costs more than those tests together. The real init is
  exercised where it is the subject (test_parallel.py, test_model.py's encode test).
  """
  shapes = nn.unbox(jax.eval_shape(model.init, jax.random.key(0), batch))
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda s: (rng.normal(size=s.shape) / np.sqrt(s.shape[-1])).astype(s.dtype), shapes)
