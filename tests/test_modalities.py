"""Modality encoders: shapes and masks, and masked inputs without influence, one by one."""

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import local
from model_helpers import host_params
from xefm_jax.data import spec
from xefm_jax.data.geometry import axis_angle_to_matrix, make_se3
from xefm_jax.modalities import audio, pose
from xefm_jax.model import encoders
from xefm_jax.model.encoders import ModalityEncoder
from xefm_jax.model.xefm import XEFM

CONFIG = local.get_config("tiny")
SPEC = spec.WindowSpec.from_config(CONFIG.data)
B = 2


def _encoder(name):
  return ModalityEncoder(CONFIG.model.modalities[name], CONFIG.model.width, name=name,
                         attention="xla")


@pytest.fixture(scope="module")
def params():
  """Every encoder's parameters (drawn on the host: see model_helpers.host_params)."""
  return host_params(XEFM(CONFIG.model), spec.fake_batch(SPEC, B, seed=1))["params"]


def _init_apply(params, name):
  return {"params": params[name]}, jax.jit(_encoder(name).apply)


def _mask_view(b):  # camera 1 missing in both samples
  b["video_valid"][:, 1] = False
  return [("video", np.s_[:, 1])]


def _mask_audio(b):
  b["audio_valid"][0] = False
  return [("audio", np.s_[0])]


def _mask_depth(b):  # one frame of sample 0 (half a tubelet), all of sample 1
  b["depth_valid"][0, 1] = False
  b["depth_valid"][1] = False
  return [("depth", np.s_[0, 1]), ("depth_confidence", np.s_[0, 1]), ("depth", np.s_[1]),
          ("depth_intrinsics", np.s_[1])]


def _mask_pose(b):
  b["pose_valid"][0, 2] = False
  return [("pose", np.s_[0, 2])]


def _mask_mocap(b):  # left hand of sample 0 at frame 1, body of sample 1 at frame 3
  b["hands_valid"][0, 1, 0] = False
  b["body_valid"][1, 3] = False
  return [("hands", np.s_[0, 1, 0]), ("body", np.s_[1, 3])]


def _mask_imu(b):
  b["imu_valid"][0, 0] = False
  return [("imu", np.s_[0, 0])]


def _mask_language(b):
  b["caption_valid"][1] = False
  return [("caption", np.s_[1])]


# name -> (tokens per window for the tiny config, function masking some input in place and
# returning the (field, index) of the masked values)
CASES = {
    "video": (6 * 2 * 4, _mask_view),
    "audio": (4 * 2, _mask_audio),
    "depth": (2 * 4, _mask_depth),
    "pose": (2, _mask_pose),
    "mocap": (2 * 3, _mask_mocap),
    "imu": (2, _mask_imu),
    "language": (SPEC.caption_len, _mask_language),
}


def _perturb(batch, where, rng, nan=False):
  out = copy.deepcopy(batch)
  for field, idx in where:
    x = out[field]
    if x.dtype == np.uint8:
      x[idx] = rng.integers(0, 256, x[idx].shape, dtype=np.uint8)
    elif x.dtype == np.int32:
      x[idx] = rng.integers(4, SPEC.vocab_size, x[idx].shape, dtype=np.int32)
    else:
      x[idx] = np.nan if nan else 10 * rng.normal(size=x[idx].shape)
  return out


def test_registry_has_every_modality_and_names_missing_ones():
  for name in CASES:
    assert issubclass(encoders.get_tokenizer(name), encoders.Tokenizer)
  assert set(CASES) <= set(encoders.registered())
  with pytest.raises(KeyError, match="modalities/smell.py"):
    encoders.get_tokenizer("smell")


def test_a_missing_window_field_is_named():
  inputs = spec.fake_batch(SPEC, B, seed=1)
  del inputs["imu_valid"]
  with pytest.raises(KeyError, match="modality 'imu'.*lacks \\['imu_valid'\\]"):
    jax.eval_shape(_encoder("imu").init, jax.random.key(0), inputs)


@pytest.mark.parametrize("name", sorted(CASES))
def test_encoder_shapes_masks_and_masked_inputs_have_no_influence(params, name):
  n, mask_some = CASES[name]
  inputs = spec.fake_batch(SPEC, B, seed=1)
  inputs.pop("next")
  variables, apply = _init_apply(params, name)

  full, pooled, _ = apply(variables, inputs)
  group = full
  assert group.tokens.shape == (B, n, CONFIG.model.width)
  assert group.mask.shape == (B, n) and group.mask.dtype == jnp.bool_
  assert group.time.shape in ((n,), (B, n))
  assert bool(group.mask.all())  # every stream of a fake window is valid
  assert pooled.shape == (B, CONFIG.model.width)
  assert float(group.time.min()) >= -0.5 and float(group.time.max()) <= SPEC.frames - 0.5

  masked = copy.deepcopy(inputs)
  where = mask_some(masked)
  group, pooled, _ = apply(variables, masked)
  assert not np.array_equal(group.tokens, full.tokens)  # masking changed something
  np.testing.assert_array_equal(group.tokens * ~group.mask[..., None], 0)
  rng = np.random.default_rng(0)
  for nan in (False, True):
    if nan and name in ("video", "language"):  # integer inputs cannot be NaN
      continue
    g2, p2, _ = apply(variables, _perturb(masked, where, rng, nan=nan))
    np.testing.assert_array_equal(g2.tokens, group.tokens)
    np.testing.assert_array_equal(g2.mask, group.mask)
    np.testing.assert_array_equal(p2, pooled)
  # the same change where the input is valid does change the output: the test can fail
  g3, _, _ = apply(variables, _perturb(inputs, where, rng))
  assert not np.allclose(g3.tokens, full.tokens)


