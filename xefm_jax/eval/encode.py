"""Frozen forward passes for evaluation: window embeddings of input variants, and the heads.

Why not one `XEFM.encode` with `drop` for every variant: a dropped modality's tokens are
masked, so they cost compute without changing anything. Each variant family runs XEFM over
only the modalities it encodes (`XEFM(..., modalities=...)`), and for fixed camera views
only those views' video tokens (`views=`). A masked token influences nothing (TokenGroup's
contract), so the result equals the masked full pass up to float rounding
(tests/test_eval.py checks it against `XEFM.encode`); the motion side costs an eighth of a
full pass and a single view a sixth. Variants inside a family (robustness drops, random
views) are masks of that family's compiled pass, so a family compiles once and serves every
parameter set (model and random init share the shapes).

Everything is jitted over the mesh: batch rows split like training batches, parameters on
their shards, outputs replicated (every process reads the global rows).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from xefm_jax.data import pipeline
from xefm_jax.eval import variants as variants_lib
from xefm_jax.model import encoders
from xefm_jax.model import xefm
from xefm_jax.objectives import base as objectives_base
from xefm_jax.objectives.pretrainer import Pretrainer
from xefm_jax.parallel import sharding

PyTree = Any
# Heads whose predictions the protocol scores (others are training-only signals);
# future_state's predicted next-window latent is the world-model evaluation's query.
PREDICT_HEADS = ("procedure", "contact", "forecasting", "contrastive", "captioning",
                 "future_state")


def input_fields(model_config: ml_collections.ConfigDict, modalities: Sequence[str]
                 ) -> tuple[str, ...]:
  """The window fields the encoders of `modalities` read."""
  fields: list[str] = []
  for name in modalities:
    tokenizer = encoders.get_tokenizer(model_config.modalities[name].get("tokenizer")
                                              or name)
    fields += [f for f in tokenizer.fields if f not in fields]
  return tuple(fields)


def family(variant: variants_lib.Variant, model_modalities: Sequence[str]
           ) -> tuple[tuple[str, ...], bool]:
  """(modalities the compiled pass encodes, whether it gathers fixed views) of a variant.

  Variants that keep most of the window (full, with language, their robustness versions)
  share one pass over every modality; narrower bases get their own.
  """
  if variant.views is not None:
    return ("video",), True
  if "video" in variant.universe and len(variant.universe) > 2:
    return tuple(model_modalities), False
  return tuple(m for m in model_modalities if m in variant.universe), False


class Encoder:
  """Window embeddings and head predictions on a mesh (one per evaluation job)."""

  def __init__(self, run_config: ml_collections.ConfigDict, mesh: Mesh,
               views: Sequence[str]):
    self.config = run_config
    self.mesh = mesh
    self.rules = sharding.rules_from_config(run_config)
    self.views = tuple(views)
    self.model_modalities = xefm.modality_names(run_config.model)
    self.batch_sharding = NamedSharding(mesh, sharding.batch_spec(self.rules))
    self.replicated = NamedSharding(mesh, PartitionSpec())
    self._embed_fns: dict[tuple, Any] = {}
    self._heads_fns: dict[tuple, Any] = {}

  # ------------------------------------------------------------------------------ helpers

  def _put(self, tree: PyTree) -> PyTree:
    return pipeline.make_global_batch(tree, self.batch_sharding)

  def _fetch(self, tree: PyTree) -> PyTree:
    return jax.tree.map(np.asarray, jax.device_get(tree))

  # ----------------------------------------------------------------------- embeddings

  def _embed_fn(self, modalities: tuple[str, ...], gather: bool):
    key = (modalities, gather)
    if key not in self._embed_fns:
      model = xefm.XEFM(self.config.model)

      def fn(params, batch, drop, views):
        return model.apply({"params": params}, batch, drop=drop, modalities=modalities,
                           views=views if gather else None).embedding
      self._embed_fns[key] = jax.jit(fn, out_shardings=self.replicated)
    return self._embed_fns[key]

  def embed(self, params: PyTree, batch: Mapping[str, Any], variant: variants_lib.Variant,
            seed: int) -> np.ndarray:
    """(B, D) float32 window embeddings of `variant` of a (padded, per-process) batch."""
    modalities, gather = family(variant, self.model_modalities)
    masked = variants_lib.apply(variant, batch, self.views, seed)
    fields = input_fields(self.config.model, modalities)
    rows = len(batch["episode"])
    drop = {m: np.full((rows,), m not in variant.modalities) for m in modalities}
    views = np.asarray([self.views.index(v) for v in variant.views] if gather else [0],
                       np.int32)
    with sharding.activate(self.mesh, self.rules):
      out = self._embed_fn(modalities, gather)(
          params, self._put({f: masked[f] for f in fields}), self._put(drop),
          jax.device_put(views, self.replicated))
    return self._fetch(out)

  # ------------------------------------------------------------------------------ heads

  def _heads_fn(self, names: tuple[str, ...], reconstruct: tuple[str, ...]):
    key = (names, reconstruct)
    if key not in self._heads_fns:
      pretrainer = Pretrainer(self.config)

      def heads(module, batch, drop):
        # Pretrainer.predict's pass, with `drop`: the window side can be blind to its
        # caption while the caption itself stays in the batch (the contrastive text side)
        out = module.model(batch, train=False, drop=drop)
        ctx = objectives_base.Context(batch=batch, out=out, keep={}, target=None)
        preds = {n: module.heads[n].predict(ctx) for n in names}
        sums = {}
        if reconstruct:
          recon = module.heads["masked_modeling"].predict(ctx)
          for m in reconstruct:  # targets of the whole window: the batch is not masked
            sums[m] = _r2_sums(recon[m], recon[f"{m}/target"], recon[f"{m}/weight"])
        return out.embedding, preds, sums

      def fn(params, batch, drop):
        return pretrainer.apply({"params": params}, batch, drop, method=heads)
      self._heads_fns[key] = jax.jit(fn, out_shardings=self.replicated)
    return self._heads_fns[key]

  def heads(self, params: PyTree, batch: Mapping[str, Any], variant: variants_lib.Variant,
            names: Sequence[str], reconstruct: Sequence[str] = ()
            ) -> tuple[np.ndarray, dict[str, dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """The trunk's window embedding (B, D) and the heads' predictions with the modalities
    `variant` leaves out dropped (the batch itself is whole: the caption stays readable by
    the contrastive text tower, the reconstruction targets are the real streams), and for
    each modality in `reconstruct` the masked-modeling reconstruction's per-window sums
    (B, 4) [n, sum y, sum y^2, sum (y - y_hat)^2].
    """
    if variant.views is not None or variant.random_views:
      raise ValueError(f"heads run on whole-view variants, not {variant.name!r}")
    rows = len(batch["episode"])
    drop = {m: np.full((rows,), m not in variant.modalities) for m in self.model_modalities}
    with sharding.activate(self.mesh, self.rules):
      emb, preds, sums = self._heads_fn(tuple(names), tuple(reconstruct))(
          params, self._put(dict(batch)), self._put(drop))
    return self._fetch(emb), self._fetch(preds), self._fetch(sums)


def _r2_sums(pred: jax.Array, target: jax.Array, weight: jax.Array) -> jax.Array:
  """(B, 4) float32 per window: count, sum y, sum y^2, sum of squared errors over the
  weighted elements (summed over windows on the host: R^2 of the pooled elements)."""
  w = weight.astype(jnp.float32).reshape(weight.shape[0], -1)
  y = target.astype(jnp.float32).reshape(w.shape)
  e = pred.astype(jnp.float32).reshape(w.shape) - y
  return jnp.stack([jnp.sum(w, 1), jnp.sum(w * y, 1), jnp.sum(w * y * y, 1),
                    jnp.sum(w * e * e, 1)], axis=1)
