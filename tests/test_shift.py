"""The shift experiment (issue 39, docs/shift/): its grid and plans as data, and
configs/shift.py:runlocal through the CLI with the defaults a user gets (the
report's heatmap and verdicts, no_adapt, surgical's frozen groups and head)."""

import os
import re

import jax
import numpy as np
import pytest
from flax import traverse_util

import tfx_jax
from conftest import cli, results, shared_grid
from tfx_jax import config as config_lib
from tfx_jax.errors import UserError
from tfx_jax.grid import experiments
from tfx_jax.grid import results as results_lib
from tfx_jax.models import plan as plan_lib
from tfx_jax.models import registry
from tfx_jax.report import writer
from tfx_jax.training import checkpoints

SHIFT = 'configs/shift.py:runlocal'
SHIFTS = ('gaussian_noise:5', 'subpopulation', 'permute_labels')  # runlocal's.


def shift_config(**fields):
  c = config_lib.base_config()
  config_lib.apply_dataset(c, 'fashion_mnist')
  c.update({'experiment': 'shift', 'shifts': 'gaussian_noise:5,subpopulation,permute_labels',
            'target_examples_per_class': (10, 100), 'seeds': (0, 1), **fields})
  return c


def test_the_grid_has_one_source_base_per_seed_and_subpopulation_its_own():
  specs = experiments.study(shift_config(), 7)
  ids = [s.run_id for s in specs]
  assert len(ids) == len(set(ids)) and all(re.fullmatch(r'[\w,.+-]+', i) for i in ids)
  bases = [s.run_id for s in specs if s.treatment == 'base']
  assert sorted(bases) == ['clean-baseA-s0', 'clean-baseA-s1', 'subpopulation-baseA-s0',
                           'subpopulation-baseA-s1']
  assert ids.index('gaussian_noise5-surgical3-k10-s0') > max(map(ids.index, bases))
  run = {s.run_id: s for s in specs}
  assert run['gaussian_noise5-surgical3-k10-s0'].base.run_id == 'clean-baseA-s0'
  assert run['permute_labels-full_ft-k100-s1'].base.run_id == 'clean-baseA-s1'
  assert run['subpopulation-lp_ft-k10-s0'].base.run_id == 'subpopulation-baseA-s0'
  assert run['subpopulation-scratch-k10-s0'].base is None
  # Per shift, seed and size: scratch, full_ft, surgical 1..8, lp_ft, l2sp;
  # no_adapt once per shift and seed (it trains nothing).
  per = [s for s in specs if s.shift == 'permute_labels' and s.seed == 0]
  assert len(per) == 1 + 2 * 12 and sum(s.treatment == 'no_adapt' for s in per) == 1
  assert sorted(s.n for s in per if s.treatment == 'surgical' and s.examples_per_class == 10) \
      == list(range(1, 9))
  only = experiments.study(shift_config(only=('surgical',), layers=(1, 8)), 7)
  assert {s.treatment for s in only} == {'base', 'surgical'} and {s.n for s in only} == {0, 1, 8}


def test_surgical_trains_one_group_or_the_head_and_copies_everything():
  names, head = ('conv1', 'conv2', 'fc6'), ('fc8/bias', 'fc8/kernel')
  spec = experiments.RunSpec('shift:fog:5', 'surgical', 'A', 'B', 2, 0, 10)
  tune = config_lib.base_config().tune
  plan = spec.plan(3, tune, 100)
  assert plan.copied(names, head) == (*names, *head)
  assert plan.frozen(names, head) == ('conv1', 'fc6', *head)
  assert experiments.RunSpec('shift:fog:5', 'surgical', 'A', 'B', 4, 0).plan(3, tune, 100) \
      .frozen(names, head) == names
  full = experiments.RunSpec('shift:fog:5', 'full_ft', 'A', 'B', 3, 0).plan(3, tune, 100)
  assert full.frozen(names, head) == () and full.copied(names, head) == (*names, *head)
  scratch = experiments.RunSpec('shift:fog:5', 'scratch', '', 'B', 0, 0).plan(3, tune, 100)
  assert scratch.copied(names, head) == () and scratch.frozen(names, head) == ()
  l2sp = experiments.RunSpec('shift:fog:5', 'l2sp', 'A', 'B', 3, 0).plan(3, tune, 100)
  params = {n: {'kernel': np.ones(2)} for n in names} | {'fc8': {'kernel': np.ones(2),
                                                                 'bias': np.ones(2)}}
  labels = plan_lib.tune_labels(params, names, l2sp)
  assert labels['fc8']['kernel'] == plan_lib.ANCHORED == labels['conv1']['kernel']


@pytest.mark.parametrize('shifts, message', [
    ('gausian_noise:5', "Unknown shift 'gausian_noise'. Did you mean 'gaussian_noise'?"),
    ('', 'config.experiment=shift needs the shifts'),
    ('fog:9', "Severity '9' of fog is not one of 1-5"),
])
def test_bad_shifts_are_refused_in_python(shifts, message):
  with pytest.raises(UserError, match=re.escape(message)):
    experiments.study(shift_config(shifts=shifts), 7)


def test_a_misspelt_shift_is_one_line_naming_the_closest_and_nothing_is_written(tmp_path):
  done = cli(f'--config={SHIFT}', '--config.shifts=gaussian_noise:5,permute_lables',
             f'--workdir={tmp_path}/w')
  assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
  assert "Unknown shift 'permute_lables'. Did you mean 'permute_labels'?" in done.stderr
  assert not os.path.exists(tmp_path / 'w')


