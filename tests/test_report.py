"""The report from small results tables written here: verdicts, curves, determinism, errors."""

import csv
import json
import os
import subprocess
import sys

import pytest

from tfx_jax.errors import UserError
from tfx_jax.grid import experiments, results
from tfx_jax.report import figures, findings, writer

BASE = 0.80
SELFFER_DIP = {3: -0.03, 4: -0.04, 5: -0.03}  # BnB - base: the paper's shape.


def paper_like(split, treatment, source, target, n, seed):
  """Accuracy with the paper's shape, plus a small seed-dependent wobble."""
  wobble = 0.001 * ((seed * 7 + n * 3 + len(target)) % 3 - 1)
  family = results.split_family(split)
  if treatment == 'base':
    return BASE + wobble
  if treatment == 'selffer':
    return BASE + SELFFER_DIP.get(n, 0.0) + wobble
  if treatment == 'selffer_ft':
    return BASE + wobble
  if treatment == 'transfer':
    per_layer = 0.03 if family == 'm_n' else 0.01
    return BASE - per_layer * max(n - 2, 0) + wobble
  if treatment == 'transfer_ft':
    return BASE + 0.015 + wobble
  return BASE - 0.1 * n + wobble  # random_frozen


def rows(accuracy, splits=('random:0',), seeds=(0, 1, 2),
         treatments=tuple(experiments.TREATMENTS)[1:5], layers=range(1, 8),
         random_frozen=False):
  out = []
  for split in splits:
    for seed in seeds:
      for half in 'AB':
        out.append((split, 'base', half, half, 0, seed))
      for treatment in treatments:
        for n in layers:
          for source, target in (('A', 'B'), ('B', 'A')):
            if treatment.startswith('selffer'):
              source = target
            out.append((split, treatment, source, target, n, seed))
  if random_frozen:
    for seed in seeds:
      out.append(('all', 'base', 'all', 'all', 0, seed))
      out += [('all', 'random_frozen', '', 'all', n, seed) for n in layers]
  return [(*key, accuracy(*key)) for key in sorted(set(out))]


def write_results(workdir, table, dataset='fashion_mnist'):
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'results.csv'), 'w', newline='') as f:
    writer = csv.writer(f, lineterminator='\n')
    writer.writerow(results.COLUMNS)
    for i, (split, treatment, source, target, n, seed, acc) in enumerate(table):
      writer.writerow([f'r{i}', split, treatment, source, target, n, seed,
                       repr(acc - 0.01), repr(min(acc + 0.1, 1.0)), repr(acc),
                       100, 1.5])
  if dataset:
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      json.dump({'dataset': dataset, 'seeds': [0]}, f)
  return str(workdir)


def verdicts(result):
  return {f['id']: f['holds'] for f in result['findings']}


def test_paper_shaped_results_show_all_six_findings(tmp_path):
  table = rows(paper_like, splits=('random:0', 'm_n'), random_frozen=True)
  result = writer.write_report(write_results(tmp_path, table))
  assert [f['id'] for f in result['findings']] == [1, 2, 3, 4, 5, 6]
  assert verdicts(result) == {i: True for i in range(1, 7)}
  names = sorted(os.listdir(tmp_path / 'report'))
  assert names == ['figure2.png', 'figure2.svg', 'figure3.png', 'findings.json',
                   'findings.md', 'generality.md', 'over_time.md', 'over_time.png',
                   'table1.md']
  with open(tmp_path / 'report' / 'findings.json') as f:
    assert json.load(f) == result
  evidence = result['findings'][3]['evidence']
  assert 'AnB+ > base at 7/7 n, mean gain +1.50%' in evidence
  assert '3 seeds' in evidence and 'single seed' not in evidence


@pytest.mark.parametrize('gain, holds', [(-0.004, False), (0.004, True)])
def test_finding4_follows_the_sign_of_every_anb_plus_gain(tmp_path, gain, holds):
  def accuracy(split, treatment, source, target, n, seed):
    base = paper_like(split, 'base', target, target, 0, seed)
    return base + gain + 0.001 * seed if treatment == 'transfer_ft' else base
  table = rows(accuracy, treatments=('transfer_ft',))
  result = writer.write_report(write_results(tmp_path, table))
  assert verdicts(result)[4] is holds
  assert f'at {7 if holds else 0}/7 n' in result['findings'][3]['evidence']


