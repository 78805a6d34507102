"""An untracked hand is stored as zeros in real files and as NaN in some: the reader, the
Stage-0 gate, the shredder (arrays, validity flags, train statistics) and the hand-crafted
baseline must see the same thing for both forms, and nothing may learn from the zeros.

Two raw corpora are made from the same generated episodes: one with every untracked hand
row as zeros (the real files' form), one with those rows as NaN. Everything downstream of
the reader must be identical between them.
"""

import pathlib
import shutil

import h5py
import numpy as np
import pytest

from conftest import SHRED
from data_pipelines import shred
from data_pipelines import validate
from xefm_jax.data import episode as episode_lib
from xefm_jax.data import pipeline as pipeline_lib
from xefm_jax.data import shards
from xefm_jax.data import source as source_lib
from xefm_jax.data import spec as spec_lib
from xefm_jax.data import xperience
from xefm_jax.eval import handcrafted

EPISODES = 3  # one per session: enough for a train split with statistics


def _untracked(f: h5py.File, side: str) -> np.ndarray:
  """(N,) rows of a hand that are untracked in either form."""
  joints = f[f"hand_mocap/{side}_joints_3d"][()]
  return ~np.isfinite(joints).all((-1, -2)) | ~(joints != 0).any((-1, -2))


def _restore_as(ann: pathlib.Path, fill: float) -> int:
  """Rewrites every untracked hand row (all hand_mocap fields) with `fill`; returns rows."""
  rows = 0
  with h5py.File(ann, "r+") as f:
    for side in xperience.HANDS:
      lost = _untracked(f, side)
      rows += int(lost.sum())
      for key in [k for k in xperience.KEY_BY_NAME if k.startswith(f"hand_mocap/{side}_")]:
        value = f[key][()]
        value[lost] = fill
        f[key][...] = value
  return rows


@pytest.fixture(scope="module")
def corpora(raw_corpus, tmp_path_factory):
  """{"zeros": raw root, "nan": raw root}, the same episodes in the two forms."""
  sessions = sorted(p for p in raw_corpus.iterdir() if p.is_dir())[:EPISODES]
  roots = {}
  for form, fill in (("zeros", 0.0), ("nan", np.nan)):
    root = tmp_path_factory.mktemp(f"raw-{form}")
    for s in sessions:
      dst = root / s.name / "ep1"
      shutil.copytree(s / "ep1", dst)
      assert _restore_as(dst / xperience.ANNOTATION_FILE, fill) > 0  # some untracked rows
    roots[form] = root
  return roots


def test_reader_reads_zero_and_nan_rows_as_untracked(corpora):
  for path in sorted(corpora["zeros"].glob("*/ep1")):
    other = corpora["nan"] / path.relative_to(corpora["zeros"])
    with h5py.File(path / xperience.ANNOTATION_FILE, "r") as f:
      lost = np.stack([_untracked(f, s) for s in xperience.HANDS], -1)  # (N, 2)
    with episode_lib.Episode(path) as a, episode_lib.Episode(other) as b:
      ha, hb = a.hands(), b.hands()
    np.testing.assert_array_equal(ha.valid, ~lost[:len(ha.valid)])
    np.testing.assert_array_equal(ha.valid, hb.valid)
    np.testing.assert_array_equal(ha.joints, hb.joints)
    assert np.isfinite(ha.joints).all() and (ha.joints[~ha.valid] == 0).all()


def test_gate_reports_the_same_valid_fractions(corpora):
  for path in sorted(corpora["zeros"].glob("*/ep1")):
    a = validate.validate_episode(path)
    b = validate.validate_episode(corpora["nan"] / path.relative_to(corpora["zeros"]))
    assert a["status"] == b["status"] == "pass", (a["reasons"], b["reasons"])
    assert a["valid_fraction"] == b["valid_fraction"]
    hands = [a["valid_fraction"][f"{s}_hand"] for s in xperience.HANDS]
    assert min(hands) < 1.0  # the zero rows were not counted as tracked


def test_shards_statistics_and_baseline_features_are_identical(corpora, tmp_path):
  out = {form: tmp_path / form for form in corpora}
  for form, raw in corpora.items():
    shred.run(raw, out[form], options=shards.ShredOptions(**SHRED), progress=False)
  a, b = source_lib.Corpus(out["zeros"]), source_lib.Corpus(out["nan"])
  assert a.manifest["stats"] == b.manifest["stats"]
  for d in sorted(out["zeros"].glob("shard-*")):
    for arr in a.layout.arrays:
      np.testing.assert_array_equal(
          shards.open_array(d, arr.name).read().result(),
          shards.open_array(out["nan"] / d.name, arr.name).read().result(), err_msg=arr.name)
  # The hand-crafted baseline on the windows the model would see.
  spec = spec_lib.WindowSpec(view_size=16, depth_size=8, frames=4, future=6, caption_len=8,
                             num_objects=len(a.labels.objects))
  norm = pipeline_lib.Normaliser(a.manifest["stats"])
  feats = []
  for corpus in (a, b):
    src = source_lib.WindowSource(corpus, "train", spec, window_stride=5)
    batch = pipeline_lib.to_batch([src[i] for i in range(len(src))], spec, norm)
    assert not batch["hands_valid"].all()
    feats.append(handcrafted.statistics("mocap", batch, len(corpus.labels.words)))
  assert np.isfinite(feats[0]).all()
  np.testing.assert_array_equal(feats[0], feats[1])
