"""Synthesize episodes in the real Xperience layout from a procedural world.

    python data_pipelines/synthesize.py --out DIR --sessions S --episodes-per-session E \\
        --seconds T --seed N [--profile small|real] [--workers K]

writes `DIR/<session_uuid>/ep<k>/` for S sessions of E episodes of T seconds each
(XPERIENCE_FORMAT.md), plus `DIR/world.json`, a description of the sessions for humans
(readers must not depend on it). The same arguments give the same HDF5 arrays and the
same decoded frames (in practice the same bytes). Episodes already present are skipped,
so an interrupted run can simply be started again. The Python API is `synthesize(...)`.

The world half (data_pipelines/synth/world.py, simulate.py, language.py) decides what
happens; the sensor half (cameras, render, audio, quirks, writer) records it.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import multiprocessing
import os
import pathlib
import sys
import time

try:
  import data_pipelines  # noqa: F401  (installed, or run from the repo root with -m)
except ImportError:  # run as `python data_pipelines/synthesize.py` without an install
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np
import tqdm

from data_pipelines.synth import cameras, profiles, quirks as quirks_lib, writer
from data_pipelines.synth.profiles import Profile
from xefm_jax import errors, host
from xefm_jax.data import shards

DEVICE_VERSION = "xperience-synth-1.0"
WORLD_FILE = "world.json"
CACHE_ENV = "XEFM_JAX_CACHE"  # where compiled renderer kernels are kept; "" disables


def enable_compilation_cache() -> None:
  """Keeps compiled kernels on disk so later runs and worker processes skip compiling
  (about 5 s per process for the small profile). Leaves a cache set by the caller alone;
  turns the cache off in a CPU process with several devices, where programs loaded from it
  deadlock (`host.restrict_compilation_cache`). Starts the backend: call after
  `jax.distributed.initialize` and before the first compilation."""
  import jax  # after XLA_FLAGS are settled (see _init_worker)

  if not host.restrict_compilation_cache() or jax.config.jax_compilation_cache_dir:
    return
  default = pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache"))
  path = os.environ.get(CACHE_ENV, str(default / "xefm_jax" / "jax"))
  if path:
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def session_device(profile: Profile, seed: int, session_id: str) -> writer.Device:
  """The headset of a session: its own id and slightly perturbed calibration."""
  rng = np.random.default_rng([seed, writer.hash_seed(session_id), 0xDE1CE])
  rig = cameras.make_rig(profile.fisheye_size, profile.stereo_size, profile.fisheye_fov_deg,
                         profile.stereo_fov_deg, rng=rng)
  return writer.Device(f"XPR-{rng.integers(0, 16**8):08X}", DEVICE_VERSION, rig)


def episode_quirks(rates: quirks_lib.QuirkRates, seed: int, session_id: str, episode: int,
                   num_frames: int) -> quirks_lib.EpisodeQuirks:
  rng = np.random.default_rng([seed, writer.hash_seed(session_id), episode, 0x9E1])
  return quirks_lib.draw_quirks(rates, rng, num_frames)


@dataclasses.dataclass(frozen=True)
class _Job:
  """Everything a worker needs to rebuild the run's world and write one episode."""

  out: str
  seed: int
  sessions: int
  episodes_per_session: int
  seconds: float
  profile: Profile
  rates: quirks_lib.QuirkRates


_STATE: dict = {}  # per process: the world, session plans and renderers, built once


def _plans(job: _Job):
  from data_pipelines.synth import world as world_lib

  key = (job.seed, job.sessions, job.episodes_per_session)
  if _STATE.get("key") != key:
    world = world_lib.make_world(job.seed)
    plans = world_lib.plan_sessions(world, job.sessions, job.episodes_per_session, job.seed)
    _STATE.update(key=key, world=world, plans=plans, renderers={})
  return _STATE["world"], _STATE["plans"]


def _write_one(job: _Job, session_index: int, episode: int) -> tuple[str, bool]:
  """Writes one episode (unless present); returns its path and whether it was written."""
  from data_pipelines.synth import language, render, simulate

  world, plans = _plans(job)
  plan = plans[session_index]
  path = writer.episode_dir(pathlib.Path(job.out), plan.session_id, episode)
  if path.exists():
    return str(path), False
  device = session_device(job.profile, job.seed, plan.session_id)
  renderers = _STATE["renderers"]
  if plan.session_id not in renderers:
    renderers.clear()  # one session at a time: the real profile's ray tables are large
    renderers[plan.session_id] = render.Renderer(device.rig, job.profile)
  sim = simulate.simulate_episode(world, plan, episode, job.seconds, job.seed)
  caption = language.caption_json(
      sim, np.random.default_rng(writer.episode_key(sim) + [0xCA9]), mixed_forms=True)
  q = episode_quirks(job.rates, job.seed, plan.session_id, episode, sim.num_frames)
  writer.write_episode(pathlib.Path(job.out), sim, caption, renderers[plan.session_id],
                       device, q)
  return str(path), True


def _init_worker() -> None:
  # One process per episode stream: XLA and x264 each get one core, not all of them, and
  # the renderer one device (a parent's simulated mesh would also keep the worker off the
  # compilation cache).
  flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  os.environ["XLA_FLAGS"] = " ".join(flags + ["--xla_cpu_multi_thread_eigen=false",
                                              "--xla_force_host_platform_device_count=1"])
  enable_compilation_cache()


