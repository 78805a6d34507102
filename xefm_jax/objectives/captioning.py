"""Language grounding and captioning: a small decoder writes the window's structured answer
(`action`, `subtask`, `objects`, `contact`, `transition`, `next_action`) and then its
caption sentence.

Why: the pretraining protocol scores the model's JSON answers (validity rate and per-field
scores) and generation grounds language in the fused tokens more tightly than a pooled
classifier can. One decoder vocabulary holds field markers, label tokens from the manifest's
vocabularies and the caption's word ids, so the answer is a token sequence with a grammar,
and "valid JSON" means the decoder produced that grammar, not that a template was filled.

Decoder vocabulary (`Layout`, a pure function of vocab_size, num_actions, num_subtasks,
num_objects; padded to a multiple of 128 rows for tensor sharding):
  [0, V)                caption words, ids as in the manifest's word vocabulary (0-3 are
                        PAD, UNK, BOS, EOS in every vocabulary, spec.py)
  V + 0 .. V + 6        field markers <action> <subtask> <objects> <contact> <transition>
                        <next_action> <caption>
  V + 7, V + 8, V + 9   <none> (a -1 label), <false>, <true>
  then num_actions action ids, num_subtasks subtask ids, num_objects object ids
Target sequence (built on device from the batch labels, no host text):
  BOS <action> a <subtask> s <objects> o_1 .. o_k <contact> c <transition> t
      <next_action> a' <caption> w_1 .. w_n EOS PAD ..
with k <= max_objects relevant objects at now in id order and the caption's words (none
when the window has no caption). Labels are procedure.targets' (action, subtask and
next action at now / now + next_horizon, transition within +-10 frames) and
contact.targets' hand contact at now (either hand: what the suite's contact task scores).

The decoder (causal self-attention, cross-attention to every visible fused token plus the
readouts, MLP; teacher forcing in training) trains only on `heads.supervised_rows`: windows
whose pass did not see their caption (it states the action, subtask and objects) and that
masked modeling left whole. `generate` decodes greedily without constraints, so
the validity rate measures the model; `parse`/`render_json` (host, numpy) turn a decoded
sequence into a dict / JSON string given the manifest's vocabularies (labels_lib.Labels) and
return None for a sequence that breaks the grammar.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from xefm_jax.data import labels as labels_lib
from xefm_jax.data import spec
from xefm_jax.modalities import language as language_lib
from xefm_jax.model import layers
from xefm_jax.model.transformer import head_dim
from xefm_jax.objectives import base
from xefm_jax.objectives import contact as contact_lib
from xefm_jax.objectives import heads
from xefm_jax.objectives import procedure

Array = jax.Array
FIELDS = ("action", "subtask", "objects", "contact", "transition", "next_action", "caption")


@dataclasses.dataclass(frozen=True)
class Layout:
  """The decoder vocabulary: which id means what (see the module docstring)."""

  vocab_size: int
  num_actions: int
  num_subtasks: int
  num_objects: int

  @classmethod
  def from_config(cls, data_config: Any) -> "Layout":
    return cls(data_config.vocab_size, data_config.num_actions, data_config.num_subtasks,
               data_config.num_objects)

  @classmethod
  def from_labels(cls, labels: labels_lib.Labels) -> "Layout":
    return cls(len(labels.words), len(labels.actions), len(labels.subtasks),
               len(labels.objects))

  def marker(self, field: str) -> int:
    return self.vocab_size + FIELDS.index(field)

  @property
  def none(self) -> int:
    return self.vocab_size + len(FIELDS)

  @property
  def false(self) -> int:
    return self.none + 1

  @property
  def true(self) -> int:
    return self.none + 2

  @property
  def action_base(self) -> int:
    return self.none + 3

  @property
  def subtask_base(self) -> int:
    return self.action_base + self.num_actions

  @property
  def object_base(self) -> int:
    return self.subtask_base + self.num_subtasks

  @property
  def size(self) -> int:
    """Ids in use; the decoder's logits have `padded_size` rows, the rest never emitted."""
    return self.object_base + self.num_objects

  @property
  def padded_size(self) -> int:
    return language_lib.padded_vocab_size(self.size)

  def sequence_length(self, max_objects: int, caption_len: int) -> int:
    """Lc: BOS, 7 field markers, 5 one-token values and EOS, then up to max_objects objects
    and the caption's words (caption_len less its BOS and EOS)."""
    return 14 + min(max_objects, self.num_objects) + caption_len - 2


