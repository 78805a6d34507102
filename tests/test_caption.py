"""Caption JSON parsing: every frame-reference form, per-frame labels, clear errors."""

import json

import numpy as np
import pytest

from xefm_jax.data.caption import CaptionError, parse_caption

N = 30
T0 = 82777404821554
DT = 50_000_000
TIMES = T0 + np.arange(N, dtype=np.int64) * DT


def t(i: int) -> int:
  return T0 + i * DT


def doc(segments, **config) -> str:
  return json.dumps({"config": {"Main Task": "Pack the bin.", **config},
                     "segments": segments, "global_summary": "Packed."})


def mixed_segment() -> dict:
  """One segment using every reference form."""
  return {
      "segment_id": 0,
      "start_frame": str(t(0)),  # device time as a string
      "end_frame": "frame_0000020",  # 1-based: frame 19
      "Sub Task": "Packing items",
      "Current Action": [
          {"label": "Reach", "description": "Hand reaches in",
           "start_frame": t(1) + 20_000_000, "end_frame": str(t(4))},  # nearest: frame 1
          {"label": "Grasp", "description": "Hand grasps the box",
           "start_frame": 6, "end_frame": "frame_0000009"},  # small int 1-based: 5..8
          {"label": "Lift", "description": "",
           "start_frame": 3, "start_frame_name": f"{t(10)}.jpg",  # the device time wins
           "end_frame": "12"},  # digit string, 1-based: frame 11
      ],
      "sampled_frames": {"Image 1": t(0), "Image 2": "frame_0000011"},
      "objects": {str(t(0)): ["bin", "hand", "bin"], "frame_0000011": ["box"]},
      "interaction": {str(t(0)): "The hand reaches into the bin.",
                      "11": "The hand lifts the box."},
  }


def test_every_reference_form_in_one_segment():
  tl = parse_caption(doc([mixed_segment()]), TIMES, source="ep.hdf5")
  seg, = tl.segments
  assert (seg.start, seg.stop) == (0, 20)
  assert seg.sample_frames == (0, 10)
  spans = [(a.label, a.start, a.stop) for a in tl.actions]
  assert spans == [("Reach", 1, 5), ("Grasp", 5, 9), ("Lift", 10, 12)]
  assert tl.task == "Pack the bin." and tl.summary == "Packed."


def test_per_frame_labels():
  tl = parse_caption(doc([mixed_segment()]), TIMES)
  assert tl.subtask.shape == (N,) and tl.subtask.dtype == np.int32
  assert tl.subtasks == ("Packing items",)
  np.testing.assert_array_equal(tl.subtask, [0] * 20 + [-1] * 10)
  labels = [tl.action_labels[i] if i >= 0 else None for i in tl.action]
  assert labels == ([None] + ["Reach"] * 4 + ["Grasp"] * 4 + [None] + ["Lift"] * 2
                    + [None] * 18)
  assert np.flatnonzero(tl.action_start).tolist() == [1, 5, 10]
  # An empty description has no index.
  assert tl.action_description[10] == -1
  assert tl.action_descriptions[tl.action_description[1]] == "Hand reaches in"
  # Objects hold from each sample until the next one, within the segment; repeats dropped.
  assert tl.objects_at(0) == ("bin", "hand") and tl.objects_at(9) == ("bin", "hand")
  assert tl.objects_at(10) == ("box",) and tl.objects_at(19) == ("box",)
  assert tl.objects_at(20) == () and tl.object_set[25] == -1
  assert tl.interaction_at(5) == "The hand reaches into the bin."
  assert tl.interaction_at(12) == "The hand lifts the box."
  assert tl.interaction[20] == -1


