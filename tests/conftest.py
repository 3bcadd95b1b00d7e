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
