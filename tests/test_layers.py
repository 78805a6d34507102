"""Layers: logical names on every parameter, masks that isolate, norms per token, stacks."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import common
from xefm_jax.model import layers, transformer


def _names(boxed):
  """{path: logical names} of every parameter; fails if one is not LogicallyPartitioned."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(
      boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))[0]:
    assert isinstance(leaf, nn.LogicallyPartitioned), f"{jax.tree_util.keystr(path)} unnamed"
    out[jax.tree_util.keystr(path)] = leaf.names
  return out


def _stack_config(**overrides):
  c = common.transformer_config(num_layers=2, num_heads=2, mlp_dim=32)
  c.update(overrides)
  return c


def test_dense_general_full_rank_kernels_keep_their_names():
  x = jnp.ones((2, 5, 8))
  qkv = layers.DenseGeneral((2, 4), ("embed", "heads", "kv"))
  v = qkv.init(jax.random.key(0), x)
  assert v["params"]["kernel"].value.shape == (8, 2, 4)
  assert v["params"]["kernel"].names == ("embed", "heads", "kv")
  y = qkv.apply(v, x)
  assert y.shape == (2, 5, 2, 4)
  out = layers.DenseGeneral(8, ("heads", "kv", "embed"), axis=(-2, -1))
  vo = out.init(jax.random.key(1), y)
  assert out.apply(vo, y).shape == (2, 5, 8)
  np.testing.assert_allclose(
      out.apply(vo, y), jnp.einsum("blhk,hke->ble", y, vo["params"]["kernel"].value), rtol=1e-5)


def test_dense_general_computes_in_dtype_with_fp32_params():
  layer = layers.DenseGeneral(4, ("embed", "mlp"), dtype=jnp.bfloat16, param_dtype=jnp.float32)
  v = layer.init(jax.random.key(0), jnp.ones((3, 8)))
  assert v["params"]["kernel"].value.dtype == jnp.float32
  assert layer.apply(v, jnp.ones((3, 8))).dtype == jnp.bfloat16


@pytest.mark.parametrize("kind", ["rms", "layer"])
def test_norm_is_per_token_with_fp32_statistics(kind):
  x = jax.random.normal(jax.random.key(0), (2, 6, 16)) * 100
  norm = layers.make_norm(kind, dtype=jnp.bfloat16)
  v = norm.init(jax.random.key(1), x)
  assert set(_names(v).values()) == {("norm",)}
  y = norm.apply(v, x)
  assert y.dtype == jnp.bfloat16
  np.testing.assert_allclose(jnp.sqrt(jnp.mean(jnp.square(y.astype(jnp.float32)), -1)),
                             1.0, rtol=2e-2)
  x2 = x.at[:, 3].set(1e6)  # another token's values must not change this token's output
  np.testing.assert_array_equal(norm.apply(v, x2)[:, :3], y[:, :3])


