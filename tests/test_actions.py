"""The hand action space (xefm_jax/data/actions.py) on real windows of the shared corpus:
the round trip actions -> normalised -> de-normalised -> integrated reproduces the stored
hand joints within the stated tolerance, and the statistics read train episodes only."""

import json

import numpy as np
import pytest

from configs import common as config_common
from xefm_jax.data import actions
from xefm_jax.data import geometry
from xefm_jax.data import source as source_lib


def _rotation_angle(Ra, Rb):
  return np.linalg.norm(geometry.matrix_to_axis_angle(Ra @ np.swapaxes(Rb, -1, -2)), axis=-1)


@pytest.mark.parametrize("rotation", ["rotvec", "rot6d"])
def test_round_trip_on_real_windows(shard_corpus, rotation):
  corpus = source_lib.Corpus(shard_corpus)
  cfg = config_common.data_config()
  cfg.actions.rotation = rotation
  space = actions.ActionSpace.from_config(cfg.actions, fps=corpus.options.fps)
  assert space.chunk == 16 and space.rate_hz == 20.0
  stats = actions.compute_stats(corpus, space)
  cfg.update(view_size=corpus.options.video_size, depth_size=corpus.options.depth_size,
             caption_len=corpus.options.caption_len)
  spec = corpus.window_spec(cfg)
  src = source_lib.WindowSource(corpus, "train", spec, window_stride=4)
  checked = 0
  for i in range(len(src)):
    w = src[i]
    arr = actions.window_arrays(space, w)
    for start in range(0, len(arr["action"]) - space.chunk):
      act, mask = actions.chunks(arr["action"], arr["action_mask"], [start], space.chunk)
      act, mask = act[0], mask[0]
      hands = [h for h in range(2) if mask[:, h].all()]
      if not hands:
        continue
      vmask = actions.action_value_mask(space, mask)
      back = actions.denormalise(actions.normalise(act, vmask, stats["action"]), vmask,
                                 stats["action"])
      assert np.array_equal(back == 0, ~vmask | (act == 0))
      R, p, fing = actions.integrate(space, arr["R"][start], arr["p"][start], back)
      joints = actions.joints_from(R, p, fing)  # (K, 2, 21, 3)
      # independent reference: the stored joints of the window, in metres
      true = w["hands"][start + 1:start + 1 + space.chunk].astype(np.float64)
      for h in hands:
        err_t = np.abs(p[:, h] - true[:, h, 0]).max()
        err_r = _rotation_angle(R[:, h], arr["R"][start + 1:start + 1 + space.chunk, h]).max()
        err_j = np.linalg.norm(joints[:, h] - true[:, h], axis=-1).max()
        assert err_t < actions.TOLERANCE["translation_m"], err_t
        assert err_r < actions.TOLERANCE["rotation_rad"], err_r
        assert err_j < actions.TOLERANCE["joints_m"], err_j
        checked += 1
      # a masked hand's steps are zero, and stay zero through normalisation
      for h in set(range(2)) - set(hands):
        sl = slice(h * space.hand_action_dim, (h + 1) * space.hand_action_dim)
        assert not act[~mask[:, h], sl].any()
  assert checked >= 10  # the fixture's tracked stretches give a few dozen chunks


def test_stats_read_train_only(shard_corpus, tmp_path):
  corpus = source_lib.Corpus(shard_corpus)
  space = actions.ActionSpace(fingers="tips")
  seen = []

  def read(i):
    seen.append(i)
    return actions.read_episode(corpus, i, space)

  stats = actions.compute_stats(corpus, space, read=read)
  train = {i for i, e in enumerate(corpus.episodes) if e["split"] == "train"}
  assert set(seen) == train and len(train) < len(corpus.episodes)
  # independent: the mean and std of the valid train steps of every dimension
  arrs = [actions.read_episode(corpus, i, space) for i in sorted(train)]
  a = np.concatenate([x["action"] for x in arrs])
  m = np.concatenate([x["action_mask"] for x in arrs])
  d = space.hand_action_dim  # the right hand's wrist dx
  right = a[m[:, 1], d]
  assert stats["action"]["count"][d] == len(right) > 0
  np.testing.assert_allclose(stats["action"]["mean"][d], right.mean(), rtol=1e-5, atol=1e-9)
  np.testing.assert_allclose(stats["action"]["std"][d], right.std(), rtol=1e-4)
  # a val/test episode with different values would change nothing
  others = [i for i in range(len(corpus.episodes)) if i not in train]
  poisoned = actions.compute_stats(corpus, space, read=lambda i: (
      {k: (v * 0 + 1e6 if k in ("action", "state") else v) for k, v in read(i).items()}
      if i in others else read(i)))
  assert poisoned["action"]["mean"] == stats["action"]["mean"]
  # the files beside an export
  report = actions.retargeting_report(corpus, space, {i: read(i) for i in range(len(
      corpus.episodes))})
  actions.write(tmp_path, space, stats, report)
  desc = json.loads((tmp_path / actions.SPACE_FILE).read_text())
  assert desc["action"]["dim"] == space.action_dim == 2 * (3 + 3 + 15)
  assert desc["action"]["slices"]["right_fingers"] == [27, 42]
  assert actions.load_stats(tmp_path / actions.STATS_FILE, space)["split"] == "train"
  gaps = json.loads((tmp_path / actions.REPORT_FILE).read_text())["tracking_gaps"]
  assert set(gaps["per_split"]) == {"train", "val", "test"}
  with pytest.raises(actions.ActionError, match="names"):
    actions.load_stats(tmp_path / actions.STATS_FILE, actions.ActionSpace())
