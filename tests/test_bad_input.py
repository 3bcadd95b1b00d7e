"""Every kind of bad input, through the real CLI: exit 2, one short message that
names the problem and the fix, no traceback, and nothing half-written."""

import glob
import gzip
import json
import os
import shutil

import pytest

from conftest import RUNLOCAL, cli

FMNIST = '/usr/share/datasets/fashion-mnist'


def corrupt_data_dir(path, how):
  os.makedirs(path)
  for name in os.listdir(FMNIST):
    shutil.copy(os.path.join(FMNIST, name), path)
  target = os.path.join(path, 'train-images-idx3-ubyte.gz')
  with gzip.open(target) as f:
    raw = f.read()
  raw = b'\x12\x34' + raw[2:] if how == 'magic' else raw[:len(raw) // 2]
  with gzip.open(target, 'wb', compresslevel=1) as f:
    f.write(raw)


CASES = {
    'missing config file': (['--config=configs/nope.py'],
                            ["Config file 'configs/nope.py' does not exist"]),
    'unknown config key': ([f'--config={RUNLOCAL}', '--config.lrr=0.1'],
                           ["Unknown config key 'lrr'", "Did you mean 'lr'"]),
    'unknown config key, none close': ([f'--config={RUNLOCAL}', '--config.zzzzzz=1'],
                                       ["Unknown config key 'zzzzzz'.", 'tfx_jax/config.py']),
    'unknown config argument': (['--config=configs/m_n_split.py:datset=cifar10'],
                                ["Unknown config argument 'datset'", 'dataset, runlocal']),
    'unknown dataset': (['--config=configs/m_n_split.py:dataset=imagenet'],
                        ["Unknown dataset 'imagenet'", 'fashion_mnist', 'imagenet2012']),
    'dataset not prepared': (['--config=configs/m_n_split.py:dataset=cifar10',
                              '--config.data_dir={tmp}/empty'],
                             ['cifar10', 'not prepared', 'tfds build cifar10']),
    'bad IDX magic': ([f'--config={RUNLOCAL}', '--config.data_dir={tmp}/magic'],
                      ['Corrupted IDX file', 'bad magic']),
    'bad IDX size': ([f'--config={RUNLOCAL}', '--config.data_dir={tmp}/size'],
                     ['Corrupted IDX file', 'bytes, but its header']),
    'unwritable workdir': ([f'--config={RUNLOCAL}', '--workdir={tmp}/file/w'],
                           ['Cannot write to workdir', 'writable --workdir']),
    'n outside 1..7': ([f'--config={RUNLOCAL}', '--config.layers=(0,8)'],
                       ['config.layers has [0, 8]', 'n must be 1..7']),
    'batch not divisible by devices': ([f'--config={RUNLOCAL}', '--config.batch_size=30'],
                                       ['batch_size 30 is not divisible by the 4 devices']),
    'NaN loss': ([f'--config={RUNLOCAL}', '--config.lr=1e12'],
                 ['Run m_n-baseB-s0: loss is', 'at step', 'Lower the learning rate']),
    'workdir of another config': ([f'--config={RUNLOCAL}', '--config.lr=0.5'],
                                  ['holds runs of a different config', 'differs in lr',
                                   'Use a new --workdir']),
    # Checked before the shards start: one message, not one a shard.
    'workdir of another config, local shards': (
        [f'--config={RUNLOCAL}', '--config.lr=0.5', '--local_shards=2'],
        ['holds runs of a different config', 'differs in lr']),
    'more local shards than CPUs': ([f'--config={RUNLOCAL}', '--local_shards=999'],
                                    ['--local_shards=999 needs as many CPUs', 'pass at most']),
    'local shards of a sweep shard': ([f'--config={RUNLOCAL}', '--local_shards=2',
                                       '--config.sweep.num_shards=2'],
                                      ["--local_shards runs the sweep's shards itself"]),
}


@pytest.fixture(scope='module')
def corrupt_dirs(tmp_path_factory):
  base = tmp_path_factory.mktemp('data')
  corrupt_data_dir(f'{base}/magic', 'magic')
  corrupt_data_dir(f'{base}/size', 'size')
  return str(base)


@pytest.mark.parametrize('case', sorted(CASES))
def test_bad_input_is_one_clear_message(case, tmp_path, corrupt_dirs):
  args, expected = CASES[case]
  tmp = str(tmp_path)
  workdir = f'{tmp}/w'
  (tmp_path / 'file').write_text('a file, not a directory')
  for name in ('magic', 'size'):
    os.symlink(f'{corrupt_dirs}/{name}', f'{tmp}/{name}')
  if case.startswith('workdir of another config'):
    os.makedirs(workdir)
    result = cli(f'--config={RUNLOCAL}', f'--workdir={workdir}', '--config.layers=(1,)',
                 '--config.only=(base,)', '--config.report=false')
    assert result.returncode == 0, result.stderr[-2000:]
  args = [a.format(tmp=tmp) for a in args]
  if not any(a.startswith('--workdir') for a in args):
    args.append(f'--workdir={workdir}')
  before = sorted(glob.glob(f'{workdir}/**', recursive=True))
  result = cli(*args)
  assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
  assert 'Traceback' not in result.stderr
  message = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
  assert len(message) == 1, result.stderr[-2000:]
  for text in expected:
    assert text in message[0], message[0]
  # Nothing half-written: no temp files, no results, no new finished runs.
  assert not glob.glob(f'{tmp}/**/*.tmp', recursive=True)
  after = sorted(glob.glob(f'{workdir}/**', recursive=True))
  if case.startswith('workdir of another config'):
    assert after == before
    with open(f'{workdir}/config.json') as f:
      assert json.load(f)['lr'] != 0.5
  else:
    assert not os.path.exists(f'{workdir}/results.csv')
    assert not glob.glob(f'{workdir}/runs/*/result.json')


def test_verbose_shows_the_traceback(tmp_path):
  result = cli('--config=configs/m_n_split.py:dataset=imagenet', '--verbose',
               f'--workdir={tmp_path}/w')
  assert result.returncode != 0 and 'Traceback' in result.stderr
