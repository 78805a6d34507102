"""The RLDS export (data_pipelines/export/rlds.py): built by two array tasks and merged, then
read back through tensorflow-datasets' array_record data sources and a Grain loader without
TensorFlow; episodes, steps, flags, actions, language and images against the corpus."""

import importlib.util
import json
import sys

import grain
import numpy as np
import tensorflow_datasets as tfds

from data_pipelines.export import common
from data_pipelines.export import rlds
from xefm_jax.data import actions
from xefm_jax.data import source as source_lib
from xefm_jax.data import xperience


def test_rlds_export_reads_back_without_tensorflow(shard_corpus, tmp_path):
  out = tmp_path / "rlds"
  opts = rlds.Options(views=("stereo_left",), size=(32, 24), step=2, rotation="rot6d")
  first = rlds.run(str(shard_corpus), str(out), opts, task=(0, 2), progress=False)
  assert not first["merged"]
  summary = rlds.run(str(shard_corpus), str(out), opts, task=(1, 2), progress=False)
  assert summary["merged"]
  corpus = source_lib.Corpus(shard_corpus)
  space = opts.space(corpus.options.fps)
  builder = tfds.builder_from_directory(out / rlds.NAME / rlds.DATASET_VERSION)
  sources = builder.as_data_source()
  assert type(sources["train"]).__name__ == "ArrayRecordDataSource"
  by_key = {common.episode_key(e["episode"]): (i, e) for i, e in enumerate(corpus.episodes)}
  want = {}
  for e in corpus.episodes:
    want.setdefault(e["split"], set()).add(common.episode_key(e["episode"]))
  assert set(sources) == set(want)
  for split, source in sources.items():
    got = {x["episode_metadata"]["episode_id"].decode() for x in source}
    assert got == want[split]
  episode = sources["train"][0]
  meta = {k: v.decode() for k, v in episode["episode_metadata"].items()}
  ci, ep = by_key[meta["episode_id"]]
  assert meta["split"] == "train" and meta["file_path"] == ep["episode"]
  assert (meta["video_errors"] == "") == ("stereo_left" in ep["views"])
  steps = list(episode["steps"])
  n = len(range(0, ep["length"], 2))
  assert len(steps) == n
  flags = {k: [bool(s[k]) for s in steps] for k in ("is_first", "is_last", "is_terminal")}
  assert flags["is_first"] == [True] + [False] * (n - 1)
  assert flags["is_last"] == flags["is_terminal"] == [False] * (n - 1) + [True]
  assert [float(s["reward"]) for s in steps] == [0.0] * (n - 1) + [1.0]
  assert {float(s["discount"]) for s in steps} == {1.0}
  ref = actions.read_episode(corpus, ci, space)
  np.testing.assert_array_equal(np.stack([s["action"] for s in steps]), ref["action"])
  np.testing.assert_array_equal(np.stack([s["observation"]["state"] for s in steps]),
                                ref["state"])
  labels = corpus.read_episode(ci, ("labels",))
  for t in range(0, n, 7):
    sub = labels["subtask"][2 * t]
    if sub >= 0:
      assert steps[t]["language_instruction"].decode() == corpus.labels.subtasks[sub]
  # images: JPEG-decoded frames of the raw view at the step's frame
  raw = common.raw_root(corpus) / ep["episode"] / f"stereo_left{xperience.VIDEO_SUFFIX}"
  frames, err = common.read_view(raw, (24, 32), 2, n)
  assert err is None
  for t in (0, n // 2, n - 1):
    img = steps[t]["observation"]["stereo_left"]
    assert img.shape == (24, 32, 3) and img.dtype == np.uint8
    assert np.abs(img.astype(float) - frames[t]).mean() < 8.0
  # a Grain loader over the data source
  loader = grain.MapDataset.source(sources["val"]).map(lambda x: len(x["steps"]))
  assert sorted(loader) == sorted(len(range(0, by_key[k][1]["length"], 2))
                                  for k in want["val"])
  manifest = json.loads((out / rlds.MANIFEST).read_text())
  assert manifest["episode_split_counts"] == {"train": 4, "val": 2, "test": 2}
  assert json.loads((out / actions.SPACE_FILE).read_text())["rotation"] == "rot6d"
  # written and read with no TensorFlow (CI installs none either)
  assert "tensorflow" not in sys.modules and importlib.util.find_spec("tensorflow") is None
