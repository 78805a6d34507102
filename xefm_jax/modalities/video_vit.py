"""Multi-view video -> tubelet tokens through a per-frame ViT (big_vision's image tower).

For Stage 1 with a pretrained image encoder (ViT / SigLIP from big_vision): every frame of
every view goes through the same ViT, its patch tokens are averaged over the frames of a
tubelet, and projected to the encoder width; view and spatial embeddings are added as in
the tubelet tokenizer (video.py), so the token layout (view, time, row, column), the
masks and the masked-modeling targets are the same.

    config.model.modalities.video.tokenizer = "video_vit"
    config.model.modalities.video.vit = dict(width=768, depth=12, num_heads=12, mlp_dim=3072)
    config.model.init_from = (dict(path="siglip.npz", mapping=(
        (r"params/img/(embedding/.*|pos_embedding|Transformer/.*)",
         r"model/video/tokenizer/vit/\\1"),
        (r"params/.*", "skip"))),)
    config.optim.trainable = ((r"model/video/tokenizer/vit/.*", "frozen"),)

The ViT's parameters carry big_vision's names and shapes (embedding/kernel (p, p, 3, D),
pos_embedding (1, N, D), Transformer/encoderblock_<i>/{LayerNorm_0,
MultiHeadDotProductAttention_0/{query,key,value,out}, LayerNorm_1, MlpBlock_0/Dense_0,
Dense_1}, Transformer/encoder_norm), so a published checkpoint maps by a prefix; its
numerics are big_vision's (pre-LayerNorm blocks with biases, tanh GELU, eps 1e-6, learned
position embedding added before the blocks, pixels in [-1, 1]). The patch size is
config.patch. Its attention spans the whole frame, so a token hidden by masked modeling is
seen by the ViT: leave "video" out of objectives.masked_modeling.modalities with this
tokenizer.
"""

from __future__ import annotations

from typing import Any

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from xefm_jax.model import encoders
from xefm_jax.model import layers
from xefm_jax.modalities import video


class MlpBlock(nn.Module):
  mlp_dim: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kw = dict(use_bias=True, dtype=self.dtype, param_dtype=self.param_dtype)
    h = nn.gelu(layers.DenseGeneral(self.mlp_dim, ("embed", "mlp"), name="Dense_0", **kw)(x))
    return layers.DenseGeneral(x.shape[-1], ("mlp", "embed"), name="Dense_1", **kw)(h)


class MultiHeadDotProductAttention(nn.Module):
  num_heads: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    width = x.shape[-1]
    kw = dict(use_bias=True, dtype=self.dtype, param_dtype=self.param_dtype)
    q, k, v = (layers.DenseGeneral((self.num_heads, width // self.num_heads),
                                   ("embed", "heads", "kv"), name=n, **kw)(x)
               for n in ("query", "key", "value"))
    out = jax.nn.dot_product_attention(q, k, v)  # (M, N, H, K), scaled by 1/sqrt(K)
    return layers.DenseGeneral(width, ("heads", "kv", "embed"), axis=(-2, -1), name="out",
                               **kw)(out)


class Encoder1DBlock(nn.Module):
  mlp_dim: int
  num_heads: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    y = layers.LayerNorm(name="LayerNorm_0", **kw)(x)
    x = x + MultiHeadDotProductAttention(self.num_heads, name="MultiHeadDotProductAttention_0",
                                         **kw)(y)
    y = layers.LayerNorm(name="LayerNorm_1", **kw)(x)
    return x + MlpBlock(self.mlp_dim, name="MlpBlock_0", **kw)(y)


class Encoder(nn.Module):
  depth: int
  mlp_dim: int
  num_heads: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    for i in range(self.depth):
      x = Encoder1DBlock(self.mlp_dim, self.num_heads, name=f"encoderblock_{i}", **kw)(x)
    return layers.LayerNorm(name="encoder_norm", **kw)(x)


class ViT(nn.Module):
  """big_vision's ViT without pooling or head: images (M, H, W, 3) in [-1, 1] ->
  patch tokens (M, (H / patch) (W / patch), width)."""

  width: int
  depth: int
  num_heads: int
  mlp_dim: int
  patch: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    p = self.patch
    x = einops.rearrange(images, "m (h ph) (w pw) c -> m (h w) ph pw c", ph=p, pw=p)
    x = layers.DenseGeneral(self.width, (None, None, "patch", "embed"), axis=(-3, -2, -1),
                            use_bias=True, dtype=self.dtype, param_dtype=self.param_dtype,
                            name="embedding")(x)  # big_vision's patch Conv
    posemb = self.param("pos_embedding", nn.with_logical_partitioning(
        nn.initializers.normal(stddev=1 / np.sqrt(self.width)), (None, "table", "embed")),
                        (1, x.shape[1], self.width), self.param_dtype)
    x = x + posemb.astype(self.dtype)
    return Encoder(self.depth, self.mlp_dim, self.num_heads, dtype=self.dtype,
                   param_dtype=self.param_dtype, name="Transformer")(x)


@encoders.register("video_vit")
class VideoViTTokenizer(video.VideoTokenizer):
  """(B, V, T, H, W, 3) uint8 + (B, V) view validity -> tubelet Patches via a per-frame ViT;
  the token layout and masked-modeling targets are the tubelet tokenizer's.

  With "video_features" in the batch, (B, V, T, S, D) float32 ViT tokens extracted once by
  data_pipelines/extract.py (xefm_jax/data/features.py), the ViT is not run: the frozen
  tower's output is read instead of computed, and everything after it is the same.
  """

  fields = ("video_valid",)  # and "video" or "video_features"

  @nn.compact
  def __call__(self, batch: encoders.Batch) -> encoders.Patches:
    tt, p, vit = self.config.tubelet, self.config.patch, self.config.vit
    valid = batch["video_valid"]
    if "video_features" in batch:
      x = batch["video_features"]  # (B, V, T, S, D)
      b, v, t = x.shape[:3]
      encoders.check_divisible("video: frames", t, tt)
      if x.shape[-1] != vit.width:
        raise ValueError(f"video_features: {x.shape[-1]} channels, but the ViT of "
                         f"config.model.modalities.video.vit is {vit.width} wide: the features "
                         "come from another encoder")
      x = x.astype(self.dtype).reshape(b * v * t, *x.shape[3:])
    elif "video" in batch:
      x, valid = self.pixels(batch)  # [-1, 1]: big_vision's range
      b, v, t, h, w, _ = x.shape
      x = ViT(vit.width, vit.depth, vit.num_heads, vit.mlp_dim, p, dtype=self.dtype,
              param_dtype=self.param_dtype, name="vit")(x.reshape(b * v * t, h, w, 3))
    else:
      raise KeyError("modality 'video' (video_vit) reads window field 'video' or "
                     "'video_features'; the batch has neither")
    x = einops.reduce(x, "(b v t tt) s d -> b v t s d", "mean", b=b, v=v, tt=tt)
    x = self.embed(x, "vit_projection")  # (B, V, t, S, E)
    return self.tubelets(x, valid)
