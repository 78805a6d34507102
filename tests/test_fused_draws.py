"""The initialiser's fused draws (xefm_jax/train/fused_draws.py): one generator call per
bit width instead of one per parameter, with every parameter still its own independent
draw from its own initialiser's distribution."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import motion_ladder
from configs import common
from xefm_jax.data import spec
from xefm_jax.parallel import init as init_lib
from xefm_jax.parallel import mesh as mesh_lib
from xefm_jax.parallel import sharding
from xefm_jax.train import fused_draws, loop, optimizer
from xefm_jax.train import state as state_lib

SHAPES = [(64, 32), (32,), (16, 8, 4), (64, 32)]


def _program(seed):
  """Draws the way initialisers do: keys folded in, a nested jit, a scanned stack, a draw
  inside a while loop (left alone), a dead draw, and something that is not random."""
  key = jax.random.wrap_key_data(seed, impl="unsafe_rbg")
  outs = [jax.jit(jax.random.normal, static_argnums=1)(jax.random.fold_in(key, i), s)
          for i, s in enumerate(SHAPES)]
  jax.random.uniform(jax.random.fold_in(key, 99), (1000,))  # dead: nothing reads it
  layers = jax.lax.scan(lambda c, k: (c, jax.random.truncated_normal(k, -2, 2, (8, 16))),
                        0, jax.random.split(key, 3))[1]
  looped = jax.lax.while_loop(lambda c: c[0] < 2, lambda c: (c[0] + 1, c[1] + jax.random.normal(
      jax.random.fold_in(key, c[0]), (4,))), (0, jnp.zeros(4)))[1]
  return outs, layers, looped, jnp.arange(3.0)


@pytest.fixture(scope="module")
def fused():
  seed = jax.random.key_data(jax.random.key(0, impl="unsafe_rbg"))
  closed = jax.make_jaxpr(_program)(seed)
  return fused_draws.FusedDraws(closed), closed, seed


def _apply(draws, closed, seed, key=1):
  flat = jax.jit(draws.draw)(jax.random.key(key, impl="unsafe_rbg"))
  leaves = jax.jit(draws.apply)(flat, seed)
  return jax.tree.unflatten(jax.tree.structure(jax.eval_shape(_program, seed)), leaves)


def test_one_draw_serves_every_parameter_of_the_right_distribution(fused):
  draws, closed, seed = fused
  # four normals, three scanned layers; not the dead draw, not the while loop's
  assert draws.sizes == {32: sum(np.prod(s) for s in SHAPES) + 3 * 8 * 16}
  outs, layers, looped, plain = _apply(draws, closed, seed)
  want = _program(seed)
  assert jax.tree.map(jnp.shape, (outs, layers, looped, plain)) == jax.tree.map(jnp.shape, want)
  np.testing.assert_array_equal(plain, np.arange(3.0))
  for x in outs:  # standard normals, within five standard errors
    tol = 5 / np.sqrt(x.size)
    assert abs(float(x.mean())) < tol and abs(float(x.std()) - 1) < tol, x.shape
  assert float(jnp.abs(layers).max()) <= 2.0  # truncated at 2: the initialiser still ran
  # independent: no two parameters (nor two scanned layers) got the same bits
  a, b = np.ravel(outs[0]), np.ravel(outs[3])  # same shape, consecutive slices
  assert abs(np.corrcoef(a, b)[0, 1]) < 0.1
  assert not np.allclose(layers[0], layers[1]) and not np.allclose(layers[1], layers[2])
  # the while loop keeps its own draws: the same values as the original program
  np.testing.assert_allclose(looped, want[2], rtol=1e-6)


def test_the_fused_program_calls_no_generator_and_the_seed_decides(fused):
  draws, closed, seed = fused
  flat = jax.eval_shape(draws.draw, jax.random.key(0, impl="unsafe_rbg"))
  original = jax.jit(jax.extend.core.jaxpr_as_fun(closed)).lower(seed).as_text()
  lowered = jax.jit(draws.apply).lower(flat, seed).as_text()
  # the original draws per call; the fused one only in the while loop (and the fold-ins
  # of its keys); the draw program has one call per bit width
  assert original.count("rng_bit_generator") > lowered.count("rng_bit_generator")
  for shape in ("64x32", "16x8x4", "3x8x16", "8x16"):
    assert not any(f"tensor<{shape}xui32>" in line for line in lowered.splitlines()
                   if "rng_bit_generator" in line), shape
  same = _apply(draws, closed, seed, key=1)
  other = _apply(draws, closed, seed, key=2)
  np.testing.assert_array_equal(same[0][0], _apply(draws, closed, seed, key=1)[0][0])
  assert not np.allclose(same[0][0], other[0][0])


def test_the_state_initialiser_fused_matches_the_per_parameter_one_in_law():
  """configs/local.py:tiny's motion side (tests/motion_ladder.py:t1, fused) against the
  same config drawing per parameter (compiling that one is the cost of this test): the same
  tree, shapes, dtypes and shardings; constants equal; random parameters of the same scale
  but not the same values; the optimizer state and EMA consistent with the params."""
  states = {}
  mesh = mesh_lib.make_mesh(common.mesh_config(2, 4, 1))
  for fused_draw in (True, False):
    config = motion_ladder.get_config("t1")
    for name in config.objectives:  # the launcher tests' light objectives (test_train.LIGHT)
      if name not in ("contact", "future_state", "procedure"):
        config.objectives[name].weight = 0.0
    config.train.fused_init_draws = fused_draw
    loop.without_corpus(config)  # unit hand statistics: shapes are what matter here
    rules = sharding.rules_from_config(config)
    window = spec.WindowSpec.from_config(config.data)
    shapes = init_lib.abstract_window_batch(window, config.data.batch_size)
    tx, _ = optimizer.make(config.optim, 10)
    states[fused_draw] = state_lib.create(config, tx, shapes, mesh, rules)
  fused, per = states[True], states[False]
  assert jax.tree.structure(fused) == jax.tree.structure(per)
  pairs = zip(jax.tree_util.tree_leaves_with_path(fused.params), jax.tree.leaves(per.params))
  random = 0
  for (path, a), b in pairs:
    name = jax.tree_util.keystr(path)
    assert a.shape == b.shape and a.dtype == b.dtype and a.sharding == b.sharding, name
    a, b = np.asarray(a), np.asarray(b)
    if b.std() == 0:  # zeros, ones: no bits involved
      np.testing.assert_array_equal(a, b, err_msg=name)
      continue
    random += 1
    assert not np.array_equal(a, b), name
    if b.size >= 256:
      assert 0.7 < a.std() / b.std() < 1.4, (name, a.std(), b.std())
  assert random > 30
  np.testing.assert_array_equal(jax.tree.leaves(fused.ema)[0],
                                jax.tree.leaves(fused.params["model"])[0])
  np.testing.assert_array_equal(fused.rng, per.rng)  # the run's key: the same split
