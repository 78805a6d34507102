"""Labels (targets, never model inputs): task, subtask and action ids (action class = the
label's first word, a verb: "Pour kettle" -> "pour"), boundary where an action starts within
raw frames [k s, (k+1) s), transition where an action boundary (an action start after the
episode's first frame) lies within +-TRANSITION_RADIUS raw frames of raw frame k s (the
suite's transition_detection, from the whole episode's timeline, so no window length changes
it), and the relevant-object multi-hot. The ids index the manifest's vocabularies
(xefm_jax/data/labels.py), -1 where none."""

from __future__ import annotations

import numpy as np

from xefm_jax.data import labels as labels_lib
from xefm_jax.data.streams import base


class Labels(base.StreamDef):
  name = "labels"
  stored = (
      base.Stream("task", base.fixed(), "int32"),
      base.Stream("subtask", base.fixed(), "int32"),
      base.Stream("action", base.fixed(), "int32"),
      base.Stream("boundary", base.fixed(), "bool"),  # an action starts in this frame's raw frames
      base.Stream("transition", base.fixed(), "bool"),  # an action boundary within +-10 raw frames
      base.Stream("objects", lambda o, k: (k,), "bool"),
  )
  flags = (("boundary", "boundary", None), ("transition", "transition", None))
  labels = ("task", "subtask", "action")

  future_fields = ("action", "subtask", "boundary")

  def target_fields(self, spec, t):
    return {
        "action": ((t,), np.int32),  # action-class id, -1 where none
        "subtask": ((t,), np.int32),
        "boundary": ((t,), np.bool_),  # an action starts at this frame
        "transition": ((t,), np.bool_),  # an action boundary within +-10 frames (20 fps)
        "objects": ((t, spec.num_objects), np.bool_),  # relevant-object multi-hot
    }

  def read(self, es, state, start, stop):
    tl, lab, s = es.timeline(), es.labels, es.options.frame_stride
    a, b = es.raw(start, stop)
    n = stop - start
    frames = np.arange(a, b, s)
    task = lab.ids((tl.task,), lab.tasks)[0]
    subtask_ids = np.append(lab.ids(tl.subtasks, lab.subtasks), -1).astype(np.int32)  # [-1]: -1
    action_ids = np.append(lab.ids(tuple(labels_lib.action_class(x) for x in tl.action_labels),
                                   lab.actions), -1).astype(np.int32)
    object_index = {o: i for i, o in enumerate(lab.objects)}
    objects = np.zeros((n, len(lab.objects)), bool)
    for row, f in enumerate(frames):
      for o in tl.objects_at(f):
        if o in object_index:
          objects[row, object_index[o]] = True
    starts = tl.action_start[a:b].reshape(n, s).any(-1)
    if "transition" not in state:
      state["transition"] = labels_lib.near_boundary(tl.action_start)
    return {
        "task": np.full(n, task, np.int32),
        "subtask": subtask_ids[tl.subtask[frames]], "action": action_ids[tl.action[frames]],
        "boundary": starts, "transition": state["transition"][frames], "objects": objects,
    }

  def targets(self, raw, sl):
    return {k: raw[k][:, sl] for k in ("action", "subtask", "boundary", "transition",
                                       "objects")}

  def future(self, raw, ahead, stats):
    return {k: raw[k][:, ahead] for k in self.future_fields}


LABELS = base.register(Labels())