def target_sequence(batch: Mapping[str, Any], layout: Layout, config: Any) -> Array:
  """(B, Lc) int32 decoder targets from the batch's labels (module docstring), on device.

  config: config.objectives.captioning (max_objects, next_horizon, contact_threshold).
  """
  t = procedure.targets(batch, config.next_horizon)
  contact = contact_lib.targets(batch, config.contact_threshold)["contact"]
  b = t["action"].shape[0]

  def label(ids, base_id):  # -1 -> <none>
    return jnp.where(ids >= 0, base_id + ids, layout.none).astype(jnp.int32)[:, None]

  def boolean(x):
    return jnp.where(x, layout.true, layout.false).astype(jnp.int32)[:, None]

  def marker(field):
    return jnp.full((b, 1), layout.marker(field), jnp.int32)

  objects = batch["objects"][:, -1]  # (B, num_objects) at now
  first = jnp.argsort(~objects, axis=1, stable=True)[:, :config.max_objects]  # (B, k)
  object_valid = jnp.take_along_axis(objects, first, axis=1)
  caption = batch["caption"][:, 1:-1]  # (B, L - 2): every word slot (BOS first, EOS fits)
  words_valid = ((caption != spec.PAD_ID) & (caption != spec.EOS_ID)
                 & (caption != spec.BOS_ID) & batch["caption_valid"][:, None])
  ones = lambda n: jnp.ones((b, n), jnp.bool_)  # noqa: E731
  pieces = [
      (jnp.full((b, 1), spec.BOS_ID, jnp.int32), ones(1)),
      (marker("action"), ones(1)), (label(t["action"], layout.action_base), ones(1)),
      (marker("subtask"), ones(1)), (label(t["subtask"], layout.subtask_base), ones(1)),
      (marker("objects"), ones(1)),
      ((layout.object_base + first).astype(jnp.int32), object_valid),
      (marker("contact"), ones(1)), (boolean(contact), ones(1)),
      (marker("transition"), ones(1)), (boolean(t["transition"]), ones(1)),
      (marker("next_action"), ones(1)), (label(t["next_action"], layout.action_base), ones(1)),
      (marker("caption"), ones(1)),
      (caption.astype(jnp.int32), words_valid),
      (jnp.full((b, 1), spec.EOS_ID, jnp.int32), ones(1))]
  ids = jnp.concatenate([p[0] for p in pieces], axis=1)  # (B, Lc) with gaps
  valid = jnp.concatenate([p[1] for p in pieces], axis=1)
  order = jnp.argsort(~valid, axis=1, stable=True)  # valid slots first, in order
  ids = jnp.take_along_axis(ids, order, axis=1)
  valid = jnp.take_along_axis(valid, order, axis=1)
  return jnp.where(valid, ids, spec.PAD_ID)


# ------------------------------------------------------------------------- host-side JSON


