"""The toy magnetometer's config entries (tests/test_toy_modality.py), added by a test only.

    toy_magnetometer_config.py:tiny   the tiny motion-side model (tests/motion_ladder.py:t1) + the
                                      magnetometer's modality entry (and masked modeling of its
                                      tokens beside the motion streams')
    toy_magnetometer_config.py:eval   configs/eval.py:quick with its input variant and a task
                                      that reads only it
"""

from __future__ import annotations

import ml_collections

from configs import eval as eval_config
import motion_ladder


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  if arg == "eval":
    c = eval_config.get_config("quick")
    c.variants.magnetometer = dict(modalities=("magnetometer",))
    c.tasks = ml_collections.ConfigDict(sort_keys=False)
    # one task on the full window as well: the protocol's head predictions come with it
    c.tasks.timeline_action = eval_config.tasks().timeline_action
    c.tasks.magnetometer_to_hand_pose = eval_config._task(  # pylint: disable=protected-access
        "regress", "hands_now", ("magnetometer",), "mae", higher_is_better=False)
    c.extensions = ml_collections.ConfigDict(sort_keys=False)
    c.robustness.inputs = ()
    c.figures = False
    c.progress = False
    return c
  if arg != "tiny":
    raise ValueError(f"tests/toy_magnetometer_config.py: variant tiny or eval, got {arg!r}")
  # The motion side (no visual or language encoders): the toy is a motion sensor, and the
  # run compiles in about half the time of configs/local.py:tiny's.
  c = motion_ladder.get_config("t1")
  m = c.model
  m.modalities.magnetometer = ml_collections.ConfigDict(dict(
      frames_per_token=2, dropout=0.0, encoder=m.modalities.imu.encoder.to_dict()))
  mm = c.objectives.masked_modeling
  mm.modalities = (*motion_ladder.MOTION, "magnetometer")
  return c