def test_one_layer_below_base_fails_finding4(tmp_path):
  def accuracy(split, treatment, source, target, n, seed):
    base = paper_like(split, 'base', target, target, 0, seed)
    gain = 0.01 if n != 5 else -0.002
    return base + gain if treatment == 'transfer_ft' else base
  result = writer.write_report(
      write_results(tmp_path, rows(accuracy, treatments=('transfer_ft',))))
  assert verdicts(result)[4] is False
  assert 'at 6/7 n' in result['findings'][3]['evidence']


def test_flat_results_reject_findings_1_2_and_5(tmp_path):
  flat = lambda *key: BASE + 0.0005 * key[5]
  table = rows(flat, splits=('random:0', 'm_n'))
  found = verdicts(writer.write_report(write_results(tmp_path, table)))
  assert found[1] is False and found[2] is False and found[5] is False
  assert found[3] is True  # BnB+ = base everywhere.
  assert found[6] is None  # No random frozen filters.


def test_large_bnb_plus_gap_fails_finding3(tmp_path):
  def accuracy(split, treatment, source, target, n, seed):
    extra = -0.03 if treatment == 'selffer_ft' and n == 4 else 0.0
    return paper_like(split, treatment, source, target, n, seed) + extra
  table = rows(accuracy, treatments=('selffer_ft',))
  result = writer.write_report(write_results(tmp_path, table))
  assert verdicts(result)[3] is False
  assert 'largest |BnB+ - base| 3.00% at n = 4' in result['findings'][2]['evidence']


def test_random_filters_beating_transfer_fails_finding6(tmp_path):
  def accuracy(split, treatment, source, target, n, seed):
    if treatment == 'random_frozen':
      return BASE + 0.001
    return paper_like(split, treatment, source, target, n, seed)
  table = rows(accuracy, treatments=('transfer',), random_frozen=True)
  found = verdicts(writer.write_report(write_results(tmp_path, table)))
  assert found[6] is False
  assert found[1] is True  # The transfer runs still show specificity.


def test_missing_treatments_give_null_verdicts_and_no_curves(tmp_path):
  table = rows(paper_like, treatments=('transfer_ft',), layers=(1, 3))
  result = writer.write_report(write_results(tmp_path, table))
  assert verdicts(result) == {1: None, 2: None, 3: None, 4: True, 5: None,
                              6: None}
  evidence = {f['id']: f['evidence'] for f in result['findings']}
  assert 'no AnB (transfer) runs on the random split' in evidence[1]
  assert 'no BnB (selffer) runs' in evidence[2]
  assert 'no AnB (transfer) runs on the m/n split' in evidence[5]
  assert 'no random frozen (random_frozen) runs' in evidence[6]
  runs, _ = results.read_csv(os.path.join(tmp_path, 'results.csv'))
  assert figures.figure_labels(figures.figure2(runs, 'fashion_mnist')) == [
      'base', 'AnB+']
  assert figures.figure_labels(figures.figure3(runs, 'fashion_mnist')) == []
  table1 = (tmp_path / 'report' / 'table1.md').read_text()
  assert '| n = 1-7 | +1.50% (sd' in table1 and '(only n = 1, 3)' in table1
  assert '| n = 5-7 | n/a |' in table1


def test_figures_draw_what_the_results_hold(tmp_path):
  table = rows(paper_like, splits=('random:0', 'm_n'), treatments=('transfer',),
               random_frozen=True)
  runs, _ = results.read_csv(
      os.path.join(write_results(tmp_path, table), 'results.csv'))
  assert figures.figure_labels(figures.figure2(runs)) == ['base', 'AnB']
  assert figures.figure_labels(figures.figure3(runs)) == [
      'baseB (m/n)', 'AnB (m/n)', 'baseA (m/n)', 'BnA (m/n)',
      'AnB (random split, means)', 'base (all classes)', 'random frozen',
      'random split: AnB - base', 'm/n split: AnB - base',
      'random frozen - base']
  with_paper = figures.figure_labels(figures.figure2(runs, 'imagenet2012'))
  assert with_paper == ['base', 'AnB', 'paper base', 'paper BnB', 'paper BnB+',
                        'paper AnB', 'paper AnB+']


def test_single_seed_verdicts_come_from_means_and_say_so(tmp_path):
  table = rows(paper_like, seeds=(0,))
  result = writer.write_report(write_results(tmp_path, table, dataset=None))
  found = verdicts(result)
  assert [found[i] for i in (1, 2, 3, 4)] == [True, True, True, True]
  for f in result['findings'][:4]:
    assert findings.SINGLE_SEED in f['evidence']
  notes = (tmp_path / 'report' / 'findings.md').read_text()
  assert 'No config.json' in notes


