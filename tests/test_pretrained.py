"""Bases trained elsewhere (--config.base_a): a base of another workdir, and
the same network saved by other tools (Orbax's StandardCheckpointer, flax's
msgpack, an .npz of params), through the CLI, against the grid that trained it."""

import glob
import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import serialization, traverse_util

from tfx_jax.models import registry, surgery
from tfx_jax.report import writer
from tfx_jax.training import checkpoints

from conftest import NUMBERS, RUNLOCAL, cli, results

LAYERS = '--config.layers=(3,)'
ONE_TRANSFER = (LAYERS, '--config.only=(transfer,)', '--config.targets=(B,)')  # AnB, its base.


def _variables(workdir, run_id, classes):
  with open(os.path.join(workdir, 'config.json')) as f:
    model = json.load(f)['model']
  with open(os.path.join(workdir, 'runs', run_id, 'result.json')) as f:
    step = json.load(f)['steps']
  like = registry.init_variables(registry.create(model, classes), jax.random.PRNGKey(0),
                                 (28, 28, 1))
  return jax.device_get(checkpoints.load_variables(
      os.path.join(workdir, 'runs', run_id, 'checkpoints'), step, like))


@pytest.fixture(scope='module')
def exported(runlocal_grid, tmp_path_factory):
  """baseA-s0 of the reference grid in each format a user may bring."""
  reference, _ = runlocal_grid
  variables = _variables(reference, 'm_n-baseA-s0', 6)
  out = tmp_path_factory.mktemp('exported')
  ocp.StandardCheckpointer().save(out / 'orbax', variables)
  ocp.StandardCheckpointer().wait_until_finished()
  (out / 'base.msgpack').write_bytes(serialization.to_bytes(variables))
  flat = traverse_util.flatten_dict(variables['params'], sep='/')
  np.savez(out / 'params.npz', **flat)  # Params alone, '/'-joined keys.
  return {'run directory': os.path.join(reference, 'runs', 'm_n-baseA-s0'),
          'orbax': str(out / 'orbax'), 'msgpack': str(out / 'base.msgpack'),
          'npz': str(out / 'params.npz')}, variables


@pytest.mark.parametrize('form', ['run directory', 'orbax', 'msgpack', 'npz'])
def test_a_pretrained_base_gives_the_grids_rows_and_transplants(form, exported,
                                                                 runlocal_grid, tmp_path):
  paths, base_a = exported
  reference, _ = runlocal_grid
  workdir = str(tmp_path / 'w')
  result = cli(f'--config={RUNLOCAL}', f'--config.base_a={paths[form]}', *ONE_TRANSFER,
               '--config.report=false', f'--workdir={workdir}')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'm_n-baseA-s0] pretrained, from' in result.stdout
  assert not glob.glob(f'{workdir}/runs/m_n-baseA-s0/metrics.jsonl')  # Not trained.
  rows, ref = results(workdir), results(reference)
  trained = set(rows) - {'m_n-baseA-s0'}
  assert trained == {'m_n-A3B-s0'}
  for run_id in trained:  # The same numbers as in the grid that trained the base.
    assert {k: rows[run_id][k] for k in NUMBERS} == {k: ref[run_id][k] for k in NUMBERS}
    assert rows[run_id]['pretrained'] == ''
  # The base itself: evaluated, not trained; its last evaluation in the grid.
  base = rows['m_n-baseA-s0']
  assert (base['pretrained'], base['steps']) == (paths[form], '0')
  assert base['top1'] == ref['m_n-baseA-s0']['top1']
  # AnB's three frozen layers are baseA's, bitwise.
  a3b = _variables(workdir, 'm_n-A3B-s0', 4)['params']
  for layer in surgery.first_layers(3):
    for leaf in ('kernel', 'bias'):
      np.testing.assert_array_equal(a3b[layer][leaf], base_a['params'][layer][leaf])
  with open(os.path.join(workdir, 'pretrained.json')) as f:
    assert json.load(f)['m_n-baseA-s0']['path'] == paths[form]


def _refused(result, *texts):
  assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: '), result.stderr[-2000:]
  for text in texts:
    assert text in lines[0], lines[0]
  return lines[0]


