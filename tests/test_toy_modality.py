"""The promise that a modality is one stream file + one encoder file + a config entry, kept:
a toy 3-axis magnetometer (tests/toy_magnetometer_*.py) is shredded, read as windows,
trained end to end on the tiny motion-side model (tests/motion_ladder.py:t1) and evaluated
through its own input variant, with no other file knowing its name."""

import importlib
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import SHRED
from data_pipelines import shred
from test_train import only
from train_runs import FLAGS, ROOT
from xefm_jax.data import pipeline
from xefm_jax.data import shards
from xefm_jax.data import source as source_lib
from xefm_jax.data import spec as spec_lib
from xefm_jax.data import streams
from xefm_jax.eval import variants as variants_lib

# The launchers in a subprocess, with the toy's two files imported first (what registers
# them: the test's stand-in for a modality living in xefm_jax/).
RUN = ("import runpy, sys; sys.path.insert(0, 'tests'); import toy_magnetometer_stream, "
       "toy_magnetometer_encoder; script = sys.argv[1]; sys.argv = sys.argv[1:]; "
       "runpy.run_path(script, run_name='__main__')")
CONFIG = "--config=tests/toy_magnetometer_config.py"


@pytest.fixture(scope="module")
def toy_corpus(raw_corpus, shard_corpus, tmp_path_factory):
  """The shared raw corpus shredded with the toy stream registered (this module only; the
  shared shards are made first, without it)."""
  del shard_corpus
  toy = importlib.import_module("toy_magnetometer_stream")  # registers on first import
  if toy.MAGNETOMETER not in streams.registered():  # imported by an earlier module run
    streams.register(toy.MAGNETOMETER)
  out = tmp_path_factory.mktemp("toy") / "shards"
  shred.run(raw_corpus, out, options=shards.ShredOptions(**SHRED), progress=False)
  yield out
  streams.base.unregister("magnetometer")


def test_shards_windows_and_variant_of_the_toy_stream(toy_corpus, shard_corpus):
  manifest = json.loads((toy_corpus / shards.MANIFEST_FILE).read_text())
  assert manifest["streams"] == [*streams.BUILTIN, "magnetometer"]
  assert manifest["schema_version"] == shards.SCHEMA_VERSION
  assert "magnetometer" in manifest["stats"]
  corpus = source_lib.Corpus(toy_corpus)
  assert corpus.layout.flag_columns[-1] == "magnetometer_valid"
  # without the toy's definition the corpus is refused, naming the stream
  streams.base.unregister("magnetometer")
  try:
    with pytest.raises(shards.ShardError, match="streams \\['magnetometer'\\]"):
      source_lib.Corpus(toy_corpus)
  finally:
    streams.register(corpus.layout.defs[-1])
  # the built-in corpus still reads with the toy registered: its layout is its own
  assert "magnetometer" not in source_lib.Corpus(shard_corpus).layout.stream_by_name
  spec = spec_lib.WindowSpec(view_size=16, depth_size=8, frames=4, future=4, caption_len=8,
                             num_objects=len(corpus.labels.objects))
  src = source_lib.WindowSource(corpus, "train", spec, window_stride=5)
  batch = pipeline.to_batch([src[i] for i in range(4)], spec,
                            pipeline.Normaliser(corpus.stats), corpus.layout.defs)
  field = batch["magnetometer"]
  assert field.shape == (4, 4, 3) and batch["magnetometer_valid"].any()
  assert batch["next"]["magnetometer"].shape == (4, 4, 3)
  fields = spec_lib.window_fields(spec)
  assert fields["magnetometer"] == ((4, 3), np.float32)
  # The raw field has the earth field's norm wherever the pose is valid.
  raw = src[0]
  norms = np.linalg.norm(raw["magnetometer"][raw["magnetometer_valid"]], axis=-1)
  field_world = importlib.import_module("toy_magnetometer_stream").FIELD_WORLD
  np.testing.assert_allclose(norms, np.linalg.norm(field_world), rtol=1e-5)
  # Its input variant keeps it alone; the others drop it.
  mag = variants_lib.Variant("magnetometer", ("magnetometer",))
  kept = variants_lib.apply(mag, batch, spec.views, 0)
  assert np.array_equal(kept["magnetometer"], field) and not kept["imu_valid"].any()
  gone = variants_lib.apply(variants_lib.Variant("imu", ("imu",)), batch, spec.views, 0)
  assert not gone["magnetometer_valid"].any() and not gone["magnetometer"].any()


@pytest.mark.slow
def test_toy_modality_trains_and_evaluates_end_to_end(toy_corpus, train_env, tmp_path):
  work = tmp_path / "run"
  flags = [f for f in FLAGS if not f.startswith("--config=")]
  # masked modeling alone: the objective that reads the toy's tokens (the others add only
  # compile time here; every objective trains together in test_train's reference run)
  train = subprocess.run(
      [sys.executable, "-c", RUN, "launch/train.py", f"{CONFIG}:tiny", *flags,
       f"--workdir={work}", f"--config.data.shards={toy_corpus}", "--config.train.steps=4",
       "--config.train.ckpt_every=4", "--config.train.eval_every=4",
       *only("masked_modeling")],
      cwd=ROOT, env=train_env, capture_output=True, text=True)
  assert train.returncode == 0, train.stderr[-4000:]
  rows = [json.loads(x) for x in (work / "metrics.jsonl").read_text().splitlines()]
  losses = [r["masked_modeling/magnetometer_loss"] for r in rows
            if "masked_modeling/magnetometer_loss" in r]
  assert len(losses) >= 4 and np.isfinite(losses).all()
  ev = subprocess.run(
      [sys.executable, "-c", RUN, "launch/eval.py", f"{CONFIG}:eval", f"--workdir={work}"],
      cwd=ROOT, env=train_env, capture_output=True, text=True)
  assert ev.returncode == 0, ev.stderr[-4000:]
  report = json.loads((work / "eval" / "4" / "report.json").read_text())
  entry = report["tasks"]["magnetometer_to_hand_pose"]
  for fs in ("model", "handcrafted"):
    assert entry["probe"][fs]["kind"] in ("linear", "constant"), fs
