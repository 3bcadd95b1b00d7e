"""launch/: the commands each action prints under --dry-run, its argument
checks, shellcheck, and the remote snippets run for real against a fake gcloud."""

import os
import shlex
import signal
import stat
import string
import subprocess
import sys
import time

import pytest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
LAUNCH = os.path.join(ROOT, 'launch')
WORKDIR = 'gs://bucket/runs/m_n'
DATA_DIR = 'gs://bucket/tensorflow_datasets'
TPU_SSH = ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', 'tfx-jax', '--zone=us-central2-b']


@pytest.fixture(autouse=True, scope='module')
def no_real_cloud(tmp_path_factory):
  """gcloud, ssh and scp on PATH fail loudly: no test reaches a real machine."""
  tripwire = tmp_path_factory.mktemp('tripwire')
  for tool in ('gcloud', 'ssh', 'scp'):
    _write(tripwire / tool, f'#!/bin/sh\necho "{tool} must not run in a test" >&2; exit 97\n')
  path = os.environ['PATH']
  os.environ['PATH'] = f'{tripwire}:{path}'
  yield
  os.environ['PATH'] = path


def launch(script, *args, env=None):
  return subprocess.run(['bash', os.path.join(LAUNCH, script), *args], cwd=ROOT,
                        capture_output=True, text=True, env=env, timeout=30)


def dry_run(script, *args, env=None):
  """The printed commands, each split as a shell would split it."""
  result = launch(script, args[0], '--dry-run', *args[1:], env=env)
  assert result.returncode == 0, result.stderr
  return [shlex.split(line) for line in result.stdout.splitlines()]


def main_flags(remote):
  """The flags a remote command line passes to tfx_jax.main."""
  return shlex.split(remote.split(' -m tfx_jax.main ')[1].split(' >> ~/tfx_jax.log')[0])


def command_of(argv):
  (command,) = [a for a in argv if a.startswith('--command=')]
  return command[len('--command='):]


def test_create_uses_the_ubuntu_base_runtime_and_the_accelerator_type():
  assert dry_run('tpu_vm.sh', 'create') == [
      ['gcloud', 'compute', 'tpus', 'tpu-vm', 'create', 'tfx-jax', '--zone=us-central2-b',
       '--accelerator-type=v4-8', '--version=tpu-ubuntu2204-base']]


@pytest.mark.parametrize('accelerator, version', [
    ('v4-32', 'tpu-ubuntu2204-base'), ('v5litepod-8', 'v2-alpha-tpuv5-lite'),
    ('v5p-8', 'v2-alpha-tpuv5'), ('v6e-8', 'v2-alpha-tpuv6e')])
def test_create_picks_the_runtime_of_the_accelerator(accelerator, version):
  (argv,) = dry_run('tpu_vm.sh', 'create', f'--accelerator-type={accelerator}',
                    '--name=big', '--zone=z1', '--project=p1', '--spot')
  assert argv == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'create', 'big', '--zone=z1',
                  '--project=p1', f'--accelerator-type={accelerator}',
                  f'--version={version}', '--spot']


def test_install_copies_head_to_every_worker_and_installs_the_tpu_extra(tmp_path):
  env = dict(os.environ, TMPDIR=str(tmp_path))
  archive, scp, ssh = dry_run('tpu_vm.sh', 'install', env=env)
  tarball = archive[-2].removeprefix('--output=')
  assert archive[:2] == ['git', '-C'] and archive[3:5] == ['archive', '--format=tar.gz']
  assert archive[-1] == 'HEAD' and tarball.startswith(f'{tmp_path}/tfx_jax-')
  assert not os.path.exists(tarball)  # A dry run runs nothing.
  assert scp == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'scp', tarball,
                 'tfx-jax:tfx_jax.tar.gz', '--zone=us-central2-b', '--worker=all']
  assert ssh[:-1] == TPU_SSH + ['--worker=all']
  remote = command_of(ssh)
  assert 'uv venv --python 3.12 ~/tfx_jax_venv' in remote
  assert 'pip install -e ".[tpu]" --python ~/tfx_jax_venv/bin/python' in remote


