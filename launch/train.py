"""Train XEFM.

    python launch/train.py --config=configs/local.py [--workdir=runs/local] [--config.x=y]

Multi-process: every process runs this same command. `jax.distributed.initialize()` reads
srun's environment by itself (launch/slurm) and a TPU slice's metadata with --distributed=yes
(launch/tpu); elsewhere pass --coordinator_address=host:port --num_processes=N --process_id=i.

With no corpus in the config (config.data.shards and config.data.raw unset), process 0
synthesizes, gates and shreds one into WORKDIR/data while the others wait (skipped when
already there). The corpus' label and vocabulary sizes go into the config, then the loop
(xefm_jax/train/loop.py) runs. A run started again in the same workdir resumes from its
latest complete checkpoint.

The config is checked before anything is read or compiled (xefm_jax/config_check.py); a bad
config, corpus or checkpoint is one line `xefm: <file or key>: <what is wrong>; <what to
do>` and exit 1 (xefm_jax/errors.py; --verbose or XEFM_TRACEBACK=1 adds the traceback).
"""

from __future__ import annotations

import os
import pathlib

from absl import flags, logging
import jax

from jax.experimental import multihost_utils
from ml_collections import config_flags

from data_pipelines import prepare
from data_pipelines import synthesize
from xefm_jax import config_check
from xefm_jax import console
from xefm_jax import errors
from xefm_jax import host
from xefm_jax.data import source
from xefm_jax.train import loop

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (default: runs/<config>).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the job.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process' index.")
_DISTRIBUTED = flags.DEFINE_enum(
    "distributed", "auto", ["auto", "yes", "no"],
    "jax.distributed.initialize() from the environment: auto = under srun with several "
    "tasks or on a multi-host TPU slice; yes = always (TPU VMs); no = single process.")


def _managed_cluster() -> bool:
  """Launched by srun with several tasks, or on a multi-host TPU slice."""
  return (int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in os.environ
          or "," in os.environ.get("TPU_WORKER_HOSTNAMES", ""))


def _multi_process() -> bool:
  """This process joins a job of several: a coordinator is given, or the environment's."""
  return bool(_COORDINATOR.value) or _DISTRIBUTED.value == "yes" or (
      _DISTRIBUTED.value == "auto" and _managed_cluster())


def initialize_distributed() -> None:
  # XLA:CPU settings for several devices or processes, before the backend starts (host.py)
  host.configure(multi_process=_multi_process())
  # CPU processes need a collectives backend to talk to each other (tests, laptops).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if _COORDINATOR.value:
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  elif _multi_process():  # from the environment (srun, a TPU slice)
    jax.distributed.initialize()
  if jax.process_count() > 1:
    # Orbax's barriers as the coordination service's (with timeouts), not as device
    # collectives: a collective barrier launched between train steps is one more program
    # whose order every process's collectives must agree on.
    flags.FLAGS.experimental_orbax_use_distributed_barrier = True


def main(argv):
  del argv
  config = _CONFIG.value
  console.quiet_libraries()
  initialize_distributed()
  # A restarted run skips compiling its step; off for CPU jobs of several devices or
  # processes, whose cached programs deadlock or mismatch in their collectives (host.py).
  synthesize.enable_compilation_cache()
  config_check.check(config, num_devices=jax.device_count(),
                     process_count=jax.process_count())
  name = pathlib.Path(config_flags.get_config_filename(flags.FLAGS["config"])).stem
  workdir = pathlib.Path(_WORKDIR.value or pathlib.Path("runs") / name)
  if jax.process_index() == 0:
    prepare.prepare(workdir, config.data)
  multihost_utils.sync_global_devices("corpus prepared")
  shards = prepare.prepare(workdir, config.data)  # complete now: only finds it
  config.data.shards = str(shards)
  corpus = source.Corpus(shards)
  config_check.check_corpus(config, corpus)
  loop.with_corpus_sizes(config, corpus)
  logging.info("process %d/%d, %d local devices, workdir %s", jax.process_index(),
               jax.process_count(), jax.local_device_count(), workdir)
  loop.train(config, workdir)


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  errors.run(main)
