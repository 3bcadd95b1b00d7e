# Sourced by launch/tpu_vm.sh and launch/gpu_node.sh: errors, printing or
# running commands, copying the code, and the shell snippets run on a machine.
# shellcheck shell=bash
# The snippets are single-quoted on purpose: they expand on the remote machine.
# shellcheck disable=SC2016

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON_VERSION=3.12  # What uv installs on the machine (the project needs 3.11+).
DRY_RUN=0

die() {
  echo "$(basename "$0"): error: $*" >&2
  exit 2
}

warn() {
  echo "$(basename "$0"): warning: $*" >&2
}

# One word as a shell reads it back: bare when safe, else single-quoted; in
# --flag=VALUE only the value is quoted, so the line stays readable.
quote() {
  local word=$1 prefix='' safe='^[A-Za-z0-9_./:=@%+,-]+$' flag='^(--[A-Za-z0-9_.-]+=)(.*)$'
  if [[ $word =~ $flag ]]; then
    prefix=${BASH_REMATCH[1]}
    word=${BASH_REMATCH[2]}
  fi
  if [[ $word =~ $safe ]]; then
    printf '%s%s' "$prefix" "$word"
    return
  fi
  local quoted=''
  while [[ $word == *"'"* ]]; do  # Each ' becomes '\'' (close, escaped ', reopen).
    quoted+="${word%%"'"*}'\\''"
    word=${word#*"'"}
  done
  printf "%s'%s'" "$prefix" "$quoted$word"
}

# The words, quoted and joined by spaces, as one command line.
quote_all() {
  local line='' word
  for word in "$@"; do
    line+="${line:+ }$(quote "$word")"
  done
  printf '%s' "$line"
}

# --dry-run: print the command. Otherwise print it on stderr and run it.
run() {
  if ((DRY_RUN)); then
    quote_all "$@"
    echo
  else
    echo "+ $(quote_all "$@")" >&2
    "$@"
  fi
}

# The local tarball of the checked-out commit that `install` copies to a machine.
archive_path() {
  local commit
  commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null) ||
    die "install copies the checked-out commit, but $ROOT is not a git checkout"
  if [[ -n $(git -C "$ROOT" status --porcelain) ]]; then
    warn "uncommitted changes are not copied: install copies commit $commit (git archive HEAD)"
  fi
  echo "${TMPDIR:-/tmp}/tfx_jax-$commit.tar.gz"
}

archive_command() {  # $1: archive_path
  run git -C "$ROOT" archive --format=tar.gz --output="$1" HEAD
}

# Remote layout, in the home directory: the code in ~/tfx_jax, its Python in
# ~/tfx_jax_venv, the job's output in ~/tfx_jax.log and its pid in ~/tfx_jax.pid.
NOT_RUNNING='if kill -0 "$(cat ~/tfx_jax.pid 2>/dev/null)" 2>/dev/null; then echo "tfx_jax is running on $(hostname): stop it first" >&2; exit 1; fi'

# Unpack ~/tfx_jax.tar.gz, get uv, create the venv once: the steps before the
# pip install. uv brings its own Python, so the machine's (3.10 on
# tpu-ubuntu2204-base) does not matter, and nothing needs apt or sudo.
setup_snippet() {
  printf '%s; ' 'set -e' "$NOT_RUNNING" \
    'rm -rf ~/tfx_jax && mkdir ~/tfx_jax && tar -xzf ~/tfx_jax.tar.gz -C ~/tfx_jax' \
    'test -x ~/.local/bin/uv || curl -fLsS https://astral.sh/uv/install.sh | env UV_INSTALL_DIR="$HOME/.local/bin" UV_NO_MODIFY_PATH=1 sh' \
    "test -x ~/tfx_jax_venv/bin/python || ~/.local/bin/uv venv --python $PYTHON_VERSION ~/tfx_jax_venv"
}

# The setup, then install '.[EXTRA]'.
install_snippet() {  # $1: the pip extra, tpu
  setup_snippet
  printf 'cd ~/tfx_jax && ~/.local/bin/uv pip install -e ".[%s]" --python ~/tfx_jax_venv/bin/python' "$1"
}

