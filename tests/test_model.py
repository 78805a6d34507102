"""XEFM: the notebook entry points, masks end to end, modality dropout, hiding, configs."""

import copy
import importlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import common, local
from model_helpers import host_params
from xefm_jax.data import spec
from xefm_jax.model.xefm import XEFM, XEFMOutput, token_counts
from xefm_jax.parallel import init

# One xdist worker takes the module: its tests reuse what the first compiles (run alone:
# whole modules per worker took 182-202 CPU-s for this and two other modules, 235-258 spread).
pytestmark = pytest.mark.xdist_group("model")

CONFIG = local.get_config("tiny")
SPEC = spec.WindowSpec.from_config(CONFIG.data)
MODEL = XEFM(CONFIG.model)
B = 2
D = CONFIG.model.width
NAMES = ("audio", "depth", "imu", "language", "mocap", "pose", "video")


@pytest.fixture(scope="module")
def variables():
  """Parameters drawn on the host (see model_helpers.host_params)."""
  return host_params(MODEL, spec.fake_batch(SPEC, B))


@pytest.fixture(scope="module")
def encode():
  """The notebook entry point, compiled once for every test of this file."""
  return jax.jit(lambda v, b: MODEL.apply(v, b, method=XEFM.encode))


def _batch(seed=0):
  return spec.fake_batch(SPEC, B, seed=seed)


def _assert_same(a, b):
  jax.tree.map(np.testing.assert_array_equal, a, b)


def _assert_close(a, b):  # two compilations of the same computation may fuse differently
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5), a, b)


def test_encode_is_callable_without_any_training_code(encode):
  batch = _batch()
  variables = nn.unbox(jax.jit(MODEL.init)(jax.random.key(0), batch))  # a notebook's init
  out = encode(variables, batch)  # model.apply(variables, batch, method=XEFM.encode)
  assert isinstance(out, XEFMOutput)
  assert tuple(out.tokens) == NAMES == tuple(out.fused) == tuple(out.embeddings)
  counts = token_counts(MODEL, batch)
  for name in NAMES:
    assert out.fused[name].tokens.shape == (B, counts[name], D)
    assert out.tokens[name].tokens.shape == (B, counts[name], D)
    assert out.embeddings[name].shape == (B, D)
    assert out.kept[name].shape == (B,) and bool(out.kept[name].all())
  assert {k: v.shape for k, v in out.readouts.items()} == {"window": (B, 2, D),
                                                           "future": (B, 1, D)}
  # the window embedding: every readout group's mean, concatenated in name order
  assert out.embedding.shape == (B, 2 * D) and out.embedding.dtype == jnp.float32
  np.testing.assert_allclose(out.embedding[:, :D], out.readouts["future"].mean(1), rtol=1e-6)
  np.testing.assert_allclose(out.embedding[:, D:], out.readouts["window"].mean(1), rtol=1e-6)
  assert np.isfinite(out.embedding).all()


def test_a_missing_view_or_stream_has_no_influence_on_any_output(variables, encode):
  batch = _batch()
  batch["video_valid"][0, 2] = False  # one camera of sample 0
  batch["imu_valid"][1] = False  # the whole IMU stream of sample 1
  out = encode(variables, batch)
  changed = copy.deepcopy(batch)
  rng = np.random.default_rng(1)
  changed["video"][0, 2] = rng.integers(0, 256, changed["video"][0, 2].shape, dtype=np.uint8)
  changed["imu"][1] = np.nan
  _assert_same(encode(variables, changed), out)
  assert not np.asarray(out.fused["imu"].mask[1]).any()
  np.testing.assert_array_equal(out.fused["imu"].tokens[1], 0)
  np.testing.assert_array_equal(out.embeddings["imu"][1], 0)
  # the same change to a present view does change the window embedding
  present = copy.deepcopy(batch)
  present["video"][0, 3] = changed["video"][0, 2]
  assert not np.allclose(encode(variables, present).embedding[0], out.embedding[0])


def test_drop_removes_a_modality_per_sample_and_reports_it(variables, encode):
  batch = _batch()
  out = jax.jit(lambda v, b, drop: MODEL.apply(v, b, drop=drop))(
      variables, batch, {"language": jnp.array([True, False])})
  np.testing.assert_array_equal(out.kept["language"], [False, True])
  assert bool(out.kept["video"].all())
  no_caption = copy.deepcopy(batch)
  no_caption["caption_valid"][0] = False
  ref = encode(variables, no_caption)
  np.testing.assert_array_equal(out.embedding[0], ref.embedding[0])
  np.testing.assert_array_equal(out.embedding[1], ref.embedding[1])


def test_hidden_tokens_take_part_but_reveal_nothing(variables, encode):
  batch = _batch()
  n_view = token_counts(MODEL, batch)["video"] // len(SPEC.views)
  keep = {"video": jnp.ones((B, len(SPEC.views) * n_view), bool).at[:, :n_view].set(False)}
  hide = jax.jit(lambda v, b: MODEL.apply(v, b, keep=keep))
  out = hide(variables, batch)
  assert bool(out.fused["video"].mask.all())  # hidden, not missing
  changed = copy.deepcopy(batch)
  changed["video"][:, 0] = 255 - changed["video"][:, 0]  # camera 0 = the hidden tokens
  _assert_same(hide(variables, changed), out)
  full = encode(variables, batch)
  assert not np.allclose(full.fused["video"].tokens[:, :n_view],
                         out.fused["video"].tokens[:, :n_view])


