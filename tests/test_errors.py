"""Bad input as a new user hits it: every launcher and pipeline refuses it in one line
`xefm: <file or key>: <what is wrong>; <what to do>` with exit 1 (2 for usage), before
anything is compiled; --verbose adds the traceback. And config validation key by key."""

import pathlib
import re
import shutil
import subprocess
import sys

import ml_collections
import pytest

from configs import local, stage2
from xefm_jax import config_check
from xefm_jax import errors
from xefm_jax.data import shards
from xefm_jax.train import checkpoint
from train_runs import FLAGS, with_devices

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _errors(proc: subprocess.CompletedProcess) -> list[str]:
  """The lines a person reads: stdout and stderr without absl's INFO lines (JAX's note that
  it found no TPU)."""
  lines = (proc.stdout + proc.stderr).splitlines()
  return [line for line in lines if line.strip() and not re.match(r"I\d{4} ", line)]


def _train(env, shards_dir, *extra, workdir="unused") -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "launch/train.py", *FLAGS, f"--workdir={workdir}",
                         f"--config.data.shards={shards_dir}", *extra], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)


def _one_line(proc, code: int, *words: str) -> str:
  lines = _errors(proc)
  assert proc.returncode == code, (proc.returncode, lines[-20:])
  assert len(lines) < 5 and lines[0].startswith("xefm: "), lines
  for word in words:
    assert word in lines[0], (word, lines[0])
  return lines[0]


# ------------------------------------------------------------------------- the launchers


@pytest.mark.parametrize("flag, words", [
    ("--config.optim.learning_rate=-1e-3", ["config.optim.learning_rate", "-0.001", "> 0"]),
    ("--config.data.batch_size=12", ["config.data.batch_size", "12", "8 data-parallel"]),
    ("--config.model.widht=3", ["--config.model.widht", "config.model.width"]),
    ("--config.optim.warmup_steps=50", ["config.optim.warmup_steps", "config.train.steps"]),
    ("--config.optim.learning_rate=fast", ["--config.optim.learning_rate=fast"]),
])
def test_train_refuses_a_bad_config_in_one_line(shard_corpus, train_env, tmp_path, flag,
                                                words):
  # 8 devices, which the batch check needs; every case is refused before anything compiles
  proc = _train(with_devices(train_env, 8), shard_corpus, "--config.train.steps=8", flag,
                workdir=tmp_path / "w")
  _one_line(proc, 1, *words)
  assert not (tmp_path / "w" / "checkpoints").exists()  # refused before anything started


