"""The branch registry: every branch of the plan, its contract, and a validator.

    python launch/branches.py                       one line per branch
    python launch/branches.py --json [--branch ID]  the configs in the public registry's form
    python launch/branches.py --validate [--no-run] [--shards SHARDS] [--run RUN]
        [--train-config configs/local.py] [--eval-config configs/eval.py:quick]

Configs are configs/branches/<id>.py (configs/branches/common.py states the keys). --validate
checks, for every branch:
  * the public registry's required keys, and artifact_contract's;
  * status is implemented or planned_adapter; primary_metrics holds held_out_episode_count;
    the eval files include a JSON-lines predictions file; the forbidden list names raw MP4,
    HDF5, RRD, weights, checkpoints and archives;
  * its split policy is the corpus' session split (unit "session", source "corpus", a
    leakage guard), and the corpus (--shards, default the run's) has no session in two
    splits and at least default_counts sessions in each;
  * every entrypoint it names exists; for an implemented branch, every `checks` command runs
    on the generated corpus (in a temporary folder; --no-run skips them);
  * its public package (artifact_contract.public_package, `{run}` the run), where it exists,
    holds none of the forbidden artifacts (data_pipelines/export/common.py's guard).
Prints one line per problem, `<config>: <what is wrong>`; exit status 1 if any, 0 if none,
2 on usage errors.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import pathlib
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Optional, Sequence

import ml_collections

from configs.branches import common as branches_common
from data_pipelines.export import common as export_common

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "configs" / "branches"
NOT_CONFIGS = ("__init__.py", "common.py")
FORBIDDEN_TERMS = ("mp4", "hdf5", "rrd", "weights", "checkpoints", "archives")
CHECK_TIMEOUT_S = 1800


class RegistryError(Exception):
  """A branch config that cannot be loaded; the message names the file."""


def load_config(path: pathlib.Path) -> ml_collections.ConfigDict:
  """get_config() of one config file, by path (configs/branches/ or any folder)."""
  spec = importlib.util.spec_from_file_location(f"branch_config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
    config = module.get_config()
  except Exception as e:  # a config is code: report its error against the file
    raise RegistryError(f"{path}: cannot load ({type(e).__name__}: {e})") from None
  if not isinstance(config, ml_collections.ConfigDict):
    raise RegistryError(f"{path}: get_config() returned {type(config).__name__}, expected "
                        "an ml_collections.ConfigDict")
  return config


def load_registry(config_dir: pathlib.Path) -> dict[pathlib.Path, ml_collections.ConfigDict]:
  paths = sorted(p for p in config_dir.glob("*.py") if p.name not in NOT_CONFIGS)
  if not paths:
    raise RegistryError(f"{config_dir}: no branch configs (*.py)")
  return {p: load_config(p) for p in paths}


# ---------------------------------------------------------------------------- checks


def contract_problems(path: pathlib.Path, c: ml_collections.ConfigDict) -> list[str]:
  """Keys and their shapes (module docstring), without touching a corpus."""
  where = str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
  missing = [k for k in branches_common.REQUIRED_KEYS if k not in c]
  if missing:
    return [f"{where}: missing required key(s) {missing} (the public registry requires "
            f"{', '.join(branches_common.REQUIRED_KEYS)})"]
  out = []
  art = c.artifact_contract
  missing = [k for k in branches_common.ARTIFACT_KEYS if k not in art]
  if missing:
    out.append(f"{where}: artifact_contract is missing key(s) {missing}")
    return out
  if c.id != path.stem:
    out.append(f"{where}: id {c.id!r} must be the file's name {path.stem!r}")
  if c.status not in branches_common.STATUSES:
    out.append(f"{where}: status {c.status!r}, expected one of {branches_common.STATUSES}")
  if "held_out_episode_count" not in list(c.primary_metrics):
    out.append(f"{where}: primary_metrics must include held_out_episode_count")
  if not any(str(f).endswith(".jsonl") for f in art.required_eval_files):
    out.append(f"{where}: artifact_contract.required_eval_files must include a JSON-lines "
               "predictions file")
  if not list(art.required_training_files):
    out.append(f"{where}: artifact_contract.required_training_files is empty")
  if not list(art.public_package_allowed):
    out.append(f"{where}: artifact_contract.public_package_allowed is empty")
  forbidden = " ".join(str(x).lower() for x in art.public_package_forbidden)
  for term in FORBIDDEN_TERMS:
    if term not in forbidden:
      out.append(f"{where}: artifact_contract.public_package_forbidden must name {term}")
  s = c.split_policy
  if s.get("unit") != "session" or s.get("source") != "corpus":
    out.append(f"{where}: split_policy must be the corpus' session split (unit 'session', "
               f"source 'corpus'), got unit {s.get('unit')!r}, source {s.get('source')!r}")
  counts = dict(s.get("default_counts") or {})
  for split in ("train", "val", "test"):
    if not isinstance(counts.get(split), int) or counts[split] <= 0:
      out.append(f"{where}: split_policy.default_counts.{split} must be a positive count, "
                 f"got {counts.get(split)!r}")
  if not s.get("leakage_guard"):
    out.append(f"{where}: split_policy.leakage_guard is empty")
  for name, rel in c.entrypoints.items():
    if rel and not (ROOT / rel).is_file():
      out.append(f"{where}: entrypoint {name} {rel} does not exist")
  if c.status == "implemented" and not c.get("checks"):
    out.append(f"{where}: an implemented branch needs `checks` (commands that run its "
               "entrypoints on the generated corpus)")
  return out


def corpus_problems(where: str, c: ml_collections.ConfigDict, shards: Optional[str]
                    ) -> list[str]:
  """The corpus' splits against the branch's split policy."""
  from xefm_jax.eval import suite
  if not shards:
    return []
  corpus = export_common.open_corpus(shards)
  try:
    counts = suite.check_sessions(corpus, {s: s for s in ("train", "val", "test")})
  except Exception as e:  # a session in two splits, or a split with no episode
    return [f"{where}: the corpus {shards} breaks the session split ({e})"]
  need = dict(c.split_policy.default_counts)
  return [f"{where}: split {s} of {shards} has {counts[s]['sessions']} session(s), the "
          f"branch needs at least {need[s]}" for s in need if counts[s]["sessions"] < need[s]]


def package_problems(where: str, c: ml_collections.ConfigDict, run: str) -> tuple[list[str],
                                                                                 str]:
  """(problems, a note) of the branch's public package, if it exists."""
  template = c.artifact_contract.get("public_package")
  if not template:
    return [], "no public package declared"
  path = pathlib.Path(template.format(run=run))
  if not path.exists():
    return [], f"no package yet at {path}"
  return [f"{where}: {p}" for p in export_common.package_problems(path)], f"package {path}"


