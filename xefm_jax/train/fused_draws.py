"""An initialiser's random draws served from one draw per bit width.

A Flax initialiser draws once per parameter (a key folded in per module, then a normal or
truncated normal per kernel): ~175 `random_bits` calls for configs/local.py:tiny. XLA:CPU
expands every call into its own copy of the generator (~600 HLO lines each for rbg's
Philox, more for threefry's rounds), and compiling those copies is most of the
initialiser's compile: 186 draws of assorted shapes compile in 11-17 s (unsafe_rbg) or
33-40 s (threefry), one draw of their total size in 2.6-2.8 s (2 cores).

`FusedDraws(jaxpr)` evaluates an initialiser's program (a ClosedJaxpr, as
`state.Initializer` traces it) with every `random_bits` call replaced by the next slice of
one `jax.random.bits` draw per bit width, drawn by a program of its own. Each parameter
still gets its own independent bits from the same generator; what the initialisers do with
them (scaling, truncation, erf_inv) is unchanged, so every parameter's distribution is the
one its initialiser defines. Only the values differ from the per-call draws: a checkpoint
made one way does not match a seed drawn the other, and two calls with the same key (the
same bits, in the original) get different bits here.

A scan whose body draws (a scanned layer stack) reads a (length, n) block, one row per
iteration; calls inside other loops and branches (while, cond) keep their own draws. Dead
code is removed first (the forward pass `init` traces to learn shapes, masking's and
dropout's draws), so the draw covers only what reaches the outputs (XLA removes the key
derivations that only fed replaced draws).

The draw is one flat array: XLA cannot give each device only its parameters' bits, so a
sharded multi-host model should keep the per-parameter draws (`config.train.fused_init_draws`
is off in the stage configs, on in configs/local.py).
"""

from __future__ import annotations

import collections
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax._src.interpreters import partial_eval as pe  # dce_jaxpr: no public equivalent
from jax.extend import core as jax_core
from jax.extend.core import primitives as prims

_BITS = prims.random_bits_p
_JIT = prims.jit_p
_SCAN = prims.scan_p
# The draw's key is the initialiser's key folded in with this (its own keys are its splits
# and fold-ins by module name).
POOL = 0x1F5ED


def _live(jaxpr: jax_core.Jaxpr) -> jax_core.Jaxpr:
  """`jaxpr` without what its outputs do not need (nested jits and loops included); keeps
  every input."""
  return pe.dce_jaxpr(jaxpr, [True] * len(jaxpr.outvars), instantiate=True)[0]


def _size(eqn: jax_core.JaxprEqn) -> int:
  return int(np.prod(eqn.outvars[0].aval.shape, dtype=np.int64))


def draw_sizes(jaxpr: jax_core.Jaxpr) -> dict[int, int]:
  """{bit width: elements} the random_bits calls of `jaxpr` draw in all (nested jits
  entered; a scan's body counted once per iteration)."""
  sizes: dict[int, int] = collections.Counter()
  for eqn in jaxpr.eqns:
    if eqn.primitive is _BITS:
      sizes[eqn.params["bit_width"]] += _size(eqn)
    elif eqn.primitive is _JIT:
      sizes.update(draw_sizes(eqn.params["jaxpr"].jaxpr))
    elif eqn.primitive is _SCAN:
      body = draw_sizes(eqn.params["jaxpr"].jaxpr)
      sizes.update({w: n * eqn.params["length"] for w, n in body.items()})
  return dict(sizes)


class _Pool:
  """Consecutive slices of the flat draws ({bit width: uint array})."""

  def __init__(self, flat: dict[int, jax.Array]):
    self._flat = flat
    self._offset: dict[int, int] = collections.Counter()

  def take(self, width: int, shape: tuple[int, ...]) -> jax.Array:
    """The next prod(shape) bits of this width, in `shape`."""
    n = int(np.prod(shape, dtype=np.int64))
    start = self._offset[width]
    self._offset[width] += n
    return jax.lax.slice_in_dim(self._flat[width], start, start + n).reshape(shape)

  def check_used(self) -> None:
    sizes = {w: int(x.shape[0]) for w, x in self._flat.items()}
    if dict(self._offset) != sizes:  # draw_sizes and _eval disagree: a bug here
      raise AssertionError(f"fused draws: took {dict(self._offset)} of {sizes}")