def test_attention_matches_reference_and_ignores_masked_keys():
  b, length, d, heads = 2, 7, 16, 2
  x = jax.random.normal(jax.random.key(0), (b, length, d))
  valid = jnp.array([[True] * 5 + [False] * 2, [True] * 7])
  mask = layers.attention_mask(valid)
  attn = layers.Attention(heads, d // heads, qk_norm=False, implementation="xla")
  v = attn.init(jax.random.key(1), x, mask)
  assert _names(v) == {
      "['params']['query']['kernel']": ("embed", "heads", "kv"),
      "['params']['key']['kernel']": ("embed", "heads", "kv"),
      "['params']['value']['kernel']": ("embed", "heads", "kv"),
      "['params']['out']['kernel']": ("heads", "kv", "embed")}
  apply = jax.jit(attn.apply)
  y = apply(v, x, mask)
  p = jax.tree.map(lambda t: t.value, v, is_leaf=lambda t: isinstance(t, nn.LogicallyPartitioned))
  q, k, vv = (jnp.einsum("bld,dhk->blhk", x, p["params"][n]["kernel"])
              for n in ("query", "key", "value"))
  logits = jnp.einsum("bqhk,bshk->bhqs", q, k) / np.sqrt(d // heads)
  logits = jnp.where(mask.dense(), logits, -jnp.inf)
  ref = jnp.einsum("bhqs,bshk->bqhk", jax.nn.softmax(logits, -1), vv)
  ref = jnp.einsum("blhk,hkd->bld", ref, p["params"]["out"]["kernel"])
  np.testing.assert_allclose(y[0, :5], ref[0, :5], atol=1e-5)
  np.testing.assert_allclose(y[1], ref[1], atol=1e-5)
  x2 = x.at[0, 5:].set(1e3)  # change the masked tokens of sample 0
  np.testing.assert_array_equal(apply(v, x2, mask)[0, :5], y[0, :5])


def test_attention_mask_readout_rule():
  valid = jnp.array([[True, False, True, True]])  # token, missing token, token, readout
  m = layers.attention_mask(valid, np.array([True, True, True, False])).dense()[0, 0]
  expected = np.array([[1, 0, 1, 0],   # tokens read valid tokens, never the readout
                       [1, 1, 1, 0],   # the missing token reads itself (no empty row)
                       [1, 0, 1, 0],
                       [1, 0, 1, 1]],  # the readout reads every valid token and itself
                      bool)
  np.testing.assert_array_equal(m, expected)


def test_masked_mean_ignores_masked_tokens():
  x = jnp.array([[[1.0], [3.0], [1e9]], [[5.0], [7.0], [9.0]]])
  mask = jnp.array([[True, True, False], [False, False, False]])
  np.testing.assert_allclose(layers.masked_mean(x, mask), [[2.0], [0.0]])


def test_embed_uses_vocab_and_embed_names():
  emb = layers.Embed(10, 4)
  v = emb.init(jax.random.key(0), jnp.zeros((2, 3), jnp.int32))
  assert v["params"]["embedding"].names == ("vocab", "embed")
  ids = jnp.array([[1, 2, 9]])
  table = v["params"]["embedding"].value
  np.testing.assert_allclose(emb.apply(v, ids)[0], table[np.array([1, 2, 9])])


def test_sinusoidal_embedding_of_continuous_time():
  e = layers.sinusoidal_embedding(jnp.array([0.0, 0.5, 7.0]), 8)
  assert e.shape == (3, 8)
  np.testing.assert_allclose(e[0], [0, 0, 0, 0, 1, 1, 1, 1], atol=1e-7)


def test_scan_and_loop_stacks_agree():
  x = jax.random.normal(jax.random.key(0), (2, 6, 16))
  mask = layers.attention_mask(jnp.array([[True] * 6, [True] * 4 + [False] * 2]))
  scanned = transformer.TransformerStack(_stack_config(scan_layers=True))
  looped = transformer.TransformerStack(_stack_config(scan_layers=False))
  boxed = jax.jit(scanned.init)(jax.random.key(1), x, mask)
  assert all(n[0] == "layers" for n in _names(boxed).values())
  v = nn.unbox(boxed)
  v_loop = {"params": {f"layers_{i}": jax.tree.map(lambda t: t[i], v["params"]["layers"])
                       for i in range(2)}}
  np.testing.assert_allclose(jax.jit(scanned.apply)(v, x, mask),
                             jax.jit(looped.apply)(v_loop, x, mask), rtol=1e-5, atol=1e-6)


def test_remat_changes_memory_not_gradients():
  x = jax.random.normal(jax.random.key(0), (2, 6, 16))
  mask = layers.attention_mask(jnp.ones((2, 6), bool))
  plain = transformer.TransformerStack(_stack_config())
  rematted = transformer.TransformerStack(_stack_config(remat_policy="dots_with_no_batch_dims"))
  v = nn.unbox(jax.jit(plain.init)(jax.random.key(1), x, mask))
  grad = lambda m: jax.jit(jax.grad(  # noqa: E731
      lambda p: jnp.sum(jnp.square(m.apply(p, x, mask)))))(v)
  # gradients of order 10-100: two compilations round differently (up to ~1e-5 absolute)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5),
               grad(plain), grad(rematted))


def test_stack_dropout_uses_the_dropout_rng():
  x = jnp.ones((2, 4, 16))
  mask = layers.attention_mask(jnp.ones((2, 4), bool))
  stack = transformer.TransformerStack(_stack_config(dropout=0.5, num_layers=1))
  v = jax.jit(stack.init)(jax.random.key(0), x, mask)
  train = jax.jit(lambda v, key: stack.apply(v, x, mask, False, rngs={"dropout": key}))
  assert not np.allclose(train(v, jax.random.key(1)), train(v, jax.random.key(2)))
  np.testing.assert_array_equal(train(v, jax.random.key(1)), train(v, jax.random.key(1)))


def test_zero_layers_is_identity_and_bad_policy_is_named():
  x = jnp.ones((1, 3, 8))
  mask = layers.attention_mask(jnp.ones((1, 3), bool))
  stack = transformer.TransformerStack(_stack_config(num_layers=0))
  assert stack.init(jax.random.key(0), x, mask) == {}
  np.testing.assert_array_equal(stack.apply({}, x, mask), x)
  with pytest.raises(ValueError, match="remat_policy"):
    transformer.TransformerStack(_stack_config(remat_policy="sometimes")).init(
        jax.random.key(0), x, mask)
