"""Audio -> log-mel spectrogram on device -> time x frequency patch tokens (AST-style).

The pipeline ships raw 16 kHz samples (one contiguous run over the window); the spectrogram
is computed here in fp32 with `jnp.fft` so that the STFT settings are model config, not
shard format, and so that the host does no DSP. The mel filterbank is a numpy constant
folded into the graph.

The STFT is padded so that it yields exactly samples / hop frames, aligned to the frame
clock (hop 160 = 10 ms; a 20 fps frame is 5 hops), so an audio token's time is exact.

Config (model.modalities.audio): n_fft, win_length, hop_length, n_mels, fmin, fmax,
patch_time (STFT frames per token), patch_freq (mel bins per token), samples_per_frame
(16 kHz samples per context frame: 800 x frame_stride, linked to config.data).
Tokens: (samples / hop / patch_time) x (n_mels / patch_freq), ordered time, frequency.
"""

from __future__ import annotations

import functools

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from xefm_jax.data.spec import AUDIO_RATE_HZ
from xefm_jax.model import encoders
from xefm_jax.parallel import sharding


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
  return 2595.0 * np.log10(1.0 + f / 700.0)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
  return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


@functools.lru_cache(maxsize=None)
def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int, fmin: float, fmax: float
                   ) -> np.ndarray:
  """(n_fft // 2 + 1, n_mels) triangular HTK-mel filters with Slaney area normalisation."""
  freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)  # (F,)
  edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array(fmin)), _hz_to_mel(np.array(fmax)),
                                 n_mels + 2))  # (n_mels + 2,)
  lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
  rising = (freqs[:, None] - lower) / (centre - lower)  # (F, n_mels)
  falling = (upper - freqs[:, None]) / (upper - centre)
  fb = np.maximum(0.0, np.minimum(rising, falling))
  fb *= 2.0 / (upper - lower)  # equal area per filter
  return fb.astype(np.float32)


def _per_batch_shard(fn, x: jax.Array) -> jax.Array:
  """fn on each device's rows of x under the current mesh (`shard_map` over the axes the
  rules give "activation_batch"); fn(x) outside a mesh. GSPMD does not partition an FFT
  over its batch: it gathered the whole batch's frames onto every device, across nodes on
  a hybrid mesh (launch/aot_check.py's collectives)."""
  shards = sharding.batch_shards()
  if shards == 1 or x.shape[0] % shards:
    return fn(x)
  spec = nn.logical_to_mesh_axes(("activation_batch",), nn.get_logical_axis_rules())
  return jax.shard_map(fn, in_specs=spec, out_specs=spec)(x)


def log_mel_spectrogram(audio: jax.Array, *, n_fft: int, win_length: int, hop_length: int,
                        n_mels: int, fmin: float, fmax: float,
                        sample_rate: int = AUDIO_RATE_HZ) -> jax.Array:
  """(B, N) samples -> (B, N // hop, n_mels) natural-log mel energies, fp32."""
  n = audio.shape[-1]
  encoders.check_divisible("audio: samples", n, hop_length)
  pad = win_length - hop_length
  x = jnp.pad(audio.astype(jnp.float32), ((0, 0), (pad // 2, pad - pad // 2)))
  num_frames = n // hop_length
  idx = np.arange(num_frames)[:, None] * hop_length + np.arange(win_length)[None, :]
  window = np.hanning(win_length + 1)[:-1].astype(np.float32)  # periodic Hann
  frames = x[:, idx] * window  # (B, frames, win)
  power = _per_batch_shard(  # (B, frames, F)
      lambda f: jnp.square(jnp.abs(jnp.fft.rfft(f, n=n_fft, axis=-1))), frames)
  mel = power @ mel_filterbank(n_fft, n_mels, sample_rate, fmin, fmax)  # (B, frames, n_mels)
  return jnp.log(mel + 1e-6)


@encoders.register("audio")
class AudioTokenizer(encoders.Tokenizer):
  """(B, N) 16 kHz samples + (B,) validity -> spectrogram patch tokens."""

  fields = ("audio", "audio_valid")

  @nn.compact
  def __call__(self, batch: encoders.Batch) -> encoders.Patches:
    cfg = self.config
    valid = batch["audio_valid"]  # (B,)
    audio = jnp.where(valid[:, None], batch["audio"], 0)  # (B, N)
    spec = log_mel_spectrogram(audio, n_fft=cfg.n_fft, win_length=cfg.win_length,
                               hop_length=cfg.hop_length, n_mels=cfg.n_mels, fmin=cfg.fmin,
                               fmax=cfg.fmax)  # (B, F, M)
    pt, pf = cfg.patch_time, cfg.patch_freq
    encoders.check_divisible("audio: STFT frames", spec.shape[1], pt)
    encoders.check_divisible("audio: n_mels", cfg.n_mels, pf)
    x = einops.rearrange(spec, "b (t pt) (f pf) -> b t f (pt pf)", pt=pt, pf=pf)
    x = self.embed(x, "patch_embedding", input_axis="patch")  # (B, t, f, E)
    num_t, num_f = x.shape[1], x.shape[2]
    position = jnp.broadcast_to(self.table("frequency_position", num_f)[None],
                                (num_t, num_f, self.width))  # (t, f, E)
    # token centre in samples -> context frames (frame k spans [k, k+1) x samples_per_frame)
    centre = (np.arange(num_t) + 0.5) * pt * cfg.hop_length  # (t,)
    time = np.repeat(centre / cfg.samples_per_frame - 0.5, num_f).astype(np.float32)
    mask = jnp.broadcast_to(valid[:, None], (valid.shape[0], num_t * num_f))
    return encoders.Patches(einops.rearrange(x, "b t f e -> b (t f) e"), mask, time,
                        einops.rearrange(position, "t f e -> (t f) e"))

  @staticmethod
  def targets(batch: encoders.Batch, config) -> tuple[jax.Array, jax.Array]:
    """Per-patch normalised log-mel patches, (B, t f, pt pf), and weight."""
    valid = batch["audio_valid"]  # (B,)
    spec = log_mel_spectrogram(
        jnp.where(valid[:, None], batch["audio"], 0.0), n_fft=config.n_fft,
        win_length=config.win_length, hop_length=config.hop_length, n_mels=config.n_mels,
        fmin=config.fmin, fmax=config.fmax)  # (B, F, M)
    x = einops.rearrange(spec, "b (t pt) (f pf) -> b (t f) (pt pf)", pt=config.patch_time,
                         pf=config.patch_freq)
    weight = jnp.broadcast_to(valid[:, None, None], x.shape)
    return encoders.normalise_patches(x, weight), weight
