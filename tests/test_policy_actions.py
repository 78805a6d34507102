"""The policy objective's target is the hand action space: its in-graph (jax.numpy) action
chunk on a pipeline batch (normalised hands) equals actions.py's numpy actions of the same
frames computed from the raw windows' joints in metres, with the same tracking-gap mask."""

import jax
import numpy as np
import pytest

from configs import local
from xefm_jax import config_check
from xefm_jax.data import actions
from xefm_jax.data import pipeline
from xefm_jax.data import source as source_lib
from xefm_jax.objectives import policy
from xefm_jax.train import loop

WINDOWS = 8


@pytest.mark.parametrize("rotation,step,chunk,future", [("rotvec", 1, 4, 4),
                                                        ("rot6d", 2, 3, 6)])
def test_target_is_the_action_space(shard_corpus, rotation, step, chunk, future):
  corpus = source_lib.Corpus(shard_corpus)
  cfg = local.get_config("tiny")
  cfg.data.future = future
  cfg.data.actions.update(rotation=rotation, step=step, chunk=chunk)
  loop.with_corpus_sizes(cfg, corpus)  # the manifest's hand statistics -> config.data
  spec = corpus.window_spec(cfg.data)
  src = source_lib.WindowSource(corpus, "train", spec, window_stride=4)
  raw = [src[i] for i in range(0, len(src), max(1, len(src) // WINDOWS))][:WINDOWS]
  raw[0]["hands_valid"][spec.frames + step - 1, 1] = False  # a gap: right hand, step 1 end
  batch = pipeline.to_batch(raw, spec, pipeline.Normaliser(corpus.stats))

  got, valid = jax.jit(lambda b: policy.action_targets(b, cfg.data))(
      {"hands": batch["hands"], "hands_valid": batch["hands_valid"],
       "future": {k: batch["future"][k] for k in ("hands", "hands_valid")}})
  got, valid = np.asarray(got), np.asarray(valid)
  space = actions.ActionSpace.from_config(cfg.data.actions)
  assert got.shape == (len(raw), chunk, 2, space.hand_action_dim)

  # independent path: numpy actions from the raw windows' joints in metres, at the action
  # rate from the last context frame (raw rows are frames: context then future)
  now = spec.frames - 1
  for i, w in enumerate(raw):
    rows = slice(now, now + chunk * step + 1, step)
    want = actions.hand_arrays(space, w["hands"][rows].astype(np.float64),
                               w["hands_valid"][rows], w["pose"][rows], w["pose_valid"][rows])
    np.testing.assert_array_equal(valid[i], want["action_mask"][:chunk])
    np.testing.assert_allclose(got[i].reshape(chunk, -1), want["action"][:chunk], atol=2e-5,
                               rtol=0)
  assert not valid[0, 0, 1] and not valid[0, 1, 1]  # the gap masks both steps it ends/starts
  assert (got[~valid] == 0).all() and valid.sum() > len(raw)
  # real motion and real rotations were compared, not zeros
  assert np.abs(got[valid][:, :3]).max() > 1e-4
  r = actions.ROTATIONS[rotation]
  rot = got[valid][:, 3:3 + r]
  assert (np.abs(rot).max() > 1e-4 if rotation == "rotvec"
          else np.abs(rot - actions.rot6d(np.eye(3))).max() > 1e-4)


def test_refuses_a_chunk_past_the_future_and_missing_statistics():
  cfg = local.get_config("tiny")
  cfg.data.actions.update(step=2, chunk=4)  # 8 future frames needed, 4 there
  with pytest.raises(actions.ActionError, match="needs 8 future frames"):
    policy.future_frames(cfg.data)
  found = config_check.problems(cfg)  # refused before training starts
  assert len(found) == 1 and found[0].startswith("config.data.actions:"), found
  assert config_check.problems(local.get_config("tiny")) == []
  with pytest.raises(actions.ActionError, match="hand_stats is not set"):
    policy.normaliser(cfg.data)
