"""Splits are by session, deterministic, and held-out activities/objects never leak."""

import random

import pytest

from xefm_jax.data import splits


def _corpus(num_sessions=20, per_session=3):
  acts = ["make_tea", "wash_dishes", "pack_box", "clean_table", "water_plants"]
  objs = ["cup", "mug", "kettle", "pot", "sponge", "box", "plant"]
  rng = random.Random(0)
  eps = []
  for s in range(num_sessions):
    session = f"sess{s:03d}"
    for k in range(per_session):
      eps.append(splits.EpisodeFacts(f"{session}/ep{k}", session, rng.choice(acts),
                                     frozenset(rng.sample(objs, 3))))
  return eps


def test_parse_fractions():
  assert splits.parse_fractions("train=0.8,val=0.1,test=0.1") == {
      "train": 0.8, "val": 0.1, "test": 0.1}
  for bad in ("train=0.8,val=0.1", "train=x,val=0.5,test=0.5", "dev=0.5,train=0.5",
              "train=1.5,val=-0.5"):
    with pytest.raises(splits.SplitError):
      splits.parse_fractions(bad)


def test_by_session_deterministic_and_order_free():
  eps = _corpus()
  spec = splits.SplitSpec()
  a = splits.assign_splits(eps, spec)
  shuffled = list(eps)
  random.Random(1).shuffle(shuffled)
  assert splits.assign_splits(shuffled, spec) == a
  assert not any(splits.check_leakage(a, eps, spec).values())
  counts = splits.split_report(eps, spec)["counts"]
  assert [counts[s]["sessions"] for s in splits.SPLITS] == [16, 2, 2]
  assert splits.assign_splits(eps, splits.SplitSpec(seed=1)) != a


def test_tiny_corpus_gets_every_split():
  eps = _corpus(num_sessions=3)
  counts = splits.split_report(eps, splits.SplitSpec())["counts"]
  assert all(counts[s]["sessions"] == 1 for s in splits.SPLITS)


def test_holdout_activity_and_object_never_seen_in_train_or_val():
  eps = _corpus()
  spec = splits.SplitSpec(holdout_activities=("pack_box",), holdout_objects=("mug",))
  a = splits.assign_splits(eps, spec)
  for e in eps:
    if e.activity == "pack_box" or "mug" in e.objects:
      assert a[e.episode] == "test"
  assert not any(splits.check_leakage(a, eps, spec).values())


def test_leakage_check_catches_a_straddling_session():
  eps = _corpus()
  spec = splits.SplitSpec(holdout_activities=("make_tea",))
  a = splits.assign_splits(eps, spec)
  victim = next(e for e in eps if e.activity == "make_tea")
  a[victim.episode] = "train"
  sibling = next(e for e in eps if e.session == victim.session and e is not victim)
  a[sibling.episode] = "val"
  leak = splits.check_leakage(a, eps, spec)
  assert leak["heldout_activities_seen"] == ["make_tea"]
  assert victim.session in leak["sessions_in_several_splits"]