def test_video_masks_exactly_the_missing_view(params):
  inputs = spec.fake_batch(SPEC, B, seed=1)
  inputs["video_valid"][0, 3] = False
  variables, apply = _init_apply(params, "video")
  group, _, _ = apply(variables, inputs)
  per_view = np.asarray(group.mask).reshape(B, len(SPEC.views), -1)  # tokens are view-major
  expected = np.ones_like(per_view)
  expected[0, 3] = False
  np.testing.assert_array_equal(per_view, expected)


def test_hidden_tokens_take_no_part_in_the_encoder(params):
  """MAE: a hidden token is neither key nor query. The visible tokens come out exactly as
  for a window where the hidden token's frames are missing (an attended mask token, the
  BERT way, would change them), and the hidden token's own output is zero."""
  inputs = spec.fake_batch(SPEC, B, seed=1)
  variables, apply = _init_apply(params, "imu")
  keep = jnp.array([[True, False], [True, True]])
  group, pooled, visible = apply(variables, inputs, keep)
  missing = copy.deepcopy(inputs)
  missing["imu_valid"][0, 2:] = False  # frames 2-3 = the second token of sample 0
  g2, p2, v2 = apply(variables, missing)
  np.testing.assert_array_equal(visible, v2)
  np.testing.assert_allclose(group.tokens, g2.tokens, atol=1e-6)
  np.testing.assert_allclose(pooled, p2, atol=1e-6)
  np.testing.assert_array_equal(group.tokens[0, 1], 0)
  assert bool(group.mask.all())  # hidden tokens still exist (targets); only the trunk skips them


def test_modality_drop_removes_the_sample(params):
  inputs = spec.fake_batch(SPEC, B, seed=1)
  variables, apply = _init_apply(params, "pose")
  group, pooled, _ = apply(variables, inputs, None, jnp.array([True, False]))
  np.testing.assert_array_equal(group.mask[0], False)
  np.testing.assert_array_equal(pooled[0], 0)
  assert bool(group.mask[1].all())


def test_log_mel_of_a_tone_peaks_at_its_frequency():
  t = np.arange(16_000) / 16_000
  tone = np.sin(2 * np.pi * 1000.0 * t)[None].astype(np.float32)  # 1 kHz, 1 s
  spec_ = audio.log_mel_spectrogram(jnp.asarray(tone), n_fft=512, win_length=400,
                                    hop_length=160, n_mels=64, fmin=20.0, fmax=8000.0)
  assert spec_.shape == (1, 100, 64)  # exactly samples / hop frames
  fb = audio.mel_filterbank(512, 64, 16_000, 20.0, 8000.0)
  centres = np.argmax(fb, axis=0) * 16_000 / 512  # Hz at each filter's peak
  peak = int(np.argmax(np.asarray(spec_[0, 50])))
  assert abs(centres[peak] - 1000.0) < 100.0


def test_relative_motion_is_expressed_in_the_previous_body_frame():
  # body x is forward: step 1 m forward while turning left 90 degrees, then step 1 m forward
  yaw = [0.0, np.pi / 2, np.pi / 2]
  rot = np.stack([axis_angle_to_matrix(np.array([0.0, 0.0, a])) for a in yaw])
  trans = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
  poses = make_se3(rot, trans)[None].astype(np.float32)  # (1, 3, 4, 4) T_world_body
  motion, valid = pose.relative_motion(jnp.asarray(poses), jnp.ones((1, 3), bool))
  np.testing.assert_array_equal(valid, [[False, True, True]])
  np.testing.assert_allclose(motion[0, 1:, 6:], [[1.0, 0.0, 0.0]] * 2, atol=1e-6)
  turn = np.asarray(motion[0, 1, :6]).reshape(3, 2) + np.eye(3)[:, :2]  # R_rel[:, :2]
  np.testing.assert_allclose(turn, axis_angle_to_matrix(np.array([0, 0, np.pi / 2]))[:, :2],
                             atol=1e-6)
  np.testing.assert_allclose(motion[0, 2, :6], 0.0, atol=1e-6)  # no turn at frame 2
