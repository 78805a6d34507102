"""PyAV probing and decoding: frame selection, resizing, truncation, audio alignment."""

import numpy as np
import pytest

from raw_episode_fixtures import AUDIO_RATE, FPS, frame_indices, onset_sample, truncate, write_mp4
from xefm_jax.data import media

N = 40


@pytest.fixture(scope="module")
def mp4s(tmp_path_factory):
  root = tmp_path_factory.mktemp("media")
  paths = {
      "plain": root / "plain.mp4",
      "gop": root / "gop.mp4",  # keyframes every 8 frames, so seeking lands mid-file
      "faststart": root / "faststart.mp4",
      "silent": root / "silent.mp4",
      "video_late": root / "video_late.mp4",  # video starts 5 frames after the audio
  }
  write_mp4(paths["plain"], N)
  write_mp4(paths["gop"], N, gop=8)
  write_mp4(paths["faststart"], N, faststart=True, gop=8)
  write_mp4(paths["silent"], N, audio=False)
  write_mp4(paths["video_late"], N, video_delay_frames=5)
  return paths


def test_probe_reads_the_header(mp4s):
  info = media.probe(mp4s["plain"])
  assert (info.width, info.height, info.fps, info.num_frames) == (64, 32, 20.0, N)
  assert info.duration_s == pytest.approx(N / FPS)
  assert info.has_audio and info.audio_rate == AUDIO_RATE and info.audio_channels == 2
  silent = media.probe(mp4s["silent"])
  assert not silent.has_audio and silent.audio_rate is None


def test_decode_all_frames_in_order(mp4s):
  frames = media.decode_video(mp4s["plain"])
  assert frames.shape == (N, 32, 64, 3) and frames.dtype == np.uint8
  assert frame_indices(frames) == list(range(N))


@pytest.mark.parametrize("name", ["plain", "gop"])
def test_start_stop_stride_and_resize(mp4s, name):
  frames = media.decode_video(mp4s[name], size=(16, 32), stride=3, start=7, stop=33)
  assert frames.shape == (9, 16, 32, 3)
  assert frame_indices(frames) == list(range(7, 33, 3))
  square = media.decode_video(mp4s[name], size=48, start=N - 2)
  assert square.shape == (2, 48, 48, 3)
  assert frame_indices(square) == [N - 2, N - 1]


def test_seek_lands_on_a_keyframe_before_start(mp4s, monkeypatch):
  landed = []
  original = media._frames_from

  def spy(*args):
    for i, (index, frame) in enumerate(original(*args)):
      if i == 0:
        landed.append(index)
      yield index, frame

  monkeypatch.setattr(media, "_frames_from", spy)
  frames = media.decode_video(mp4s["gop"], start=27, stop=30)
  assert frame_indices(frames) == [27, 28, 29]
  assert landed == [24]  # the keyframe before 27 with a GOP of 8, not frame 0


def test_resize_is_area_for_downscaling(mp4s):
  full = media.decode_video(mp4s["plain"], start=5, stop=6).astype(np.float64)
  half = media.decode_video(mp4s["plain"], size=(16, 32), start=5, stop=6).astype(np.float64)
  # AREA averages 2x2 blocks: away from stripe edges the values agree with the box mean.
  box = full.reshape(1, 16, 2, 32, 2, 3).mean((2, 4))
  assert np.abs(half - box)[:, 2:-2].mean() < 3.0


def test_truncated_mp4_without_header_is_a_clear_error(mp4s, tmp_path):
  cut = tmp_path / "cut.mp4"
  cut.write_bytes(mp4s["plain"].read_bytes())
  truncate(cut, 0.6)  # the moov header sits at the end: it is gone
  with pytest.raises(media.MediaError, match="cut.mp4.*truncated or corrupt"):
    media.probe(cut)
  with pytest.raises(media.MediaError, match="cut.mp4"):
    media.decode_video(cut)


def test_truncated_mp4_with_header_fails_when_the_cut_is_reached(mp4s, tmp_path):
  cut = tmp_path / "cut_faststart.mp4"
  cut.write_bytes(mp4s["faststart"].read_bytes())
  truncate(cut, 0.6)
  assert media.probe(cut).num_frames == N  # the header still promises every frame
  # Decoding stops at `stop`, so frames before the cut still read...
  assert frame_indices(media.decode_video(cut, stop=5)) == list(range(5))
  # ...and reaching the cut is an error naming the file.
  with pytest.raises(media.MediaError, match="cut_faststart.mp4.*ended early"):
    media.decode_video(cut)


def test_bad_requests(mp4s, tmp_path):
  with pytest.raises(media.MediaError, match="requested"):
    media.decode_video(mp4s["plain"], stop=N + 1)
  with pytest.raises(media.MediaError, match="missing"):
    media.probe(tmp_path / "nope.mp4")
  with pytest.raises(ValueError):
    media.decode_video(mp4s["plain"], stride=0)
  assert media.decode_video(mp4s["plain"], start=3, stop=3).shape == (0, 32, 64, 3)


@pytest.mark.parametrize("rate", [16000, 8000])
def test_audio_length_and_alignment(mp4s, rate):
  n = int(round(N / FPS * rate))
  x = media.decode_audio(mp4s["plain"], rate=rate, num_samples=n)
  assert x.shape == (n,) and x.dtype == np.float32
  # The tone starts at frame 10. The AAC priming (1024 samples, 21 ms) must be gone: the
  # demuxer's edit list drops it and the pts alignment must not add it back.
  assert abs(onset_sample(x) - 10 / FPS * rate) <= 0.0015 * rate
  assert np.abs(x[:int(0.45 * rate)]).max() < 0.02


def test_audio_aligned_to_the_first_video_frame(mp4s):
  # Video frame 0 plays 5 frames (0.25 s) after audio time 0; the tone starts at audio
  # time 0.5 s, so 0.25 s after video frame 0.
  x = media.decode_audio(mp4s["video_late"], rate=16000)
  assert abs(onset_sample(x) - 4000) <= 24


def test_audio_pads_and_truncates(mp4s):
  x = media.decode_audio(mp4s["plain"], num_samples=100)
  assert x.shape == (100,)
  y = media.decode_audio(mp4s["plain"], num_samples=50000)
  assert y.shape == (50000,) and not y[40000:].any()


def test_audio_missing_is_a_clear_error(mp4s):
  with pytest.raises(media.MediaError, match="silent.mp4.*no audio stream"):
    media.decode_audio(mp4s["silent"])
