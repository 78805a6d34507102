"""What every evaluator shares: the splits it reads, its interface and the registry.

The protocol is fixed here, not in each evaluator: features and scalers are fitted on the
`train` store, the probe's candidates are compared on `val`, and `test` is only scored,
with the probe chosen on val (robustness and subsets reuse it unchanged: no refit).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

import ml_collections
import numpy as np

from xefm_jax import registry
from xefm_jax.eval import embed
from xefm_jax.eval import probes


@dataclasses.dataclass
class Data:
  """The three splits' stores and the settings evaluators share.

  window: W context frames; base_stride: frames between the windows of the eval stride
  (the misalignment shift is 8 of them); fps: frames per second of the window's frames.
  """

  train: embed.Store
  val: embed.Store
  test: embed.Store
  grid: probes.Grid = probes.Grid()
  seed: int = 0
  window: int = 16
  base_stride: int = 4
  fps: float = 20.0
  max_train: int = 0  # 0: every train row

  def split(self, name: str) -> embed.Store:
    return {"train": self.train, "val": self.val, "test": self.test}[name]


def features(store: embed.Store, feature_set: str, variant: str,
             swap: Optional[Mapping[str, str]] = None) -> np.ndarray:
  """(N, F) float64 features of `variant` (or the variant `swap` puts in its place)."""
  name = (swap or {}).get(variant, variant)
  return np.nan_to_num(store.features(feature_set, name).astype(np.float64))


def train_rows(data: Data, mask: np.ndarray) -> np.ndarray:
  """Indices of usable train rows, evenly thinned to `data.max_train` (probe cost)."""
  idx = np.flatnonzero(mask)
  if data.max_train and len(idx) > data.max_train:
    idx = idx[np.linspace(0, len(idx) - 1, data.max_train).round().astype(int)]
  return idx


def test_mask(store: embed.Store, rows: Optional[np.ndarray]) -> np.ndarray:
  """(N,) bool: every row, or the subset `rows` (bool mask or indices)."""
  out = np.zeros(len(store), bool)
  if rows is None:
    out[:] = True
  elif np.asarray(rows).dtype == bool:
    out[:] = rows
  else:
    out[np.asarray(rows, int)] = True
  return out


class Evaluator:
  """Base of the evaluators (see the package docstring)."""

  def fit(self, task: ml_collections.ConfigDict, data: Data, feature_set: str) -> Any:
    raise NotImplementedError

  def score(self, task: ml_collections.ConfigDict, data: Data, feature_set: str, fitted: Any,
            swap: Optional[Mapping[str, str]] = None,
            rows: Optional[np.ndarray] = None) -> dict[str, float]:
    raise NotImplementedError

  def describe(self, fitted: Any) -> dict[str, Any]:
    """How the probe was chosen (kind, parameters, val score), for the report."""
    probe = fitted if isinstance(fitted, probes.Probe) else getattr(fitted, "probe", None)
    if probe is None:
      return {}
    return {"kind": probe.kind, "params": probe.params, "val_score": float(probe.val_score)}


EVALUATORS: registry.Registry = registry.Registry("evaluator", "xefm_jax.eval.evaluators")
register = EVALUATORS.register


def get(name: str) -> Evaluator:
  """An instance of the evaluator registered as `name` (xefm_jax/eval/evaluators/<name>.py)."""
  return EVALUATORS.get(name)()
