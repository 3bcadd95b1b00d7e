"""The findings over training time, from hand-made metrics.jsonl files."""

import csv
import json
import os

import pytest
from test_report import paper_like, rows, write_results

from tfx_jax.report import findings, over_time, writer

STEPS = (100, 200, 300, 400, 500)


def write_curves(workdir, curve):
  """metrics.jsonl for every run of results.csv: eval top-1 = curve(row, step)."""
  with open(os.path.join(workdir, 'results.csv')) as f:
    for row in csv.DictReader(f):
      run_dir = os.path.join(workdir, 'runs', row['run_id'])
      os.makedirs(run_dir, exist_ok=True)
      with open(os.path.join(run_dir, 'metrics.jsonl'), 'w') as out:
        for step in STEPS:
          out.write(json.dumps({'step': step, 'kind': 'train', 'top1': 0.0}) + '\n')
          out.write(json.dumps({'step': step, 'kind': 'eval', 'count': 100,
                                'top1': curve(row, step)}) + '\n')


def paper_like_after(step_from):
  """The paper's shape from `step_from` on; before it, BnB above base at n = 3-5
  (no dip) and AnB+ below base (no gain)."""
  def curve(row, step):
    acc = float(row['best10_top1'])
    if step < step_from and row['treatment'] == 'selffer' and row['n'] in '345':
      return 0.85
    if step < step_from and row['treatment'] == 'transfer_ft':
      return acc - 0.03
    return acc
  return curve


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  """A study whose curves take the paper's shape at step 300, and its report."""
  path = write_results(tmp_path_factory.mktemp('study'),
                       rows(paper_like, splits=('random:0', 'm_n'), random_frozen=True))
  write_curves(path, paper_like_after(300))
  writer.write_report(path)
  return path


def findings_of(workdir):
  with open(os.path.join(workdir, 'report', 'findings.json')) as f:
    return {f['id']: f for f in json.load(f)['findings']}


def test_crossing_is_the_first_step_it_stays_on_its_final_side():
  assert over_time.crossing({100: 0.02, 200: 0.01, 300: -0.01, 400: -0.02}) == (300, 'below')
  assert over_time.crossing({100: -0.02, 200: 0.01, 300: -0.01, 400: 0.02}) == (400, 'above')
  assert over_time.crossing({100: -0.02, 200: -0.01}) == (None, 'below')


def test_the_table_shows_where_bnb_crosses_its_base(workdir):
  with open(os.path.join(workdir, 'report', 'over_time.md')) as f:
    text = f.read()
  bnb = text[text.index('## BnB - base'):]
  row3 = next(line for line in bnb.splitlines() if line.startswith('| 3 |'))
  # Base 0.80 (+-0.001 wobble); BnB at n = 3 is 0.85 before step 300, 0.77 after.
  cells = [c.strip() for c in row3.split('|')[2:-1]]
  assert float(cells[0]) == pytest.approx(5.0, abs=0.11)
  assert float(cells[2]) == pytest.approx(-3.0, abs=0.11)
  assert cells[-1] == 'below from step 300'
  row6 = next(line for line in bnb.splitlines() if line.startswith('| 6 |'))
  assert row6.split('|')[-2].strip().startswith('never')
  assert os.path.getsize(os.path.join(workdir, 'report', 'over_time.png')) > 10_000


def test_each_finding_states_the_step_it_first_holds(workdir):
  by_id = findings_of(workdir)
  # Findings 2 (the dip at n = 3) and 4 (AnB+ above base) hold from step 300.
  for fid in (2, 4):
    assert (by_id[fid]['first_holds_at_step'], by_id[fid]['holds_from_step']) == (300, 300)
  for fid in (1, 3, 5, 6):
    assert (by_id[fid]['first_holds_at_step'], by_id[fid]['holds_from_step']) == (100, 100)
  with open(os.path.join(workdir, 'report', 'findings.md')) as f:
    text = f.read()
  assert 'first holds at step 300, and from then on' in text


def test_a_finding_that_never_holds_says_so(tmp_path):
  path = write_results(tmp_path, rows(paper_like, splits=('random:0', 'm_n'),
                                      random_frozen=True))
  write_curves(path, paper_like_after(10_000))  # Never the paper's shape.
  runs, _ = writer.results.read_csv(os.path.join(path, 'results.csv'))
  curves, notes = over_time.read_curves(path, runs)
  assert not notes and len(curves) == len(runs)
  when = over_time.finding_steps(runs, curves)
  assert when[4] == (None, None)
  assert over_time.finding_step_text(*when[4]) == 'never holds at any evaluation'


def test_runs_without_metrics_are_noted_and_left_out(tmp_path):
  table = rows(paper_like)
  path = write_results(tmp_path, table)
  runs, _ = writer.results.read_csv(os.path.join(path, 'results.csv'))
  curves, notes = over_time.read_curves(path, runs)
  assert curves == {} and over_time.finding_steps(runs, curves) == {}
  text = over_time.markdown({}, {}, None, notes)
  assert f'no eval metrics for {len(table)} runs (left out): r0, r1' in text


@pytest.mark.parametrize('per_seed, beyond', [
    ((0.010, 0.012, 0.014), True),   # mean 1.2, sd 0.2: t = 10.4 > 4.30
    ((0.030, -0.010, 0.010), False),  # mean 1.0, sd 2.0: t = 0.87
    ((0.010,), None),                # one seed: no spread
])
def test_beyond_spread_is_a_t_test_over_seeds(per_seed, beyond):
  finding = findings.Finding(4, True, '', 0.01, per_seed)
  assert finding.beyond_spread is beyond


def test_every_finding_reports_its_difference_and_seed_spread(workdir):
  by_id = findings_of(workdir)
  for f in by_id.values():
    assert len(f['per_seed']) == 3 and f['sd_over_seeds'] is not None
  assert by_id[4]['difference'] == pytest.approx(0.015, abs=1e-9)
  assert by_id[4]['beyond_seed_spread'] is True


def test_findings_testable_at_no_step_say_so(tmp_path):
  path = write_results(tmp_path, rows(paper_like))  # No m/n split, no random filters.
  write_curves(path, paper_like_after(300))
  runs, _ = writer.results.read_csv(os.path.join(path, 'results.csv'))
  curves, _ = over_time.read_curves(path, runs)
  when = over_time.finding_steps(runs, curves)
  assert set(when) == {1, 2, 3, 4}
  text = over_time.markdown(when, {}, None, [])
  assert f'| 5 | {findings.CLAIMS[5]} | not testable |' in text