def test_run_starts_the_same_multihost_job_on_every_worker():
  (ssh,) = dry_run('tpu_vm.sh', 'run', f'--workdir={WORKDIR}', f'--data-dir={DATA_DIR}',
                   '--config=configs/m_n_split.py:dataset=imagenet2012', '--',
                   '--config.sweep.num_shards=2', '--config.sweep.shard=1')
  assert ssh[:-1] == TPU_SSH + ['--worker=all']
  remote = command_of(ssh)
  assert main_flags(remote) == [
      '--config=configs/m_n_split.py:dataset=imagenet2012', f'--workdir={WORKDIR}',
      f'--config.data_dir={DATA_DIR}', '--config.data_cache_dir=~/tfx_jax_data',
      '--multihost', '--config.sweep.num_shards=2', '--config.sweep.shard=1']
  assert remote.count('nohup ') == 1 and 'echo $! > ~/tfx_jax.pid' in remote


def test_logs_follows_worker_0_and_stop_and_delete_name_the_vm():
  (logs,) = dry_run('tpu_vm.sh', 'logs')
  assert logs == TPU_SSH + ['--worker=0', '--command=tail -n 100 -F ~/tfx_jax.log']
  (stop,) = dry_run('tpu_vm.sh', 'stop')
  assert stop[:-1] == TPU_SSH + ['--worker=all'] and 'kill ' in command_of(stop)
  assert dry_run('tpu_vm.sh', 'delete', '--name=other') == [
      ['gcloud', 'compute', 'tpus', 'tpu-vm', 'delete', 'other', '--zone=us-central2-b']]


def test_gpu_install_copies_to_each_host_and_chooses_the_cuda_extra_there():
  commands = dry_run('gpu_node.sh', 'install', '--host=me@gpu0', '--host=gpu1')
  assert [c[0] for c in commands] == ['git', 'scp', 'ssh', 'scp', 'ssh']
  assert commands[1][2] == 'me@gpu0:tfx_jax.tar.gz' and commands[3][2] == 'gpu1:tfx_jax.tar.gz'
  assert [c[1] for c in commands[2::2]] == ['me@gpu0', 'gpu1']
  for remote in (c[2] for c in commands[2::2]):
    assert 'jax.devices(\\"gpu\\")' in remote and '$(nvidia-smi | sed' in remote
    assert 'pip install -e ".[$extra]" --python ~/tfx_jax_venv/bin/python' in remote
    assert 'pip install -e . gcsfs --python ~/tfx_jax_venv/bin/python' in remote
    assert '\n' not in remote and '  ' not in remote  # One line, as sent.


def test_gpu_install_with_cuda_flag_installs_that_extra_without_asking_the_host():
  (_, _, ssh) = dry_run('gpu_node.sh', 'install', '--host=gpu0', '--cuda=13')
  assert '; extra=cuda13; cd ~/tfx_jax && ' in ssh[2]
  assert 'nvidia-smi' not in ssh[2] and 'jax.devices' not in ssh[2]


def test_gpu_run_on_one_node_needs_no_distributed_flags():
  (ssh,) = dry_run('gpu_node.sh', 'run', '--host=gpu0', '--workdir=/home/me/runs/m_n')
  assert ssh[:2] == ['ssh', 'gpu0']
  assert main_flags(ssh[2]) == ['--config=configs/m_n_split.py',
                                '--workdir=/home/me/runs/m_n']


def test_gpu_run_on_several_nodes_gives_each_its_process_id():
  commands = dry_run('gpu_node.sh', 'run', '--host=me@gpu0', '--host=gpu1',
                     f'--workdir={WORKDIR}', '--data-dir=/data/tfds')
  for i, (ssh, host, remote) in enumerate(commands):
    assert (ssh, host) == ('ssh', ['me@gpu0', 'gpu1'][i])
    assert main_flags(remote) == [
        '--config=configs/m_n_split.py', f'--workdir={WORKDIR}',
        '--config.data_dir=/data/tfds', '--coordinator_address=gpu0:8476',
        '--num_processes=2', f'--process_id={i}']


def test_awkward_main_flags_reach_the_job_intact():
  flags = ["--config.only=('base',)", "it's", '', 'a b"$HOME']
  (ssh,) = dry_run('tpu_vm.sh', 'run', f'--workdir={WORKDIR}', f'--data-dir={DATA_DIR}',
                   '--', *flags)
  assert main_flags(command_of(ssh))[-4:] == flags


