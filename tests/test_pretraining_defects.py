"""Three defects that kept pretraining below shallow features, each pinned by a test that
fails on the code that had it (issue 10):

1. label leakage through language: a supervised loss on a window that sees its own caption
   (which states the action, subtask and objects) learns to read the answer;
2. masked tokens in the trunk: hidden tokens were keys and queries (BERT-style mask tokens),
   so the trunk's computation on a masked window was not that of the visible tokens;
3. contrastive false negatives: overlapping windows of one episode were negatives.
"""

import copy

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import local
from model_helpers import host_params
from xefm_jax.data import spec
from xefm_jax.model.xefm import XEFM, token_counts
from xefm_jax.objectives.pretrainer import Pretrainer

# One xdist worker takes the module: its tests reuse what the first compiles (run alone:
# whole modules per worker took 182-202 CPU-s for this and two other modules, 235-258 spread).
pytestmark = pytest.mark.xdist_group("pretraining_defects")

B = 8
SUPERVISED = ("procedure", "contact", "captioning")


def _batch(b=B, seed=1):
  batch = spec.fake_batch(spec.WindowSpec.from_config(local.get_config("tiny").data), b,
                          seed=seed)
  batch["caption_valid"][:] = True  # every window has a caption that states its labels
  batch["caption"][:, 1:4] = np.maximum(batch["caption"][:, 1:4], 4)
  return batch


def _config(enabled):
  cfg = local.get_config("tiny")
  for name in cfg.objectives:
    cfg.objectives[name].weight = 1.0 if name in enabled else 0.0
  return cfg


def _pretrainer_params(model, batch):
  keys = {"params": jax.random.key(0), "masking": jax.random.key(1),
          "dropout": jax.random.key(2)}
  shapes = jax.eval_shape(lambda b: model.init(keys, b), batch)
  rng = np.random.default_rng(0)
  return jax.tree.map(lambda s: (rng.normal(size=s.shape) / np.sqrt(s.shape[-1])
                                 ).astype(s.dtype), nn.unbox(shapes))["params"]


@pytest.fixture(scope="module")
def supervised_grads():
  """(params, grads(params, key, weights)): the gradient of sum_i weights[i] x the loss of
  SUPERVISED[i], every supervised head and masked modeling enabled (its hiding decides
  which windows are whole). A one-hot `weights` gives one head's gradient; the weights are
  a traced argument, so the three heads share one compiled program."""
  model = Pretrainer(_config((*SUPERVISED, "masked_modeling")))
  batch = _batch()
  params = _pretrainer_params(model, batch)

  @jax.jit
  def grads(p, key, weights):
    def loss(p):
      _, m = model.apply({"params": p}, batch, None, train=True,
                         rngs={"masking": key, "dropout": jax.random.fold_in(key, 1)})
      return sum(w * m[f"{n}/loss"] for w, n in zip(weights, SUPERVISED)), m
    return jax.grad(loss, has_aux=True)(p)
  return params, grads


@pytest.mark.parametrize("name", SUPERVISED)
def test_no_supervised_loss_has_a_gradient_through_the_caption(supervised_grads, name):
  """d(loss of a supervised head) / d(the trunk's language encoder) is exactly zero for
  every draw of the masks: no window whose caption is an input trains the head."""
  params, grads = supervised_grads
  weights = jnp.asarray([float(n == name) for n in SUPERVISED])
  trained = 0.0
  for seed in range(4):
    g, m = grads(params, jax.random.key(seed), weights)
    language = sum(float(jnp.sum(jnp.abs(x))) for x in jax.tree.leaves(g["model"]["language"]))
    assert language == 0.0, (name, seed, language)
    trained += sum(float(jnp.sum(jnp.abs(x))) for x in jax.tree.leaves(g["model"]["imu"]))
    assert float(m[f"{name}/supervised_fraction"]) < 1.0  # some windows saw their caption
  assert trained > 0  # the head did train the trunk on the other windows: not vacuous


def test_hidden_tokens_are_not_attended_by_the_trunk():
  """Hiding tokens (masked modeling's keep) gives the trunk exactly the computation of a
  window where those tokens do not exist: readouts, fused visible tokens and pooled
  embeddings equal those of the window with the frames invalid."""
  cfg = local.get_config("tiny")
  model = XEFM(cfg.model)
  batch = _batch(2)
  variables = host_params(model, batch)
  counts = token_counts(model, batch)
  keep = {"imu": np.ones((2, counts["imu"]), bool)}
  keep["imu"][0, 1] = False  # the second IMU token of window 0: context frames 2-3
  hidden = jax.jit(lambda v, b, k: model.apply(v, b, keep=k))(variables, batch, keep)
  missing = copy.deepcopy(batch)
  missing["imu_valid"][0, 2:4] = False
  ref = jax.jit(lambda v, b: model.apply(v, b))(variables, missing)
  np.testing.assert_allclose(hidden.embedding, ref.embedding, atol=2e-5)
  for name in ("video", "mocap", "imu"):
    np.testing.assert_allclose(hidden.fused[name].tokens, ref.fused[name].tokens, atol=2e-5)
  np.testing.assert_allclose(hidden.embeddings["imu"], ref.embeddings["imu"], atol=2e-5)
  assert bool(hidden.fused["imu"].mask[0, 1])  # it still exists: a reconstruction target


def test_overlapping_windows_of_one_episode_are_not_negatives():
  """Two copies of a window, overlapping in one episode, give every contrastive term the
  loss of the window alone: they are neither positives nor negatives of each other (as
  negatives, each copy would add a term pushing the pair apart)."""
  cfg = _config(("contrastive",))
  model = Pretrainer(cfg)
  one = _batch(1)
  one["caption_valid"][:] = False  # the text term needs blind windows; not its subject
  one["episode"][:], one["start"][:] = 3, 10
  two = jax.tree.map(lambda x: np.concatenate([x, x], 0), one)
  two["start"][1] = 12  # overlaps window 0 (frames 10-13 and 12-15)
  params = _pretrainer_params(model, two)
  run = jax.jit(lambda p, b: model.apply({"params": p}, b, None, train=False)[1])
  m1, m2 = run(params, one), run(params, two)
  names = [k for k in m1 if k.startswith("contrastive/") and k.endswith("_loss")
           and not k.startswith("contrastive/text")]
  assert len(names) >= 6
  for k in names:
    np.testing.assert_allclose(float(m2[k]), float(m1[k]), rtol=1e-5, err_msg=k)
  far = copy.deepcopy(two)
  far["start"][1] = 40  # the same content, no overlap: now a (hard) negative
  m3 = run(params, far)
  assert float(m3["contrastive/imu_loss"]) > float(m1["contrastive/imu_loss"]) + 1e-3
