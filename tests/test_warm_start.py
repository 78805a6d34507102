"""Warm starts (config.model.init_from): an XEFM run into a config with a wider head, and a
big_vision-layout ViT .npz into the video encoder's per-frame tower, checked against an
independent numpy forward of the same weights."""

import pathlib
import re

import flax.linen as nn
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import common, local
from xefm_jax.data import source as source_lib
from xefm_jax.data import spec
from xefm_jax.parallel import init as init_lib
from xefm_jax.parallel import mesh as mesh_lib
from xefm_jax.parallel import sharding
from xefm_jax.train import loop, optimizer, warm_start
from xefm_jax.train import state as state_lib


def _names(tree) -> dict:
  return {optimizer.param_name(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


INIT = 7.0  # what every parameter holds before the warm start


def _fresh_state(config) -> state_lib.TrainState:
  """A state on the mesh with every parameter INIT (shapes and shardings from the abstract
  state: nothing is compiled)."""
  mesh = mesh_lib.make_mesh(common.mesh_config(2, 2, 2))
  rules = sharding.rules_from_config(config)
  shapes = init_lib.abstract_window_batch(spec.WindowSpec.from_config(config.data),
                                          config.data.batch_size)
  tx, _ = optimizer.make(config.optim, 10)
  abstract, shardings = state_lib.abstract_state(config, tx, shapes, mesh, rules)
  params = jax.device_put(jax.tree.map(lambda x: np.full(x.shape, INIT, x.dtype),
                                       abstract.params), shardings.params)
  return state_lib.TrainState(step=0, params=params, opt_state=(), ema=params["model"],
                              rng=None, skipped=0)


def test_warm_start_from_a_run_into_a_wider_head(reference, shard_corpus):
  config = local.get_config("tiny")
  loop.with_corpus_sizes(config, source_lib.Corpus(shard_corpus))
  config.objectives.policy.hidden = 48  # the run's policy head is 64 wide
  state = _fresh_state(config)
  placed = {n: x.sharding for n, x in _names(state.params).items()}

  # the default (identity) mapping refuses the head, naming it and both shapes
  with pytest.raises(warm_start.WarmStartError) as e:
    warm_start.load(dict(path=str(reference)), _names(state.params))
  assert re.search(r"policy/head/hidden/kernel has shape \(\d+, 64\), this model's "
                   r"policy/head/hidden/kernel has shape \(\d+, 48\)", str(e.value))
  assert "policy/head/out/kernel" in str(e.value)

  config.model.init_from = (dict(path=str(reference), mapping=(
      (r"policy/.*", "skip"), (r".*", r"\g<0>"))),)
  state, (report,) = warm_start.apply(config, state)
  after = _names(jax.device_get(state.params))
  policy = sorted(n for n in after if n.startswith("policy/"))
  assert report.not_written == policy and sorted(report.skipped) == policy
  # what was loaded is the run's last step, read independently (whole, on the host)
  step_dir = pathlib.Path(reference) / "checkpoints" / str(max(
      int(p.name) for p in (pathlib.Path(reference) / "checkpoints").iterdir()
      if p.name.isdigit()))
  checkpointer = ocp.PyTreeCheckpointer()
  meta = checkpointer.metadata(step_dir / "state").item_metadata.tree
  as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), meta)
  saved = _names(checkpointer.restore(step_dir / "state", args=ocp.args.PyTreeRestore(
      restore_args=as_numpy))["params"])
  assert len(report.loaded) == len(after) - len(policy) > 100
  for name in report.loaded:
    np.testing.assert_array_equal(after[name], saved[name], err_msg=name)
  for name in policy:  # left at init
    assert (after[name] == INIT).all(), name
  # the EMA encoder restarts from the loaded trunk; shardings are the target's
  for name, x in _names(state.ema).items():
    np.testing.assert_array_equal(np.asarray(x), saved["model/" + name])
  for name, x in _names(state.params).items():
    assert x.sharding == placed[name], name


