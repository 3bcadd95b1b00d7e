"""End to end through the real CLI: the runlocal grid on the real Fashion-MNIST."""

import json
import os

from conftest import RUNLOCAL, cli, results


def test_runlocal_grid_has_a_row_per_treatment_and_n(runlocal_grid):
  workdir, result = runlocal_grid
  rows = results(workdir)
  keys = {(r['treatment'], r['source'], r['target'], int(r['n'])) for r in rows.values()}
  expected = {('base', 'A', 'A', 0), ('base', 'B', 'B', 0)}
  for n in range(1, 8):
    expected |= {('selffer', 'B', 'B', n), ('selffer_ft', 'B', 'B', n),
                 ('transfer', 'A', 'B', n), ('transfer_ft', 'A', 'B', n)}
  assert keys == expected and len(rows) == 30
  for r in rows.values():
    assert r['split'] == 'm_n' and r['seed'] == '0' and r['steps'] == '24'
    top1, top5, best10 = float(r['top1']), float(r['top5']), float(r['best10_top1'])
    assert 0 <= top1 <= top5 <= 1 and 0 < best10 <= 1
  # Base B (4 footwear/bag classes) learns well above chance even in 24 steps.
  assert float(rows['m_n-baseB-s0']['top1']) > 0.5
  assert 'grid ETA' in result.stdout and 'Done: results in' in result.stdout
  run = os.path.join(workdir, 'runs', 'm_n-A3B-s0')
  with open(os.path.join(run, 'metrics.jsonl')) as f:
    evals = [line for line in f if '"eval"' in line]
  assert len(evals) == 3  # Steps 8, 16, 24.
  assert os.listdir(os.path.join(run, 'tb'))
  assert os.path.exists(os.path.join(workdir, 'report', 'findings.json'))


def test_rerun_of_finished_workdir_trains_nothing(runlocal_grid):
  workdir, _ = runlocal_grid
  with open(os.path.join(workdir, 'results.csv'), 'rb') as f:
    before = f.read()
  result = cli(f'--config={RUNLOCAL}', f'--workdir={workdir}')
  assert result.returncode == 0, result.stderr[-3000:]
  assert '30 runs in' in result.stdout and ', 30 finished;' in result.stdout
  assert ' step ' not in result.stdout
  with open(os.path.join(workdir, 'results.csv'), 'rb') as f:
    assert f.read() == before


def test_default_runlocal_is_the_whole_paper_with_six_findings(tmp_path):
  """configs/default.py without arguments: three parts, one workdir and report."""
  workdir = str(tmp_path / 'study')
  result = cli('--config=configs/default.py:runlocal', f'--workdir={workdir}')
  assert result.returncode == 0, result.stderr[-3000:]
  rows = results(workdir)
  parts = {}
  for r in rows.values():
    parts.setdefault(r['split'], set()).add((r['treatment'], r['target'], int(r['n'])))
  treatments = ('selffer', 'selffer_ft', 'transfer', 'transfer_ft')
  assert parts['random:0'] == ({('base', 'A', 0), ('base', 'B', 0)} |
                               {(t, 'B', n) for t in (*treatments, 'random_frozen')
                                for n in range(1, 8)})
  assert parts['m_n'] == ({('base', 'A', 0), ('base', 'B', 0)} |
                          {('transfer', 'B', n) for n in range(1, 8)})
  assert set(parts) == {'random:0', 'm_n'}  # Random filters share baseB.
  with open(os.path.join(workdir, 'report', 'findings.json')) as f:
    found = json.load(f)['findings']
  assert [f['holds'] in (True, False) for f in found] == [True] * 6
  assert all(f['first_holds_at_step'] in (None, 8, 16, 24) for f in found)
  assert os.path.getsize(os.path.join(workdir, 'report', 'over_time.png')) > 10_000
  # One part alone into the same workdir: nothing to train.
  result = cli('--config=configs/default.py:runlocal,split=m_n', f'--workdir={workdir}')
  assert result.returncode == 0 and '9 runs in' in result.stdout
  assert ', 9 finished;' in result.stdout and ' step ' not in result.stdout
  # A different solver is still refused.
  result = cli('--config=configs/default.py:runlocal', '--config.lr=0.1',
               f'--workdir={workdir}')
  assert result.returncode == 2 and 'differs in lr' in result.stderr


def test_imagenet_not_prepared_is_a_short_error(tmp_path):
  result = cli('--config=configs/m_n_split.py', f'--workdir={tmp_path}/w',
               f'--config.data_dir={tmp_path}/empty')
  assert result.returncode == 2
  assert 'Traceback' not in result.stderr
  assert 'imagenet2012' in result.stderr and 'tfds build' in result.stderr
  assert 'python -m tfx_jax.prepare imagenet2012' in result.stderr
  assert not os.path.exists(f'{tmp_path}/w/results.csv')


def test_grid_on_prepared_synthetic_imagenet(prepared_imagenet, tmp_path):
  """The m/n grid's transfer at n = 1 on ImageNet from tfx_jax.prepare: JPEG workers (auto),
  eval threads, uint8 batches normalised on the device, CaffeNet's crop size."""
  workdir = str(tmp_path / 'imagenet')
  result = cli('--config=configs/m_n_split.py:dataset=imagenet2012,runlocal',
               f'--workdir={workdir}', f'--config.data_dir={prepared_imagenet}',
               '--config.model=small', '--config.layers=(1,)', '--config.batch_size=4',
               '--config.eval_batch_size=4', '--config.total_steps=2', '--config.lr_step=1',
               '--config.eval_every=1', '--config.checkpoint_every=1',
               '--config.log_every=1', '--config.lr=1e-6', '--config.report=False',
               '--config.only=(base,transfer)')
  assert result.returncode == 0, result.stderr[-3000:]
  rows = results(workdir)
  assert set(rows) == {'m_n-baseA-s0', 'm_n-baseB-s0', 'm_n-A1B-s0'}
  for r in rows.values():
    assert r['steps'] == '2' and 0 <= float(r['top1']) <= float(r['top5']) <= 1
  with open(os.path.join(workdir, 'runs', 'm_n-A1B-s0', 'metrics.jsonl')) as f:
    evals = [json.loads(line) for line in f if '"eval"' in line]
  assert [e['step'] for e in evals] == [1, 2] and {e['count'] for e in evals} == {4}
