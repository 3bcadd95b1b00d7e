"""The results schema: Result records, results.csv written and read back."""

import dataclasses

import pytest

from tfx_jax.errors import UserError
from tfx_jax.grid import experiments, results


def test_best10_is_the_mean_of_the_ten_highest():
  values = [0.1 * i for i in range(12)]  # 0.0 .. 1.1: the top ten are 0.2 .. 1.1.
  assert results.best10(values) == pytest.approx(0.65)
  assert results.best10([0.3, 0.5]) == pytest.approx(0.4)


def test_result_of_a_run_takes_its_spec_and_history():
  spec = experiments.RunSpec('random:0', 'transfer_ft', 'A', 'B', 3, 1)
  history = [{'step': s, 'top1': t, 'top5': 0.9, 'loss': 1.0}
             for s, t in ((10, 0.5), (20, 0.7), (30, 0.6))]
  r = results.Result.of_run(spec, history, 30, 12.34567)
  assert (r.run_id, r.treatment, r.source, r.target, r.n, r.seed) == (
      'random0-A3B+-s1', 'transfer_ft', 'A', 'B', 3, 1)
  assert (r.top1, r.best10_top1, r.steps, r.wall_s) == (0.6, pytest.approx(0.6), 30, 12.346)
  assert r.family == 'random' and r.accuracy == r.best10_top1


def test_csv_round_trip_and_header(tmp_path):
  rows = [results.Result('m_n-baseB-s0', 'm_n', 'base', 'B', 'B', 0, 0, 0.8, 1.0,
                         0.75, 24, 1.5),
          results.Result('all-random2all-s1', 'all', 'random_frozen', '', 'all', 2, 1,
                         1 / 3, 0.9, 0.3, 24, 0.25)]
  text = results.to_csv(rows)
  assert text.splitlines()[0] == ('run_id,split,treatment,source,target,n,seed,top1,'
                                  'top5,best10_top1,steps,wall_s,precision,frozen_norm')
  assert '0.3333333333333333' in text  # Floats by repr: nothing lost.
  path = tmp_path / 'results.csv'
  path.write_text(text)
  back, notes = results.read_csv(str(path))
  assert notes == [] and sorted(back, key=lambda r: r.run_id) == sorted(
      rows, key=lambda r: r.run_id)


@pytest.mark.parametrize('change, message', [
    ({'treatment': 'random'}, "unknown treatment 'random'"),
    ({'n': 9}, 'n = 9, but base runs have n = 0'),
    ({'top1': 1.5}, 'top1 outside [0, 1]'),
    ({'steps': 'ten'}, "invalid literal for int() with base 10: 'ten'"),
])
def test_bad_rows_are_refused_naming_where(change, message):
  row = dataclasses.asdict(results.Result('r', 'm_n', 'base', 'B', 'B', 0, 0, 0.5,
                                          1.0, 0.5, 24, 1.0))
  with pytest.raises(UserError, match=r'^results.csv, line 2: ') as e:
    results.from_dict({**row, **change}, 'results.csv, line 2')
  assert message in str(e.value)


def test_findings_and_experiments_share_treatment_labels():
  assert experiments.LABELS['random_frozen'] == 'random frozen'
  assert set(experiments.LABELS) == set(experiments.TREATMENTS)