def run_checks(where: str, c: ml_collections.ConfigDict, values: dict[str, str],
               log: Any = print) -> list[str]:
  """Runs the branch's checks in order; the first failure ends them (later checks read
  what earlier ones wrote)."""
  for name, template in c.checks.items():
    cmd = shlex.split(template.format(**values))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          timeout=CHECK_TIMEOUT_S)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
      tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
      return [f"{where}: check {name} failed (exit {proc.returncode} after {seconds:.0f} s): "
              f"{shlex.join(cmd)}: {tail}"]
    log(f"  {c.id}: check {name} ok ({seconds:.0f} s)")
  return []


def validate(configs: dict[pathlib.Path, ml_collections.ConfigDict], *, run: str,
             shards: Optional[str], run_entrypoints: bool, train_config: str,
             eval_config: str, log: Any = print) -> list[str]:
  """Every problem of every branch (module docstring)."""
  problems: list[str] = []
  ids: dict[str, pathlib.Path] = {}
  for path, c in configs.items():
    where = str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
    found = contract_problems(path, c)
    problems += found
    if found and any("missing" in p and "key" in p for p in found):
      log(f"{where}: {len(found)} problem(s)")
      continue
    if c.id in ids:
      problems.append(f"{where}: id {c.id!r} is also the id of {ids[c.id]}")
    ids[c.id] = path
    found += corpus_problems(where, c, shards)
    pkg, note = package_problems(where, c, run)
    found += pkg
    if run_entrypoints and c.status == "implemented" and not found:
      tmp = tempfile.mkdtemp(prefix=f"branch-{c.id}-")
      values = dict(python=sys.executable, shards=shards or "", run=run, tmp=tmp,
                    train_config=train_config, eval_config=eval_config)
      try:
        found += run_checks(where, c, values, log)
      finally:
        shutil.rmtree(tmp, ignore_errors=True)
    problems += [p for p in found if p not in problems]
    log(f"{c.id}: {c.status}, {note}: " + ("ok" if not found else f"{len(found)} problem(s)"))
  return problems


def public_form(c: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config as the public registry's JSON."""
  return json.loads(json.dumps(c.to_dict()))


def main(argv: Sequence[str]) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--config-dir", default=str(CONFIG_DIR))
  p.add_argument("--validate", action="store_true")
  p.add_argument("--no-run", action="store_true", help="skip running the entrypoints")
  p.add_argument("--run", default="runs/local", help="the training run ({run})")
  p.add_argument("--shards", help="the corpus (default: the run's, RUN/data/shards)")
  p.add_argument("--train-config", default="configs/local.py",
                 help="the config a train check uses; it must match the corpus' shredding")
  p.add_argument("--eval-config", default="configs/eval.py:quick")
  p.add_argument("--json", action="store_true")
  p.add_argument("--branch", help="one branch id")
  args = p.parse_args(argv)
  try:
    configs = load_registry(pathlib.Path(args.config_dir))
  except RegistryError as e:
    print(f"branches: {e}", file=sys.stderr)
    return 2
  if args.branch:
    configs = {k: v for k, v in configs.items() if v.get("id") == args.branch}
    if not configs:
      print(f"branches: no branch {args.branch!r}", file=sys.stderr)
      return 2
  if args.json:
    print(json.dumps([public_form(c) for c in configs.values()], indent=1))
    if not args.validate:
      return 0
  if not args.validate:
    for c in configs.values():
      print(f"{c.get('id')}: {c.get('status')} - {c.get('training_objective')}")
    return 0
  shards = args.shards
  if shards is None and (pathlib.Path(args.run) / "data" / "shards" / "manifest.json").is_file():
    shards = str(pathlib.Path(args.run) / "data" / "shards")
  if shards is None:
    print("branches: no corpus to check the splits against: pass --shards (or a --run with "
          "data/shards)", file=sys.stderr)
    return 2
  try:
    problems = validate(configs, run=args.run, shards=shards,
                        run_entrypoints=not args.no_run, train_config=args.train_config,
                        eval_config=args.eval_config)
  except export_common.ExportError as e:
    print(f"branches: {e}", file=sys.stderr)
    return 2
  for x in problems:
    print(f"branches: {x}", file=sys.stderr)
  print(f"branches: {len(configs)} branch configs, "
        + ("valid" if not problems else f"{len(problems)} problem(s)"))
  return 1 if problems else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
