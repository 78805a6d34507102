"""Every attention implementation the config can name against the XLA reference, on CPU.

Inside `attention.kernels_off_platform()` (every test here but the last ones), "cudnn" runs
its own code (readable keys first, key lengths, the 128 padding, the self term from the
log-sum-exp) with the same `jax.nn.dot_product_attention` call on XLA; the cuDNN kernel itself
needs a GPU (benchmarks/gpu.py). "splash" runs the Pallas TPU kernel in interpret mode.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import local
from model_helpers import host_params
from xefm_jax.data import spec
from xefm_jax.model import attention, layers
from xefm_jax.model.xefm import XEFM, token_counts

# One xdist worker takes the module: its tests reuse what the first compiles (run alone:
# whole modules per worker took 182-202 CPU-s for this and two other modules, 235-258 spread).
pytestmark = pytest.mark.xdist_group("attention")

FAST = ("cudnn", "splash")


@pytest.fixture(autouse=True)
def kernels_on_cpu(request):
  if "on_their_platform_only" in request.node.name:
    yield
    return
  with attention.kernels_off_platform():
    yield


def _qkv_and_mask(seed=0, batch=3, length=20, heads=2, dim=16):
  ks = jax.random.split(jax.random.key(seed), 4)
  q, k, v = (jax.random.normal(ks[i], (batch, length, heads, dim)) for i in range(3))
  keys = jax.random.bernoulli(ks[3], 0.6, (batch, length))
  keys = keys.at[batch - 1].set(False)  # a sample with no readable token (a dropped modality)
  return q, k, v, layers.AttentionMask(keys)


def _value_and_grad(implementation, mask):
  def f(q, k, v):
    out = attention.dot_product_attention(q, k, v, mask, implementation)
    weights = jnp.cos(jnp.arange(out.size, dtype=jnp.float32)).reshape(out.shape)
    return jnp.sum(out * weights), out
  return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True))


def test_xla_path_is_jax_dot_product_attention_with_the_dense_mask():
  """The reference: jax's XLA implementation under the rule's (B, 1, L, L) mask (our einsums
  only change the layouts XLA sees)."""
  q, k, v, mask = _qkv_and_mask()

  def reference(q, k, v):
    out = jax.nn.dot_product_attention(q, k, v, mask=mask.dense())
    weights = jnp.cos(jnp.arange(out.size, dtype=jnp.float32)).reshape(out.shape)
    return jnp.sum(out * weights), out
  (_, ref), ref_grads = jax.jit(jax.value_and_grad(reference, (0, 1, 2), has_aux=True))(q, k, v)
  (_, out), grads = _value_and_grad(None, mask)(q, k, v)
  np.testing.assert_allclose(out, ref, atol=2e-6)
  for g, r in zip(grads, ref_grads):
    np.testing.assert_allclose(g, r, atol=2e-6)


@pytest.mark.parametrize("implementation", FAST)
def test_kernel_matches_xla_outputs_and_gradients(implementation):
  """Every row, readable or not (readouts, hidden and missing tokens read themselves)."""
  q, k, v, mask = _qkv_and_mask()
  assert attention.padded_length(implementation, 20) == 128  # the kernel's own path
  (_, ref), ref_grads = _value_and_grad("xla", mask)(q, k, v)
  (_, out), grads = _value_and_grad(implementation, mask)(q, k, v)
  np.testing.assert_allclose(out, ref, atol=2e-6)
  for g, r in zip(grads, ref_grads):
    np.testing.assert_allclose(g, r, atol=2e-6)


@pytest.mark.parametrize("implementation", (None,) + FAST)
def test_unreadable_token_values_do_not_reach_readable_outputs(implementation):
  q, k, v, mask = _qkv_and_mask(seed=1)
  out = attention.dot_product_attention(q, k, v, mask, implementation)
  hidden = ~mask.keys[:, :, None, None]
  changed = attention.dot_product_attention(
      q, jnp.where(hidden, 1e3, k), jnp.where(hidden, -1e3, v), mask, implementation)
  rows = np.asarray(mask.keys)
  np.testing.assert_array_equal(np.asarray(changed)[rows], np.asarray(out)[rows])


def test_unknown_implementation_is_refused():
  q, k, v, mask = _qkv_and_mask()
  with pytest.raises(ValueError, match="unknown attention implementation"):
    attention.dot_product_attention(q, k, v, mask, "flash")


def _tiny(implementation):
  c = local.get_config("tiny")
  c.model.dtype = "float32"  # equality to rounding, not to bf16
  c.model.attention = implementation
  return c


NAMES = ("imu", "video")  # one encoder dropped in a sample, one with hidden tokens


def _tiny_run(implementation):
  """Loss, (window embedding, fused tokens) and parameter gradients of the tiny model (float32)
  with hidden video tokens and the IMU dropped in the second sample."""
  cfg = local.get_config("tiny")
  cfg.model.dtype = "float32"  # equality to rounding, not to bf16
  cfg.model.attention = implementation
  batch = spec.fake_batch(spec.WindowSpec.from_config(cfg.data), 2, seed=0)
  model = XEFM(cfg.model)
  params = host_params(model, batch)["params"]
  counts = token_counts(model, batch)
  keep = {n: jax.random.bernoulli(jax.random.key(i), 0.6, (2, counts[n]))
          for i, n in enumerate(NAMES)}
  drop = {n: jnp.array([False, n == "imu"]) for n in NAMES}

  def loss(params):
    out = model.apply({"params": params}, batch, keep=keep, drop=drop, modalities=NAMES)
    fused = sum(jnp.sum(jnp.sin(g.tokens)) for g in out.fused.values())
    return fused + jnp.sum(jnp.cos(out.embedding)), (out.embedding, out.fused)
  return jax.jit(jax.value_and_grad(loss, has_aux=True))(params)


@pytest.fixture(scope="module")
def tiny_reference():
  return _tiny_run(None)


@pytest.mark.slow  # compiles the tiny model's gradient three times (~15 s each, quiet machine)
@pytest.mark.parametrize("implementation", FAST)
def test_tiny_model_outputs_and_gradients_match_xla(tiny_reference, implementation):
  """Encoders and fusion (readouts, hidden tokens, a dropped modality): the same window
  embedding, fused tokens and parameter gradients as the XLA path."""
  (_, (ref_emb, ref_fused)), ref_grads = tiny_reference
  assert not attention.kernel_name(implementation).startswith("xla")  # the kernel's own path
  (_, (emb, fused)), grads = _tiny_run(implementation)
  np.testing.assert_allclose(emb, ref_emb, atol=1e-5)
  for n in NAMES:
    np.testing.assert_allclose(fused[n].tokens, ref_fused[n].tokens, atol=1e-5, err_msg=n)
  jax.tree.map(lambda g, r: np.testing.assert_allclose(g, r, atol=1e-5, rtol=1e-4),
               grads, ref_grads)


def _stacks(config):
  """(name, resolved stack config, width) of every transformer stack of a config."""
  from xefm_jax.objectives import heads
  m, o = config.model, config.objectives
  yield "fusion", m.fusion, m.width
  for name, mod in m.modalities.items():
    yield name, mod.encoder, mod.encoder.width
  for name, stack in (("masked_modeling", o.masked_modeling.decoder),
                      ("captioning", o.captioning.decoder), ("text", o.contrastive.text)):
    resolved = heads.stack_config(stack, m.width)
    yield name, resolved, resolved.width


@pytest.mark.parametrize("stage", ["stage1", "stage2", "stage3"])
def test_stage_configs_use_a_flash_kernel_with_head_dims_it_takes(stage):
  import importlib

  from xefm_jax.model.transformer import head_dim
  config = importlib.import_module(f"configs.{stage}").get_config()
  assert config.model.attention == "cudnn"
  for name, stack, width in _stacks(config):
    assert 64 <= head_dim(stack, width) <= 128, (stage, name, head_dim(stack, width))


def test_local_and_pilot_configs_keep_the_xla_path():
  from configs import pilot
  for config in (local.get_config(), local.get_config("tiny"), pilot.get_config()):
    assert config.model.attention is None


def test_splash_runs_per_shard_under_the_mesh():
  """Batch over data x fsdp, heads over tensor (the rules table): the XLA path's outputs and
  gradients."""
  from configs import common
  from xefm_jax.parallel import sharding
  mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"),
                       axis_types=(jax.sharding.AxisType.Auto,) * 3)  # as parallel/mesh.py
  q, k, v, mask = _qkv_and_mask(batch=4, heads=2)
  (_, ref), ref_grads = _value_and_grad(None, mask)(q, k, v)
  with sharding.activate(mesh, common.logical_axis_rules()):
    (_, out), grads = _value_and_grad("splash", mask)(q, k, v)
  np.testing.assert_allclose(out, ref, atol=2e-6)
  for g, r in zip(grads, ref_grads):
    np.testing.assert_allclose(g, r, atol=2e-6)


def test_xla_path_moves_no_logit_sized_arrays_between_layouts():
  """The compiled forward + backward copies or transposes only (B, L, H, D)-sized arrays,
  never the (B, H, L, L) logits or their gradients (jax's group vmap did, 5 times here)."""
  import re
  batch, length, heads, dim = 8, 128, 4, 48
  q, k, v = (jnp.ones((batch, length, heads, dim), jnp.bfloat16) for _ in range(3))
  mask = layers.attention_mask(jnp.ones((batch, length), bool))

  def loss(q, k, v):
    out = attention.dot_product_attention(q, k, v, mask, None)
    return jnp.sum(jnp.square(out.astype(jnp.float32)))
  hlo = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(q, k, v).compile().as_text()
  moved = re.findall(r"= \w+\[([\d,]*)\]\S* (?:copy|transpose)\(", hlo)
  assert moved  # the pattern still matches this XLA's HLO text
  sizes = [int(np.prod([int(d) for d in shape.split(",") if d])) for shape in moved]
  assert max(sizes) <= batch * length * heads * dim, moved


def test_xla_path_divides_outputs_not_probabilities():
  """The softmax denominator divides the (B, L, H, D) output after the second product (as
  flash attention does), never the (B, H, L, L) probabilities, forward or backward: XLA:CPU
  materialised that broadcast denominator for every layer (~5 ms of the local step)."""
  batch, length, heads, dim = 2, 24, 2, 8
  q, k, v = (jax.random.normal(jax.random.key(i), (batch, length, heads, dim))
             for i in range(3))
  mask = layers.attention_mask(jnp.arange(length)[None, :] < jnp.array([[20], [24]]))

  def loss(q, k, v):
    return jnp.sum(jnp.square(attention.dot_product_attention(q, k, v, mask, None)))
  def eqns(jaxpr):  # with those of nested jaxprs (jit, custom_jvp)
    for e in jaxpr.eqns:
      yield e
      for p in e.params.values():
        for sub in p if isinstance(p, (tuple, list)) else (p,):
          if hasattr(sub, "eqns") or hasattr(sub, "jaxpr"):
            yield from eqns(getattr(sub, "jaxpr", sub))
  jaxpr = jax.make_jaxpr(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v).jaxpr
  divides = [e.outvars[0].aval.shape for e in eqns(jaxpr) if e.primitive.name == "div"]
  assert divides  # the pattern still sees this jax's division
  assert all(np.prod(shape) < batch * heads * length * length for shape in divides), divides


@pytest.mark.parametrize("implementation", (None,) + FAST)
def test_dense_masks_take_the_xla_path(implementation):
  """Cross-attention with a causal-style dense (B, 1, Lq, Lk) mask and an odd key count."""
  ks = jax.random.split(jax.random.key(3), 3)
  q = jax.random.normal(ks[0], (2, 6, 2, 16))
  k, v = (jax.random.normal(key, (2, 9, 2, 16)) for key in ks[1:])
  mask = jnp.tril(jnp.ones((6, 9), bool), 3)[None, None].repeat(2, 0)
  out = attention.dot_product_attention(q, k, v, mask, implementation)
  ref = jax.nn.dot_product_attention(q, k, v, mask=mask)
  np.testing.assert_allclose(out, ref, atol=2e-6)


def test_kernel_names_take_the_xla_path_on_their_platform_only():
  """Without the test switch a stage config (cudnn) compiles on CPU as the XLA path (what
  launch/aot_check.py estimates), unpadded."""
  q, k, v, mask = _qkv_and_mask()
  ref = attention.dot_product_attention(q, k, v, mask, None)
  for implementation in FAST:
    assert attention.kernel_name(implementation).startswith("xla (")
    assert attention.padded_length(implementation, 20) == 20
    np.testing.assert_array_equal(
        attention.dot_product_attention(q, k, v, mask, implementation), ref)