def test_rerun_is_byte_identical(tmp_path):
  table = rows(paper_like, splits=('random:0', 'random:1', 'm_n'),
               random_frozen=True)
  workdir = write_results(tmp_path, table, dataset='imagenet2012')
  names = ('table1.md', 'findings.json', 'findings.md', 'generality.md',
           'figure2.svg', 'figure2.png', 'figure3.png')
  writer.write_report(workdir)
  first = {n: (tmp_path / 'report' / n).read_bytes() for n in names}
  writer.write_report(workdir)
  assert {n: (tmp_path / 'report' / n).read_bytes() for n in names} == first
  table1 = first['table1.md'].decode()
  assert '| n = 1-7 | +1.50% (sd 0.' in table1 and '| +1.6% |' in table1
  generality = first['generality.md'].decode()
  assert '- below 0.99: first at n = 3' in generality  # 0.79 / 0.80 on both.
  assert '- below 0.95: first at n = 4' in generality  # m/n: 0.74 / 0.80.
  assert '- below 0.90: first at n = 5' in generality  # m/n: 0.71 / 0.80.


def test_a_header_only_table_gives_all_null(tmp_path):
  result = writer.write_report(write_results(tmp_path, []))
  assert verdicts(result) == {i: None for i in range(1, 7)}
  assert (tmp_path / 'report' / 'figure2.png').stat().st_size > 0


@pytest.mark.parametrize('content, message', [
    (None, 'No results file'),
    ('', 'is empty'),
    ('run_id,split,treatment\n', 'lacks the column(s) source'),
    (','.join(results.COLUMNS) + '\nr0,random:0,base,A,A,0,0,0.5,0.9,x,1,1.0\n',
     'line 2'),
    (','.join(results.COLUMNS) + '\nr0,random:0,base,A,A,0,0,0.5,0.9,1.5,1,1.0\n',
     'best10_top1 outside [0, 1]'),
    (','.join(results.COLUMNS) + '\nr0,random:0,warp,A,A,0,0,0.5,0.9,0.5,1,1.0\n',
     "unknown treatment 'warp'"),
    (','.join(results.COLUMNS) + '\nr0,random:0,transfer,A,A,3,0,0.5,0.9,0.5,1\n',
     'expected 12 fields'),
])
def test_bad_results_raise_user_error(tmp_path, content, message):
  if content is not None:
    (tmp_path / 'results.csv').write_text(content)
  with pytest.raises(UserError, match=message.replace('(', r'\(').replace(
      ')', r'\)').replace('[', r'\[').replace(']', r'\]')):
    writer.write_report(str(tmp_path))


def report_cli(*args):
  return subprocess.run([sys.executable, '-m', 'tfx_jax.report', *args],
                        capture_output=True, text=True, check=False)


@pytest.mark.parametrize('args, message', [
    (['--workdir={tmp}'], 'error: No results file'),
    ([], 'error: flag --workdir=None: Flag --workdir must have a value'),
    (['--workdir={tmp}', 'extra'], "error: Unexpected arguments ['extra']"),
])
def test_cli_exits_2_with_one_line_and_no_traceback(tmp_path, args, message):
  done = report_cli(*[a.format(tmp=tmp_path) for a in args])
  assert done.returncode == 2
  assert done.stderr.startswith(message), done.stderr
  assert len(done.stderr.strip().splitlines()) == 1
  assert 'Traceback' not in done.stderr


def test_cli_writes_the_report(tmp_path):
  write_results(tmp_path, rows(paper_like, treatments=('transfer_ft',),
                               layers=(2,), seeds=(0,)))
  done = report_cli(f'--workdir={tmp_path}')
  assert done.returncode == 0, done.stderr
  assert 'findings 1 not testable' in done.stdout
  assert (tmp_path / 'report' / 'table1.md').exists()


def test_random_filters_named_by_the_runners_split_meet_their_base(tmp_path):
  table = rows(paper_like, treatments=('transfer',), random_frozen=True)
  table = [('random:0' if split == 'all' else split, *rest)
           for split, *rest in table]
  found = verdicts(writer.write_report(write_results(tmp_path, table)))
  assert found[6] is True


