"""The VICReg objective on the window embedding (xefm_jax/objectives/vicreg.py): about zero
for decorrelated unit-variance features and large for collapsed ones, its gradient raises a
collapsed batch's rank, the covariance term is scale-free when standardised, the batch
statistics are the global batch's under jit with the batch sharded, and the configs
include it. Toy arrays only: no model is built or compiled."""

import functools
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from configs import local
from xefm_jax import config_check
from xefm_jax.objectives import base, heads
from xefm_jax.objectives.vicreg import VICReg

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@functools.cache
def _objective(**overrides):
  """The configured objective, jitted: (loss, metrics) of embeddings x (B, E)."""
  cfg = local.get_config(None)
  c = cfg.objectives.vicreg.copy_and_resolve_references()
  c.update(overrides)
  head = VICReg(c, cfg.model, cfg.data)

  def fn(x):
    ctx = base.Context(batch={}, out=types.SimpleNamespace(embedding=x), keep={})
    return head.apply({}, ctx, train=True)
  return jax.jit(fn)


def _loss(x, **overrides):
  return _objective(**overrides)(x)


_cov = jax.jit(heads.covariance_penalty, static_argnames=("standardise",))


def _effective_rank(x):
  """As benchmarks/grounding.py measures it: exp(entropy of the PCA variance shares)."""
  s = np.linalg.svd(x - x.mean(0), compute_uv=False) ** 2
  p = s / s.sum()
  return float(np.exp(-(p * np.log(p + 1e-30)).sum()))


def _features(rows=4096, dim=16, seed=0):
  return np.random.default_rng(seed).normal(size=(rows, dim)).astype(np.float32)


def test_about_zero_when_decorrelated_and_large_when_collapsed():
  x = _features()
  loss, m = _loss(jnp.asarray(x))
  assert float(loss) < 0.01, dict(m)
  assert float(m["covariance_loss"]) < 0.02 and float(m["variance_loss"]) < 0.01
  # rank 1 with unit std in every column: the hinge is met, the covariance is E - 1
  collapsed = x[:, :1] * np.ones((1, x.shape[1]), np.float32)
  loss_c, m_c = _loss(jnp.asarray(collapsed))
  np.testing.assert_allclose(float(m_c["covariance_loss"]), x.shape[1] - 1, rtol=1e-3)
  assert float(loss_c) > 50 * float(loss)
  assert float(m_c["batch_rank"]) < 1.01 < 10 < float(m["batch_rank"])
  # every window the same point: the hinge is gamma
  _, m_p = _loss(jnp.zeros_like(x))
  np.testing.assert_allclose(float(m_p["variance_loss"]), 1.0, atol=0.02)


def test_one_sgd_step_raises_the_rank_of_a_collapsed_toy_embedding():
  """A linear toy encoder z -> z W whose W is rank 1 plus noise: one gradient step on the
  VICReg loss spreads the embedding's variance over more directions."""
  rng = np.random.default_rng(1)
  z = jnp.asarray(rng.normal(size=(256, 32)), jnp.float32)
  w = (np.outer(rng.normal(size=32), rng.normal(size=64))
       + 0.02 * rng.normal(size=(32, 64))).astype(np.float32)
  w = jnp.asarray(w / np.linalg.norm(w) * 8.0)
  loss = lambda w: _loss(z @ w)[0]
  stepped = w - 2.0 * jax.grad(loss)(w)
  before, after = _effective_rank(np.asarray(z @ w)), _effective_rank(np.asarray(z @ stepped))
  assert before < 1.1 and after > 1.5 * before, (before, after)
  assert float(loss(stepped)) < float(loss(w))


def test_standardised_covariance_is_scale_free():
  x = _features(rows=64, dim=96, seed=2)
  x[:, 1] = x[:, 0] + 0.1 * x[:, 1]  # some correlation, and a batch smaller than the width
  x = jnp.asarray(x)
  valid = jnp.ones(x.shape[:1], jnp.bool_)
  ref = float(_cov(x, valid))
  for scale in (7.0, 100.0):  # (down to variances near its eps, 1e-4, where it fades out)
    np.testing.assert_allclose(float(_cov(scale * x, valid)), ref,
                               rtol=1e-3)
  raw = float(_cov(x, valid, standardise=False))
  assert float(_cov(7.0 * x, valid, standardise=False)) > 40 * raw


def _reference(x, standardise):
  """numpy: sum of the squared off-diagonal covariance (correlation) entries / E."""
  c = np.corrcoef(x, rowvar=False) if standardise else np.cov(x, rowvar=False)
  return float((np.sum(c ** 2) - np.sum(np.diag(c) ** 2)) / x.shape[1])


@pytest.mark.parametrize("rows", (20, 60))  # the (B, B) Gram path and the (E, E) one
@pytest.mark.parametrize("standardise", (True, False))
def test_matches_numpy_with_invalid_rows_left_out(rows, standardise):
  x = _features(rows=rows, dim=40, seed=3)
  x[:, 5] += x[:, 4]
  valid = np.arange(rows) < rows - 3
  x[~valid] = 1e3  # invalid rows count for nothing
  got = float(_cov(jnp.asarray(x), jnp.asarray(valid), standardise=standardise))
  np.testing.assert_allclose(got, _reference(x[valid], standardise), rtol=2e-3)


def test_batch_statistics_are_global_under_jit_with_a_sharded_batch():
  devices = np.array(jax.devices())
  mesh = Mesh(devices, ("data",))
  x = _features(rows=8 * len(devices), dim=24, seed=4)
  x[:, 3] = x[:, 2]
  sharded = jax.device_put(jnp.asarray(x), NamedSharding(mesh, P("data", None)))
  fn = lambda x: _loss(x)[0]
  np.testing.assert_allclose(float(fn(sharded)), float(fn(jnp.asarray(x))), rtol=1e-5)
  # not a mean of per-shard losses
  per_shard = np.mean([float(_loss(jnp.asarray(s))[0]) for s in np.split(x, len(devices))])
  assert abs(per_shard - float(fn(sharded))) > 0.1


def test_registered_and_in_the_configs():
  assert base.get_objective("vicreg") is VICReg
  cfg = local.get_config(None)
  assert "vicreg" in cfg.objectives and cfg.objectives.vicreg.standardise
  assert cfg.objectives.vicreg.gamma == 1.0
  config_check.check(cfg)  # a known objective: no finding