def parse(ids: Sequence[int] | np.ndarray, layout: Layout) -> Optional[dict[str, Any]]:
  """A decoded sequence -> {field: ids} (label indices, bools, word ids), or None where the
  sequence breaks the grammar (a field missing or out of order, a token of the wrong kind,
  a repeated object, no EOS). A leading BOS is optional; anything after EOS is ignored."""
  seq = [int(i) for i in np.asarray(ids).reshape(-1)]
  if seq and seq[0] == spec.BOS_ID:
    seq = seq[1:]
  pos = 0

  def take() -> Optional[int]:
    nonlocal pos
    if pos >= len(seq):
      return None
    pos += 1
    return seq[pos - 1]

  def expect(field: str) -> bool:
    return take() == layout.marker(field)

  def label(base_id: int, count: int) -> tuple[bool, Optional[int]]:
    i = take()
    if i == layout.none:
      return True, None
    if i is not None and base_id <= i < base_id + count:
      return True, i - base_id
    return False, None

  def boolean() -> Optional[bool]:
    i = take()
    return {layout.true: True, layout.false: False}.get(i)

  out: dict[str, Any] = {}
  if not expect("action"):
    return None
  ok, out["action"] = label(layout.action_base, layout.num_actions)
  if not ok or not expect("subtask"):
    return None
  ok, out["subtask"] = label(layout.subtask_base, layout.num_subtasks)
  if not ok or not expect("objects"):
    return None
  objects = []
  while pos < len(seq) and layout.object_base <= seq[pos] < layout.size:
    objects.append(take() - layout.object_base)
  if len(set(objects)) != len(objects) or not expect("contact"):
    return None
  out["objects"] = objects
  if (contact := boolean()) is None or not expect("transition"):
    return None
  if (transition := boolean()) is None or not expect("next_action"):
    return None
  out["contact"], out["transition"] = contact, transition
  ok, out["next_action"] = label(layout.action_base, layout.num_actions)
  if not ok or not expect("caption"):
    return None
  words = []
  while pos < len(seq) and seq[pos] != spec.EOS_ID:
    i = take()
    if not (i == spec.UNK_ID or spec.EOS_ID < i < layout.vocab_size):
      return None
    words.append(i)
  if take() != spec.EOS_ID:
    return None
  out["caption"] = words
  return out


def render_json(ids: Sequence[int] | np.ndarray, labels: labels_lib.Labels,
                evidence_window: Any = None) -> Optional[str]:
  """A decoded sequence -> the window's JSON answer with names from the manifest's
  vocabularies (actions, subtasks, objects, words), or None when it is not valid.

  {"action": str|null, "subtask": str|null, "objects": [str], "contact": bool,
   "transition": bool, "next_action": str|null, "caption": str} (+ "evidence_window": the
  given value, e.g. [episode, first frame, last frame], when not None).
  """
  fields = parse(ids, Layout.from_labels(labels))
  if fields is None:
    return None
  name = lambda table, i: None if i is None else table[i]  # noqa: E731
  answer = {"action": name(labels.actions, fields["action"]),
            "subtask": name(labels.subtasks, fields["subtask"]),
            "objects": [labels.objects[i] for i in fields["objects"]],
            "contact": fields["contact"], "transition": fields["transition"],
            "next_action": name(labels.actions, fields["next_action"]),
            "caption": labels.words.decode(fields["caption"] + [spec.EOS_ID])}
  if evidence_window is not None:
    answer["evidence_window"] = evidence_window
  return json.dumps(answer)


# --------------------------------------------------------------------------------- decoder


class CrossAttention(nn.Module):
  """Queries x (B, L, W) attend to memory (B, N, W) where mask (B, 1, L, N)."""

  num_heads: int
  head_dim: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  implementation: Optional[str] = None

  @nn.compact
  def __call__(self, x: Array, memory: Array, mask: Array) -> Array:
    proj = lambda name: layers.DenseGeneral(  # noqa: E731
        (self.num_heads, self.head_dim), ("embed", "heads", "kv"), dtype=self.dtype,
        param_dtype=self.param_dtype, name=name)
    q = layers.constrain(proj("query")(x), layers.ACTIVATION_HEADS)
    k = layers.constrain(proj("key")(memory), layers.ACTIVATION_HEADS)
    v = layers.constrain(proj("value")(memory), layers.ACTIVATION_HEADS)
    norm = lambda name: layers.RMSNorm(dtype=self.dtype, param_dtype=self.param_dtype,  # noqa
                                       name=name)
    q, k = norm("query_norm")(q), norm("key_norm")(k)
    out = layers.dot_product_attention(q, k, v, mask, self.implementation)  # (B, L, H, K)
    return layers.DenseGeneral(x.shape[-1], ("heads", "kv", "embed"), axis=(-2, -1),
                               dtype=self.dtype, param_dtype=self.param_dtype, name="out")(out)


