"""Test set-up: four fake CPU devices, so every sharded code path really shards,
and helpers for tests that drive the real CLI."""

import csv
import os
import subprocess
import sys

# Must happen before the first `import jax` anywhere in the test process.
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=4').strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import pytest  # pylint: disable=wrong-import-position

from tfx_jax import malloc  # pylint: disable=wrong-import-position

malloc.tune()  # As the CLI does: the in-process train steps run faster.

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..'))
RUNLOCAL = 'configs/m_n_split.py:dataset=fashion_mnist,runlocal'
NUMBERS = ('top1', 'top5', 'best10_top1', 'steps')


def cli_command(*args):
  return [sys.executable, '-m', 'tfx_jax.main', *args]


def cli(*args, **kwargs):
  """Run the main job's CLI to completion; returns the CompletedProcess."""
  return subprocess.run(cli_command(*args), cwd=ROOT, capture_output=True,
                        text=True, **kwargs)


def results(workdir):
  """results.csv as {run_id: row}."""
  with open(os.path.join(workdir, 'results.csv')) as f:
    return {r['run_id']: r for r in csv.DictReader(f)}


@pytest.fixture(scope='session')
def runlocal_grid(tmp_path_factory):
  """The whole runlocal grid, uninterrupted: the reference other tests compare to."""
  workdir = str(tmp_path_factory.mktemp('grid'))
  result = cli(f'--config={RUNLOCAL}', f'--workdir={workdir}')
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir, result


# A tiny ImageNet in the original tar layout: two natural classes (0, 1) and two
# man-made ones (400, 401), so both halves of the m/n split have images.
IMAGENET_CLASSES = (0, 1, 400, 401)


@pytest.fixture(scope='session')
def imagenet_manual_dir(tmp_path_factory):
  """(manual_dir, truth): 6 train and 2 validation images per class."""
  from tfx_jax import synthetic_imagenet  # pylint: disable=import-outside-toplevel
  path = str(tmp_path_factory.mktemp('manual'))
  truth = synthetic_imagenet.write_manual_dir(path, IMAGENET_CLASSES, 6, 2)
  return path, truth


@pytest.fixture(scope='session')
def prepared_imagenet(imagenet_manual_dir):
  """data_dir of the tiny ImageNet prepared in 5-image shards by 2 processes."""
  from tfx_jax import prepare  # pylint: disable=import-outside-toplevel
  data_dir = os.path.join(os.path.dirname(imagenet_manual_dir[0]), 'prepared')
  prepare.prepare(imagenet_manual_dir[0], data_dir, num_workers=2, images_per_shard=5,
                  log=lambda message: None)
  return data_dir