def test_readouts_never_change_the_fused_tokens(variables, encode):
  batch = _batch()
  out = encode(variables, batch)
  bumped = jax.tree.map(lambda x: x, variables)
  bumped["params"]["fusion"]["readout_future"] = variables["params"]["fusion"][
      "readout_future"] + 1.0
  out2 = encode(bumped, batch)
  _assert_same(out2.fused, out.fused)
  _assert_same(out2.readouts["window"], out.readouts["window"])
  assert not np.allclose(out2.readouts["future"], out.readouts["future"])


def test_encode_next_runs_the_same_model_on_the_next_window(variables, encode):
  batch = _batch()
  nxt = jax.jit(lambda v, b: MODEL.apply(v, b, method=XEFM.encode_next))(variables, batch)
  swapped = {**batch, **batch["next"]}  # the next window's inputs in a batch of one structure
  _assert_close(nxt, encode(variables, swapped))


def test_training_step_rngs_remat_and_gradients(variables):
  """train=True: modality dropout from the "masking" rng, dropout, remat, scan, gradients."""
  cfg = CONFIG.model.copy_and_resolve_references()
  common.set_stacks(cfg, dropout=0.1)
  cfg.fusion.remat_policy = "nothing_saveable"  # encoder remat: test_layers.py
  cfg.group_dropout.rate = 0.0  # group dropout: its own test below
  cfg.modalities.language.dropout = 0.5
  model = XEFM(cfg)
  batch = _batch()

  @jax.jit
  def step(v, key):
    def loss(p):
      out = model.apply({"params": p}, batch, train=True,
                        rngs={"masking": key, "dropout": jax.random.fold_in(key, 1)})
      value = jnp.mean(jnp.square(out.embedding)) + sum(
          jnp.mean(jnp.square(g.tokens)) for g in out.fused.values())
      return value, out.kept
    return jax.grad(loss, has_aux=True)(v["params"])

  g, kept = step(variables, jax.random.key(3))
  for name in NAMES + ("fusion",):
    norm = sum(float(jnp.sum(jnp.square(x))) for x in jax.tree.leaves(g[name]))
    assert np.isfinite(norm) and norm > 0, name
  runs = [step(variables, jax.random.key(i))[1] for i in range(6)]
  _assert_same(step(variables, jax.random.key(0))[1], runs[0])  # same key, same drops
  assert len({np.asarray(r["language"]).tobytes() for r in runs}) > 1  # rate 0.5
  assert all(bool(r["video"].all()) for r in runs)  # only language has a model-side rate
  with pytest.raises(Exception, match="masking"):
    jax.eval_shape(lambda v: model.apply(v, batch, train=True), variables)


def test_group_dropout_keeps_one_evaluation_side_per_window(variables):
  """With group dropout on every window, each sample keeps exactly one group's modalities
  (the motion side or the visual side), and both groups occur."""
  cfg = CONFIG.model.copy_and_resolve_references()
  cfg.group_dropout.rate = 1.0
  for name in cfg.modalities:
    cfg.modalities[name].dropout = 0.0
  model = XEFM(cfg)
  batch = jax.tree.map(lambda x: np.repeat(x, 8, axis=0), _batch())  # 16 windows
  kept = jax.jit(lambda v, k: model.apply(v, batch, train=True, rngs={"masking": k}).kept)(
      variables, jax.random.key(5))
  groups = {g: set(m) for g, m in cfg.group_dropout.groups.items()}
  seen = set()
  for i in range(16):
    mods = {n for n in NAMES if bool(kept[n][i])}
    assert mods in groups.values(), mods
    seen.add(frozenset(mods))
  assert len(seen) == 2


@pytest.mark.parametrize("name, low, high", [("local", 1e6, 1e7), ("stage1", 0.3e9, 1e9),
                                             ("stage2", 1e9, 3e9), ("stage3", 3e9, 7e9)])
def test_stage_configs_are_in_their_parameter_range(name, low, high):
  config = importlib.import_module(f"configs.{name}").get_config()
  window = spec.WindowSpec.from_config(config.data)
  shapes = init.abstract_variables(XEFM(config.model), init.abstract_window_batch(window, 1))
  params = sum(x.size for x in jax.tree.leaves(nn.unbox(shapes)))
  assert low <= params <= high
  fusion = sum(x.size for x in jax.tree.leaves(nn.unbox(shapes)["params"]["fusion"]))
  assert fusion > 0.5 * params  # the fusion transformer carries most parameters


def test_model_config_follows_the_data_section():
  c = local.get_config()
  c.data.frame_stride = 2
  c.data.vocab_size = 777
  c.data.frames = 12
  assert c.model.modalities.pose.frame_rate == 10.0
  assert c.model.modalities.audio.samples_per_frame == 1600
  assert c.model.modalities.language.vocab_size == 777
  assert c.model.modalities.language.window_centre == 5.5
  assert c.seed == 0
