"""Each metric against cases computed by hand."""

import numpy as np
import pytest

from xefm_jax.eval import metrics


def test_macro_and_micro_f1_by_hand():
  y_true = np.array([0, 0, 1, 1, 2])
  y_pred = np.array([0, 1, 1, 1, 0])
  # class 0: tp 1, fp 1, fn 1 -> 2/4 = 0.5; class 1: tp 2, fp 1, fn 0 -> 4/5 = 0.8;
  # class 2: tp 0, fp 0, fn 1 -> 0.  macro = (0.5 + 0.8 + 0) / 3; micro = 3 / 5
  s = metrics.f1_scores(y_true, y_pred)
  assert s["macro_f1"] == pytest.approx((0.5 + 0.8) / 3)
  assert s["micro_f1"] == pytest.approx(0.6)
  assert metrics.f1_scores([1, 2], [1, 2])["macro_f1"] == 1.0


def test_binary_and_multilabel_f1_by_hand():
  # tp 2, fp 1, fn 1 -> 4 / 6
  assert metrics.binary_f1([1, 1, 1, 0, 0], [1, 1, 0, 1, 0]) == pytest.approx(4 / 6)
  assert metrics.binary_f1([0, 0], [0, 0]) == 0.0
  y_true = np.array([[1, 0, 1], [0, 1, 0]])
  y_pred = np.array([[1, 1, 0], [0, 1, 0]])
  # pairs: tp 2, fp 1, fn 1 -> 4 / 6
  assert metrics.multilabel_micro_f1(y_true, y_pred) == pytest.approx(4 / 6)


def test_ranks_recall_and_mrr_by_hand():
  sim = np.array([[0.9, 0.1, 0.5],    # relevant 0 -> rank 1
                  [0.9, 0.1, 0.5],    # relevant 2 -> rank 2
                  [0.3, 0.3, 0.3]])   # relevant 1, all tied -> pessimistic rank 3
  rel = np.eye(3, dtype=bool)[[0, 2, 1]]
  ranks = metrics.retrieval_ranks(sim, rel)
  np.testing.assert_array_equal(ranks, [1, 2, 3])
  assert metrics.recall_at_k(ranks, 1) == pytest.approx(1 / 3)
  assert metrics.recall_at_k(ranks, 2) == pytest.approx(2 / 3)
  assert metrics.mean_reciprocal_rank(ranks) == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)
  # several relevant candidates: the best-ranked one counts
  assert metrics.retrieval_ranks([[0.1, 0.8, 0.9]], [[True, True, False]])[0] == 2


def test_ade_fde_and_mpjpe_by_hand():
  true = np.zeros((1, 2, 3))
  pred = np.array([[[3.0, 4.0, 0.0], [0.0, 0.0, 1.0]]])  # errors 5 and 1
  ade, fde = metrics.ade_fde(pred, true)
  assert ade == pytest.approx(3.0) and fde == pytest.approx(1.0)
  ade, fde = metrics.ade_fde(pred, true, valid=np.array([[True, False]]))
  assert ade == pytest.approx(5.0) and np.isnan(fde)
  joints_true = np.zeros((2, 2, 3))  # 2 frames x 2 joints
  joints_pred = np.array([[[1.0, 0, 0], [0, 3.0, 0]], [[0, 0, 2.0], [0, 0, 0]]])
  # frame errors: (1 + 3) / 2 = 2, (2 + 0) / 2 = 1
  assert metrics.mpjpe(joints_pred, joints_true) == pytest.approx(1.5)
  assert metrics.mpjpe(joints_pred, joints_true, valid=np.array([True, False])) == 2.0


