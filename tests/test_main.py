"""End to end through the real CLI: the runlocal grid on the real Fashion-MNIST."""

import csv
import os
import signal
import subprocess
import sys
import time

import pytest

RUNLOCAL = 'configs/m_n_split.py:dataset=fashion_mnist,runlocal'
ROOT = os.path.join(os.path.dirname(__file__), '..')
NUMBERS = ('top1', 'top5', 'best10_top1', 'steps')


def cli(*args, **kwargs):
  return subprocess.run([sys.executable, '-m', 'tfx_jax.main', *args], cwd=ROOT,
                        capture_output=True, text=True, **kwargs)


def rows(workdir):
  with open(os.path.join(workdir, 'results.csv')) as f:
    return {r['run_id']: r for r in csv.DictReader(f)}


@pytest.fixture(scope='module')
def grid(tmp_path_factory):
  """The whole runlocal grid, run once and shared by the tests below."""
  workdir = str(tmp_path_factory.mktemp('grid'))
  result = cli(f'--config={RUNLOCAL}', f'--workdir={workdir}')
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir, result


def test_runlocal_grid_has_a_row_per_treatment_and_n(grid):
  workdir, result = grid
  results = rows(workdir)
  keys = {(r['treatment'], r['source'], r['target'], int(r['n'])) for r in results.values()}
  expected = {('base', 'A', 'A', 0), ('base', 'B', 'B', 0)}
  for n in range(1, 8):
    expected |= {('selffer', 'B', 'B', n), ('selffer_ft', 'B', 'B', n),
                 ('transfer', 'A', 'B', n), ('transfer_ft', 'A', 'B', n)}
  assert keys == expected and len(results) == 30
  for r in results.values():
    assert r['split'] == 'm_n' and r['seed'] == '0' and r['steps'] == '24'
    top1, top5, best10 = float(r['top1']), float(r['top5']), float(r['best10_top1'])
    assert 0 <= top1 <= top5 <= 1 and 0 < best10 <= 1
  # Base B (4 footwear/bag classes) learns well above chance even in 24 steps.
  assert float(results['m_n-baseB-s0']['top1']) > 0.5
  assert 'grid ETA' in result.stdout and 'Done: 30 runs' in result.stdout
  run = os.path.join(workdir, 'runs', 'm_n-A3B-s0')
  with open(os.path.join(run, 'metrics.jsonl')) as f:
    evals = [line for line in f if '"eval"' in line]
  assert len(evals) == 3  # Steps 8, 16, 24.
  assert os.listdir(os.path.join(run, 'tb'))
  assert os.path.exists(os.path.join(workdir, 'report', 'findings.json'))


def test_rerun_of_finished_workdir_trains_nothing(grid):
  workdir, _ = grid
  with open(os.path.join(workdir, 'results.csv'), 'rb') as f:
    before = f.read()
  result = cli(f'--config={RUNLOCAL}', f'--workdir={workdir}')
  assert result.returncode == 0, result.stderr[-3000:]
  assert '(30 finished)' in result.stdout and ' step ' not in result.stdout
  with open(os.path.join(workdir, 'results.csv'), 'rb') as f:
    assert f.read() == before


def test_sigkill_mid_grid_then_resume_gives_identical_numbers(grid, tmp_path):
  """A smaller grid (n = 2, 5) is killed mid-run; its runs are the same runs
  as in the full grid (same ids, seeds, data), so the numbers must match."""
  full = rows(grid[0])
  workdir = str(tmp_path)
  args = (f'--config={RUNLOCAL}', f'--workdir={workdir}', '--config.layers=(2,5)')
  proc = subprocess.Popen([sys.executable, '-m', 'tfx_jax.main', *args], cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  victim = os.path.join(workdir, 'runs', 'm_n-A2B-s0')
  deadline = time.time() + 240
  while not os.path.exists(os.path.join(victim, 'checkpoints', '8')):
    assert proc.poll() is None and time.time() < deadline, 'no checkpoint to kill at'
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not os.path.exists(os.path.join(victim, 'result.json'))
  result = cli(*args)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'resuming m_n-A2B-s0 from step' in result.stdout
  resumed = rows(workdir)
  assert len(resumed) == 10
  for run_id, row in resumed.items():
    assert [row[k] for k in NUMBERS] == [full[run_id][k] for k in NUMBERS], run_id


def test_imagenet_not_prepared_is_a_short_error(tmp_path):
  result = cli('--config=configs/m_n_split.py', f'--workdir={tmp_path}/w',
               f'--config.data_dir={tmp_path}/empty')
  assert result.returncode == 2
  assert 'Traceback' not in result.stderr
  assert 'imagenet2012' in result.stderr and 'tfds build' in result.stderr
  assert not os.path.exists(f'{tmp_path}/w/results.csv')
