"""Audio: 16 kHz mono (media.decode_audio), the samples of raw frames [k s, (k+1) s) per
output frame k, stored as int16 = round(clip(x, -1, 1) * 32767); read contiguously over the
time the window covers (a signal, not frames)."""

from __future__ import annotations

import numpy as np

from xefm_jax.data import spec as spec_lib
from xefm_jax.data.streams import base

EPS = 1e-6


class Audio(base.StreamDef):
  name = "audio"
  group = "audio"  # neither the motion nor the visual side
  stored = (base.Stream("audio", lambda o, k: (o.audio_per_frame,), "int16"),  # x / 32767
            base.Stream("audio_valid", base.fixed(), "bool"))
  flags = (("audio_valid", "audio_valid", None),)
  read_as = base.SIGNAL
  valid = ("audio_valid",)
  values = {"audio": "audio_valid"}

  def fields(self, spec, t):
    return {"audio": ((spec.audio_samples * t // spec.frames,), np.float32),
            "audio_valid": ((), np.bool_)}

  def read(self, es, state, start, stop):
    from xefm_jax.data import episode as episode_lib  # pylint: disable=g-import-not-at-top
    per = es.options.audio_per_frame
    if "pcm" not in state:
      try:
        x = es.ep.audio(spec_lib.AUDIO_RATE_HZ)[:es.num_frames * per]
        x = np.pad(x, (0, es.num_frames * per - len(x)))
        state["pcm"] = np.round(np.clip(x, -1, 1) * 32767).astype(np.int16)
      except episode_lib.EpisodeError:
        state["pcm"] = np.zeros(0, np.int16)  # unavailable: masked
    pcm, n = state["pcm"], stop - start
    if not len(pcm):
      return {"audio": np.zeros((n, per), np.int16), "audio_valid": np.zeros(n, bool)}
    return {"audio": pcm[start * per:stop * per].reshape(n, per),
            "audio_valid": np.ones(n, bool)}

  def inputs(self, raw, sl, sig, spec, stats):
    b = len(raw["audio"])
    audio_valid = raw["audio_valid"][:, sig].all(1)  # (B,)
    audio = raw["audio"][:, sig].reshape(b, -1).astype(np.float32) / 32767.0  # (B, samples)
    base.zero_masked(audio, audio_valid)
    return {"audio": audio, "audio_valid": audio_valid}

  def handcrafted(self, batch, vocab_size, bands: int = 8):
    x = batch["audio"]  # (B, samples) 16 kHz
    spec = np.abs(np.fft.rfft(x.reshape(len(x), -1, 400), axis=-1)) ** 2  # (B, frames, 201)
    edges = np.geomspace(1, spec.shape[-1], bands + 1).astype(int)
    band = np.stack([spec[..., a:b].sum(-1) for a, b in zip(edges[:-1], edges[1:])], -1)
    logband = np.log(band + EPS)  # (B, frames, bands)
    rms = np.sqrt((x ** 2).mean(1, keepdims=True))
    zcr = (np.diff(np.sign(x), axis=1) != 0).mean(1, keepdims=True)
    return np.concatenate([rms, zcr, logband.mean(1), logband.std(1), logband.max(1)], -1)


AUDIO = base.register(Audio())
