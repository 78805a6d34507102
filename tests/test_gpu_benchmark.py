"""benchmarks/gpu.py at test size on CPU: it runs, reports what it measured, counts FLOPs right."""

import json
import math
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu  # noqa: E402

from configs import common  # noqa: E402
from xefm_jax.model import layers  # noqa: E402


@pytest.mark.slow  # a subprocess: imports, compiles and measures a peak (~10 s quiet machine)
def test_tiny_run_prints_one_json_line_with_the_figures():
  env = dict(os.environ, PYTHONPATH=str(ROOT), XLA_FLAGS="")  # one CPU device
  run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--tiny",
                        "--steps", "2", "--attention", "cudnn"],
                       capture_output=True, text=True, env=env, timeout=600, check=True)
  result = json.loads(run.stdout.strip().splitlines()[-1])
  assert result["platform"] == "cpu" and result["attention"] == "cudnn"
  assert result["kernel"] == "xla (cudnn named, no GPU)"
  assert (result["tokens"], result["padded_tokens"], result["batch"]) == (96, 96, 2)
  assert result["model_flops"] == gpu.model_flops(
      common.transformer_config(2, 2, 256), 64, 96, 2)
  for key in ("step_s", "mfu", "hardware_utilisation", "compiled_bytes"):
    assert result[key] > 0 and math.isfinite(result[key]), key
  assert math.isfinite(result["loss"])


def test_model_flops_counts_the_stack_matmul_parameters():
  """6 x N per token uses the stack's own matmul kernels (norm scales excluded)."""
  stack = common.transformer_config(num_layers=2, num_heads=2, mlp_dim=48)
  stack.mlp_activation = "swiglu"
  width, length = 32, 8
  x = jnp.zeros((1, length, width))
  mask = layers.attention_mask(jnp.ones((1, length), bool))
  shapes = jax.eval_shape(gpu.Slice(stack, None).init, jax.random.key(0), x, mask)
  kernels = sum(np.prod(leaf.value.shape) for path, leaf in
                jax.tree_util.tree_leaves_with_path(shapes["params"],
                                                    is_leaf=lambda t: hasattr(t, "value"))
                if "kernel" in jax.tree_util.keystr(path))
  attention = 12 * 2 * width * length * length
  assert gpu.model_flops(stack, width, length, 1) == 6 * kernels * length + attention
