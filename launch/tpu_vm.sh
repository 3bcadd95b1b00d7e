#!/usr/bin/env bash
# Runs tfx_jax on a Cloud TPU VM, one host or a pod slice, through gcloud.
#
# Usage: launch/tpu_vm.sh ACTION [--name=tfx-jax] [--zone=us-central2-b] [--project=P] [--dry-run]
#   create   [--accelerator-type=v4-8] [--version=RUNTIME] [--spot]
#            Create the TPU VM. --version follows the accelerator type:
#            tpu-ubuntu2204-base for v2-v4, v2-alpha-tpuv5-lite for v5litepod,
#            v2-alpha-tpuv5 for v5p, v2-alpha-tpuv6e for v6e.
#   install  Copy this checkout's HEAD commit to every worker and install it
#            there with pip install -e '.[tpu]', in a Python 3.12 venv from uv.
#   run      --workdir=gs://B/P --data-dir=gs://B/tensorflow_datasets
#            [--config=configs/m_n_split.py[:ARGS]] [--data-cache-dir=DIR]
#            [-- MORE_MAIN_FLAGS]
#            Start the main job on every worker (--multihost), in the
#            background. Prepared JPEG shards are first copied to each
#            worker's disk, DIR (default ~/tfx_jax_data; '' reads the bucket
#            image by image). It resumes from the workdir: after a preemption or
#            `stop`, run the same command again.
#   logs     [--worker=0]  Follow a worker's log (Ctrl-C to stop following).
#   stop     Send SIGTERM on every worker: the job checkpoints and exits.
#   delete   Delete the TPU VM (gcloud asks to confirm).
# --dry-run prints the commands, one a line, and runs nothing.
set -euo pipefail
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p;}' "$0"
}

NAME=tfx-jax
ZONE=us-central2-b  # Where v4 TPUs are.
PROJECT=''
ACCELERATOR_TYPE=v4-8  # One host with 4 v4 chips: the whole grid, no pod needed.
VERSION=''
SPOT=''
WORKDIR=''
DATA_DIR=''
# On each worker's boot disk; the job expands the ~ there, not here.
# shellcheck disable=SC2088
DATA_CACHE_DIR='~/tfx_jax_data'
CONFIG=configs/m_n_split.py  # ImageNet by default.
WORKER=0
MAIN_FLAGS=()

ACTION=${1:-}
case $ACTION in
  create | install | run | logs | stop | delete) shift ;;
  -h | --help) usage; exit 0 ;;
  '' | -*) die "missing ACTION, the first argument: create, install, run, logs, stop or delete (--help for usage)" ;;
  *) die "unknown action '$ACTION': use create, install, run, logs, stop or delete" ;;
esac
while (($#)); do
  case $1 in
    --name=*) NAME=${1#*=} ;;
    --zone=*) ZONE=${1#*=} ;;
    --project=*) PROJECT=${1#*=} ;;
    --accelerator-type=*) ACCELERATOR_TYPE=${1#*=} ;;
    --version=*) VERSION=${1#*=} ;;
    --spot) SPOT=--spot ;;
    --workdir=*) WORKDIR=${1#*=} ;;
    --data-dir=*) DATA_DIR=${1#*=} ;;
    --data-cache-dir=*) DATA_CACHE_DIR=${1#*=} ;;
    --config=*) CONFIG=${1#*=} ;;
    --worker=*) WORKER=${1#*=} ;;
    --dry-run) DRY_RUN=1 ;;
    -h | --help) usage; exit 0 ;;
    --)  # The rest goes to the main job, except a --dry-run: it is never forwarded.
      shift
      for flag in "$@"; do
        if [[ $flag == --dry-run ]]; then DRY_RUN=1; else MAIN_FLAGS+=("$flag"); fi
      done
      break ;;
    --name | --zone | --project | --accelerator-type | --version | --workdir | --data-dir | --config | --worker)
      die "$1 needs a value: $1=VALUE" ;;
    *) die "unknown option '$1' (--help for usage)" ;;
  esac
  shift
done
[[ -n $NAME && -n $ZONE ]] || die "--name and --zone must not be empty"
if ((${#MAIN_FLAGS[@]})) && [[ $ACTION != run ]]; then
  die "flags after -- go to the main job: only run takes them"
fi

LOCATION=(--zone="$ZONE" ${PROJECT:+"--project=$PROJECT"})
case $ACTION in
  create)
    if [[ -z $VERSION ]]; then
      case $ACCELERATOR_TYPE in
        v5litepod-*) VERSION=v2-alpha-tpuv5-lite ;;
        v5p-*) VERSION=v2-alpha-tpuv5 ;;
        v6e-*) VERSION=v2-alpha-tpuv6e ;;
        *) VERSION=tpu-ubuntu2204-base ;;
      esac
    fi
    run gcloud compute tpus tpu-vm create "$NAME" "${LOCATION[@]}" \
      --accelerator-type="$ACCELERATOR_TYPE" --version="$VERSION" ${SPOT:+"$SPOT"}
    ;;
  install)
    archive=$(archive_path)
    archive_command "$archive"
    run gcloud compute tpus tpu-vm scp "$archive" "$NAME:tfx_jax.tar.gz" "${LOCATION[@]}" --worker=all
    run gcloud compute tpus tpu-vm ssh "$NAME" "${LOCATION[@]}" --worker=all \
      --command="$(install_snippet tpu)"
    ;;
  run)
    [[ -n $WORKDIR ]] || die "run needs --workdir=gs://BUCKET/PATH"
    [[ -n $DATA_DIR ]] || die "run needs --data-dir=gs://BUCKET/tensorflow_datasets"
    [[ $WORKDIR == gs://?* ]] ||
      die "--workdir must be a gs:// path: every worker writes there, and it outlives the VM"
    [[ $DATA_DIR == gs://?* ]] || die "--data-dir must be a gs:// path: every worker reads it"
    run gcloud compute tpus tpu-vm ssh "$NAME" "${LOCATION[@]}" --worker=all \
      --command="$(start_snippet --config="$CONFIG" --workdir="$WORKDIR" \
      --config.data_dir="$DATA_DIR" ${DATA_CACHE_DIR:+--config.data_cache_dir="$DATA_CACHE_DIR"} \
      --multihost ${MAIN_FLAGS[@]+"${MAIN_FLAGS[@]}"})"
    ;;
  logs)
    run gcloud compute tpus tpu-vm ssh "$NAME" "${LOCATION[@]}" --worker="$WORKER" \
      --command="$(logs_snippet)"
    ;;
  stop)
    run gcloud compute tpus tpu-vm ssh "$NAME" "${LOCATION[@]}" --worker=all \
      --command="$(stop_snippet)"
    ;;
  delete) run gcloud compute tpus tpu-vm delete "$NAME" "${LOCATION[@]}" ;;
esac
