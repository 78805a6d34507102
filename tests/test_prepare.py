"""data_pipelines/prepare.py: a corpus for a run given none, each stage skipped once done."""

from configs import local
from data_pipelines import prepare
from xefm_jax.data import shards, source


def test_prepare_gates_and_shreds_a_raw_root_once(raw_corpus, tmp_path):
  data = local.get_config("tiny").data
  data.raw = str(raw_corpus)
  out = prepare.prepare(tmp_path, data, workers=1, progress=False)
  assert out == tmp_path / "data" / "shards"
  corpus = source.Corpus(out)  # complete, and at the config's sizes
  window = corpus.window_spec(data)
  assert (window.view_size, window.depth_size) == (data.view_size, data.depth_size)
  stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "data" / "stage0.json",
                                              out / shards.MANIFEST_FILE)}
  assert prepare.prepare(tmp_path, data, workers=1, progress=False) == out
  assert stamps == {p: p.stat().st_mtime_ns for p in stamps}  # nothing redone


def test_prepare_uses_a_given_shard_root_as_is(tmp_path):
  data = local.get_config("tiny").data
  data.shards = str(tmp_path / "somewhere")
  assert prepare.prepare(tmp_path, data) == tmp_path / "somewhere"
  assert not (tmp_path / "data").exists()