def test_train_refuses_an_empty_corpus_folder_and_verbose_shows_the_traceback(
    train_env, tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  line = _one_line(_train(train_env, empty), 1, str(empty / shards.MANIFEST_FILE),
                   "missing", "shred.py")
  assert line.count(";") >= 1
  verbose = _train(train_env, empty, "--verbose")
  assert verbose.returncode == 1 and "Traceback (most recent call last)" in verbose.stderr
  assert _errors(verbose)[-1] == line


def test_train_refuses_a_corpus_with_deleted_chunks(shard_corpus, train_env, tmp_path):
  """An interrupted copy: every pose chunk of a train shard gone. The run stops at start,
  naming the shard, the array and the first missing chunk."""
  corpus = tmp_path / "corpus"
  shutil.copytree(shard_corpus, corpus)
  manifest = shards.load_manifest(corpus)
  train = next(s["name"] for s in manifest["shards"] if s["split"] == "train")
  shutil.rmtree(corpus / train / "pose" / shards.CHUNK_DIR)
  _one_line(_train(train_env, corpus), 1, f"{train}/pose", "chunk files are missing",
            "c/0/0/0", "--verify")


def test_usage_errors_exit_2(train_env):
  proc = subprocess.run([sys.executable, "launch/train.py", "--config=configs/local.py:tiny",
                         "--no_such_flag=1"], cwd=ROOT, env=train_env, capture_output=True,
                        text=True, timeout=300)
  _one_line(proc, 2, "no_such_flag")
  proc = subprocess.run([sys.executable, "launch/train.py", "--config=configs/nope.py"],
                        cwd=ROOT, env=train_env, capture_output=True, text=True, timeout=300)
  _one_line(proc, 1, "--config=configs/nope.py", "does not load")


def test_model_summary_and_aot_check_refuse_bad_configs(train_env):
  for script in ("launch/model_summary.py", "launch/aot_check.py"):
    proc = subprocess.run([sys.executable, script, "--config=configs/local.py:tiny",
                           "--config.optim.grad_accum=3"], cwd=ROOT, env=train_env,
                          capture_output=True, text=True, timeout=300)
    _one_line(proc, 1, "config.data.batch_size", "config.optim.grad_accum (3)")


def test_eval_refuses_a_run_without_checkpoints(train_env, tmp_path):
  proc = subprocess.run([sys.executable, "launch/eval.py", "--config=configs/eval.py:quick",
                         f"--workdir={tmp_path}"], cwd=ROOT, env=train_env,
                        capture_output=True, text=True, timeout=300)
  _one_line(proc, 1, str(tmp_path), "train first")


def test_pipelines_report_their_errors_in_one_line(tmp_path):
  (tmp_path / "raw").mkdir()
  proc = subprocess.run([sys.executable, "data_pipelines/validate.py", "--raw",
                         str(tmp_path / "raw"), "--report", str(tmp_path / "r.json")],
                        cwd=ROOT, capture_output=True, text=True, timeout=300)
  _one_line(proc, 2, "no <session>/ep<k>")
  proc = subprocess.run([sys.executable, "data_pipelines/shred.py", "--verify",
                         str(tmp_path / "raw")], cwd=ROOT, capture_output=True, text=True,
                        timeout=300)
  _one_line(proc, 1, "manifest.json", "missing")


# ------------------------------------------------------------------------ the helper itself


def test_cli_exit_codes_and_traceback_switch(capsys, monkeypatch):
  def main(argv):
    if argv == ["usage"]:
      raise errors.UsageError("--x: not a flag; see --help")
    if argv == ["bug"]:
      raise KeyError("a bug keeps its traceback")
    raise shards.ShardError("a/b.json: is missing\nc/d: is short; re-shred")

  with pytest.raises(SystemExit) as e:
    errors.cli(main, [])
  assert e.value.code == 1
  assert capsys.readouterr().err.splitlines() == ["xefm: a/b.json: is missing",
                                                  "xefm: c/d: is short; re-shred"]
  with pytest.raises(SystemExit) as e:
    errors.cli(main, ["usage"])
  assert e.value.code == 2
  with pytest.raises(KeyError):
    errors.cli(main, ["bug"])
  monkeypatch.setenv(errors.TRACEBACK_ENV, "1")
  with pytest.raises(SystemExit):
    errors.cli(main, [])
  assert "Traceback" in capsys.readouterr().err


# ---------------------------------------------------------------------- config validation


def test_shipped_configs_are_valid():
  assert config_check.problems(local.get_config(), num_devices=1) == []
  assert config_check.problems(local.get_config("tiny"), num_devices=8) == []
  assert config_check.problems(stage2.get_config(), num_devices=32) == []


def _problems(num_devices=8, **overrides):
  config = local.get_config("tiny")
  for key, value in overrides.items():
    node = config
    *path, last = key.split("__")
    for part in path:
      node = node[part]
    node[last] = value
  return config_check.problems(config, num_devices=num_devices)


@pytest.mark.parametrize("overrides, key", [
    (dict(optim__learning_rate=0.0), "config.optim.learning_rate: is 0.0"),
    (dict(optim__b2=1.0), "config.optim.b2"),
    (dict(optim__clip_norm=-1.0), "config.optim.clip_norm"),
    (dict(optim__decay_steps=0), "config.optim.decay_steps"),
    (dict(optim__grad_accum=0), "config.optim.grad_accum"),
    (dict(train__steps=0), "config.train.steps"),
    (dict(train__ema_decay=1.5), "config.train.ema_decay"),
    (dict(train__rng_impl="mersenne"), "config.train.rng_impl"),
    (dict(train__profile_steps=(5, 2)), "config.train.profile_steps"),
    (dict(data__view_dropout=1.0), "config.data.view_dropout"),
    (dict(data__frames=0), "config.data.frames"),
    (dict(data__views=("stereo_left", "stereo_left")), "config.data.views"),
    (dict(data__batch_size=6, optim__grad_accum=4), "config.optim.grad_accum (4)"),
    (dict(data__batch_size=16, optim__grad_accum=4), "microbatches splits over the 8"),
    (dict(data__batch_size=12), "the batch splits over the 8"),
    (dict(mesh__tensor=3), "config.mesh:"),
    (dict(mesh__dcn__data=3), "config.mesh:"),  # 8 devices are not 3 nodes
    (dict(train__eval_retrieval_windows=-1), "config.train.eval_retrieval_windows"),
    (dict(objectives__forecasting__readout="futrue"), "did you mean 'future'"),
    (dict(model__group_dropout__rate=1.5), "config.model.group_dropout.rate"),
])
def test_each_bad_value_is_named_with_its_full_key(overrides, key):
  found = _problems(**overrides)
  assert len(found) == 1 and key in found[0], found
  assert found[0].startswith("config.") and "; " in found[0]


def test_no_objective_and_an_unknown_objective_are_refused():
  config = local.get_config("tiny")
  for c in config.objectives.values():
    c.weight = 0.0
  assert "no objective has a positive weight" in config_check.problems(config)[0]
  config = local.get_config("tiny")
  config.unlock()
  config.objectives.forcasting = config.objectives.forecasting.copy_and_resolve_references()
  found = config_check.problems(config)
  assert found and "config.objectives.forcasting" in found[0]
  assert "config.objectives.forecasting" in found[0]


def test_a_window_longer_than_every_episode_is_refused(shard_corpus):
  from xefm_jax.data import source
  config = local.get_config("tiny")
  corpus = source.Corpus(shard_corpus)
  config_check.check_corpus(config, corpus)
  config.data.frames = 400
  with pytest.raises(config_check.ConfigError, match="config.data.frames.*longest"):
    config_check.check_corpus(config, corpus)


def test_closest_match():
  assert errors.closest("widht", ["width", "dtype", "fusion"]) == "width"
  assert errors.closest("policy", ["window", "future"]) is None


def test_a_checkpoints_path_that_is_a_file_is_refused_at_start(tmp_path):
  """Before the step compiles and trains, not at its first save (the sweep's failing point,
  tests/test_sweep.py, is this case through the launcher)."""
  path = tmp_path / "checkpoints"
  path.write_text("not a directory")
  train = ml_collections.ConfigDict(dict(ckpt_every=1, keep=1, async_checkpoint=False))
  with pytest.raises(checkpoint.CheckpointError, match=f"{path}: not a directory"):
    checkpoint.Checkpointer(path, train)
