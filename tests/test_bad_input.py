"""Every kind of bad input, through the real CLI: exit 2, one short message that
names the problem and the fix, no traceback, and nothing half-written."""

import glob
import gzip
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, RUNLOCAL, cli

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


# The command every correction comes back to: one base run of the runlocal grid.
BASE = (f'--config={RUNLOCAL}', '--config.layers=(1,)', '--config.only=(base,)',
        '--config.report=false')


def _truncate(path):
  with open(path, 'r+') as f:
    f.truncate(os.path.getsize(path) // 2)


def _stash_config(w):
  shutil.copy(f'{w}/config.json', f'{w}/../config.json.orig')


def _restore_config(w):
  shutil.copy(f'{w}/../config.json.orig', f'{w}/config.json')
  return w


def _truncate_config(w):
  _stash_config(w)
  _truncate(f'{w}/config.json')


def _remove_config(w):
  _stash_config(w)
  os.remove(f'{w}/config.json')


def _foreign(w):
  os.makedirs(w)
  with open(f'{w}/results.csv', 'w') as f:
    f.write('my,own,results\n')


# name: (arguments, texts the one line holds, how the workdir starts). 'finished'
# (the default): a copy of a workdir that BASE finished, which a refusal must
# leave byte for byte as it was, and where BASE then succeeds; 'fresh': no
# workdir yet; 'path': --workdir itself is the mistake, and BASE succeeds in a
# good one; or (set-up, fix): the workdir's content is the mistake, and the
# fix (which returns the workdir to run BASE in) is the one the message names.
CASES = {
    'missing config file': (['--config=configs/nope.py'],
                            ["Config file 'configs/nope.py' does not exist"]),
    'config file without get_config': (['--config={tmp}/noget.py'],
                                       ["Config file '", "noget.py' has no get_config()"]),
    'unknown config key': (['--config.lrr=0.1'], ["Unknown config key 'lrr'", "Did you mean 'lr'"]),
    'unknown config key, none close': (['--config.zzzzzz=1'],
                                       ["Unknown config key 'zzzzzz'.", 'tfx_jax/config.py']),
    'config value of the wrong type': (['--config.batch_size=abc'], ['Bad config value']),
    'analysis minibatch too small for CKA': (['--config.analysis.batch_size=2'],
                                             ['config.analysis.batch_size must be 4 or more',
                                              '--config.analysis.batch_size=250']),
    'unknown config argument': (['--config=configs/m_n_split.py:datset=cifar10'],
                                ["Unknown config argument 'datset'", 'dataset, runlocal']),
    'unknown flag': (['--no_such_flag=1'], ['no_such_flag']),
    'unexpected argument': (['extra'], ["Unexpected arguments ['extra']"]),
    'unknown dataset': (['--config=configs/m_n_split.py:dataset=imagenet'],
                        ["Unknown dataset 'imagenet'", 'fashion_mnist', 'imagenet2012']),
    'dataset not prepared': (['--config=configs/m_n_split.py:dataset=cifar10',
                              '--config.data_dir={tmp}/empty'],
                             ['cifar10', 'not prepared', 'tfds build cifar10']),
    'bad IDX magic': (['--config.data_dir={tmp}/magic'], ['Corrupted IDX file', 'bad magic']),
    'bad IDX size': (['--config.data_dir={tmp}/size'], ['Corrupted IDX file', 'bytes, but its header']),
    'data_dir of an unsupported scheme': (['--config.data_dir=s3://b/data'],
                                          ['--config.data_dir=s3://b/data: s3:// is not supported']),
    'unknown source dataset': (['--config.source_dataset=nope'],
                               ["Unknown dataset 'nope'", 'tfds:NAME', 'folder:NAME']),
    'source classes out of range': (['--config.source_dataset=digits:0-12'],
                                    ["source_dataset 'digits'", 'out of range for 10 classes']),
    'image folder not prepared': (
        ['--config.dataset=folder:mine', '--config.data_dir={tmp}/empty'],
        ["No prepared image folder 'mine'", 'tfx_jax.prepare folder']),
    'TFDS dataset not prepared': (
        ['--config.dataset=tfds:my_set', '--config.data_dir={tmp}/empty'],
        ["TFDS has no dataset 'my_set'", 'prepare your own builder there']),
    'negative target size': (['--config.target_examples_per_class=-5'],
                             ['config.target_examples_per_class has [-5]']),
    'target size with target A': (['--config.target_examples_per_class=5', '--config.targets=B,A'],
                                  ['sizes the target B: set --config.targets=B']),
    'source solver without a source': (['--config.source_solver.total_steps=10'],
                                       ['config.source_solver sets total_steps', 'no source']),
    'image_size 0': (['--config.image_size=0'], ['config.image_size must be 8..4096']),
    'unknown model': (['--config.model=nonet'], ["Unknown model 'nonet'"]),
    'model module that does not import': (['--config.model=no_such_pkg.nets:make'],
                                          ["Cannot import module 'no_such_pkg.nets'"]),
    "user's module that fails in init": (['--config.model=tests.broken_models:WrongKernel'],
                                         ["Model 'tests.broken_models:WrongKernel'",
                                          'WrongKernel', 'while it was initialised']),
    "user's module that fails when traced": (
        ['--config.model=tests.broken_models:TrainOnlyBug'],
        ["Model 'tests.broken_models:TrainOnlyBug'", 'TypeError', 'while it was traced']),
    "user's module reducing over another axis name": (
        ['--config.model=tests.broken_models:OwnAxisName'],
        ["collective axis 'devices'", '--config.axis_name=devices']),
    'layer group that matches nothing': (['--config.layer_groups=(conv9,)'],
                                         ["Layer group 'conv9'", 'matches no parameter']),
    'custom split without a slash': (['--config.split=custom:0-4'],
                                     ['write custom halves as custom:<A>/<B>']),
    'n outside 1..7': (['--config.layers=(0,8)'], ['config.layers has [0, 8]', 'n must be 1..7']),
    'batch not divisible by devices': (['--config.batch_size=30'],
                                       ['batch_size 30 is not divisible by the 4 devices']),
    'batch size 0': (['--config.batch_size=0'], ['config.batch_size must be 1 or more, got 0']),
    'negative batch size': (['--config.batch_size=-32'], ['config.batch_size must be 1 or more']),
    'no steps': (['--config.total_steps=0'], ['config.total_steps must be 1 or more']),
    'eval_every 0': (['--config.eval_every=0'], ['config.eval_every must be 1 or more']),
    'log_every 0': (['--config.log_every=0'], ['config.log_every must be 1 or more']),
    'checkpoint_every 0': (['--config.checkpoint_every=0'], ['config.checkpoint_every must be 1']),
    'eval_batch_size 0': (['--config.eval_batch_size=0'], ['config.eval_batch_size must be 1']),
    'keep no checkpoints': (['--config.keep_checkpoints=0'],
                            ['config.keep_checkpoints must be 1 or more', 'keep_checkpoints=2']),
    'lr_step 0': (['--config.lr_step=0'], ['config.lr_step must be 1 or more']),
    'misspelt schedule': (['--config.schedule=cosin'],
                          ["config.schedule must be one of step, cosine, constant, got 'cosin'"]),
    'learning rate 0': (['--config.lr=0'], ['config.lr must be a positive number, got 0.0']),
    'momentum 1.5': (['--config.momentum=1.5'], ['config.momentum must be in [0, 1)']),
    'negative eval_examples': (['--config.eval_examples=-1'],
                               ['config.eval_examples must be 0 or more']),
    'sweep shard out of range': (['--config.sweep.num_shards=2', '--config.sweep.shard=2'],
                                 ['sweep.shard must be in 0..1']),
    'NaN loss': (['--config.lr=1e12'],
                 ['Run m_n-baseB-s0: loss is', 'at step', 'Lower the learning rate'], 'fresh'),
    'unwritable workdir': (['--workdir={tmp}/file/w'],
                           ['Cannot write to workdir', 'writable --workdir'], 'path'),
    'workdir URL with one slash': (['--workdir=gs:/tfx/x'],
                                   ['is not a URL', 'did you mean gs://tfx/x?'], 'path'),
    'workdir of an unsupported scheme': (['--workdir=s3://b/w'],
                                         ['s3:// is not supported', 'gs://BUCKET/PATH'], 'path'),
    'workdir not UTF-8': ([os.fsdecode(b'--workdir=/tmp/w\xff')], ['is not valid UTF-8'], 'path'),
    'workdir of another config': (['--config.lr=0.5'],
                                  ['holds runs of a different config', 'differs in lr',
                                   'Use a new --workdir']),
    # Checked before the shards start: one message, not one a shard.
    'workdir of another config, local shards': (
        ['--config.lr=0.5', '--local_shards=2'],
        ['holds runs of a different config', 'differs in lr']),
    'unreadable config.json': ([], ['config.json is unreadable', 'restore it'],
                               (_truncate_config, _restore_config)),
    'runs without config.json': ([], ['holds runs but no config.json', 'restore its config.json'],
                                 (_remove_config, _restore_config)),
    "a directory that is not a workdir": ([], ['is not empty and not a tfx_jax workdir',
                                               'results.csv', 'use a new or empty --workdir'],
                                          (_foreign, lambda w: f'{w}-new')),
    'more local shards than CPUs': (['--local_shards=999'],
                                    ['--local_shards=999 needs as many CPUs', 'pass at most']),
    'local shards of a sweep shard': (['--local_shards=2', '--config.sweep.num_shards=2'],
                                      ["--local_shards runs the sweep's shards itself"]),
}


@pytest.fixture(scope='module')
def corrupt_dirs(tmp_path_factory):
  base = tmp_path_factory.mktemp('data')
  corrupt_data_dir(f'{base}/magic', 'magic')
  corrupt_data_dir(f'{base}/size', 'size')
  return str(base)


@pytest.fixture(scope='module')
def finished_workdir(tmp_path_factory):
  """A workdir where BASE has finished its one run."""
  workdir = str(tmp_path_factory.mktemp('finished') / 'w')
  result = cli(*BASE, f'--workdir={workdir}')
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stderr == ''  # Orbax's and absl's warnings stay off stderr.
  return workdir


def snapshot(root):
  """Every file under `root` with its bytes: what a refusal must not change."""
  out = {}
  for folder, _, names in os.walk(root):
    for name in names:
      with open(os.path.join(folder, name), 'rb') as f:
        out[os.path.relpath(os.path.join(folder, name), root)] = f.read()
  return out


def test_at_least_30_kinds_of_bad_input():
  assert len(CASES) >= 30


@pytest.mark.parametrize('case', sorted(CASES))
def test_bad_input_is_one_clear_message_and_the_fix_then_runs(case, tmp_path, corrupt_dirs,
                                                              finished_workdir):
  args, expected, start = (*CASES[case], 'finished')[:3]
  tmp = str(tmp_path)
  workdir = f'{tmp}/w'
  (tmp_path / 'file').write_text('a file, not a directory')
  (tmp_path / 'noget.py').write_text('"""A config file without get_config."""\nx = 1\n')
  for name in ('magic', 'size'):
    os.symlink(f'{corrupt_dirs}/{name}', f'{tmp}/{name}')
  if start == 'finished' or isinstance(start, tuple) and start[0] is not _foreign:
    shutil.copytree(finished_workdir, workdir)
  if isinstance(start, tuple):
    start[0](workdir)
  args = [a.format(tmp=tmp) for a in args]
  if not any(a.startswith('--config=') for a in args):
    args.insert(0, BASE[0])
  given = {a.split('=')[0] for a in args}
  args += [b for b in BASE[1:] if b.split('=')[0] not in given]  # The case's value wins.
  if not any(a.startswith('--workdir') for a in args):
    args.append(f'--workdir={workdir}')
  before = snapshot(workdir)
  result = cli(*args)
  assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
  assert 'Traceback' not in result.stderr
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: '), result.stderr[-2000:]
  for text in expected:
    assert text in lines[0], lines[0]
  # Nothing half-written: no temp files; the workdir as it was (a fresh one
  # holds no results and no finished run).
  assert not glob.glob(f'{tmp}/**/*.tmp', recursive=True)
  if start == 'fresh':
    assert not os.path.exists(f'{workdir}/results.csv')
    assert not glob.glob(f'{workdir}/runs/*/result.json')
  else:
    assert snapshot(workdir) == before
  # The fix the message names, then the same workdir (or the one it names)
  # works. A finished workdir that the refusal left byte for byte as it was is
  # one that test_a_repeated_flag_takes_its_last_value runs BASE in.
  if start != 'finished':
    fixed = start[1](workdir) if isinstance(start, tuple) else workdir
    fixed = f'{tmp}/new' if start == 'fresh' else fixed
    if start == 'path':  # A good --workdir: one that BASE finished will do.
      shutil.copytree(finished_workdir, fixed)
    result = cli(*BASE, f'--workdir={fixed}')
    assert result.returncode == 0, result.stderr[-2000:]
    assert os.path.exists(f'{fixed}/runs/m_n-baseB-s0/result.json')


def test_verbose_shows_the_traceback_and_keeps_the_exit_code(tmp_path):
  result = cli('--config=configs/m_n_split.py:dataset=imagenet', '--verbose',
               f'--workdir={tmp_path}/w')
  assert result.returncode == 2 and 'Traceback' in result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith("error: Unknown dataset 'imagenet'")


@pytest.mark.parametrize('module, flag', [('main', '--workdir'), ('report', '--workdir'),
                                          ('prepare', '--manual_dir')])
def test_help_exits_0(module, flag):
  result = subprocess.run([sys.executable, '-m', f'tfx_jax.{module}', '--help'], cwd=ROOT,
                          capture_output=True, text=True)
  assert result.returncode == 0, result.stderr[-2000:]
  assert flag in result.stdout


def test_a_repeated_flag_takes_its_last_value(finished_workdir, tmp_path):
  """Not added up, as ml_collections would for a tuple field."""
  shutil.copytree(finished_workdir, tmp_path / 'w')
  result = cli(*BASE, '--config.layers=(1,2)', '--config.layers=(1,)',
               '--config.only=(transfer,)', '--config.only=(base,)', f'--workdir={tmp_path}/w')
  assert result.returncode == 0, result.stderr[-2000:]
  assert '1 runs in' in result.stdout and '1 finished' in result.stdout, result.stdout
