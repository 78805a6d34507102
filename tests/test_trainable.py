"""Per-group trainability (config.optim.trainable): frozen parameters keep their values
bitwise, get no optimizer moments and no gradient; learning-rate scales scale the update."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding

from configs import common, local
from xefm_jax.data import spec
from xefm_jax.parallel import init as init_lib
from xefm_jax.parallel import mesh as mesh_lib
from xefm_jax.parallel import sharding
from xefm_jax.train import optimizer
from xefm_jax.train import state as state_lib
from xefm_jax.train import step as step_lib

FROZEN = r"model/imu/.*"


def _config():
  """configs/local.py:tiny with two modalities and the procedure heads: a step that compiles
  in seconds and still has a tower to freeze."""
  c = local.get_config("tiny")
  for name in list(c.model.modalities):
    if name not in ("imu", "pose"):
      del c.model.modalities[name]
  c.model.group_dropout.rate = 0.0
  for name in c.objectives:
    c.objectives[name].weight = 1.0 if name == "procedure" else 0.0
  c.optim.update(warmup_steps=1, trainable=((FROZEN, "frozen"), (r"procedure/.*", 0.5)))
  return c


def _names(tree) -> dict[str, np.ndarray]:
  return {optimizer.param_name(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_frozen_tower_is_unchanged_and_has_no_optimizer_state():
  config = _config()
  mesh = mesh_lib.make_mesh(common.mesh_config(2, 2, 2))
  rules = sharding.rules_from_config(config)
  window = spec.WindowSpec.from_config(config.data)
  shapes = init_lib.abstract_window_batch(window, config.data.batch_size)
  tx, lr = optimizer.make(config.optim, 100)
  abstract, shardings = state_lib.abstract_state(config, tx, shapes, mesh, rules)
  batch_sharding = NamedSharding(mesh, sharding.batch_spec(rules))
  batch_shardings = jax.tree.map(lambda _: batch_sharding, shapes)
  # random parameters placed from the host (cheaper than compiling the initialisers)
  rng = np.random.default_rng(0)
  before = jax.tree.map(lambda x: (rng.normal(size=x.shape) * 0.1 + 0.5).astype(x.dtype),
                        abstract.params)
  params = jax.device_put(before, shardings.params)
  state = state_lib.TrainState(
      step=jnp.zeros((), jnp.int32), params=params,
      opt_state=jax.jit(tx.init, out_shardings=shardings.opt_state)(params),
      ema=jax.device_put(before["model"], shardings.ema),
      rng=jax.device_put(state_lib.seed_data(config), shardings.rng),
      skipped=jnp.zeros((), jnp.int32))
  with sharding.activate(mesh, rules):
    train_step = step_lib.jit_train_step(
        step_lib.make_train_step(config, tx, lr, shardings, batch_sharding), shardings,
        batch_shardings)
    for seed in (1, 2):
      batch = jax.device_put(spec.fake_batch(window, config.data.batch_size, seed=seed),
                             batch_shardings)
      state, metrics = train_step(state, batch)
  after = _names(jax.device_get(state.params))
  before = _names(before)
  assert np.isfinite(float(metrics["loss"]))
  frozen = [n for n in before if n.startswith("model/imu/")]
  trained = [n for n in before if not n.startswith("model/imu/")]
  assert len(frozen) > 10 and trained
  for name in frozen:  # bitwise as initialised
    assert np.array_equal(before[name], after[name]), name
  changed = [n for n in trained if not np.array_equal(before[n], after[n])]
  assert any(n.startswith("model/fusion/") for n in changed)
  assert any(n.startswith("model/pose/") for n in changed)
  assert any(n.startswith("procedure/") for n in changed)
  # Adam moments: one mu and one nu per trained parameter, none for a frozen one, each
  # sharded like its parameter
  moments = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(abstract.opt_state)[0]:
    field = [getattr(k, "name", None) for k in path if hasattr(k, "name")]
    if field and field[-1] in ("mu", "nu"):
      dict_keys = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
      name = "/".join(dict_keys[1:])  # below the group's label
      moments.setdefault(field[-1], {})[name] = leaf
  for kind in ("mu", "nu"):
    assert sorted(moments[kind]) == sorted(trained), kind
  param_sh = _names(shardings.params)
  for name, leaf in moments["mu"].items():
    assert leaf.sharding == param_sh[name], name
  frozen_bytes = sum(before[n].nbytes for n in frozen)
  opt_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(abstract.opt_state))
  trained_bytes = sum(before[n].nbytes for n in trained)
  assert opt_bytes < 2 * trained_bytes + 1024  # mu + nu of the trained ones, and counts
  assert frozen_bytes > 0
  # the frozen tower is not differentiated: the step's gradient leaves for it are constants
  assert optimizer.describe(state.params, config.optim)["frozen"] == sum(
      before[n].size for n in frozen)


def test_learning_rate_scale_and_freezing_in_the_update():
  """One AdamW update from constant gradients is -lr x scale per element (no weight decay
  on biases), exactly 0 where frozen."""
  optim = common.optim_config()
  optim.update(learning_rate=0.1, warmup_steps=0, clip_norm=0.0,
               trainable=((r"a/.*", "frozen"), (r"b/.*", 0.25), (r"c/bias", "full")))
  tx, _ = optimizer.make(optim, 10)
  params = {"a": {"bias": jnp.ones(3)}, "b": {"bias": jnp.ones(3)}, "c": {"bias": jnp.ones(3)}}
  state = tx.init(params)
  updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
  np.testing.assert_array_equal(updates["a"]["bias"], 0.0)
  np.testing.assert_allclose(updates["b"]["bias"], -0.1 * 0.25, rtol=1e-5)
  np.testing.assert_allclose(updates["c"]["bias"], -0.1, rtol=1e-5)
  moments = [[k.key for k in p if isinstance(k, jax.tree_util.DictKey)]
             for p, x in jax.tree_util.tree_flatten_with_path(state)[0] if x.shape == (3,)]
  assert sorted(m[1] for m in moments) == ["b", "b", "c", "c"]  # mu, nu of b and c only


@pytest.mark.parametrize("entry, match", [
    (("model/.*", "freeze"), "expected 'frozen', 'full'"),
    (("model/(", "frozen"), "not a regular expression"),
    (("model/.*", 0.0), "scale > 0"),
    ("model/.*", "a \\(regex, rule\\) pair")])
def test_bad_rules_name_the_entry(entry, match):
  optim = common.optim_config()
  optim.trainable = (entry,)
  with pytest.raises(ValueError, match=r"config\.optim\.trainable\[0\].*" + match):
    optimizer.make(optim, 10)
