#!/usr/bin/env bash
# Runs tfx_jax on GPU machines reachable by ssh: one multi-GPU node, or several.
#
# Usage: launch/gpu_node.sh ACTION --host=[USER@]HOST [--host=...] [--dry-run]
#   install  [--cuda=12|13]
#            Copy this checkout's HEAD commit to every host and install it
#            there with pip install -e '.[cuda13]' or '.[cuda12]', in a Python
#            3.12 venv from uv (the host needs an NVIDIA driver, curl and ssh
#            access). Each host picks the extra by the CUDA version its driver
#            supports (nvidia-smi), and installs no CUDA plugin where the venv's
#            JAX already runs on the GPU; --cuda=12|13 installs that one on all.
#   run      --workdir=ABSOLUTE_PATH|gs://B/P [--data-dir=ABSOLUTE_PATH|gs://...]
#            [--config=configs/m_n_split.py[:ARGS]] [--coordinator=HOST:PORT]
#            [-- MORE_MAIN_FLAGS]
#            Start the main job on every host, in the background. One host:
#            one process sees all its GPUs. Several: one process each, the
#            first host coordinating (--coordinator, default FIRST_HOST:8476),
#            and the workdir must be shared (gs:// or a shared file system).
#            It resumes from the workdir: run the same command again.
#   logs     Follow the first host's log (Ctrl-C to stop following).
#   stop     Send SIGTERM on every host: the job checkpoints and exits.
# --dry-run prints the commands, one a line, and runs nothing.
set -euo pipefail
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p;}' "$0"
}

HOSTS=()
WORKDIR=''
DATA_DIR=''
CONFIG=configs/m_n_split.py  # ImageNet by default.
COORDINATOR=''
CUDA=''  # cuda12 or cuda13 from --cuda; '' lets each host choose.
MAIN_FLAGS=()

ACTION=${1:-}
case $ACTION in
  install | run | logs | stop) shift ;;
  -h | --help) usage; exit 0 ;;
  '' | -*) die "missing ACTION, the first argument: install, run, logs or stop (--help for usage)" ;;
  *) die "unknown action '$ACTION': use install, run, logs or stop" ;;
esac
while (($#)); do
  case $1 in
    --host=?*) HOSTS+=("${1#*=}") ;;
    --workdir=*) WORKDIR=${1#*=} ;;
    --data-dir=*) DATA_DIR=${1#*=} ;;
    --config=*) CONFIG=${1#*=} ;;
    --coordinator=*) COORDINATOR=${1#*=} ;;
    --cuda=12 | --cuda=13) CUDA=cuda${1#*=} ;;
    --cuda | --cuda=) die "--cuda needs a value: --cuda=12 or --cuda=13" ;;
    --cuda=*) die "--cuda must be 12 or 13, not '${1#*=}'" ;;
    --dry-run) DRY_RUN=1 ;;
    -h | --help) usage; exit 0 ;;
    --)  # The rest goes to the main job, except a --dry-run: it is never forwarded.
      shift
      for flag in "$@"; do
        if [[ $flag == --dry-run ]]; then DRY_RUN=1; else MAIN_FLAGS+=("$flag"); fi
      done
      break ;;
    --host | --host= | --workdir | --data-dir | --config | --coordinator)
      die "${1%=} needs a value: ${1%=}=VALUE" ;;
    *) die "unknown option '$1' (--help for usage)" ;;
  esac
  shift
done
((${#HOSTS[@]})) || die "$ACTION needs --host=[USER@]HOST (repeat it for several nodes)"
if ((${#MAIN_FLAGS[@]})) && [[ $ACTION != run ]]; then
  die "flags after -- go to the main job: only run takes them"
fi
if [[ -n $CUDA && $ACTION != install ]]; then
  die "--cuda chooses the CUDA plugin that install installs: only install takes it"
fi

# A path every host reads the same way, outside ~/tfx_jax (install replaces it).
check_path() {  # $1: option name, $2: value
  [[ $2 == /* || $2 == gs://?* ]] ||
    die "$1 must be an absolute path on the hosts or a gs:// path, not '$2'"
}

case $ACTION in
  install)
    archive=$(archive_path)
    archive_command "$archive"
    for host in "${HOSTS[@]}"; do
      run scp "$archive" "$host:tfx_jax.tar.gz"
      run ssh "$host" "$(gpu_install_snippet "$CUDA")"
    done
    ;;
  run)
    [[ -n $WORKDIR ]] || die "run needs --workdir=ABSOLUTE_PATH or gs://BUCKET/PATH"
    check_path --workdir "$WORKDIR"
    flags=(--config="$CONFIG" --workdir="$WORKDIR")
    if [[ -n $DATA_DIR ]]; then
      check_path --data-dir "$DATA_DIR"
      flags+=(--config.data_dir="$DATA_DIR")
    fi
    if ((${#HOSTS[@]} > 1)); then
      first=${HOSTS[0]#*@}
      flags+=(--coordinator_address="${COORDINATOR:-$first:8476}" --num_processes="${#HOSTS[@]}")
    fi
    for i in "${!HOSTS[@]}"; do
      process_id=()
      if ((${#HOSTS[@]} > 1)); then process_id=(--process_id="$i"); fi
      run ssh "${HOSTS[$i]}" "$(start_snippet "${flags[@]}" ${process_id[@]+"${process_id[@]}"} \
        ${MAIN_FLAGS[@]+"${MAIN_FLAGS[@]}"})"
    done
    ;;
  logs) run ssh "${HOSTS[0]}" "$(logs_snippet)" ;;
  stop)
    for host in "${HOSTS[@]}"; do
      run ssh "$host" "$(stop_snippet)"
    done
    ;;
esac