def test_a_tree_that_does_not_fit_is_refused_with_every_path(exported, tmp_path):
  _, variables = exported
  flat = traverse_util.flatten_dict(variables['params'], sep='/')
  flat['conv2/kernel'] = flat['conv2/kernel'][..., :3]  # Mis-shaped.
  del flat['conv3/bias']  # Missing.
  flat['conv9/kernel'] = np.zeros(3, np.float32)  # Extra.
  flat['fc8/kernel'] = np.zeros((5, 1000), np.float32)  # The head: its shape is free.
  np.savez(tmp_path / 'wrong.npz', **flat)
  workdir = tmp_path / 'w'
  line = _refused(cli(f'--config={RUNLOCAL}', f'--config.base_a={tmp_path}/wrong.npz',
                      LAYERS, f'--workdir={workdir}'),
                  'does not fit model', 'missing 1: conv3/bias',
                  'extra 1: conv9/kernel', 'mis-shaped 1: conv2/kernel',
                  'transferable groups are conv1')
  assert 'fc8' not in line
  assert not workdir.exists()  # Refused before anything was written.
  _refused(cli(f'--config={RUNLOCAL}', f'--config.base_a={tmp_path}/none.msgpack', LAYERS,
               f'--workdir={workdir}'), "--config.base_a", 'does not exist')
  (tmp_path / 'junk.msgpack').write_bytes(b'not msgpack at all')
  _refused(cli(f'--config={RUNLOCAL}', f'--config.base_a={tmp_path}/junk.msgpack', LAYERS,
               f'--workdir={workdir}'), 'is not a readable Orbax checkpoint')
  assert not workdir.exists()


def test_a_checkpoint_changed_after_the_workdir_started_is_refused(exported, tmp_path):
  _, variables = exported
  path, workdir = tmp_path / 'base.msgpack', tmp_path / 'w'
  path.write_bytes(serialization.to_bytes(variables))
  command = (f'--config={RUNLOCAL}', f'--config.base_a={path}', '--config.layers=(1,)',
             '--config.only=(transfer,)', '--config.targets=(B,)', '--config.report=false',
             f'--workdir={workdir}')
  assert cli(*command).returncode == 0
  before = sorted(glob.glob(f'{workdir}/**', recursive=True))
  changed = jax.tree.map(lambda a: a + 1, variables)
  path.write_bytes(serialization.to_bytes(changed))
  _refused(cli(*command), 'base m_n-baseA-s0', 'has changed since this workdir started',
           'use a new --workdir')
  assert sorted(glob.glob(f'{workdir}/**', recursive=True)) == before


def test_a_base_pretrained_on_one_dataset_serves_a_study_on_another(tmp_path):
  """docs/own_model.md's example at runlocal size: Fashion-MNIST's base from
  one workdir ('{seed}' in the path) is base A of a study onto the digits."""
  grid = ('--config=configs/cross_dataset.py:sizes=0,runlocal', '--config.layers=(1,)',
          '--config.only=(transfer,)', '--config.report=false')
  first, second = str(tmp_path / 'pretrain'), str(tmp_path / 'study')
  assert cli(*grid, f'--workdir={first}').returncode == 0
  base = f'{first}/runs/from_fashion_mnist-baseA-s{{seed}}'
  result = cli(*grid, f'--config.base_a={base}', f'--workdir={second}')
  assert result.returncode == 0, result.stderr[-3000:]
  rows, ref = results(second), results(first)
  assert set(rows) == set(ref) and 'from_fashion_mnist-A1B-s0' in rows
  for k in NUMBERS:
    assert rows['from_fashion_mnist-A1B-s0'][k] == ref['from_fashion_mnist-A1B-s0'][k]
  pretrained_base = rows['from_fashion_mnist-baseA-s0']
  assert pretrained_base['pretrained'] == base.replace('{seed}', '0')
  assert pretrained_base['top1'] == ref['from_fashion_mnist-baseA-s0']['top1']
  writer.write_report(second)  # The report names where the base came from.
  with open(os.path.join(second, 'report', 'findings.md')) as f:
    assert (f'base from_fashion_mnist-baseA-s0 came from the checkpoint '
            f'{base.replace("{seed}", "0")}') in f.read()


def test_a_base_whose_head_differs_gives_its_layers_and_no_row(exported, tmp_path):
  """baseA of the m/n halves (6 classes) as base A of random halves (5 classes):
  the head does not fit, so the base is not evaluated, and its layers still
  go into every transplant."""
  paths, base_a = exported
  workdir = str(tmp_path / 'w')
  result = cli(f'--config={RUNLOCAL}', '--config.split=random:0', '--config.layers=(1,)',
               '--config.only=(transfer,)', '--config.targets=(B,)', '--config.report=false',
               f'--config.base_a={paths["npz"]}', f'--workdir={workdir}')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'Its head does not fit the 5 classes of task A' in result.stdout
  assert set(results(workdir)) == {'random0-A1B-s0'}  # No row for the base.
  with open(os.path.join(workdir, 'config.json')) as f:
    assert json.load(f)['split'] == 'random:0'
  a1b = _variables(workdir, 'random0-A1B-s0', 5)['params']
  np.testing.assert_array_equal(a1b['conv1']['kernel'], base_a['params']['conv1']['kernel'])