def test_random_filters_on_a_half_meet_that_halfs_base(tmp_path):
  """The offline default's random frozen filters train on the random split's
  half B: each is paired with baseB, not with baseA nor a mean of both."""
  table = rows(paper_like, splits=('m_n',), treatments=('transfer',), seeds=(0,))
  table += [('random:0', 'base', 'A', 'A', 0, 0, 0.95), ('random:0', 'base', 'B', 'B', 0, 0, 0.80)]
  # 0.5 points below baseB per layer: a smaller drop than the m/n AnB's at n >= 3,
  # but below baseA (or the mean of the bases) by more than AnB's drop.
  table += [('random:0', 'random_frozen', '', 'B', n, 0, 0.80 - 0.005 * n) for n in range(1, 8)]
  result = writer.write_report(write_results(tmp_path, table))
  six = result['findings'][5]
  assert six['holds'] is False
  assert 'random frozen on the random split' in six['evidence']
  assert 'random frozen - base by n: 1: -0.50%, 2: -1.00%' in six['evidence']


def test_repeated_rows_and_unknown_splits_are_noted(tmp_path):
  table = rows(paper_like, treatments=('transfer_ft',), layers=(1,), seeds=(0,))
  table += [table[-1], ('weird', 'base', 'A', 'A', 0, 0, 0.5)]
  result = writer.write_report(write_results(tmp_path, table))
  assert verdicts(result)[4] is True
  notes = (tmp_path / 'report' / 'findings.md').read_text()
  assert '1 repeated row(s)' in notes and 'unknown split(s) weird' in notes


def test_figure2_base_is_the_base_of_the_target_halves(tmp_path):
  """A grid trained towards B alone: baseA is only a source, not the reference."""
  rows = [('random:0', 'base', 'A', 'A', 0, 0, 0.95), ('random:0', 'base', 'B', 'B', 0, 0, 0.80)]
  rows += [('random:0', 'transfer', 'A', 'B', n, 0, 0.80 - 0.01 * n) for n in range(1, 8)]
  path = tmp_path / 'results.csv'
  lines = ['run_id,split,treatment,source,target,n,seed,top1,top5,best10_top1,steps,wall_s']
  for i, (split, treatment, source, target, n, seed, acc) in enumerate(rows):
    lines.append(f'r{i},{split},{treatment},{source},{target},{n},{seed},{acc},1.0,{acc},10,1.0')
  path.write_text('\n'.join(lines) + '\n')
  runs, _ = results.read_csv(str(path))
  fig = figures.figure2(runs)
  bases = [line for ax in fig.axes for line in ax.get_lines()
           if line.get_linestyle() == ':' and line.get_color() == 'grey']
  assert bases and all(abs(line.get_ydata()[0] - 0.80) < 1e-9 for line in bases)


def test_a_base_at_zero_accuracy_has_no_ratio_but_a_report(tmp_path):
  lines = [','.join(results.COLUMNS)]
  for i, (treatment, source, target, n, acc) in enumerate(
      [('base', 'B', 'B', 0, 0.0), ('base', 'A', 'A', 0, 0.5),
       ('transfer', 'A', 'B', 1, 0.3), ('transfer', 'A', 'B', 5, 0.3)]):
    lines.append(f'r{i},random:0,{treatment},{source},{target},{n},0,{acc},{acc},{acc},'
                 f'10,1.0')
  (tmp_path / 'results.csv').write_text('\n'.join(lines) + '\n')
  result = writer.write_report(str(tmp_path))
  assert verdicts(result)[1] is False  # AnB - base = +0.3: no fall.
  assert 'No AnB runs with a base' in (tmp_path / 'report' / 'generality.md').read_text()