def test_r2_by_hand():
  true = np.array([1.0, 2.0, 3.0])
  assert metrics.r2_score(true, true) == 1.0
  assert metrics.r2_score(true, np.full(3, 2.0)) == pytest.approx(0.0)
  # ss_res = 1 + 0 + 1 = 2, ss_tot = 2 -> 0
  assert metrics.r2_score(true, np.array([2.0, 2.0, 2.0])) == pytest.approx(0.0)
  # ss_res = 0.25 * 3 = 0.75 -> 1 - 0.75 / 2
  assert metrics.r2_score(true, true + 0.5) == pytest.approx(1 - 0.75 / 2)
  two = np.stack([true, true * 2], 1)
  assert metrics.r2_score(two, np.stack([true, np.full(3, 4.0)], 1)) == pytest.approx(0.5)


def test_r2_from_sums_by_hand():
  y = np.array([1.0, 2.0, 3.0, 6.0])  # mean 3, ss_tot = 4 + 1 + 0 + 9 = 14
  pred = np.array([1.0, 3.0, 3.0, 4.0])  # sse = 0 + 1 + 0 + 4 = 5
  got = metrics.r2_from_sums(4, y.sum(), (y ** 2).sum(), ((y - pred) ** 2).sum())
  assert got == pytest.approx(1 - 5 / 14)
  assert got == pytest.approx(metrics.r2_score(y, pred))
  # summing the sums of two halves gives the same number (how the eval pools windows)
  halves = [(2, y[:2].sum(), (y[:2] ** 2).sum(), ((y - pred)[:2] ** 2).sum()),
            (2, y[2:].sum(), (y[2:] ** 2).sum(), ((y - pred)[2:] ** 2).sum())]
  assert metrics.r2_from_sums(*np.sum(halves, 0)) == pytest.approx(got)
  assert np.isnan(metrics.r2_from_sums(3, 3.0, 3.0, 0.0))  # constant y


def test_weights_count_rows_like_repeating_them():
  """A bootstrap replicate weights rows by how often they were drawn: every metric with
  integer weights equals the metric of the rows repeated that many times (0: left out)."""
  rng = np.random.default_rng(0)
  w = np.array([0, 1, 2, 3, 1, 0, 2, 1])
  rep = np.repeat(np.arange(8), w)
  y, p = rng.integers(0, 4, 8), rng.integers(0, 4, 8)
  for k, v in metrics.f1_scores(y, p, w).items():
    assert v == pytest.approx(metrics.f1_scores(y[rep], p[rep])[k])
  assert metrics.binary_f1(y > 1, p > 1, w) == pytest.approx(metrics.binary_f1(y[rep] > 1,
                                                                              p[rep] > 1))
  sets, guess = rng.random((8, 5)) < 0.4, rng.random((8, 5)) < 0.4
  assert metrics.multilabel_micro_f1(sets, guess, w) == pytest.approx(
      metrics.multilabel_micro_f1(sets[rep], guess[rep]))
  true, pred = rng.normal(size=(8, 3)), rng.normal(size=(8, 3))
  assert metrics.r2_score(true, pred, w) == pytest.approx(metrics.r2_score(true[rep], pred[rep]))
  traj, guess_traj = rng.normal(size=(8, 4, 3)), rng.normal(size=(8, 4, 3))
  valid = rng.random((8, 4)) < 0.7
  np.testing.assert_allclose(metrics.ade_fde(guess_traj, traj, valid, w),
                             metrics.ade_fde(guess_traj[rep], traj[rep], valid[rep]))
  joints, guess_joints = rng.normal(size=(8, 2, 5, 3)), rng.normal(size=(8, 2, 5, 3))
  assert metrics.mpjpe(guess_joints, joints, valid[:, :2], w) == pytest.approx(
      metrics.mpjpe(guess_joints[rep], joints[rep], valid[rep, :2]))
  ranks = rng.integers(1, 20, 8)
  assert metrics.mean_reciprocal_rank(ranks, w) == pytest.approx(
      metrics.mean_reciprocal_rank(ranks[rep]))
  assert metrics.recall_at_k(ranks, 5, w) == pytest.approx(metrics.recall_at_k(ranks[rep], 5))