@pytest.mark.parametrize('script, args, message', [
    ('tpu_vm.sh', [], 'missing ACTION'),
    ('gpu_node.sh', ['--host=gpu0', 'install'], 'missing ACTION'),
    ('tpu_vm.sh', ['launch'], "unknown action 'launch'"),
    ('tpu_vm.sh', ['create', '--zones=a'], "unknown option '--zones=a'"),
    ('tpu_vm.sh', ['create', '--name', 'x'], '--name needs a value'),
    ('tpu_vm.sh', ['run', f'--data-dir={DATA_DIR}'], 'run needs --workdir'),
    ('tpu_vm.sh', ['run', f'--workdir={WORKDIR}'], 'run needs --data-dir'),
    ('tpu_vm.sh', ['run', '--workdir=runs/x', f'--data-dir={DATA_DIR}'],
     '--workdir must be a gs:// path'),
    ('tpu_vm.sh', ['logs', '--', '--config.seeds=1'], 'only run takes them'),
    ('gpu_node.sh', ['install'], 'install needs --host'),
    ('gpu_node.sh', ['install', '--host=gpu0', '--cuda=11'], "--cuda must be 12 or 13, not '11'"),
    ('gpu_node.sh', ['install', '--host=gpu0', '--cuda'], '--cuda needs a value'),
    ('gpu_node.sh', ['run', '--host=gpu0', '--workdir=/runs', '--cuda=13'],
     'only install takes it'),
    ('gpu_node.sh', ['run', '--host=gpu0'], 'run needs --workdir'),
    ('gpu_node.sh', ['run', '--host=gpu0', '--workdir=~/runs'],
     '--workdir must be an absolute path'),
])
def test_bad_arguments_fail_with_one_message_and_print_no_command(script, args, message):
  result = launch(script, *args, '--dry-run')
  assert result.returncode == 2
  assert result.stdout == ''
  assert message in result.stderr and result.stderr.count('\n') == 1


def test_shellcheck_finds_nothing():
  scripts = sorted(f for f in os.listdir(LAUNCH) if f.endswith('.sh'))
  assert {'common.sh', 'gpu_node.sh', 'tpu_vm.sh'} <= set(scripts)
  result = subprocess.run(['shellcheck', '-x', *scripts], cwd=LAUNCH,
                          capture_output=True, text=True, timeout=60)
  assert result.returncode == 0, result.stdout + result.stderr


# A fake gcloud with one TPU worker whose home is $FAKE_WORKER_HOME: ssh runs the remote
# command with sh there, scp copies there.
FAKE_GCLOUD = r'''#!/usr/bin/env bash
set -euo pipefail
case $4 in
  scp) cp "$5" "$FAKE_WORKER_HOME/${6#*:}" ;;
  ssh) for arg in "$@"; do [[ $arg == --command=* ]] && command=${arg#--command=}; done
       HOME=$FAKE_WORKER_HOME exec sh -c "$command" ;;
esac
'''
# uv: `venv` makes a Python that prints its arguments and exits 143 on SIGTERM.
FAKE_UV = r'''#!/bin/sh
case $1 in
  venv) mkdir -p "$4/bin" && cp "$HOME/fake_python" "$4/bin/python" ;;
  pip) echo "$@" > "$HOME/pip_args" ;;
esac
'''
FAKE_PYTHON = r'''#!/bin/sh
echo "args: $*"
trap 'kill $!; echo "got SIGTERM"; exit 143' TERM
sleep 60 & wait
'''


def _write(path, text):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text)
  path.chmod(path.stat().st_mode | stat.S_IXUSR)


def _wait_for(predicate, seconds=5.0):
  deadline = time.monotonic() + seconds
  while not predicate() and time.monotonic() < deadline:
    time.sleep(0.05)
  return predicate()


