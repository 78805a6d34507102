"""The episode's microphone track: room tone plus the sounds of what the wearer does.

One mono track at the profile's rate (48 kHz), on the video clock: sample 0 is frame 0,
so sample i is at i / rate seconds after the first frame. The same track goes into the
AAC stream of every MP4 of the episode.

Each scene.AudioEvent becomes a sound whose character says what happened, so audio carries
information about the action: contact = short clicks, pour = band-limited liquid noise
with bubbling, stir = periodic clinks, wipe = back-and-forth swishes, cut = chops,
footstep = low thumps, open = a creak, close = a thunk. Unknown kinds get a soft contact
sound. Events are attenuated with distance from the head (1/r beyond 0.5 m).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from data_pipelines.synth.scene import EpisodeSim
from xefm_jax.data import xperience

ROOM_TONE_RMS = 0.003  # about -50 dBFS
REFERENCE_DISTANCE_M = 0.5  # no attenuation nearer than this
PEAK = 0.9  # soft limit: the mix never clips the AAC encoder's input range


def band_noise(n: int, rate: int, lo_hz: float, hi_hz: float, rng: np.random.Generator,
               tilt: float = 0.0) -> np.ndarray:
  """n samples of unit-RMS noise limited to [lo_hz, hi_hz]; tilt < 0 darkens it (1/f^-tilt)."""
  if n <= 0:
    return np.zeros(0)
  spec = np.fft.rfft(rng.standard_normal(n))
  f = np.fft.rfftfreq(n, 1 / rate)
  spec *= (f >= lo_hz) & (f <= hi_hz)
  spec[1:] *= (f[1:] / 1000.0) ** (tilt / 2)
  x = np.fft.irfft(spec, n)
  return x / max(float(np.sqrt(np.mean(x * x))), 1e-12)


def _decay(n: int, rate: int, tau_s: float) -> np.ndarray:
  return np.exp(-np.arange(n) / (tau_s * rate))


def _tone(n: int, rate: int, freq_hz: np.ndarray | float) -> np.ndarray:
  phase = 2 * np.pi * np.cumsum(np.broadcast_to(freq_hz, (n,))) / rate
  return np.sin(phase)


def _repeat(n: int, rate: int, period_s: float, jitter: float, rng: np.random.Generator,
            grain: Callable[[], np.ndarray]) -> np.ndarray:
  """Grains placed every period (with jitter), starting at 0, clipped to n samples."""
  out = np.zeros(n)
  t = 0.0
  while True:
    start = int(round(t * rate))
    if start >= n:
      return out
    g = grain()
    end = min(n, start + len(g))
    out[start:end] += g[:end - start]
    t += period_s * (1 + jitter * rng.uniform(-1, 1))


def click(rate: int, rng: np.random.Generator) -> np.ndarray:
  n = int(0.06 * rate)
  return 0.4 * band_noise(n, rate, 1500, 9000, rng) * _decay(n, rate, 0.006)


def thump(rate: int, rng: np.random.Generator, freq: float = 70.0, tau: float = 0.04) -> np.ndarray:
  n = int(0.2 * rate)
  body = _tone(n, rate, freq * (1 + 0.5 * _decay(n, rate, 0.01))) * _decay(n, rate, tau)
  return 0.9 * body + 0.15 * band_noise(n, rate, 40, 400, rng) * _decay(n, rate, 0.015)


def contact_sound(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
  def knock() -> np.ndarray:
    g = 0.3 * thump(rate, rng, 180, 0.01)
    c = click(rate, rng)
    g[: len(c)] += c
    return g
  return _repeat(n, rate, 0.8, 0.3, rng, knock)  # one knock, more only on long contacts


def pour_sound(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
  flow = band_noise(n, rate, 400, 5000, rng, tilt=-0.5)
  wobble = 0.6 + 0.4 * band_noise(n, rate, 0.5, 6, rng)  # the stream's changing strength
  bubbles = _repeat(n, rate, 0.03, 0.9, rng, lambda: _bubble(rate, rng))
  fade = np.minimum(1.0, np.minimum(np.arange(n), np.arange(n)[::-1]) / (0.1 * rate))
  return (0.35 * flow * np.clip(wobble, 0, None) + 0.25 * bubbles) * fade


def _bubble(rate: int, rng: np.random.Generator) -> np.ndarray:
  n = int(0.02 * rate)
  f0 = rng.uniform(600, 2500)
  chirp = _tone(n, rate, f0 * (1 + np.linspace(0, 0.6, n)))  # a bubble's rising pitch
  return chirp * _decay(n, rate, 0.005) * rng.uniform(0.2, 1)


def stir_sound(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
  def clink() -> np.ndarray:
    m = int(0.15 * rate)
    f = rng.uniform(3000, 5200)
    ring = _tone(m, rate, f) + 0.5 * _tone(m, rate, 2.76 * f)
    return 0.5 * ring * _decay(m, rate, 0.03)
  swirl = 0.05 * band_noise(n, rate, 200, 2000, rng)
  return _repeat(n, rate, 0.35, 0.15, rng, clink) + swirl


def wipe_sound(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
  t = np.arange(n) / rate
  stroke = np.sin(np.pi * 1.6 * t + rng.uniform(0, np.pi)) ** 2  # back and forth
  return 0.4 * band_noise(n, rate, 1500, 9000, rng, tilt=-0.3) * stroke


def cut_sound(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
  def chop() -> np.ndarray:
    m = int(0.08 * rate)
    return (0.7 * band_noise(m, rate, 2000, 8000, rng) * _decay(m, rate, 0.004)
            + 0.6 * thump(rate, rng, 220, 0.015)[:m])
  return _repeat(n, rate, 0.3, 0.2, rng, chop)


def footstep_sound(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
  return _repeat(n, rate, 0.5, 0.08, rng, lambda: thump(rate, rng, rng.uniform(55, 90), 0.05))


def open_sound(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
  m = min(n, int(0.5 * rate))
  f = 330 + 200 * band_noise(m, rate, 1, 12, rng) / 3  # a wavering hinge
  saw = sum(_tone(m, rate, k * f) / k for k in range(1, 6))
  out = np.zeros(n)
  out[:m] = 0.25 * saw * np.sin(np.pi * np.arange(m) / m)
  return out


def close_sound(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
  g = thump(rate, rng, 110, 0.05)  # the door or lid landing ...
  c = click(rate, rng)
  g[: len(c)] += 0.5 * c  # ... with the latch
  out = np.zeros(n)
  out[: min(n, len(g))] = g[:n]
  return out


SOUNDS: dict[str, Callable[[int, int, np.random.Generator], np.ndarray]] = {
    "contact": contact_sound,
    "pour": pour_sound,
    "stir": stir_sound,
    "wipe": wipe_sound,
    "cut": cut_sound,
    "footstep": footstep_sound,
    "open": open_sound,
    "close": close_sound,
}


def room_tone(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
  """Low-level coloured noise plus a faint mains hum."""
  hum = 0.3 * _tone(n, rate, 50.0) + 0.15 * _tone(n, rate, 100.0)
  return ROOM_TONE_RMS * (band_noise(n, rate, 20, 12000, rng, tilt=-1.0) + 0.3 * hum)


def num_samples(num_frames: int, rate: int) -> int:
  return int(round(num_frames / xperience.FPS * rate))


def episode_audio(sim: EpisodeSim, rate: int, rng: np.random.Generator) -> np.ndarray:
  """(S,) float32 in [-1, 1], S = duration * rate; deterministic given rng."""
  n = num_samples(sim.num_frames, rate)
  out = room_tone(n, rate, rng)
  for ev in sim.audio_events:
    start = max(0, int(round(ev.start_s * rate)))
    end = min(n, int(round(max(ev.end_s, ev.start_s + 0.05) * rate)))
    if end <= start:
      continue
    sound = SOUNDS.get(ev.kind, contact_sound)(end - start, rate, rng)
    attenuation = REFERENCE_DISTANCE_M / max(float(ev.distance_m), REFERENCE_DISTANCE_M)
    out[start:end] += float(ev.gain) * attenuation * sound[: end - start]
  return (PEAK * np.tanh(out / PEAK)).astype(np.float32)
