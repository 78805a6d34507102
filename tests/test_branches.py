"""The branch registry: the shipped configs are valid against the corpus, and the validator
fails with a clear message on a missing key, a package holding an MP4, a split policy that
is not the corpus', a missing entrypoint and a check that does not run."""

import json
import pathlib
import shutil
import subprocess
import sys
import types

import pytest

from configs.branches import common as branches_common
from data_pipelines.export import common as export_common
from train_runs import launch_module

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "branches"
BRANCHES = ("xefm", "qwen3_omni_lora", "gemini_robotics", "cosmos_world_model", "policy_vla",
            "gr00t")


BRANCHES_CLI = launch_module("branches")


def _main(capsys, *argv):
  """launch/branches.py's main() in this process (the CLI's exit code and output)."""
  rc = BRANCHES_CLI.main(list(argv))
  out = capsys.readouterr()
  return types.SimpleNamespace(returncode=rc, stdout=out.out, stderr=out.err)


def _validate(capsys, shards, run, *extra, config_dir=CONFIGS):
  return _main(capsys, "--validate", "--no-run", "--shards", str(shards), "--run", str(run),
               "--config-dir", str(config_dir), *extra)


def _config_dir(tmp_path, edit_name=None, edit=""):
  """A copy of the shipped configs; `edit` appended to get_config() of `edit_name`."""
  out = tmp_path / "branches"
  shutil.copytree(CONFIGS, out, ignore=shutil.ignore_patterns("__pycache__"))
  if edit_name:
    path = out / f"{edit_name}.py"
    text = path.read_text()
    body = text.rsplit("  return c\n", 1) if text.rstrip().endswith("return c") else None
    if body:
      path.write_text(body[0] + edit + "  return c\n")
    else:  # `return common.branch(...)`: bind it first
      path.write_text(text.replace("  return common.branch(", "  c = common.branch(", 1)
                      + edit + "  return c\n")
  return out


def test_the_registry_lists_every_branch_with_the_public_keys():
  out = subprocess.run([sys.executable, "launch/branches.py", "--json"], cwd=ROOT,
                       capture_output=True, text=True)
  assert out.returncode == 0, out.stderr
  configs = {c["id"]: c for c in json.loads(out.stdout)}
  assert set(configs) == set(BRANCHES)
  for c in configs.values():
    assert set(branches_common.REQUIRED_KEYS) <= set(c)
    assert set(branches_common.ARTIFACT_KEYS) <= set(c["artifact_contract"])
  assert configs["xefm"]["status"] == "implemented"
  assert list(configs["xefm"]["checks"]) == ["export", "neutral_index", "train", "eval",
                                             "score"]


def test_shipped_configs_are_valid(shard_corpus, tmp_path, capsys):
  out = _validate(capsys, shard_corpus, tmp_path / "run")
  assert out.returncode == 0, out.stdout + out.stderr
  assert "6 branch configs, valid" in out.stdout


def test_a_missing_key_is_named(shard_corpus, tmp_path, capsys):
  configs = _config_dir(tmp_path, "gr00t", "  del c['split_policy']\n")
  out = _validate(capsys, shard_corpus, tmp_path / "run", config_dir=configs)
  assert out.returncode == 1
  assert (f"{configs / 'gr00t.py'}: missing required key(s) ['split_policy']" in out.stderr)


def test_a_package_holding_an_mp4_fails(shard_corpus, tmp_path, capsys):
  run = tmp_path / "run"
  (run / "eval" / "8").mkdir(parents=True)
  (run / "eval" / "8" / "report.md").write_text("# ok\n")
  assert _validate(capsys, shard_corpus, run).returncode == 0
  (run / "eval" / "8" / "clip.mp4").write_bytes(b"\0" * 16)
  (run / "eval" / "8" / "weights.safetensors").write_bytes(b"\0")
  out = _validate(capsys, shard_corpus, run)
  assert out.returncode == 1
  assert (f"configs/branches/xefm.py: {run / 'eval' / '8' / 'clip.mp4'}: video (raw MP4 or a "
          "rendering of it), forbidden in a public package") in out.stderr
  assert "weights.safetensors: model weights" in out.stderr
  problems = export_common.package_problems(run / "eval")
  assert len(problems) == 2
  with pytest.raises(export_common.ExportError, match="2 forbidden artifact"):
    export_common.check_package(run / "eval")


def test_split_policy_entrypoints_and_status_are_checked(shard_corpus, tmp_path, capsys):
  configs = _config_dir(tmp_path, "cosmos_world_model",
                        "  c.split_policy.unit = 'episode'\n"
                        "  c.split_policy.default_counts.test = 0\n"
                        "  c.entrypoints.export = 'data_pipelines/export/no_such_export.py'\n"
                        "  c.status = 'someday'\n")
  out = _validate(capsys, shard_corpus, tmp_path / "run", config_dir=configs)
  assert out.returncode == 1
  for text in ("split_policy must be the corpus' session split (unit 'session'",
               "split_policy.default_counts.test must be a positive count, got 0",
               "entrypoint export data_pipelines/export/no_such_export.py does not exist",
               "status 'someday'"):
    assert text in out.stderr, text
  too_many = _config_dir(tmp_path / "b", "gemini_robotics",
                         "  c.split_policy.default_counts.val = 99\n")
  out = _validate(capsys, shard_corpus, tmp_path / "run", config_dir=too_many)
  assert out.returncode == 1 and "split val of" in out.stderr
  assert "the branch needs at least 99" in out.stderr


def test_a_check_that_fails_is_reported_with_its_output(shard_corpus, tmp_path, capsys):
  """The implemented branch's checks run in order and the first failure is reported."""
  configs = _config_dir(tmp_path, "xefm", (
      "  c.checks = ml_collections.ConfigDict(dict(\n"
      "      first='{python} -c \"print(1)\"',\n"
      "      second='{python} -c \"import sys; print(\\'no corpus at {shards}\\', "
      "file=sys.stderr); sys.exit(3)\"',\n"
      "      third='{python} -c \"raise SystemExit(4)\"'), sort_keys=False)\n"))
  out = _main(capsys, "--validate", "--branch", "xefm", "--shards", str(shard_corpus), "--run",
              str(tmp_path / "run"), "--config-dir", str(configs))
  assert out.returncode == 1
  assert "xefm: check first ok" in out.stdout
  assert "check second failed (exit 3" in out.stderr
  assert f"no corpus at {shard_corpus}" in out.stderr
  assert "check third" not in out.stdout + out.stderr
