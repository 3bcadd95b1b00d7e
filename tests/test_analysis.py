"""What is transferred, at the end of the runlocal grid (report/analysis.json),
and again with `python -m tfx_jax.report --analyse` on copies of its workdir:
with its checkpoints (the same numbers), and without (refused, the analysis
kept)."""

import csv
import json
import math
import os
import shutil
import subprocess
import sys
from copy import deepcopy as copy_of

import numpy as np
import pytest
from scipy import stats

from tfx_jax.grid import analyse
from tfx_jax.grid.experiments import RunSpec
from tfx_jax.report import analysis as report_analysis

from conftest import ROOT

PREDICTORS = ('probe_top1', 'logme', 'h_score', 'h_score_shrunk', 'cka_ab', 'reinit_top1',
              'rerandom_top1')
GROUPS = ('conv1', 'conv2', 'conv3', 'conv4', 'conv5', 'fc6', 'fc7')


def _report(*args):
  return subprocess.run([sys.executable, '-m', 'tfx_jax.report', *args], cwd=ROOT,
                        capture_output=True, text=True)


@pytest.fixture(scope='module')
def analysis(runlocal_grid):
  workdir, _ = runlocal_grid
  with open(os.path.join(workdir, 'report', 'analysis.json')) as f:
    return workdir, json.load(f)


def test_the_runlocal_grid_writes_every_predictor_for_every_n(analysis):
  workdir, a = analysis
  assert a['groups'] == list(GROUPS) and set(a['predictors']) == set(PREDICTORS)
  split = a['splits']['m_n']
  seed = split['seeds']['0']
  assert split['ns'] == [1, 2, 3, 4, 5, 6, 7]
  # Probe sets: runlocal's 500 train and 256 eval images over half B's 4 classes.
  assert seed['probe_examples'] == {'train': 500, 'eval': 256}
  for group in GROUPS:
    layer = seed['layers'][group]
    assert set(PREDICTORS) <= set(layer)
    assert all(math.isfinite(layer[p]) for p in PREDICTORS), (group, layer)
    for name in ('probe_top1', 'probe_train_top1', 'reinit_top1', 'rerandom_top1'):
      assert 0 <= layer[name] <= 1
    assert 0 <= layer['h_score'] <= 3 + 1e-4  # At most C - 1 = 3.
  # The probe of the first layers' features beats chance (1/4) on the train set.
  assert seed['layers']['conv1']['probe_train_top1'] > 0.5
  cka_ab = np.asarray(seed['cka_ab'])
  assert cka_ab.shape == (7, 7)
  assert [seed['layers'][g]['cka_ab'] for g in GROUPS] == list(np.diag(cka_ab))
  # Every fine-tuned run of the grid compared with baseB, layer by layer.
  for treatment in ('selffer_ft', 'transfer_ft'):
    assert sorted(seed['cka_b_vs'][treatment], key=int) == [str(n) for n in range(1, 8)]
  # BnB+ at n = 7 starts as baseB: after 24 steps conv1 is still nearly baseB's.
  assert seed['cka_b_vs']['selffer_ft']['7'][0] > 0.9
  for target in ('A', 'B'):
    assert len(seed['cka_init_trained'][target]) == 7


def test_the_measured_transfer_is_results_csvs_and_ranks_match_scipys(analysis):
  workdir, a = analysis
  split = a['splits']['m_n']
  with open(os.path.join(workdir, 'results.csv')) as f:
    rows = {r['run_id']: float(r['best10_top1']) for r in csv.DictReader(f)}
  for treatment, suffix in (('transfer', ''), ('transfer_ft', '+')):
    expected = [rows[f'm_n-A{n}B{suffix}-s0'] for n in range(1, 8)]
    assert split['measured'][treatment]['0'] == expected
    for name in PREDICTORS:
      agreement = split['agreement'][name][treatment]
      values = [split['seeds']['0']['layers'][g][name] for g in GROUPS]
      rho = stats.spearmanr(values, expected).statistic
      assert agreement['spearman']['per_seed']['0'] == pytest.approx(rho)
      assert agreement['chosen_n'] == 1 + max(range(7), key=lambda i: (values[i], i))
      assert agreement['best_n'] == 1 + max(range(7), key=lambda i: (expected[i], i))
      assert agreement['verdict'] in ('agrees', 'disagrees', 'inverted')
  text = open(os.path.join(workdir, 'report', 'analysis.md')).read()
  assert all(f'| {name} |' in text for name in PREDICTORS)
  for kind in ('cka', 'predictors'):
    with open(os.path.join(workdir, 'report', f'analysis_m_n_{kind}.png'), 'rb') as f:
      assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  assert a['cost']['analysis_s'] > 0 and a['cost']['training_s'] > 0


