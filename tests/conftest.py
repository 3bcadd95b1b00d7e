"""Test set-up: four fake CPU devices, so every sharded code path really shards,
helpers for tests that drive the real CLI, and a local GCS emulator."""

import csv
import fcntl
import os
import shutil
import socket
import subprocess
import sys

# Must happen before the first `import jax` anywhere in the test process.
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=4').strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


# gs:// in this process and in every CLI it starts goes to the emulator that the
# `gcs` fixture runs on 127.0.0.1. Set before fsspec and gcsfs are imported:
# they read some of these at import time.
GCS_URL = f'http://127.0.0.1:{_free_port()}'
EMULATOR_ENV = {
    'STORAGE_EMULATOR_HOST': GCS_URL,  # gcsfs (etils.epath's gs://)
    'FSSPEC_GCS_TOKEN': 'anon',  # gcsfs: no credentials, no metadata server
    # gcsfs: no gRPC probe for zonal buckets, which the emulator cannot answer
    # (it would wait 60 s per bucket, then fall back to the JSON API).
    'GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT': 'false',
    'TENSORSTORE_GCS_HTTP_URL': GCS_URL,  # tensorstore (Orbax checkpoints)
    'GOOGLE_AUTH_TOKEN_FOR_TESTING': 'emulator',  # tensorstore: a fixed bearer token
    'no_proxy': ','.join(filter(None, [os.environ.get('no_proxy'), '127.0.0.1'])),
    'NO_PROXY': ','.join(filter(None, [os.environ.get('NO_PROXY'), '127.0.0.1'])),
}
os.environ.update(EMULATOR_ENV)
BUCKET = 'tfx'

import pytest  # pylint: disable=wrong-import-position

from tfx_jax.training import malloc  # pylint: disable=wrong-import-position

import gcs_emulator  # pylint: disable=wrong-import-position

malloc.tune()  # As the CLI does: the in-process train steps run faster.

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..'))
RUNLOCAL = 'configs/m_n_split.py:dataset=fashion_mnist,runlocal'
NUMBERS = ('top1', 'top5', 'best10_top1', 'steps')


def cli_command(*args, analyse: bool = False):
  """The main job's command line. Without `analyse`, a job given a config skips
  the analysis at its end (report/analysis.json): the runlocal grid's tests
  check it, once."""
  if (not analyse and any(a.startswith('--config=') for a in args)
      and not any(a.startswith('--config.analysis') for a in args)):
    args = (*args, '--config.analysis.run=False')
  return [sys.executable, '-m', 'tfx_jax.main', *args]


def cli(*args, analyse: bool = False, **kwargs):
  """Run the main job's CLI to completion; returns the CompletedProcess."""
  return subprocess.run(cli_command(*args, analyse=analyse), cwd=ROOT, capture_output=True,
                        text=True, **kwargs)


def results(workdir):
  """results.csv as {run_id: row}."""
  with open(os.path.join(workdir, 'results.csv')) as f:
    return {r['run_id']: r for r in csv.DictReader(f)}


def copy_runs(grid_workdir, workdir, *run_ids):
  """A workdir of `grid_workdir`'s config holding some of its finished runs."""
  os.makedirs(os.path.join(workdir, 'runs'))
  for name in ('config.json', 'groups.json'):
    shutil.copy(os.path.join(grid_workdir, name), workdir)
  for run_id in run_ids:
    shutil.copytree(os.path.join(grid_workdir, 'runs', run_id),
                    os.path.join(workdir, 'runs', run_id))


def pytest_collection_modifyitems(items):
  """The SLURM cluster's grid first (tests/test_slurm.py, the longest fixture):
  started last, it would leave one worker alone at the end of the session."""
  items.sort(key=lambda item: item.module.__name__ != 'test_slurm')


def shared_grid(tmp_path_factory, worker_id, name, *args, env=None):
  """(workdir, stdout) of the CLI on a config, trained once per test session with
  the defaults a user gets (the analysis on) unless `args` change them:
  pytest-xdist's workers share one copy, which the first to need it trains
  while the others wait on a lock."""
  root = tmp_path_factory.getbasetemp()
  root = root if worker_id == 'master' else root.parent
  workdir, done = root / name, root / f'{name}.stdout'
  with open(root / f'{name}.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not done.exists():
      result = cli(*args, f'--workdir={workdir}', analyse=True, env=env)
      assert result.returncode == 0, result.stderr[-3000:]
      done.write_text(result.stdout)
  return str(workdir), done.read_text()


@pytest.fixture(scope='session')
def runlocal_grid(tmp_path_factory, worker_id):
  """The whole runlocal grid, uninterrupted: the reference other tests compare to."""
  workdir, stdout = shared_grid(tmp_path_factory, worker_id, 'runlocal_grid',
                                f'--config={RUNLOCAL}')
  return workdir, subprocess.CompletedProcess((), 0, stdout, '')


RESNET_TREATMENTS = ('transfer', 'transfer_ft', 'surgical', 'linear_probe', 'lp_ft', 'l2sp',
                     'llrd')


@pytest.fixture(scope='session')
def resnet_grid(tmp_path_factory, worker_id):
  """flax examples' ResNet18 (tests/flax_resnet.py) by its own groups at n = 2:
  base A, the transfers and the five tuning treatments onto B, no report.
  test_own_model and test_tune both read it. Its workdir."""
  import flax_resnet  # pylint: disable=import-outside-toplevel
  return shared_grid(tmp_path_factory, worker_id, 'resnet_grid', f'--config={RUNLOCAL}',
                     '--config.model=flax_resnet:ResNet18Narrow',
                     f'--config.layer_groups={",".join(flax_resnet.GROUPS)}',
                     '--config.layers=(2,)', f'--config.only={",".join(RESNET_TREATMENTS)}',
                     '--config.targets=(B,)', '--config.report=false',
                     env={**os.environ, 'PYTHONPATH': os.path.dirname(__file__)})[0]


# A tiny ImageNet in the original tar layout: two natural classes (0, 1) and two
# man-made ones (400, 401), so both halves of the m/n split have images.
IMAGENET_CLASSES = (0, 1, 400, 401)


@pytest.fixture(scope='session')
def imagenet_manual_dir(tmp_path_factory):
  """(manual_dir, truth): 6 train and 2 validation images per class."""
  from tfx_jax.data.sources import synthetic_imagenet  # pylint: disable=import-outside-toplevel
  path = str(tmp_path_factory.mktemp('manual'))
  truth = synthetic_imagenet.write_manual_dir(path, IMAGENET_CLASSES, 6, 2)
  return path, truth


@pytest.fixture(scope='session')
def prepared_imagenet(imagenet_manual_dir):
  """data_dir of the tiny ImageNet prepared in 5-image shards by 2 processes."""
  from tfx_jax.data.sources import prepare  # pylint: disable=import-outside-toplevel
  data_dir = os.path.join(os.path.dirname(imagenet_manual_dir[0]), 'prepared')
  prepare.prepare(imagenet_manual_dir[0], data_dir, num_workers=2, images_per_shard=5,
                  log=lambda message: None)
  return data_dir


@pytest.fixture(scope='session')
def gcs():
  """The GCS emulator, for the session; tests use prefixes of their own."""
  emulator = gcs_emulator.Emulator(GCS_URL, BUCKET)
  yield emulator
  emulator.stop()
