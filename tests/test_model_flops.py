"""Model FLOPs (xefm_jax/train/flops.py `model_flops_per_window`), the count the scaling
sweep's budgets and fits use: dots read from the traced program (scan bodies times their
length), and one more fusion layer adding exactly PaLM's 6 x matmul params x tokens + 12 x
width x tokens^2 per window."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from configs import local
from xefm_jax.data import spec as spec_lib
from xefm_jax.model.xefm import XEFM
from xefm_jax.parallel import init
from xefm_jax.train import flops


def test_jaxpr_dot_flops_counts_dots_scan_bodies_and_convolutions():
  def f(x, w, k):
    y = x @ w  # (4, 8) @ (8, 16): 2 * 4 * 16 * 8
    def body(c, _):
      return c @ w @ w.T, None  # two dots per step
    y, _ = jax.lax.scan(body, y @ w.T, None, length=3)
    img = jax.lax.conv_general_dilated(  # (1, 3, 8, 8) * (5, 3, 2, 2), stride 2 -> (1,5,4,4)
        jnp.ones((1, 3, 8, 8)), k, (2, 2), "VALID")
    return y.sum() + img.sum()
  args = (jnp.ones((4, 8)), jnp.ones((8, 16)), jnp.ones((5, 3, 2, 2)))
  dot = 2 * 4 * 16 * 8
  want = dot + dot + 3 * 2 * dot + 2 * (5 * 4 * 4) * (2 * 2) * 3
  assert flops.jaxpr_dot_flops(jax.make_jaxpr(f)(*args)) == want


def _config(layers: int):
  c = local.get_config("tiny")
  c.model.fusion.update(num_layers=layers, scan_layers=layers % 2 == 0)
  for name in c.objectives:  # readout MLP heads only: no side passes, no masking
    if name not in ("forecasting", "policy"):
      c.objectives[name].weight = 0
  return c


def test_a_fusion_layer_adds_palms_six_n_d_plus_attention():
  base, more = _config(2), _config(3)  # scanned and unrolled stacks count alike
  window = spec_lib.WindowSpec.from_config(base.data)
  batch = init.abstract_window_batch(window, 1)
  model = XEFM(base.model)
  variables = nn.unbox(init.abstract_variables(model, batch))
  out = jax.eval_shape(lambda v, b: model.apply(v, b, method=XEFM.encode), variables, batch)
  tokens = (sum(g.mask.shape[1] for g in out.tokens.values())
            + sum(r.shape[1] for r in out.readouts.values()))
  d, mlp = base.model.width, base.model.fusion.mlp_dim
  matmul_params = 4 * d * d + 2 * d * mlp  # q, k, v, out; MLP in and out
  want = 6 * matmul_params * tokens + 12 * d * tokens ** 2
  got = flops.model_flops_per_window(more) - flops.model_flops_per_window(base)
  assert got == pytest.approx(want, rel=1e-9)