def world_description(job: _Job) -> dict:
  """world.json: sessions, places, wearers, activities, object variants and episodes."""
  _, plans = _plans(job)
  n = int(round(job.seconds * 20))
  sessions = []
  for plan in plans:
    device = session_device(job.profile, job.seed, plan.session_id)
    sessions.append({
        "session_id": plan.session_id,
        "place": plan.place,
        "wearer": dataclasses.asdict(plan.wearer),
        "device": {"device_id": device.device_id, "device_version": device.device_version},
        "activities": list(plan.activities),
        "object_variants": {k: list(v) for k, v in plan.variants.items()},
        "distractors": list(plan.distractors),
        "episodes": [{
            "episode": ep.index,  # 0-based in the world; the folder is ep<index + 1>
            "dir": writer.episode_dir(pathlib.Path(), plan.session_id, ep.index).as_posix(),
            "activity": ep.activity,
            "start_station": ep.start_station,
            "quirks": episode_quirks(job.rates, job.seed, plan.session_id, ep.index,
                                     n).describe(),
        } for ep in plan.episodes],
    })
  return {
      "note": "generator-side description for humans; readers must not depend on it",
      "generator": writer.GENERATOR,
      "seed": job.seed,
      "profile": job.profile.name,
      "seconds_per_episode": job.seconds,
      "quirk_rates": dataclasses.asdict(job.rates),
      "sessions": sessions,
  }


def _write_json(path: pathlib.Path, value: dict) -> None:
  tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
  tmp.write_text(json.dumps(value, indent=1, sort_keys=False) + "\n")
  os.replace(tmp, path)


def synthesize(out: str | os.PathLike, sessions: int, episodes_per_session: int,
               seconds: float | None, seed: int, profile: str | Profile = "small",
               workers: int = 1, quirks: quirks_lib.QuirkRates | None = None,
               progress: bool = True) -> list[pathlib.Path]:
  """Writes sessions x episodes under `out`; returns every episode's directory, in order.

  seconds None takes the profile's default; quirks None the profile's quirk rates
  (QuirkRates.none() for none). Episodes already present are kept. An episode that fails
  is reported and the others still get written; then RuntimeError lists the failures.
  """
  prof = profiles.get_profile(profile) if isinstance(profile, str) else profile
  for name, value in (("sessions", sessions), ("episodes_per_session", episodes_per_session),
                      ("workers", workers)):
    if int(value) < 1:
      raise ValueError(f"synthesize: {name} = {value}; expected a positive integer")
  seconds = prof.default_seconds if seconds is None else float(seconds)
  if seconds * 20 < 0.5:
    raise ValueError(f"synthesize: seconds = {seconds}; expected at least one frame (0.05 s)")
  job = _Job(str(pathlib.Path(out).resolve()), int(seed), int(sessions),
             int(episodes_per_session), seconds, prof, prof.quirks if quirks is None else quirks)
  root = pathlib.Path(job.out)
  root.mkdir(parents=True, exist_ok=True)
  enable_compilation_cache()
  description = world_description(job)
  _write_json(root / WORLD_FILE, description)
  tasks = [(s, e) for s in range(sessions) for e in range(episodes_per_session)]
  paths: dict[tuple[int, int], str] = {}
  failures: list[str] = []
  written = 0
  start = time.time()
  bar = tqdm.tqdm(total=len(tasks), unit="episode", disable=not progress, desc="synthesize")

  def done(task, result=None, error=None):
    nonlocal written
    if error is not None:
      failures.append(f"session {task[0]} episode {task[1]}: {type(error).__name__}: {error}")
    else:
      paths[task] = result[0]
      written += result[1]
    bar.update(1)

  if workers == 1:
    for task in tasks:
      try:
        done(task, _write_one(job, *task))
      except Exception as e:  # one bad episode must not stop the run
        done(task, error=e)
  else:
    ctx = multiprocessing.get_context("spawn")  # JAX is not fork-safe
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx,
                                                initializer=_init_worker) as pool:
      futures = {pool.submit(_write_one, job, *task): task for task in tasks}
      for future in concurrent.futures.as_completed(futures):
        try:
          done(futures[future], future.result())
        except Exception as e:
          done(futures[future], error=e)
  bar.close()
  result = [pathlib.Path(paths[t]) for t in tasks if t in paths]
  size = sum(shards.dir_bytes(p) for p in result)
  if progress:
    print(f"synthesize: {len(result)} episodes ({written} written, {len(result) - written} "
          f"already present, {len(failures)} failed) in {time.time() - start:.1f} s, "
          f"{size} bytes under {root}", file=sys.stderr)
  if failures:
    raise RuntimeError(f"synthesize: {len(failures)} episode(s) failed:\n" + "\n".join(failures))
  return result


def _positive(kind):
  def parse(text: str):
    try:
      value = kind(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
    if value <= 0:
      raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
    return value
  return parse


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="synthesize.py", description=__doc__.split("\n\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", required=True, help="output directory")
  parser.add_argument("--sessions", required=True, type=_positive(int))
  parser.add_argument("--episodes-per-session", required=True, type=_positive(int))
  parser.add_argument("--seconds", required=True, type=_positive(float),
                      help="length of every episode")
  parser.add_argument("--seed", required=True, type=int)
  parser.add_argument("--profile", default="small", choices=sorted(profiles.PROFILES))
  parser.add_argument("--workers", default=1, type=_positive(int),
                      help="processes writing episodes in parallel")
  errors.add_verbose_argument(parser)
  args = parser.parse_args(argv)
  try:
    synthesize(args.out, args.sessions, args.episodes_per_session, args.seconds, args.seed,
               args.profile, args.workers)
  except RuntimeError as e:  # the episodes that failed, one line each
    raise errors.Error(f"{args.out}: {e}") from e
  return 0


if __name__ == "__main__":
  errors.cli(main)
