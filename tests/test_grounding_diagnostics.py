"""benchmarks/grounding.py's pieces: the caption split into the parts the generator writes,
the effective rank, and the whitener its diagnostic probes read."""

import numpy as np

from benchmarks import grounding
from data_pipelines.synth import language
from data_pipelines.synth.scene import Step


def test_caption_parts_of_the_generators_sentences():
  def step(hand, description):
    return Step("s", "a", None, 0, 10, hand, "label", description)
  cases = [
      (step("left", "Pour the kettle into the cup with the left hand."), [True, True],
       ("left", "pouring", "the kettle into the cup")),
      (step("both", "Lift the box off the table."), [True, True],
       ("both", "lifting", "the box off the table")),
      (step("right", "Grasp the can."), [True, False], ("out_of_view", "grasping", "the can")),
      (step("none", "Walk to the desk."), [False, False],
       ("none_visible", "walking", "to the desk")),
      (step("none", "Turn to the desk."), [True, False], ("wearer", "turning", "to the desk")),
  ]
  for s, visible, want in cases:
    sentence = language.interaction_sentence(s, np.asarray(visible))
    got = grounding.caption_parts(sentence)
    assert (got["side"], got["verb"], got["object"]) == want, sentence


def test_effective_rank_and_whitener():
  rng = np.random.default_rng(0)
  iso = rng.normal(size=(2000, 8))
  assert 7.5 < grounding.effective_rank(iso) <= 8.0
  # one dominant direction: the rank is near 1, the whitener restores unit variance
  spiked = iso * np.array([100.0] + [1.0] * 7)
  assert grounding.effective_rank(spiked) < 1.1
  z = grounding.whitener(spiked)(spiked)
  np.testing.assert_allclose(np.cov(z.T, bias=True), np.eye(8), atol=1e-8)