class DecoderBlock(nn.Module):
  """Pre-norm: causal self-attention, cross-attention to the memory, MLP."""

  config: Any
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  attention: Optional[str] = None

  @nn.compact
  def __call__(self, x: Array, self_mask: Array, memory: Array, cross_mask: Array) -> Array:
    cfg = self.config
    numerics = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    norm = lambda name: layers.make_norm(cfg.norm, name=name, **numerics)  # noqa: E731
    hd = head_dim(cfg, x.shape[-1])
    x = x + layers.Attention(cfg.num_heads, hd, qk_norm=cfg.qk_norm,
                             implementation=self.attention, name="self_attention",
                             **numerics)(norm("pre_self_norm")(x), self_mask)
    x = x + CrossAttention(cfg.num_heads, hd, implementation=self.attention,
                           name="cross_attention", **numerics)(
        norm("pre_cross_norm")(x), memory, cross_mask)
    x = x + layers.MLP(cfg.mlp_dim, cfg.mlp_activation, name="mlp", **numerics)(
        norm("pre_mlp_norm")(x))
    return layers.constrain(x, layers.ACTIVATION)


class CaptionDecoder(nn.Module):
  """Token ids (B, L) + memory -> logits (B, L, padded vocabulary), fp32."""

  config: Any  # resolved transformer config (heads.stack_config)
  vocab: int  # padded decoder vocabulary
  max_len: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  attention: Optional[str] = None

  def setup(self):
    cfg = self.config
    numerics = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    self.embed = layers.Embed(self.vocab, cfg.width, name="token_embedding", **numerics)
    self.position = self.param("position", nn.with_logical_partitioning(
        layers.EMBED_INIT, ("table", "embed")), (self.max_len, cfg.width), self.param_dtype)
    # an always-visible memory slot: no cross-attention row is ever empty
    self.null_memory = self.param("null_memory", nn.with_logical_partitioning(
        layers.EMBED_INIT, ("table", "embed")), (1, cfg.width), self.param_dtype)
    self.project = layers.DenseGeneral(cfg.width, ("input", "embed"), name="project_memory",
                                       **numerics)
    self.blocks = [DecoderBlock(cfg, attention=self.attention, name=f"layers_{i}", **numerics)
                   for i in range(cfg.num_layers)]
    self.norm = layers.make_norm(cfg.norm, name="norm", **numerics)
    self.logits = layers.DenseGeneral(self.vocab, ("embed", "vocab"), name="logits")

  def memory(self, tokens: Array, valid: Array) -> tuple[Array, Array]:
    """(B, N, D) fused tokens + readouts, (B, N) -> projected memory (B, N + 1, W), mask."""
    mem = self.project(tokens)
    null = jnp.broadcast_to(self.null_memory.astype(mem.dtype), (mem.shape[0], 1,
                                                                 mem.shape[-1]))
    return (jnp.concatenate([null, mem], 1),
            jnp.concatenate([jnp.ones_like(valid[:, :1]), valid], 1))

  def __call__(self, ids: Array, memory: Array, memory_valid: Array) -> Array:
    length = ids.shape[1]
    x = self.embed(ids) + self.position[:length].astype(self.dtype)  # (B, L, W)
    causal = jnp.tril(jnp.ones((length, length), jnp.bool_))
    self_mask = (causal[None, None] & (ids != spec.PAD_ID)[:, None, None, :]) | jnp.eye(
        length, dtype=jnp.bool_)[None, None]  # (B, 1, L, L)
    cross_mask = jnp.broadcast_to(memory_valid[:, None, None, :],
                                  (ids.shape[0], 1, length, memory_valid.shape[1]))
    for block in self.blocks:
      x = block(x, self_mask, memory, cross_mask)
    return self.logits(self.norm(x).astype(jnp.float32))  # (B, L, V) fp32


