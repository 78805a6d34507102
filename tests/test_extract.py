"""Feature extraction (data_pipelines/extract.py): an array job over a copy of the test
corpus; the stored features are the video tokenizer's own ViT output on the same frames,
and features of another encoder are refused."""

import shutil

import flax.linen as nn
import jax
import numpy as np
import pytest

from configs import local
from data_pipelines import extract
from test_warm_start import BV_MAPPING, VIT, _big_vision_npz
from xefm_jax.data import features as features_lib
from xefm_jax.data import pipeline
from xefm_jax.data import shards as shards_lib
from xefm_jax.data import source as source_lib
from xefm_jax.data import xperience
from xefm_jax.modalities.video_vit import VideoViTTokenizer
from xefm_jax.train import loop, warm_start


def _config(npz):
  config = local.get_config("tiny,vit")
  assert dict(config.model.modalities.video.vit) == VIT
  config.model.init_from = (dict(path=str(npz), mapping=BV_MAPPING),)
  return config


def test_extracted_features_are_the_encoders_output(shard_corpus, tmp_path):
  root = tmp_path / "shards"
  shutil.copytree(shard_corpus, root, ignore=shutil.ignore_patterns("features"))
  config = _config(tmp_path / "vit.npz")
  size, patch = config.data.view_size, config.model.modalities.video.patch
  weights = _big_vision_npz(tmp_path / "vit.npz", patch, (size // patch) ** 2,
                            np.random.default_rng(1))
  first = extract.run(config, root, "vit", task_index=0, task_count=2, frames_per_batch=32)
  second = extract.run(config, root, "vit", task_index=1, task_count=2, frames_per_batch=32)
  names = [s["name"] for s in shards_lib.load_manifest(root)["shards"]]
  assert first == names[0::2] and second == names[1::2] and len(names) >= 2
  assert extract.run(config, root, "vit", 0, 2) == []  # done: skipped on a re-run

  # a window's frames of one episode, through the tokenizer with the same ViT weights
  corpus = source_lib.Corpus(root)
  episode = corpus.episodes[-1]
  a, frames = episode["offset"] + 3, config.data.frames
  pixels = shards_lib.open_array(root / episode["shard"], "video")[a:a + frames].read().result()
  batch = {"video": np.swapaxes(pixels, 0, 1)[None],  # (1, V, T, H, W, 3)
           "video_valid": np.ones((1, pixels.shape[1]), bool)}
  video = config.model.modalities.video
  tokenizer = VideoViTTokenizer(config=video, width=video.encoder.width)
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda x: rng.normal(size=x.shape).astype(np.float32),
                        nn.unbox(jax.eval_shape(tokenizer.init, jax.random.key(0), batch)))
  params = params["params"]
  params["vit"] = warm_start.nested({n[len("params/img/"):]: w for n, w in (
      ("params/img/" + k, v) for k, v in weights.items()) if not n.startswith("params/img/head")})
  _, state = tokenizer.apply({"params": params}, batch, capture_intermediates=True)
  want = np.asarray(state["intermediates"]["vit"]["__call__"][0])  # (V T, S, D)
  encoder = features_lib.encoder_description(config.model)
  sha = features_lib.params_sha256(
      {k: v for k, v in weights.items() if not k.startswith("head")})
  stored = features_lib.open_shard(root, "vit", episode["shard"], encoder, sha)
  got = stored[a:a + frames].read().result()  # (T, V, S, D)
  assert got.shape == (frames, pixels.shape[1], (size // patch) ** 2, VIT["width"])
  np.testing.assert_allclose(np.swapaxes(got, 0, 1).reshape(want.shape), want,
                             rtol=1e-5, atol=1e-5)

  # the tokenizer reading those features computes what it computes from the pixels
  from_pixels = tokenizer.apply({"params": params}, batch)
  from_features = tokenizer.apply({"params": params}, {
      "video_features": np.swapaxes(got, 0, 1)[None], "video_valid": batch["video_valid"]})
  np.testing.assert_allclose(from_features.embeddings, from_pixels.embeddings, rtol=1e-5,
                             atol=1e-5)
  np.testing.assert_array_equal(from_features.mask, from_pixels.mask)

  # another encoder: refused by the reader and by a re-run under the same name
  other = local.get_config("vit")
  with pytest.raises(features_lib.FeatureError, match="made by another encoder"):
    features_lib.open_shard(root, "vit", episode["shard"],
                            features_lib.encoder_description(other.model))
  with pytest.raises(features_lib.FeatureError, match="other encoder parameters"):
    features_lib.open_shard(root, "vit", episode["shard"], encoder, "0" * 64)
  _big_vision_npz(tmp_path / "vit.npz", patch, (size // patch) ** 2, np.random.default_rng(2))
  with pytest.raises(features_lib.FeatureError, match="other encoder parameters"):
    extract.run(config, root, "vit", 0, 2)

  # training on the features: the loader's batches carry them instead of pixels, and the
  # loop refuses features of another encoder
  config.data.video_features = "vit"
  _big_vision_npz(tmp_path / "vit.npz", patch, (size // patch) ** 2, np.random.default_rng(1))
  corpus = source_lib.Corpus(root)
  loop.check_video_features(config, corpus)  # the encoder that made them
  batch = next(iter(pipeline.make_dataset(corpus, "train", config.data, train=False, seed=0)))
  assert "video" not in batch and "video" not in batch["next"]
  window = corpus.window_spec(config.data)
  assert batch["video_features"].shape == (config.data.batch_size, len(window.views),
                                           frames, *window.feature_shape)
  e, start = int(batch["episode"][0]), int(batch["start"][0])
  ep = corpus.episodes[e]
  rows = features_lib.open_shard(root, "vit", ep["shard"], encoder)[
      ep["offset"] + start:ep["offset"] + start + frames].read().result()
  views = [xperience.VIEWS.index(v) for v in window.views]  # the shards' view axis
  np.testing.assert_array_equal(batch["video_features"][0],
                                np.swapaxes(rows[:, views], 0, 1) * batch["video_valid"][0][
                                    :, None, None, None])
  _big_vision_npz(tmp_path / "vit.npz", patch, (size // patch) ** 2, np.random.default_rng(3))
  with pytest.raises(features_lib.FeatureError, match="other encoder parameters"):
    loop.check_video_features(config, corpus)