def _alive(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  return True


def test_install_run_and_stop_work_on_a_fake_worker(tmp_path):
  worker = tmp_path / 'worker'
  _write(tmp_path / 'bin' / 'gcloud', FAKE_GCLOUD)
  _write(worker / '.local' / 'bin' / 'uv', FAKE_UV)
  _write(worker / 'fake_python', FAKE_PYTHON)
  (tmp_path / 'tmp').mkdir()
  env = dict(os.environ, PATH=f'{tmp_path / "bin"}:{os.environ["PATH"]}',
             FAKE_WORKER_HOME=str(worker), TMPDIR=str(tmp_path / 'tmp'))

  installed = launch('tpu_vm.sh', 'install', env=env)
  assert installed.returncode == 0, installed.stderr
  assert (worker / 'tfx_jax' / 'tfx_jax' / 'main.py').is_file()
  assert (worker / 'tfx_jax' / 'pyproject.toml').is_file()
  assert (worker / 'pip_args').read_text().split()[:4] == ['pip', 'install', '-e', '.[tpu]']

  assert 'not running' in launch('tpu_vm.sh', 'stop', env=env).stdout
  run_args = ['run', f'--workdir={WORKDIR}', f'--data-dir={DATA_DIR}', '--', '--config.seeds=0,1']
  started = launch('tpu_vm.sh', *run_args, env=env)
  assert started.returncode == 0, started.stderr
  pid = int((worker / 'tfx_jax.pid').read_text())
  log = worker / 'tfx_jax.log'
  try:
    assert _wait_for(lambda: 'args:' in log.read_text())
    assert log.read_text().split('args: ')[1].split() == [
        '-m', 'tfx_jax.main', '--config=configs/m_n_split.py', f'--workdir={WORKDIR}',
        f'--config.data_dir={DATA_DIR}', '--config.data_cache_dir=~/tfx_jax_data',
        '--multihost', '--config.seeds=0,1']
    again = launch('tpu_vm.sh', *run_args, env=env)
    assert again.returncode != 0 and 'stop it first' in again.stderr
    assert launch('tpu_vm.sh', 'install', env=env).returncode != 0  # Not under a running job.

    stopped = launch('tpu_vm.sh', 'stop', env=env)
    assert stopped.returncode == 0 and 'stopping tfx_jax' in stopped.stdout
    assert _wait_for(lambda: 'got SIGTERM' in log.read_text())
  finally:
    if _alive(pid):
      os.kill(pid, signal.SIGKILL)


def test_the_documented_launch_commands_are_valid():
  text = ''
  for page in ('README.md', 'docs/cloud.md'):
    with open(os.path.join(ROOT, page)) as f:
      text += f.read().replace('\\\n', ' ') + '\n'
  lines = [line.strip() for line in text.splitlines() if line.strip().startswith('launch/')]
  assert len(lines) >= 8
  for line in lines:
    line = string.Template(line).substitute(PROJECT='p', BUCKET='gs://b', i='0')
    script, action, *args = shlex.split(line, comments=True)
    result = launch(os.path.basename(script), action, '--dry-run', *args)
    assert result.returncode == 0, (line, result.stderr)


# A fake GPU host for gpu_node.sh: ssh runs the remote command with sh in
# $FAKE_WORKER_HOME, scp copies there. The venv's python is a real Python whose
# `jax` is FAKE_JAX: `gpu` (jax.devices("gpu") answers), `cpu` (it raises, as a
# CPU-only JAX does) or `missing` (no jax to import).
FAKE_SSH = '#!/bin/sh\nHOME=$FAKE_WORKER_HOME exec sh -c "$2"\n'
FAKE_SCP = '#!/bin/sh\ncp "$1" "$FAKE_WORKER_HOME/${2#*:}"\n'
FAKE_JAX = '''import os
if os.environ['FAKE_JAX'] == 'missing':
  raise ImportError('No module named jax')
def devices(backend=None):
  if backend == 'gpu' and os.environ['FAKE_JAX'] == 'gpu':
    return ['cuda:0']
  raise RuntimeError(f'Unknown backend {backend}')
'''
SMI_HEADER = '''Mon Dec  1 10:00:00 2026
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI {driver}              Driver Version: {driver}      CUDA Version: {cuda}     |
|-----------------------------------------+------------------------+----------------------+
'''
SMI_FAILS = ("#!/bin/sh\necho \"NVIDIA-SMI has failed because it couldn't communicate with the "
             "NVIDIA driver.\"\nexit 9\n")
DRIVERS = {'11.8': '520.61.05', '12.4': '550.54.15', '13.0': '580.95.05', '13.2': '595.10'}


def _fake_gpu_host(tmp_path, cuda, jax):
  """PATH and env for gpu_node.sh against one fake host: nvidia-smi printing the
  header of a driver for CUDA `cuda` (None: no nvidia-smi, 'fails': it fails)."""
  worker, bin_dir = tmp_path / 'worker', tmp_path / 'bin'
  _write(bin_dir / 'ssh', FAKE_SSH)
  _write(bin_dir / 'scp', FAKE_SCP)
  if cuda == 'fails':
    _write(bin_dir / 'nvidia-smi', SMI_FAILS)
  elif cuda is not None:
    header = SMI_HEADER.format(driver=DRIVERS[cuda], cuda=cuda)
    _write(bin_dir / 'nvidia-smi', f"#!/bin/sh\ncat <<'END'\n{header}END\n")
  _write(worker / '.local' / 'bin' / 'uv', FAKE_UV)
  _write(worker / 'fake_site' / 'jax' / '__init__.py', FAKE_JAX)
  _write(worker / 'fake_python',
         f'#!/bin/sh\nPYTHONPATH="$HOME/fake_site" exec {shlex.quote(sys.executable)} "$@"\n')
  (tmp_path / 'tmp').mkdir()
  # A real nvidia-smi on this machine is hidden: the fake host has only its own.
  path = [d for d in os.environ['PATH'].split(os.pathsep)
          if not os.path.exists(os.path.join(d, 'nvidia-smi'))]
  return worker, dict(os.environ, PATH=os.pathsep.join([str(bin_dir), *path]), FAKE_JAX=jax,
                      FAKE_WORKER_HOME=str(worker), TMPDIR=str(tmp_path / 'tmp'))


@pytest.mark.parametrize('cuda, jax, flags, installed', [
    ('12.4', 'missing', [], ['.[cuda12]']),
    ('13.0', 'missing', [], ['.[cuda13]']),
    ('13.2', 'cpu', [], ['.[cuda13]']),  # A CPU-only JAX gets the plugin.
    ('13.0', 'gpu', [], ['.', 'gcsfs']),  # A JAX that runs on the GPU is kept as it is.
    (None, 'gpu', [], ['.', 'gcsfs']),
    ('13.0', 'missing', ['--cuda=12'], ['.[cuda12]']),
    ('12.4', 'gpu', ['--cuda=13'], ['.[cuda13]']),
    (None, 'missing', ['--cuda=13'], ['.[cuda13]']),
])
def test_gpu_install_on_a_fake_host_installs_the_extra_its_driver_needs(
    tmp_path, cuda, jax, flags, installed):
  worker, env = _fake_gpu_host(tmp_path, cuda, jax)
  result = launch('gpu_node.sh', 'install', '--host=gpu0', *flags, env=env)
  assert result.returncode == 0, result.stderr
  assert (worker / 'tfx_jax' / 'pyproject.toml').is_file()
  pip_args = (worker / 'pip_args').read_text().split()
  assert pip_args == ['pip', 'install', '-e', *installed,
                      '--python', f'{worker}/tfx_jax_venv/bin/python']
  if not flags:
    assert ('installing no CUDA plugin' if jax == 'gpu' else
            f'supports CUDA {cuda}: installing jax[{installed[0][2:-1]}]') in result.stdout


@pytest.mark.parametrize('cuda, message', [
    (None, 'no nvidia-smi, so no NVIDIA driver: install one, or choose with --cuda=12|13'),
    ('fails', 'nvidia-smi shows no CUDA version (is the driver loaded?): choose with'),
    ('11.8', 'the driver supports CUDA 11.8, JAX needs 12 or later: update the driver'),
])
def test_gpu_install_on_a_fake_host_without_a_driver_for_cuda_12_stops(tmp_path, cuda, message):
  worker, env = _fake_gpu_host(tmp_path, cuda, 'cpu')
  result = launch('gpu_node.sh', 'install', '--host=gpu0', env=env)
  assert result.returncode == 1
  assert message in result.stderr
  assert not (worker / 'pip_args').exists()