@pytest.fixture(scope='module')
def shift_grid(tmp_path_factory, worker_id):
  return shared_grid(tmp_path_factory, worker_id, 'shift_grid', f'--config={SHIFT}')


def test_the_runlocal_study_reports_the_heatmap_and_the_verdicts(shift_grid):
  workdir, stdout = shift_grid
  rows = results(workdir)
  assert len(rows) == 2 + 3 * (1 + 12), sorted(rows)  # A shift of each level.
  assert {r['shift'] for r in rows.values()} == {'', *SHIFTS}
  assert rows['clean-baseA-s0']['shift'] == '' and int(rows['clean-baseA-s0']['steps']) == 320
  assert rows['subpopulation-baseA-s0']['shift'] == 'subpopulation'  # Its own source base.
  assert int(rows['subpopulation-baseA-s0']['steps']) == 320
  assert {int(r['steps']) for i, r in rows.items() if '-k10-' in i} == {24}
  report = os.path.join(workdir, 'report')
  with open(os.path.join(report, 'findings.md')) as f:
    findings = f.read()
  assert findings.startswith('## The shift experiment: which group to tune')
  verdicts = re.findall(r'^\| (\S+) \| (.+?) \| (holds|does not hold|cannot tell) \|',
                        findings, re.M)
  assert findings.endswith("# The paper's six findings\n\nNot testable here: this workdir holds "
                           "only the shift experiment's runs; the paper's grid is "
                           "configs/default.py's (docs/paper.md).\n")
  assert {(s, c.split(':')[0]) for s, c, _ in verdicts} == {
      ('gaussian_noise:5', 'input-level'), ('permute_labels', 'output-level'),
      *((s, 'the best single group matches or beats full_ft') for s in SHIFTS)}
  with open(os.path.join(report, 'shift.md')) as f:
    table = f.read()
  assert re.search(r'^\| permute_labels \|( [^|]* \|){13}$', table, re.M), table
  with open(os.path.join(report, 'shift.png'), 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  assert 'Nothing' in stdout and 'no transfer experiment' in stdout  # The analysis says why not.
  loaded = tfx_jax.load(workdir)  # From a notebook: the shift column is text.
  assert set(loaded.frame['shift']) == {'', *SHIFTS}
  assert 'shift' in loaded.figures() and loaded.figure('shift').get_figwidth() > 5


def test_no_adapt_on_permuted_labels_scores_below_the_clean_source(shift_grid):
  rows = results(shift_grid[0])
  source = float(rows['clean-baseA-s0']['top1'])
  assert source > 0.5, source  # It learnt: the comparison means something.
  assert float(rows['permute_labels-no_adapt-s0']['top1']) < source / 2
  assert int(rows['permute_labels-no_adapt-s0']['steps']) == 0


def _params(workdir, run_id, step, classes=10):
  """A run's final params, flat by path ('conv1/kernel')."""
  like = registry.init_variables(registry.create('narrow', classes), jax.random.PRNGKey(0),
                                 (28, 28, 1))
  params = checkpoints.load_variables(os.path.join(workdir, 'runs', run_id, 'checkpoints'),
                                      step, like)['params']
  return jax.device_get(traverse_util.flatten_dict(params, sep='/'))


def test_surgical_leaves_every_other_group_and_the_head_bitwise_the_source(shift_grid):
  workdir = shift_grid[0]
  for shift, n, group, classes in (('gaussian_noise5', 3, 'conv3', 10),
                                   ('gaussian_noise5', 8, 'fc8', 10),
                                   ('subpopulation', 8, 'fc8', 3)):  # Its superclasses' head.
    source = 'subpopulation' if shift == 'subpopulation' else 'clean'
    base = _params(workdir, f'{source}-baseA-s0', 320, classes)
    tuned = _params(workdir, f'{shift}-surgical{n}-k10-s0', 24, classes)
    assert tuned.keys() == base.keys()
    moved = {p for p in base if not np.array_equal(base[p], tuned[p])}
    assert moved and all(p.startswith(f'{group}/') for p in moved), moved


def test_a_report_of_shift_runs_on_all_images_with_parts_missing_says_not_testable(tmp_path):
  """Sizes 0 (all images) put the shift runs beside the paper's: they stay out of
  its findings and tuning tables; a criterion part without its runs is not testable."""
  def row(run, treatment, n, top1, split='shift:flip_labels', source='A', target='B'):
    return results_lib.Result(run, split, treatment, source, target, n, 0, top1, 1.0, top1,
                              24, 1.0, shift=split[len('shift:'):] if 'flip' in split else '')
  rows = [row('clean-baseA-s0', 'base', 0, 0.8, 'shift:clean', 'A', 'A'),
          row('flip_labels-no_adapt-s0', 'no_adapt', 7, 0.02),
          row('flip_labels-surgical1-s0', 'surgical', 1, 0.1),
          row('flip_labels-surgical8-s0', 'surgical', 8, 0.7)]
  (tmp_path / 'results.csv').write_text(results_lib.to_csv(rows))
  found = writer.write_report(str(tmp_path))
  assert found['shift'] == {'0': 'not testable (runs missing)'}
  shift_md = (tmp_path / 'report' / 'shift.md').read_text()
  assert '| flip_labels | 2.0 |' in shift_md and '**70.0**' in shift_md
  assert not (tmp_path / 'report' / 'tune.md').exists()
