"""The workdir: config snapshots, finished runs remembered, results.csv."""

import json
import os

import pytest

from tfx_jax import config as config_lib
from tfx_jax.errors import UserError
from tfx_jax.grid import results
from tfx_jax.grid.workdir import Workdir


def result(run_id, top1=0.5):
  return results.Result(run_id, 'm_n', 'base', 'B', 'B', 0, 0, top1, 1.0, top1, 24, 1.0)


def test_a_field_added_later_refuses_an_older_workdir(tmp_path, monkeypatch):
  Workdir(str(tmp_path)).prepare(config_lib.base_config())
  Workdir(str(tmp_path)).prepare(config_lib.base_config())  # Same config: fine.
  original = config_lib.base_config

  def with_new_field():
    c = original()
    c.label_smoothing = 0.1  # A new field that changes training.
    return c
  monkeypatch.setattr(config_lib, 'base_config', with_new_field)
  with pytest.raises(UserError, match='differs in label_smoothing'):
    Workdir(str(tmp_path)).prepare(config_lib.base_config())
  snapshot = json.loads((tmp_path / 'config.json').read_text())
  assert 'label_smoothing' not in snapshot  # The old snapshot is untouched.


def test_runs_selected_differently_share_the_workdir(tmp_path):
  Workdir(str(tmp_path)).prepare(config_lib.base_config())
  c = config_lib.base_config()
  c.seeds, c.layers, c.split, c.num_workers = (1, 2), (3,), 'random:1', 2
  Workdir(str(tmp_path)).prepare(c)
  assert json.loads((tmp_path / 'config.json').read_text())['seeds'] == [1, 2]


def test_finished_runs_are_remembered_not_rechecked(tmp_path):
  w = Workdir(str(tmp_path))
  assert not w.finished('a')
  w.save_result(result('a'))
  path = tmp_path / 'runs' / 'a' / 'result.json'
  assert json.loads(path.read_text())['run_id'] == 'a'
  os.remove(path)  # Storage is not asked again once a run is known finished.
  assert w.finished('a')
  assert not Workdir(str(tmp_path)).finished('a')


def test_results_csv_has_the_grid_first_then_other_runs(tmp_path):
  w = Workdir(str(tmp_path))
  for run_id in ('z-other', 'b', 'a-other'):
    w.save_result(result(run_id))
  path = w.write_results(['b', 'c-unfinished'])
  rows = results.to_csv([result('b'), result('a-other'), result('z-other')])
  assert open(path).read() == rows
