"""The train step's parts in process: the NaN guard, microbatch splitting, the optimizer's
schedule and weight-decay mask, FLOP accounting and the per-device peak table."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from configs import common, local
from xefm_jax.data import spec
from xefm_jax.objectives import base as objectives_base
from xefm_jax.objectives.pretrainer import Pretrainer
from xefm_jax.parallel import init as init_lib
from xefm_jax.parallel import mesh as mesh_lib
from xefm_jax.parallel import sharding
from xefm_jax.train import flops, loop, optimizer
from xefm_jax.train import state as state_lib
from xefm_jax.train import step as step_lib


def _small_config() -> ml_collections.ConfigDict:
  """configs/local.py:tiny with two modalities and one objective: a step that compiles in
  seconds, enough to exercise the guard."""
  c = local.get_config("tiny")
  for name in list(c.model.modalities):
    if name not in ("imu", "pose"):
      del c.model.modalities[name]
  for name in c.objectives:
    c.objectives[name].weight = 1.0 if name == "procedure" else 0.0
  c.data.batch_size = 8
  return c


def test_nan_guard_skips_the_update_and_counts_it():
  config = _small_config()
  mesh = mesh_lib.make_mesh(common.mesh_config(2, 2, 2))
  rules = sharding.rules_from_config(config)
  window = spec.WindowSpec.from_config(config.data)
  shapes = init_lib.abstract_window_batch(window, config.data.batch_size)
  tx, lr = optimizer.make(config.optim, 100)
  _, shardings = state_lib.abstract_state(config, tx, shapes, mesh, rules)
  batch_sharding = NamedSharding(mesh, sharding.batch_spec(rules))
  batch_shardings = jax.tree.map(lambda _: batch_sharding, shapes)
  state = state_lib.create(config, tx, shapes, mesh, rules, shardings)
  good = jax.device_put(spec.fake_batch(window, config.data.batch_size, seed=1),
                        batch_shardings)
  bad = spec.fake_batch(window, config.data.batch_size, seed=2)
  bad["imu"][:] = np.nan
  bad["pose"][:] = np.inf
  bad = jax.device_put(bad, batch_shardings)
  with sharding.activate(mesh, rules):
    train_step = step_lib.jit_train_step(
        step_lib.make_train_step(config, tx, lr, shardings, batch_sharding), shardings,
        batch_shardings)
    state, m1 = train_step(state, good)
    before = jax.device_get(state)  # the state is donated to the next call
    state, m2 = train_step(state, bad)
    skipped = jax.device_get(state)
    state, m3 = train_step(state, good)
  m1, m2, m3 = jax.device_get((m1, m2, m3))
  assert np.isfinite(m1["loss"]) and m1["skipped"] == 0
  assert not np.isfinite(m2["loss"]) and m2["skipped"] == 1 and m2["skipped_total"] == 1
  # the poisoned step left parameters, optimizer state, EMA and rng bitwise as they were
  for name in ("params", "opt_state", "ema", "rng"):
    for x, y in zip(jax.tree.leaves(getattr(before, name)),
                    jax.tree.leaves(getattr(skipped, name))):
      assert np.array_equal(x, y), name
  assert (int(skipped.step), int(skipped.skipped)) == (2, 1)
  # the next good step trains on: the optimizer's count (the schedule's clock) moved twice
  after = jax.device_get(state)
  assert m3["skipped"] == 0 and np.isfinite(m3["loss"]) and int(after.step) == 3
  assert float(m2["lr"]) == float(m3["lr"]) == pytest.approx(float(lr(1)), rel=1e-5)
  counts = [x for x in jax.tree.leaves(after.opt_state) if x.dtype == np.int32]
  assert counts and all(int(c) == 2 for c in counts)
  assert not all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(before.params),
                                                       jax.tree.leaves(after.params)))
  # the parameter norm (a full pass over the parameters) is the loop's, on the steps it
  # logs: not in the step, whose program depends on neither the run's length nor its log
  # interval (tests/test_train.py: runs of different lengths share one compiled step)
  assert "param_norm" not in m1
  want = np.sqrt(sum(float(np.sum(np.square(x))) for x in jax.tree.leaves(after.params)))
  assert float(step_lib.param_norm(state.params)) == pytest.approx(want, rel=1e-5)


def test_the_step_program_depends_on_neither_the_run_length_nor_the_log_interval():
  """With a fixed schedule (optim.decay_steps set), runs of any length and log interval
  lower to one program: a resumed or longer run, and the points of one size in a scaling
  sweep, take the compiled step from the persistent compilation cache."""
  texts = []
  for steps, log_every in ((8, 1), (30, 3)):
    config = _small_config()
    config.train.update(steps=steps, log_every=log_every)
    config.optim.update(warmup_steps=2, decay_steps=20)
    loop.without_corpus(config)
    mesh = mesh_lib.make_mesh(common.mesh_config(1, 1, 1), devices=jax.devices()[:1])
    plan = step_lib.StepPlan.make(config, spec.WindowSpec.from_config(config.data), mesh,
                                  sharding.rules_from_config(config))
    texts.append(plan.lower().as_text())
  assert texts[0] == texts[1]


def test_retrieval_at_1_matches_comparing_every_caption_row():
  rng = np.random.default_rng(0)
  caption = rng.integers(0, 3, size=(37, 4))[rng.integers(0, 9, size=37)]  # repeats
  text = rng.normal(size=(37, 8))
  window = text + 0.8 * rng.normal(size=(37, 8))
  same = (caption[:, None, :] == caption[None, :, :]).all(-1)
  want = (same[np.arange(37), np.argmax(text @ window.T, axis=1)].mean(), same.mean())
  assert loop.retrieval_at_1(text, window, caption, chunk=5) == pytest.approx(want)


def test_microbatches_are_strided_and_stay_on_every_device():
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  batch_sharding = NamedSharding(mesh, P("data"))
  x = jax.device_put(np.arange(32 * 3).reshape(32, 3), batch_sharding)
  split = jax.jit(lambda b: step_lib.microbatches(b, 2, batch_sharding))(x)
  assert split.shape == (2, 16, 3)
  np.testing.assert_array_equal(np.asarray(split[1][:, 0]), np.arange(1, 32, 2) * 3)
  # each device keeps rows it already had: microbatch i's shard comes from its own block
  for shard in split.addressable_shards:
    rows = np.asarray(shard.data)[:, :, 0].ravel() // 3
    assert len(set(rows // 4)) == 1  # device d held rows 4d .. 4d + 3
  with pytest.raises(ValueError, match="grad_accum=3"):
    step_lib.microbatches(x, 3, batch_sharding)


def test_schedule_warms_up_then_decays_to_the_end_fraction():
  optim = common.optim_config()
  optim.update(learning_rate=1.0, warmup_steps=10, end_lr_fraction=0.1)
  lr = optimizer.schedule(optim, total_steps=110)
  assert float(lr(0)) == 0.0 and float(lr(5)) == pytest.approx(0.5)
  assert float(lr(10)) == pytest.approx(1.0)
  assert float(lr(60)) == pytest.approx(0.55, abs=1e-3)  # cosine midpoint
  assert float(lr(110)) == pytest.approx(0.1) and float(lr(500)) == pytest.approx(0.1)


def test_weight_decay_masks_off_norms_biases_and_tables():
  params = {"model": {"dense": {"kernel": 1, "bias": 2}, "norm": {"scale": 3},
                      "readout_window": 4, "embed": {"embedding": 5}}}
  mask = optimizer.decay_mask(params)
  assert mask == {"model": {"dense": {"kernel": True, "bias": False}, "norm": {"scale": False},
                            "readout_window": False, "embed": {"embedding": False}}}


@pytest.mark.parametrize("kind, peak", [
    ("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12),
    ("NVIDIA H200", 989e12), ("NVIDIA A100-SXM4-80GB", 312e12), ("TPU v4", 275e12),
    ("TPU v5 lite", 197e12), ("TPU v5p", 459e12), ("TPU v6 lite", 918e12)])
def test_peak_table(kind, peak):
  assert flops.table_peak(kind)[0] == peak


def test_peak_on_cpu_is_measured_and_mfu_divides_by_it():
  assert flops.table_peak("cpu") is None
  p = flops.peak(jax.devices(), jnp.float32, matmul_size=512)
  assert p.total > 1e9 and "measured float32 matmul" in p.source and p.devices == 8
  assert p.total == pytest.approx(p.per_device * 8)
  fixed = flops.Peak(total=4e12, per_device=1e12, devices=4, source="test")
  assert flops.mfu(1e12, 0.5, fixed) == pytest.approx(0.5)


def test_step_flops_count_loop_bodies_by_their_trip_count():
  """A scan over 4 layers costs what 4 unrolled layers cost; XLA's own analysis counts the
  loop body once, and its figure is per device."""
  mesh = jax.make_mesh((8,), ("d",))
  w = jax.ShapeDtypeStruct((4, 128, 128), jnp.float32, sharding=NamedSharding(mesh, P()))
  x = jax.ShapeDtypeStruct((64, 128), jnp.float32, sharding=NamedSharding(mesh, P("d")))

  def scanned(w, x):
    return jax.lax.scan(lambda c, wi: (jnp.tanh(c @ wi), None), x, w)[0].sum()

  def unrolled(w, x):
    for i in range(4):
      x = jnp.tanh(x @ w[i])
    return x.sum()
  a = jax.jit(jax.grad(scanned)).lower(w, x).compile()
  b = jax.jit(jax.grad(unrolled)).lower(w, x).compile()
  assert flops.loop_factor(b) == 1.0 and flops.loop_factor(a) == pytest.approx(4.0, rel=0.05)
  want = 3 * 4 * 2 * 64 * 128 * 128  # forward + two backward matmuls per layer
  assert flops.step_flops(b, 8) == pytest.approx(want, rel=0.1)
  assert flops.step_flops(a, 8) == pytest.approx(flops.step_flops(b, 8), rel=0.1)


def _compile_once(fn, *args):
  """fn(*args) for a program that runs once: jitted and compiled with XLA's backend
  optimisations off."""
  compiled = jax.jit(fn).lower(*args).compile(
      compiler_options={"xla_backend_optimization_level": 0})
  return compiled(*args)


@pytest.mark.slow
def test_eval_step_is_one_pass_with_the_scored_heads_and_agrees_with_the_full_forward():
  config = local.get_config("tiny")
  loop.without_corpus(config)
  window = spec.WindowSpec.from_config(config.data)
  batch = spec.fake_batch(window, config.data.batch_size, seed=3)
  pretrainer = Pretrainer(config)
  target = jax.tree.map(jnp.zeros_like, state_lib.target_shapes(config, batch))

  def key(seed):  # the cheap generator of the tiny config: threefry's init compiles ~2x longer
    return jax.random.key(seed, impl="unsafe_rbg")
  # each program runs once: compiled with XLA's backend optimisations off (about half the
  # compile time); eager, each initialiser would compile alone (2 min)
  params = _compile_once(lambda: pretrainer.init(
      {"params": key(0), "masking": key(1), "dropout": key(2)}, batch, target,
      train=True)["params"])
  eval_step = step_lib.make_eval_step(config)

  def both(params, batch):
    target = step_lib.ema_target(config, params["model"], batch)
    full = pretrainer.apply({"params": params}, batch, target, train=False)[1]
    embeddings = pretrainer.apply({"params": params}, batch, method=Pretrainer.predict)
    return eval_step(params, params["model"], batch), full, embeddings["contrastive"]

  out, full, embeddings = jax.device_get(_compile_once(both, params, batch))
  unscored = {n for n in config.objectives
              if not objectives_base.get_objective(n).scored_in_eval}
  assert unscored and not any(k.split("/")[0] in unscored for k in out["metrics"])
  for name, value in out["metrics"].items():
    if name != "loss":
      assert value == pytest.approx(full[name], rel=1e-4, abs=1e-6), name
  np.testing.assert_allclose(out["retrieval"]["text"], embeddings["text"], atol=1e-5)
  np.testing.assert_allclose(out["retrieval"]["window"], embeddings["window"], atol=1e-5)


def test_jaxpr_matmul_count_is_forward_plus_the_backward_the_gradient_needs():
  b, d, h, layers = 4, 8, 16, 3

  def loss(w_in, w_layers, x):  # x is data: its gradient is never formed
    y = jnp.tanh(x @ w_in)  # (b, h)
    y, _ = jax.lax.scan(lambda y, w: (jnp.tanh(y @ w), None), y, w_layers)
    return jnp.sum(y)
  args = (jnp.ones((d, h)), jnp.ones((layers, h, h)), jnp.ones((b, d)))
  forward = 2 * b * d * h + layers * 2 * b * h * h
  assert flops.jaxpr_dot_flops(jax.make_jaxpr(loss)(*args)) == forward
  # backward: weight gradients of every layer, input gradients of all but the first
  backward = 2 * b * d * h + layers * 2 * (2 * b * h * h)
  assert flops.jaxpr_dot_flops(jax.make_jaxpr(jax.value_and_grad(loss, (0, 1)))(*args)) == (
      forward + backward)


LIGHT = ("contact", "future_state", "procedure")  # MLP heads and the EMA target: quick traces


def _light_config() -> ml_collections.ConfigDict:
  config = local.get_config("tiny")
  for name in config.objectives:
    if name not in LIGHT:
      config.objectives[name].weight = 0.0
  loop.without_corpus(config)
  return config


def test_model_flops_count_no_rematerialisation():
  config = _light_config()
  base = flops.model_flops(config)
  config.model.fusion.remat_policy = "nothing_saveable"
  assert flops.model_flops(config) == base > 0


def test_the_launcher_reads_model_flops_from_the_step_it_compiles():
  """step_model_flops (the loop's count, from the step's own trace) equals model_flops when
  the step rematerialises nothing; a jaxpr with jax.checkpoint is recognised, so a remat
  step is counted by tracing the model afresh without it."""
  config = _light_config()
  mesh = mesh_lib.make_mesh(config.mesh)  # 8 devices: the jaxpr's shapes are global
  rules = sharding.rules_from_config(config)
  plan = step_lib.StepPlan.make(config, spec.WindowSpec.from_config(config.data), mesh, rules)
  jaxpr = plan.trace().jaxpr
  assert not flops.has_remat(jaxpr)
  assert flops.step_model_flops(config, jaxpr) == flops.model_flops(config) > 0

  def layer(w, x):
    return jnp.tanh(x @ w)
  args = (jnp.ones((4, 4)), jnp.ones((2, 4)))
  plain = jax.make_jaxpr(jax.grad(lambda w, x: layer(w, x).sum()))(*args)
  remat = jax.make_jaxpr(jax.grad(lambda w, x: jax.checkpoint(layer)(w, x).sum()))(*args)
  nested = jax.make_jaxpr(jax.jit(jax.grad(
      lambda w, x: jax.lax.scan(lambda c, _: (jax.checkpoint(layer)(w, c), None), x,
                                None, length=2)[0].sum())))(*args)
  assert not flops.has_remat(plain) and flops.has_remat(remat) and flops.has_remat(nested)
  # the remat program recomputes the forward: more dots than the model needs
  assert flops.jaxpr_dot_flops(remat) > flops.jaxpr_dot_flops(plain)