# Shell text written over several lines for reading, sent as one: newlines and
# runs of spaces become one space, so each command ends in ; (or in then, else,
# in, {, ||) as it would on one line, and a quoted message may go on over a
# line break (read as one space).
one_line() {
  local text=${1//$'\n'/ }
  while [[ $text == *'  '* ]]; do text=${text//'  '/ }; done
  text=${text# }
  printf '%s' "${text% }"
}

# Chooses, on a GPU host, the jax extra into $extra: none ('') when the venv's
# JAX already runs on the GPU (a reinstall keeps the CUDA plugin it has), else
# by the CUDA version of the driver in nvidia-smi's header ("CUDA Version:
# 12.4"): 12.x cuda12, 13.x and later cuda13; an older driver, or none, is an error.
CUDA_EXTRA_FROM_DRIVER='
if ~/tfx_jax_venv/bin/python -c "import jax; jax.devices(\"gpu\")" >/dev/null 2>&1; then
  extra="";
  echo "$(hostname): the JAX in ~/tfx_jax_venv already runs on the GPU:
    installing no CUDA plugin";
else
  command -v nvidia-smi >/dev/null || {
    echo "$(hostname): no nvidia-smi, so no NVIDIA driver: install one, or choose
      with --cuda=12|13" >&2; exit 1; };
  cuda=$(nvidia-smi | sed -n "s/.*CUDA Version: *\([0-9][0-9.]*\).*/\1/p" | head -n 1);
  case ${cuda%%.*} in
    12) extra=cuda12 ;;
    1[3-9] | [2-9][0-9]) extra=cuda13 ;;
    "") echo "$(hostname): nvidia-smi shows no CUDA version (is the driver loaded?):
          choose with --cuda=12|13" >&2; exit 1 ;;
    *) echo "$(hostname): the driver supports CUDA $cuda, JAX needs 12 or later:
         update the driver" >&2; exit 1 ;;
  esac;
  echo "$(hostname): the driver supports CUDA $cuda: installing jax[$extra]";
fi'

# The setup, then install '.[cuda12]' or '.[cuda13]' ($1), by default the one
# CUDA_EXTRA_FROM_DRIVER picks; where the venv's JAX already runs on the GPU,
# the project alone and gcsfs (the cuda extras' other package).
gpu_install_snippet() {  # $1: cuda12, cuda13 or '' (chosen on the host)
  setup_snippet
  if [[ -n $1 ]]; then
    printf 'extra=%s; ' "$1"
  else
    printf '%s; ' "$(one_line "$CUDA_EXTRA_FROM_DRIVER")"
  fi
  one_line 'cd ~/tfx_jax && if [ -n "$extra" ];
    then ~/.local/bin/uv pip install -e ".[$extra]" --python ~/tfx_jax_venv/bin/python;
    else ~/.local/bin/uv pip install -e . gcsfs --python ~/tfx_jax_venv/bin/python; fi'
}

# Start the main job in the background, immune to the ssh session ending.
start_snippet() {  # $@: the flags of tfx_jax.main
  printf '%s; ' 'set -e' "$NOT_RUNNING" 'cd ~/tfx_jax'
  printf 'nohup ~/tfx_jax_venv/bin/python -m tfx_jax.main %s >> ~/tfx_jax.log 2>&1 < /dev/null & ' \
    "$(quote_all "$@")"
  printf '%s' 'echo $! > ~/tfx_jax.pid; echo "tfx_jax started on $(hostname), log in ~/tfx_jax.log"'
}

# SIGTERM, as on preemption: the job saves a checkpoint and exits with 143.
stop_snippet() {
  printf '%s' 'if kill "$(cat ~/tfx_jax.pid 2>/dev/null)" 2>/dev/null; then echo "stopping tfx_jax on $(hostname): it saves a checkpoint, then exits"; else echo "tfx_jax is not running on $(hostname)"; fi'
}

logs_snippet() {
  printf '%s' 'tail -n 100 -F ~/tfx_jax.log'
}
