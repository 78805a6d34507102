"""Video: the six camera views, resized to video_size (PyAV area resize, media.decode_video);
a view that is missing or unusable is zeros with its video_valid column False."""

from __future__ import annotations

import numpy as np

from xefm_jax.data import xperience
from xefm_jax.data.streams import base


class Video(base.StreamDef):
  name = "video"
  group = "visual"
  stored = (
      *(base.Stream(f"video/{v}", lambda o, k: (o.video_size, o.video_size, 3), "uint8")
        for v in xperience.VIEWS),
      base.Stream("video_valid", base.fixed(len(xperience.VIEWS)), "bool"),  # view decoded
  )
  flags = tuple((f"video_valid/{v}", "video_valid", i) for i, v in enumerate(xperience.VIEWS))
  read_as = base.FRAMES
  valid = ("video_valid",)
  # pixels, or the extracted features that replace them (xefm_jax/data/features.py)
  values = {"video": "video_valid", "video_features": "video_valid"}

  def fields(self, spec, t):
    v = len(spec.views)
    if spec.video_features and not spec.feature_shape:
      raise ValueError(f"video features {spec.video_features!r}: their shape is unknown; take "
                       "the window from the corpus (Corpus.window_spec), which reads it")
    if spec.video_features:  # the frozen encoder's per-frame tokens
      return {"video_features": ((v, t, *spec.feature_shape), np.float32),
              "video_valid": ((v,), np.bool_)}
    return {"video": ((v, t, spec.view_size, spec.view_size, 3), np.uint8),  # uint8 pixels
            "video_valid": ((v,), np.bool_)}

  def read(self, es, state, start, stop):
    a, b = es.raw(start, stop)
    size, n = es.options.video_size, stop - start
    out, valid = {}, np.zeros((n, len(xperience.VIEWS)), bool)
    for i, view in enumerate(xperience.VIEWS):
      if view in es.ep.views:
        out[f"video/{view}"] = self._frames(es, state, view, start, stop, a, b)
        valid[:, i] = True
      else:
        out[f"video/{view}"] = np.zeros((n, size, size, 3), np.uint8)
    out["video_valid"] = valid
    return out

  @staticmethod
  def _frames(es, state, view: str, start: int, stop: int, a: int, b: int) -> np.ndarray:
    """Output frames [start, stop) of a view: from the sequential decoder when the blocks
    come in order (the shredder), else by seeking (random access)."""
    from xefm_jax.data import episode as episode_lib  # pylint: disable=g-import-not-at-top
    from xefm_jax.data import media  # pylint: disable=g-import-not-at-top
    readers = state.setdefault("readers", {})  # sequential decoders, by view
    reader = readers.get(view)
    if reader is None and start == 0:
      reader = readers[view] = media.VideoReader(
          es.ep.video_info[view].path, es.options.video_size, es.options.frame_stride)
    if reader is not None and reader.position == start:
      try:
        return reader.read(stop - start)
      except media.MediaError as e:
        raise episode_lib.EpisodeError(str(e)) from e
    return es.ep.video(view, size=es.options.video_size, stride=es.options.frame_stride,
                       start=a, stop=b)

  def close(self, state):
    for reader in state.get("readers", {}).values():
      reader.close()
    state.pop("readers", None)

  def inputs(self, raw, sl, sig, spec, stats):
    views = [xperience.VIEWS.index(v) for v in spec.views]
    if spec.video_features:  # (B, T, all views, S, D) -> (B, V, T, S, D)
      key, video = "video_features", np.swapaxes(raw["video_features"][:, sl][:, :, views], 1, 2)
    else:
      key, video = "video", np.stack([raw[f"video/{v}"][:, sl] for v in spec.views], 1)
    video = np.ascontiguousarray(video)  # (B, V, T, h, w, 3) or (B, V, T, S, D)
    video_valid = raw["video_valid"][:, sl][:, :, views].all(1)  # (B, V)
    base.zero_masked(video, video_valid)
    return {key: video, "video_valid": video_valid}

  @staticmethod
  def per_view(batch, grid: int = 2) -> np.ndarray:
    """(B, V, 3 + 3 + grid^2 x 3 + 2) statistics of each camera view: colour means and
    spreads, a coarse colour grid, frame-to-frame change, validity. A missing view is all
    zeros, so the statistics of a window with views removed are these with rows zeroed."""
    v = batch["video"].astype(np.float32) / 255.0  # (B, V, T, h, w, 3)
    b, nv, t, h, w, _ = v.shape
    color = v.mean((2, 3, 4))  # (B, V, 3)
    spread = v.std((2, 3, 4))
    cells = v.reshape(b, nv, t, grid, h // grid, grid, w // grid, 3).mean((2, 4, 6))
    motion = np.abs(np.diff(v, axis=2)).mean((2, 3, 4, 5))  # (B, V)
    return np.concatenate([color, spread, cells.reshape(b, nv, -1), motion[..., None],
                           batch["video_valid"].astype(np.float32)[..., None]], -1)

  def handcrafted(self, batch, vocab_size):
    per_view = self.per_view(batch)
    return per_view.reshape(len(per_view), -1)


VIDEO = base.register(Video())
