#!/bin/bash
# XEFM pretraining on a Cloud TPU VM slice: the same command on every worker.
#
#   launch/tpu/train.sh setup TPU_NAME ZONE            # copy the repo, install jax[tpu]
#   launch/tpu/train.sh run TPU_NAME ZONE --config=configs/stage3.py \
#       --workdir=/mnt/shared/runs/stage3 --config.data.shards=/mnt/shared/shards
#
# Every worker (host) of the slice runs launch/train.py once (one process per host, driving
# its 4 or 8 chips); `--distributed=yes` makes each call `jax.distributed.initialize()`,
# which finds the coordinator and its process id from the TPU metadata. WORKDIR and the
# shards must be a path every worker sees (a Filestore NFS or gcsfuse mount). A
# maintenance event sends SIGTERM: the trainer saves, exits 0, and the same command
# resumes.
set -euo pipefail
MODE=$1; TPU_NAME=$2; ZONE=$3; shift 3
PROJECT=${PROJECT:-$(gcloud config get-value project)}
REMOTE_DIR=${REMOTE_DIR:-xefm_jax}
ssh_all() {
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --project="$PROJECT" \
      --worker=all --command="$1"
}
case "$MODE" in
  setup)
    gcloud compute tpus tpu-vm scp --zone="$ZONE" --project="$PROJECT" --worker=all \
        --recurse "$(git rev-parse --show-toplevel)" "~/$REMOTE_DIR"
    ssh_all "cd ~/$REMOTE_DIR && python3 -m venv .venv && . .venv/bin/activate && \
             pip install -e '.[tpu]'"
    ;;
  run)
    # printf %q keeps each flag one word through the remote shell
    ssh_all "cd ~/$REMOTE_DIR && . .venv/bin/activate && \
             python launch/train.py --distributed=yes $(printf '%q ' "$@")"
    ;;
  *)
    echo "usage: $0 setup|run TPU_NAME ZONE [train.py flags]" >&2; exit 2 ;;
esac