# ---------------------------------------------------------------- big_vision image tower

VIT = dict(width=16, depth=2, num_heads=2, mlp_dim=32)
BV_MAPPING = ((r"params/img/(embedding/.*|pos_embedding|Transformer/.*)",
               r"model/video/tokenizer/vit/\1"),
              (r"params/.*", "skip"))


def _big_vision_npz(path, patch: int, tokens: int, rng) -> dict[str, np.ndarray]:
  """A tiny SigLIP-layout checkpoint: big_vision's ViT names under params/img/, a head and
  a text tower that the mapping skips."""
  d, m, h = VIT["width"], VIT["mlp_dim"], VIT["num_heads"]
  k = d // h
  w = {"embedding/kernel": (patch, patch, 3, d), "embedding/bias": (d,),
       "pos_embedding": (1, tokens, d), "Transformer/encoder_norm/scale": (d,),
       "Transformer/encoder_norm/bias": (d,), "head/kernel": (d, 7), "head/bias": (7,)}
  for i in range(VIT["depth"]):
    b = f"Transformer/encoderblock_{i}/"
    for ln in ("LayerNorm_0", "LayerNorm_1"):
      w[b + ln + "/scale"], w[b + ln + "/bias"] = (d,), (d,)
    for proj in ("query", "key", "value"):
      w[b + f"MultiHeadDotProductAttention_0/{proj}/kernel"] = (d, h, k)
      w[b + f"MultiHeadDotProductAttention_0/{proj}/bias"] = (h, k)
    w[b + "MultiHeadDotProductAttention_0/out/kernel"] = (h, k, d)
    w[b + "MultiHeadDotProductAttention_0/out/bias"] = (d,)
    w[b + "MlpBlock_0/Dense_0/kernel"], w[b + "MlpBlock_0/Dense_0/bias"] = (d, m), (m,)
    w[b + "MlpBlock_0/Dense_1/kernel"], w[b + "MlpBlock_0/Dense_1/bias"] = (m, d), (d,)
  weights = {n: (rng.normal(size=s) * (0.3 if len(s) > 1 else 0.1)
                 + (1.0 if n.endswith("scale") else 0.0)).astype(np.float32)
             for n, s in w.items()}
  arrays = {f"params/img/{n}": x for n, x in weights.items()}
  arrays["params/txt/Embed_0/embedding"] = rng.normal(size=(11, d)).astype(np.float32)
  arrays["params/t"] = np.ones((1,), np.float32)
  np.savez(path, **arrays)
  return weights