def test_nearest_frame_and_ties():
  seg = {"start_frame": t(0), "end_frame": t(N - 1), "Current Action": [
      {"label": "a", "start_frame": t(3) + DT // 2, "end_frame": t(7) + DT // 2 + 1}]}
  tl = parse_caption(doc([seg]), TIMES)
  assert (tl.actions[0].start, tl.actions[0].stop) == (3, 9)  # tie -> earlier; else nearest


def test_unsorted_frame_times():
  times = TIMES[::-1].copy()
  seg = {"start_frame": t(N - 1), "end_frame": t(0)}  # frame 0 holds the latest time
  tl = parse_caption(doc([seg]), times)
  assert (tl.segments[0].start, tl.segments[0].stop) == (0, N)


def test_small_int_base_is_one_rule_for_every_position():
  seg = {"start_frame": 1, "end_frame": 10,
         "Current Action": [{"label": "a", "start_frame": 2, "end_frame": 3}]}
  one = parse_caption(doc([seg]), TIMES)
  assert (one.segments[0].start, one.segments[0].stop) == (0, 10)
  assert (one.actions[0].start, one.actions[0].stop) == (1, 3)
  zero = parse_caption(doc([seg]), TIMES, small_int_base=0)
  assert (zero.segments[0].start, zero.segments[0].stop) == (1, 11)
  assert (zero.actions[0].start, zero.actions[0].stop) == (2, 4)
  # The frame_ form stays 1-based whatever the small-int base.
  seg = {"start_frame": "frame_0000001", "end_frame": "frame_0000002"}
  assert parse_caption(doc([seg]), TIMES, small_int_base=0).segments[0].stop == 2


def test_name_keys_alone_and_image_suffixes():
  seg = {"start_frame_name": "frame_0000003.jpg", "end_frame_name": f"{t(8)}.jpg"}
  tl = parse_caption(doc([seg]), TIMES)
  assert (tl.segments[0].start, tl.segments[0].stop) == (2, 9)


def test_references_within_slack_are_clamped():
  seg = {"start_frame": t(0) - 2 * DT, "end_frame": f"frame_{N + 2:07d}"}
  tl = parse_caption(doc([seg]), TIMES)
  assert (tl.segments[0].start, tl.segments[0].stop) == (0, N)


@pytest.mark.parametrize("field,ref,pattern", [
    ("end_frame", "frame_0000099", r"segment 7 .*end_frame.*'frame_0000099'.*outside"),
    ("start_frame", T0 + 10**12, r"segment 7 .*start_frame.*device-time.*outside"),
    ("start_frame", T0 - 10 * DT, r"segment 7 .*start_frame.*outside"),
    ("end_frame", 500, r"segment 7 .*end_frame.*500.*outside"),
])
def test_references_outside_the_episode_are_errors(field, ref, pattern):
  seg = {"segment_id": 7, "start_frame": t(0), "end_frame": t(5), field: ref}
  with pytest.raises(CaptionError, match=pattern):
    parse_caption(doc([seg]), TIMES, source="a/ep1/annotation.hdf5")


def test_action_and_sample_refs_outside_name_their_place():
  seg = {"segment_id": 2, "start_frame": 1, "end_frame": 5,
         "Current Action": [{"label": "a", "start_frame": 1, "end_frame": 400}]}
  with pytest.raises(CaptionError, match=r"src: segment 2 .*'Current Action'\]\[0\]"
                     r"\.end_frame.*400"):
    parse_caption(doc([seg]), TIMES, source="src")
  seg = {"segment_id": 2, "start_frame": 1, "end_frame": 5, "objects": {"frame_0000300": []}}
  with pytest.raises(CaptionError, match=r"segment 2 .*objects\['frame_0000300'\]"):
    parse_caption(doc([seg]), TIMES)


@pytest.mark.parametrize("text,pattern", [
    ("{not json", "not JSON"),
    ("[1, 2]", "expected an object"),
    (json.dumps({"segments": {}}), "segments.*expected a list"),
    (doc(["seg"]), r"segments\[0\].*expected an object"),
    (doc([{"end_frame": 3}]), "missing start_frame"),
    (doc([{"start_frame": "abc", "end_frame": 3}]), "'abc' is not a device time"),
    (doc([{"start_frame": True, "end_frame": 3}]), "True is not a device time"),
    (doc([{"start_frame": 2.5, "end_frame": 3}]), "not an integer"),
    (doc([{"start_frame": 9, "end_frame": 3}]), "ends at frame 2 before it starts"),
    (doc([{"start_frame": 1, "end_frame": 3, "Current Action": [{"start_frame": 1}]}]),
     "label"),
    (doc([{"start_frame": 1, "end_frame": 3, "objects": {"1": 5}}]), "list of object names"),
])
def test_bad_documents_are_clear_errors(text, pattern):
  with pytest.raises(CaptionError, match="ep9: .*" + pattern):
    parse_caption(text, TIMES, source="ep9")


def test_device_time_without_frame_times_is_an_error():
  with pytest.raises(CaptionError, match="no frame times"):
    parse_caption(doc([{"start_frame": t(0), "end_frame": 3}]), None, num_frames=N)
  tl = parse_caption(doc([{"start_frame": 1, "end_frame": 3}]), None, num_frames=N)
  assert tl.segments[0].stop == 3


def test_num_frames_clips_spans():
  seg = {"start_frame": t(0), "end_frame": t(N - 1),
         "Current Action": [{"label": "late", "start_frame": t(N - 2), "end_frame": t(N - 1)}]}
  tl = parse_caption(doc([seg]), TIMES, num_frames=N - 3)
  assert tl.subtask.shape == (N - 3,) and tl.segments[0].stop == N - 3
  assert (tl.actions[0].start, tl.actions[0].stop) == (N - 3, N - 3)
  assert not tl.action_start.any() and (tl.action == -1).all()


def test_bytes_double_encoded_and_single_action_object():
  seg = {"start_frame": 1, "end_frame": 4, "Current Action": {"label": "x", "start_frame": 1,
                                                               "end_frame": 2}}
  text = json.dumps(doc([seg])).encode("utf-8")
  tl = parse_caption(text, TIMES)
  assert tl.action_labels == ("x",) and tl.action[:3].tolist() == [0, 0, -1]


def test_later_segments_win_shared_frames_and_samples_backfill():
  segs = [{"Sub Task": "A", "start_frame": 1, "end_frame": 11},
          {"Sub Task": "B", "start_frame": 11, "end_frame": 20,
           "objects": {"13": ["cup"]}}]  # first sample 2 frames after the segment starts
  tl = parse_caption(doc(segs), TIMES)
  assert tl.subtask[9] == 0 and tl.subtask[10] == 1
  assert tl.objects_at(10) == ("cup",) and tl.objects_at(19) == ("cup",)
  assert tl.objects_at(9) == ()
