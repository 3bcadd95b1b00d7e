"""--local_shards: how processes, CPUs and memory are counted and split, and the
launcher's pinning, failure and SIGTERM handling, with stand-in shards (the
real CLI's local shards are in test_scale_out)."""

import os
import signal
import subprocess
import sys
import time

import pytest

from tfx_jax.errors import UserError
from tfx_jax.grid import local_shards

from conftest import ROOT

GB = 1 << 30


def test_cpus_are_split_into_contiguous_groups_of_near_equal_size():
  assert local_shards.cpu_groups([0, 1, 2, 3, 4], 2) == [[0, 1, 2], [3, 4]]
  assert local_shards.cpu_groups([2, 3, 6, 7], 4) == [[2], [3], [6], [7]]
  assert local_shards.cpu_groups([0, 1, 2, 3, 4, 5, 6], 3) == [[0, 1, 2], [3, 4], [5, 6]]


def test_cpu_lists_read_as_taskset_writes_them():
  assert local_shards.cpu_list([6, 0, 1, 2, 3]) == '0-3,6'
  assert local_shards.cpu_list([1]) == '1'
  assert local_shards.cpu_list([0, 2, 4, 5]) == '0,2,4-5'


def test_zero_is_one_process_per_cpu_that_memory_allows():
  cpus = list(range(8))
  assert local_shards.count(0, cpus, 3 * GB + GB // 2) == 3
  assert local_shards.count(0, cpus, 64 * GB) == 8
  assert local_shards.count(0, cpus, None) == 8  # Memory unknown: the CPUs decide.
  assert local_shards.count(0, cpus, GB // 2) == 1
  assert local_shards.count(5, cpus, GB // 2) == 5  # Asked for: as asked.
  with pytest.raises(UserError, match='--local_shards=9 needs as many CPUs.*at most 8'):
    local_shards.count(9, cpus, None)
  with pytest.raises(UserError, match='must be 0'):
    local_shards.count(-1, cpus, None)


# A stand-in for the main job as shard K: writes its CPUs, records SIGTERM or
# SIGINT (then exits 143 or 130 as a job stopped at a checkpoint does), and
# behaves as MODE says for its shard.
SHARD = r'''
import os, signal, sys, time
out, k, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def term(signum, _):
  open(f'{out}/{k}.{signal.Signals(signum).name}', 'w').close()
  sys.exit(128 + signum)
signal.signal(signal.SIGTERM, term)
signal.signal(signal.SIGINT, term)
with open(f'{out}/{k}.tmp', 'w') as f:
  f.write(','.join(map(str, sorted(os.sched_getaffinity(0)))))
with open(f'{out}/{k}.gpus', 'w') as f:
  f.write(os.environ.get('CUDA_VISIBLE_DEVICES', 'unset'))
os.rename(f'{out}/{k}.tmp', f'{out}/{k}.cpus')
if mode == 'fail1' and k == 1:
  print('error: shard 1 is broken', file=sys.stderr)
  sys.exit(2)
if mode != 'ok':
  time.sleep(60)
'''

DRIVER = r'''
import sys
from tfx_jax.grid import local_shards
out, mode, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
gpus = sys.argv[4].split(',') if len(sys.argv) > 4 else None
local_shards.shard_command = lambda argv, n, k: [sys.executable, '-c', {shard!r}, out, str(k), mode]
local_shards.run([], n, gpus)
'''.format(shard=SHARD)


def start(tmp_path, mode, n=2, gpus=None, env=None):
  return subprocess.Popen([sys.executable, '-c', DRIVER, str(tmp_path), mode, str(n),
                           *([','.join(gpus)] if gpus else [])], env=env,
                          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_files(paths, timeout=60):
  deadline = time.time() + timeout
  while not all(os.path.exists(p) for p in paths):
    assert time.time() < deadline, f'none of {paths} appeared'
    time.sleep(0.1)


def test_each_shard_runs_pinned_to_its_own_cpus(tmp_path):
  cpus = sorted(os.sched_getaffinity(0))
  assert len(cpus) >= 2, 'this test needs 2 CPUs'
  proc = start(tmp_path, 'ok')
  out, err = proc.communicate(timeout=60)
  assert proc.returncode == 0, err
  groups = local_shards.cpu_groups(cpus, 2)
  for k in range(2):
    assert (tmp_path / f'{k}.cpus').read_text() == ','.join(map(str, groups[k]))
  assert f'shard 0 on CPUs {local_shards.cpu_list(groups[0])}' in out
  assert 'All 2 sweep shards done in' in out
  assert os.sched_getaffinity(0) == set(cpus)  # The launcher's own mask is untouched.


def test_a_failing_shard_stops_the_others_and_sets_the_exit_code(tmp_path):
  proc = start(tmp_path, 'fail1')
  out, err = proc.communicate(timeout=30)  # Not the healthy shard's 60 s.
  assert proc.returncode == 2, err
  assert (tmp_path / '0.SIGTERM').exists()  # The healthy shard was told to stop.
  assert 'error: shard 1 is broken' in err
  assert 'Sweep shard 1 of 2 failed (exit code 2' in err
  assert 'All 2' not in out


@pytest.mark.parametrize('signum, code', [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_to_the_launcher_reaches_every_shard_and_the_job_exits_stopped(
    tmp_path, signum, code):
  """SIGTERM (preemption), or SIGINT to the launcher alone (as `kill -INT`; a
  terminal's Ctrl-C reaches the shards too, which then get it twice)."""
  proc = start(tmp_path, 'wait')
  wait_for_files([tmp_path / '0.cpus', tmp_path / '1.cpus'])
  proc.send_signal(signum)
  _, err = proc.communicate(timeout=30)
  assert proc.returncode == code, err
  name = signal.Signals(signum).name
  assert (tmp_path / f'0.{name}').exists() and (tmp_path / f'1.{name}').exists()
  assert 'Traceback' not in err
  assert err.strip().splitlines() == [
      'Stopped: every shard saved a checkpoint; run the same command again to resume.']


@pytest.fixture
def on_cuda(monkeypatch, tmp_path):
  """JAX's backend as on a CUDA host: no CPU default, and an nvidia-smi on PATH
  that lists 4 GPUs (CUDA_VISIBLE_DEVICES unset)."""
  monkeypatch.setattr(local_shards.malloc, 'backend_is_cpu', lambda: False)
  monkeypatch.setattr(local_shards.malloc, 'default_platform', lambda: 'cuda')
  smi = tmp_path / 'bin' / 'nvidia-smi'
  smi.parent.mkdir()
  smi.write_text('#!/bin/sh\n[ "$1" = -L ] || exit 9\n' + ''.join(
      f'echo "GPU {k}: NVIDIA H100 80GB HBM3 (UUID: GPU-{k}abc)"\n' for k in range(4)))
  smi.chmod(0o755)
  monkeypatch.setenv('PATH', f'{smi.parent}:{os.environ["PATH"]}')
  monkeypatch.delenv('CUDA_VISIBLE_DEVICES', raising=False)


def test_on_gpus_zero_is_one_process_per_gpu_it_may_use(on_cuda, monkeypatch):
  assert local_shards.resolve(0, False, 1) == (4, ['0', '1', '2', '3'])
  assert local_shards.resolve(2, False, 1) == (2, ['0', '1', '2', '3'])
  assert local_shards.resolve(1, False, 1) == (1, None)
  with pytest.raises(UserError, match='--local_shards=5 needs as many GPUs.*sees 4'):
    local_shards.resolve(5, False, 1)
  with pytest.raises(UserError, match='drop --multihost'):
    local_shards.resolve(0, True, 1)
  # SLURM (--gres=gpu:2) or the user narrows what this process may use.
  monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '2,3')
  assert local_shards.resolve(0, False, 1) == (2, ['2', '3'])
  monkeypatch.setenv('CUDA_VISIBLE_DEVICES', 'GPU-1abc')
  assert local_shards.resolve(0, False, 1) == (1, None)  # One GPU: the plain job.


def test_on_tpus_local_shards_is_refused_and_zero_is_one(on_cuda, monkeypatch):
  monkeypatch.setattr(local_shards.malloc, 'default_platform', lambda: 'tpu')
  assert local_shards.resolve(0, False, 1) == (1, None)
  with pytest.raises(UserError, match='for the CPU backend and CUDA GPUs'):
    local_shards.resolve(2, False, 1)


@pytest.mark.parametrize('gpus, n, seen', [
    (['0', '1', '2', '3'], 4, ['0', '1', '2', '3']),
    (['0', '1', '2', '3'], 2, ['0,1', '2,3']),
    (['4', '7'], 2, ['4', '7']),  # SLURM's CUDA_VISIBLE_DEVICES, renumbered or not.
    (['GPU-aa', 'GPU-bb'], 2, ['GPU-aa', 'GPU-bb']),
])
def test_each_shard_process_sees_only_its_own_gpus(tmp_path, gpus, n, seen):
  env = {**os.environ, 'CUDA_VISIBLE_DEVICES': ','.join(gpus)}
  proc = start(tmp_path, 'ok', n=n, gpus=gpus, env=env)
  out, err = proc.communicate(timeout=60)
  assert proc.returncode == 0, err
  assert [(tmp_path / f'{k}.gpus').read_text() for k in range(n)] == seen
  assert f'shard 0 on GPU {seen[0]} and CPUs ' in out


def test_without_gpus_the_shards_keep_the_environment(tmp_path):
  proc = start(tmp_path, 'ok', env={k: v for k, v in os.environ.items()
                                    if k != 'CUDA_VISIBLE_DEVICES'})
  _, err = proc.communicate(timeout=60)
  assert proc.returncode == 0, err
  assert [(tmp_path / f'{k}.gpus').read_text() for k in range(2)] == ['unset', 'unset']