def test_report_analyse_recomputes_it_and_a_copy_without_checkpoints_keeps_it(
    analysis, tmp_path):
  workdir, a = analysis
  copy = tmp_path / 'copy'
  shutil.copytree(workdir, copy)
  os.remove(copy / 'report' / 'analysis.json')
  # A run whose newest checkpoint is not its last step (part-way) is left out.
  shutil.rmtree(copy / 'runs' / 'm_n-A7B+-s0' / 'checkpoints' / '24')
  result = _report(f'--workdir={copy}', '--analyse')
  assert result.returncode == 0, result.stderr[-2000:]
  with open(copy / 'report' / 'analysis.json') as f:
    again = json.load(f)
  # Forward passes and fits on the same checkpoints and probe sets: the same numbers.
  seed, before = again['splits']['m_n']['seeds']['0'], copy_of(a['splits']['m_n']['seeds']['0'])
  assert '7' not in seed['cka_b_vs']['transfer_ft']
  del before['cka_b_vs']['transfer_ft']['7']
  assert seed == before
  assert again['splits']['m_n']['agreement'] == a['splits']['m_n']['agreement']

  # Without checkpoints (as docs/fashion_mnist): --analyse refused in one line,
  # the report left as it was; the report alone is rewritten, the analysis kept.
  for run in os.listdir(copy / 'runs'):
    shutil.rmtree(copy / 'runs' / run / 'checkpoints')
  before = {p.name: p.read_bytes() for p in (copy / 'report').iterdir()}
  result = _report(f'--workdir={copy}', '--analyse')
  assert result.returncode == 2
  assert 'm_n-baseA-s0' in result.stderr and 'no final checkpoint' in result.stderr
  assert {p.name: p.read_bytes() for p in (copy / 'report').iterdir()} == before
  assert _report(f'--workdir={copy}').returncode == 0
  assert (copy / 'report' / 'analysis.json').read_bytes() == before['analysis.json']


def test_pretrained_bases_whose_heads_did_not_fit_are_analysed_as_bases(analysis, tmp_path):
  """Both bases as --config.base_a/base_b with heads of another task leave
  them: their variables in their run directories, no result.json."""
  workdir, a = analysis
  copy = tmp_path / 'copy'
  shutil.copytree(workdir, copy, ignore=lambda d, names: [
      n for n in names if os.path.basename(d) == 'runs' and '-base' not in n])
  pretrained = {}
  for run_id in ('m_n-baseA-s0', 'm_n-baseB-s0'):
    os.remove(copy / 'runs' / run_id / 'result.json')
    pretrained[run_id] = {'path': f'/elsewhere/{run_id}', 'sha256': '0' * 64}
  (copy / 'pretrained.json').write_text(json.dumps(pretrained))
  again = analyse.analyse(str(copy), log=lambda _: None)
  seed, before = again['splits']['m_n']['seeds']['0'], a['splits']['m_n']['seeds']['0']
  np.testing.assert_allclose(seed['cka_ab'], before['cka_ab'], atol=1e-5)
  assert seed['cka_init_trained'] == {}  # A pretrained base's start is not known here.
  assert seed['base_b_top1'] is None
  for group in GROUPS:
    assert seed['layers'][group]['probe_top1'] == pytest.approx(
        before['layers'][group]['probe_top1'], abs=1e-6)
    assert seed['layers'][group]['rerandom_top1'] is None
  assert again['notes'] == ['m_n-baseB-s0 is pretrained with a head that does not fit '
                            'task B: its top-1, reinit_top1 and rerandom_top1 are not '
                            'measured.']
  written = report_analysis.run(str(copy), computed=again)  # Its markdown and figures.
  assert 'does not fit task B' in open(written).read()
  assert os.path.exists(copy / 'report' / 'analysis_m_n_predictors.png')


def test_a_base_the_grid_leaves_out_is_not_called_unfinished():
  """--config.only=transfer --config.targets=B trains no baseB: nothing to rerun."""
  base_a, base_b = (RunSpec('m_n', 'base', t, t, 0, 0) for t in 'AB')
  note = analyse.missing_bases({base_a: {}, base_b: None}, {base_a.run_id})
  assert note.startswith('Not analysed: m_n-baseB-s0 (not in this grid: config.only and '
                         'config.targets leave it out')
  assert 'unfinished' not in note and 'rerun' not in note
  note = analyse.missing_bases({base_a: None, base_b: {}}, {base_a.run_id, base_b.run_id})
  assert 'm_n-baseA-s0 (unfinished' in note and 'rerun the main job' in note
  assert analyse.missing_bases({base_a: {}, base_b: {}}, set()) is None


def test_a_workdirs_config_is_read_with_todays_defaults(tmp_path):
  (tmp_path / 'config.json').write_text(json.dumps({'model': 'small', 'seeds': [0, 2],
                                                    'sweep': {'num_shards': 3}}))
  config = analyse.config_of(str(tmp_path))
  assert config.model == 'small' and list(config.seeds) == [0, 2]
  assert config.sweep.num_shards == 3 and config.sweep.shard == 0
  assert config.analysis.train_examples == 2000 and config.precision == 'float32'