@base.register("captioning")
class Captioning(base.Objective):
  scored_in_eval = False  # it trains on caption-blind windows; evaluation blinds none

  def setup(self):
    c, m = self.config, self.model_config
    self.layout = Layout.from_config(self.data_config)
    self.length = self.layout.sequence_length(c.max_objects, self.data_config.caption_len)
    self.decoder = CaptionDecoder(heads.stack_config(c.decoder, m.width),
                                  self.layout.padded_size, self.length,
                                  dtype=jnp.dtype(m.dtype),
                                  param_dtype=jnp.dtype(m.param_dtype),
                                  attention=m.attention, name="decoder")

  def _memory(self, ctx: base.Context, rows: Any = lambda x: x) -> tuple[Array, Array]:
    """The decoder's memory of the rows `rows` (x -> its sub-batch) picks."""
    tokens, vis, _, _ = heads.fused_sequence(ctx)
    readouts = [rows(r.astype(tokens.dtype)) for r in ctx.out.readouts.values()]
    tokens = jnp.concatenate([rows(tokens)] + readouts, axis=1)  # (b, N + R, D)
    vis = jnp.concatenate([rows(vis)] + [jnp.ones(r.shape[:2], jnp.bool_) for r in readouts],
                          1)
    return self.decoder.memory(tokens, vis)

  def _mask_logits(self, logits: Array) -> Array:
    return jnp.where(np.arange(logits.shape[-1]) < self.layout.size, logits, -1e9)

  def __call__(self, ctx: base.Context, *, train: bool) -> tuple[Array, dict[str, Array]]:
    # the decoder runs on the windows masked modeling left whole (it scores no other)
    sub = heads.sub_batch(ctx, masked=False)
    seq = target_sequence(jax.tree.map(sub, dict(ctx.batch)), self.layout,
                          self.config)  # (b, Lc)
    memory, memory_valid = self._memory(ctx, sub)
    logits = self._mask_logits(self.decoder(seq[:, :-1], memory, memory_valid))
    target = seq[:, 1:]  # (b, Lc - 1)
    rows = sub(heads.supervised_rows(ctx))  # (b,)
    scored = (target != spec.PAD_ID) & rows[:, None]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, target)
    correct = heads.top1(logits, target)
    is_word = target < self.layout.vocab_size
    is_label = target >= self.layout.none
    return heads.masked_mean(ce, scored), {
        "token_accuracy": heads.masked_mean(correct, scored),
        "label_accuracy": heads.masked_mean(correct, scored & is_label),
        "word_accuracy": heads.masked_mean(correct, scored & is_word & (target > spec.EOS_ID)),
        # of the whole batch
        "supervised_fraction": jnp.sum(rows.astype(jnp.float32)) / ctx.batch["task"].shape[0]}

  def generate(self, ctx: base.Context) -> Array:
    """Greedy decoding, unconstrained: (B, Lc) int32 ids, BOS first, PAD after EOS."""
    memory, memory_valid = self._memory(ctx)
    b, length = memory.shape[0], self.length
    out = jnp.full((b, length), spec.PAD_ID, jnp.int32).at[:, 0].set(spec.BOS_ID)

    def body(decoder, carry):
      out, t, done = carry
      logits = self._mask_logits(decoder(out[:, :-1], memory, memory_valid))
      token = jnp.argmax(jax.lax.dynamic_index_in_dim(logits, t, 1, keepdims=False), -1)
      token = jnp.where(done, spec.PAD_ID, token).astype(jnp.int32)
      out = jax.lax.dynamic_update_index_in_dim(out, token[:, None], t + 1, 1)
      return out, t + 1, done | (token == spec.EOS_ID)

    carry = body(self.decoder, (out, jnp.zeros((), jnp.int32), jnp.zeros((b,), jnp.bool_)))
    # the first step ran outside the loop, so `init` creates the parameters there
    carry = nn.while_loop(lambda _, c: (c[1] < length - 1) & ~jnp.all(c[2]), body,
                          self.decoder, carry)
    return carry[0]

  def predict(self, ctx: base.Context) -> dict[str, Array]:
    """{"tokens": (B, Lc) greedy decoding, "target": (B, Lc) the target sequence}; render
    with `render_json(tokens[i], corpus.labels)`. Decode windows that do not see their
    caption (caption_valid False, or language dropped), as in training: a window that sees
    it is answered by copying."""
    return {"tokens": self.generate(ctx),
            "target": target_sequence(ctx.batch, self.layout, self.config)}
