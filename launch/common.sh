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

# Unpack ~/tfx_jax.tar.gz, get uv, create the venv once, install '.[EXTRA]'.
# uv brings its own Python, so the machine's (3.10 on tpu-ubuntu2204-base)
# does not matter, and nothing needs apt or sudo.
install_snippet() {  # $1: the pip extra, tpu or cuda12
  printf '%s; ' 'set -e' "$NOT_RUNNING" \
    'rm -rf ~/tfx_jax && mkdir ~/tfx_jax && tar -xzf ~/tfx_jax.tar.gz -C ~/tfx_jax' \
    'test -x ~/.local/bin/uv || curl -fLsS https://astral.sh/uv/install.sh | env UV_INSTALL_DIR="$HOME/.local/bin" UV_NO_MODIFY_PATH=1 sh' \
    "test -x ~/tfx_jax_venv/bin/python || ~/.local/bin/uv venv --python $PYTHON_VERSION ~/tfx_jax_venv"
  printf 'cd ~/tfx_jax && ~/.local/bin/uv pip install -e ".[%s]" --python ~/tfx_jax_venv/bin/python' "$1"
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