def _numpy_vit(w: dict[str, np.ndarray], images: np.ndarray, patch: int) -> np.ndarray:
  """big_vision's ViT forward in float64 numpy: (M, H, W, 3) -> (M, N, D)."""
  def ln(x, name):
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-6) * w[name + "/scale"] + w[name + "/bias"]

  def gelu(x):  # flax's default: the tanh approximation
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
  m, hh, ww, _ = images.shape
  x = images.reshape(m, hh // patch, patch, ww // patch, patch, 3).transpose(0, 1, 3, 2, 4, 5)
  x = x.reshape(m, -1, patch, patch, 3)
  x = np.einsum("mnijc,ijcd->mnd", x, w["embedding/kernel"]) + w["embedding/bias"]
  x = x + w["pos_embedding"]
  for i in range(VIT["depth"]):
    b = f"Transformer/encoderblock_{i}/"
    a = b + "MultiHeadDotProductAttention_0/"
    y = ln(x, b + "LayerNorm_0")
    q, k, v = (np.einsum("mnd,dhk->mnhk", y, w[a + n + "/kernel"]) + w[a + n + "/bias"]
               for n in ("query", "key", "value"))
    logits = np.einsum("mqhk,mphk->mhqp", q, k) / np.sqrt(q.shape[-1])
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    o = np.einsum("mhqp,mphk->mqhk", p, v)
    x = x + np.einsum("mqhk,hkd->mqd", o, w[a + "out/kernel"]) + w[a + "out/bias"]
    y = ln(x, b + "LayerNorm_1")
    y = gelu(y @ w[b + "MlpBlock_0/Dense_0/kernel"] + w[b + "MlpBlock_0/Dense_0/bias"])
    x = x + y @ w[b + "MlpBlock_0/Dense_1/kernel"] + w[b + "MlpBlock_0/Dense_1/bias"]
  return ln(x, "Transformer/encoder_norm")


def test_big_vision_vit_npz_into_the_video_tower(tmp_path):
  from xefm_jax.model.xefm import XEFM
  from xefm_jax.modalities.video_vit import VideoViTTokenizer

  config = local.get_config("tiny")
  for name in list(config.model.modalities):
    if name != "video":
      del config.model.modalities[name]
  video = config.model.modalities.video
  video.tokenizer = "video_vit"
  video.vit = VIT
  window = spec.WindowSpec.from_config(config.data)
  batch = spec.fake_batch(window, 2, seed=4)
  size, patch, tubelet = config.data.view_size, video.patch, video.tubelet
  rng = np.random.default_rng(0)
  weights = _big_vision_npz(tmp_path / "siglip.npz", patch, (size // patch) ** 2, rng)

  # this model's parameters from shapes only (nothing compiled): the ViT's from the npz,
  # the rest random
  shapes = jax.eval_shape(XEFM(config.model).init, jax.random.key(0), batch)["params"]
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  targets = {"model/" + n: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device)
             for n, x in _names(nn.unbox(shapes)).items()}
  arrays, report = warm_start.load(dict(path=str(tmp_path / "siglip.npz"),
                                        mapping=BV_MAPPING), targets)
  vit = sorted(n for n in targets if n.startswith("model/video/tokenizer/vit/"))
  assert sorted(arrays) == vit and len(vit) == len(weights) - 2  # not head/kernel, head/bias
  assert all(arrays[n].sharding == device for n in vit)
  assert "params/img/head/kernel" in report.skipped and "params/t" in report.skipped
  assert "model/video/tokenizer/vit_projection/kernel" in report.not_written

  # the tower with the loaded weights against the numpy forward of the npz's own arrays
  prefix = "model/video/tokenizer/"
  flat = {n[len(prefix):]: np.asarray(arrays[n]) if n in arrays else
          rng.normal(size=x.shape).astype(np.float32) * 0.3
          for n, x in targets.items() if n.startswith(prefix)}
  patches = jax.jit(VideoViTTokenizer(config=video, width=video.encoder.width).apply)(
      {"params": warm_start.nested(flat)}, batch)
  frames = batch["video"].astype(np.float64) * (2 / 255) - 1  # (B, V, T, H, W, 3)
  frames = np.where(batch["video_valid"][:, :, None, None, None, None], frames, 0)
  b, v, t = frames.shape[:3]
  out = _numpy_vit(weights, frames.reshape(b * v * t, size, size, 3), patch)
  out = out.reshape(b, v, t // tubelet, tubelet, -1, VIT["width"]).mean(3)
  proj = flat["vit_projection/kernel"], flat["vit_projection/bias"]
  want = (out @ proj[0] + proj[1]).reshape(b, -1, video.encoder.width)
  np.testing.assert_allclose(np.asarray(patches.embeddings), want, rtol=2e-4, atol=2e-5)

  # a checkpoint of another patch grid: the position table does not fit, named with shapes
  bad = dict(np.load(tmp_path / "siglip.npz"))
  bad["params/img/pos_embedding"] = bad["params/img/pos_embedding"][:, :1]
  np.savez(tmp_path / "bad.npz", **bad)
  with pytest.raises(warm_start.WarmStartError, match=re.escape(
      "params/img/pos_embedding has shape (1, 1, 16), this model's "
      "model/video/tokenizer/vit/pos_embedding has shape (1, 4, 16)")):
    warm_start.load(dict(path=str(tmp_path / "bad.npz"), mapping=BV_MAPPING), targets)