def test_any_number_of_groups_scales_the_rules_and_names_the_ticks(tmp_path):
  groups = ['conv_init+bn_init', *(f'ResNetBlock_{i}' for i in range(8))]
  def deep(split, treatment, source, target, n, seed):
    """AnB ~ base up to n = 3, then falls; BnB dips at n = 2-3 only."""
    if treatment == 'transfer':
      return BASE - 0.02 * max(n - 3, 0)
    if treatment == 'selffer':
      return BASE - (0.04 if n in (2, 3) else 0.0)
    return paper_like(split, treatment, source, target, n, seed)

  path = write_results(tmp_path, rows(deep, layers=range(1, 10)))
  with open(os.path.join(path, 'groups.json'), 'w') as f:
    json.dump({'groups': groups}, f)
  result = writer.write_report(path)
  rules = {f['id']: f['rule'] for f in result['findings']}
  assert 'at n = 1-3, is below -tolerance at some n in 4-9' in rules[1]
  assert 'over n = 4-6' in rules[2] and 'over n = 7-9' in rules[2]
  # For 9 groups the early layers are 1-3 and the dip is looked for at 4-6.
  holds = verdicts(result)
  assert holds[1] is True and holds[2] is False
  # Table 1's rows: all layers, then the paper's top 5 and top 3 of 7 scaled to 9.
  rows_ = [line for line in (tmp_path / 'report' / 'table1.md').read_text().splitlines()
           if line.startswith('| n = ')]
  assert [r.split(' | ')[0] for r in rows_] == [
      '| n = 1-9 (paper: 1-7)', '| n = 4-9 (paper: 3-7)', '| n = 6-9 (paper: 5-7)']
  assert not any('only n' in r or 'n/a' in r for r in rows_)
  fig = figures.figure2(writer.results.read_csv(os.path.join(path, 'results.csv'))[0],
                        'fashion_mnist', groups)
  ticks = [t.get_text() for t in fig.axes[1].get_xticklabels()]
  assert ticks == ['0', *(f'{n} {g}' for n, g in enumerate(groups, 1))]


def test_a_custom_split_gets_the_findings_of_a_random_one_and_says_so(tmp_path):
  table = rows(paper_like, splits=('custom:0-4/5-9',))
  result = writer.write_report(write_results(tmp_path, table))
  found = {f['id']: f for f in result['findings']}
  assert [found[i]['holds'] for i in (1, 2, 3, 4)] == [True, True, True, True]
  assert all(found[i]['evidence'].startswith('[custom split] ') for i in (1, 2, 3, 4))
  assert found[5]['holds'] is None  # It needs the m/n split beside a random one.
  text = (tmp_path / 'report' / 'findings.md').read_text()
  assert ('No random split in the results: findings 1-4, Figure 2 and Table 1 use the '
          'custom split (custom:0-4/5-9).') in text
  assert 'custom split (custom:0-4/5-9)' in (tmp_path / 'report' / 'table1.md').read_text()


def test_results_csv_from_a_spreadsheet_reads_with_its_bom_and_crlf(tmp_path):
  table = rows(paper_like)
  write_results(tmp_path / 'plain', table)
  text = (tmp_path / 'plain' / 'results.csv').read_text()
  write_results(tmp_path / 'excel', table)
  (tmp_path / 'excel' / 'results.csv').write_bytes(
      b'\xef\xbb\xbf' + text.replace('\n', '\r\n').encode())
  assert (writer.write_report(str(tmp_path / 'excel')) ==
          writer.write_report(str(tmp_path / 'plain')))


def test_a_report_path_that_is_a_file_is_one_clear_error(tmp_path):
  write_results(tmp_path, rows(paper_like))
  (tmp_path / 'report').write_text('not a directory')
  result = report_cli(f'--workdir={tmp_path}')
  assert result.returncode == 2 and 'Traceback' not in result.stderr
  assert result.stderr.strip().splitlines() == [
      f'error: {tmp_path}/report is a file, where the report goes; move it away, then '
      f'write the report again.']


def test_a_grid_at_one_target_size_reports_that_size(tmp_path):
  """Base A sees all its images and every run on B 20 a class (docs/tune/'s
  study): the report is that size's, with the tuning table, and no note of
  several sizes."""
  columns = [*results.COLUMNS, 'examples_per_class']
  workdir = tmp_path / 'w'
  table = [('base', 'A', 'A', 0, 0)] + [
      (t, 'A' if t != 'base' else 'B', 'B', n, 20)
      for t, ns in (('base', (0,)), ('transfer_ft', (1, 7)), ('surgical', (1, 7)))
      for n in ns]
  os.makedirs(workdir)
  with open(workdir / 'results.csv', 'w', newline='') as f:
    out = csv.writer(f, lineterminator='\n')
    out.writerow(columns)
    for seed in (0, 1, 2):
      for i, (treatment, source, target, n, size) in enumerate(table):
        acc = 0.7 + 0.01 * n + 0.001 * seed
        out.writerow([f'r{i}-{seed}', 'random:0', treatment, source, target, n, seed, acc,
                      1.0, acc, 100, 1.5, size])
  writer.write_report(str(workdir))
  report = workdir / 'report'
  assert (report / 'tune.md').exists() and not (report / 'target_size.md').exists()
  assert 'Several target-set sizes' not in (report / 'findings.md').read_text()