def _eval(jaxpr: jax_core.Jaxpr, consts: Sequence[Any], args: Sequence[Any],
          pool: _Pool) -> list[Any]:
  """jax.core.eval_jaxpr, with nested jits inlined and random_bits taken from `pool`."""
  env: dict = {}

  def read(v):
    return v.val if isinstance(v, jax_core.Literal) else env[v]
  env.update(zip(jaxpr.constvars, consts))
  env.update(zip(jaxpr.invars, args))
  for eqn in jaxpr.eqns:
    invals = [read(v) for v in eqn.invars]
    if eqn.primitive is _BITS:
      outs = [pool.take(eqn.params["bit_width"], eqn.outvars[0].aval.shape)]
    elif eqn.primitive is _JIT:
      sub = eqn.params["jaxpr"]
      outs = _eval(sub.jaxpr, sub.consts, invals, pool)
    elif eqn.primitive is _SCAN and (sizes := draw_sizes(eqn.params["jaxpr"].jaxpr)):
      outs = _scan(eqn, invals, pool, sizes)
    else:
      with eqn.ctx.manager:  # as jax.core.eval_jaxpr binds
        outs = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
      outs = outs if eqn.primitive.multiple_results else [outs]
    env.update(zip(eqn.outvars, outs))
  return [read(v) for v in jaxpr.outvars]


def _scan(eqn: jax_core.JaxprEqn, invals: list[Any], pool: _Pool,
          sizes: dict[int, int]) -> list[Any]:
  """A scan whose body draws `sizes` per iteration: each iteration reads its own row of a
  block of the pool, passed in as one more scanned input."""
  p = eqn.params
  body, length = p["jaxpr"], p["length"]
  rows = {w: pool.take(w, (length, n)) for w, n in sizes.items()}
  consts = invals[:p["num_consts"]]
  carry = invals[p["num_consts"]:p["num_consts"] + p["num_carry"]]
  xs = invals[p["num_consts"] + p["num_carry"]:]

  def step(carry, x):
    xs_i, row = x
    row_pool = _Pool(row)
    outs = _eval(body.jaxpr, body.consts, [*consts, *carry, *xs_i], row_pool)
    row_pool.check_used()
    return outs[:p["num_carry"]], outs[p["num_carry"]:]
  carry, ys = jax.lax.scan(step, carry, (xs, rows), length=length, reverse=p["reverse"],
                           unroll=p["unroll"])
  return [*carry, *ys]


class FusedDraws:
  """A program whose random_bits calls read one flat draw per bit width.

  Two programs, compiled apart: `draw(key)` (one generator call per bit width) and
  `apply(flat, *args)` (the original outputs, no generator). In one program
  XLA:CPU would fuse the generator into every slice's consumer, one copy per parameter
  again (an optimization barrier does not stop it: XLA:CPU removes barriers first)."""

  def __init__(self, closed: jax_core.ClosedJaxpr):
    self._jaxpr = _live(closed.jaxpr)
    self._consts = closed.consts
    self.sizes = draw_sizes(self._jaxpr)

  def draw(self, key: jax.Array) -> dict[int, jax.Array]:
    """{bit width: flat uint draw} for `apply`, from a typed key."""
    return {w: jax.random.bits(jax.random.fold_in(key, w), (n,), dtype=jnp.dtype(f"uint{w}"))
            for w, n in self.sizes.items()}

  def apply(self, flat: dict[int, jax.Array], *args: Any) -> list[Any]:
    """The program's outputs on `args`, its draws the consecutive slices of `flat` (call it
    under jax.jit: it binds primitives)."""
    pool = _Pool(flat)
    outs = _eval(self._jaxpr, self._consts, args, pool)
    pool.check_used()
    return outs


def jit_init(fn: Callable[[jax.Array], Any], key: jax.Array, out_shardings: Any = None,
             draw_sharding: Optional[jax.sharding.Sharding] = None) -> Any:
  """`jax.jit(fn, out_shardings=out_shardings)(key)` with fn's draws fused: the flat draw
  (keyed by `key` folded in with POOL, placed by `draw_sharding`) and the rest compiled as
  two programs. `fn`: an initialiser of a typed key, e.g. `lambda k: model.init(k, x)`."""
  closed, out = jax.make_jaxpr(fn, return_shape=True)(key)
  draws = FusedDraws(closed)
  flat = jax.jit(draws.draw, out_shardings=draw_sharding)(jax.random.fold_in(key, POOL))
  leaf_shardings = None if out_shardings is None else jax.tree.leaves(out_shardings)
  leaves = jax.jit(draws.apply, out_shardings=leaf_shardings)(flat, key)
  return jax.tree.unflatten(jax.tree.structure(out), leaves)
