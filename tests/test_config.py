import importlib.util
import json
import os
import re

import pytest

from tfx_jax import config as config_lib
from tfx_jax.errors import UserError
from tfx_jax.grid import checks

CONFIGS = os.path.join(os.path.dirname(__file__), '..', 'configs')


def load(name, arg=None):
  spec = importlib.util.spec_from_file_location(name, os.path.join(CONFIGS, name))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def test_parse_arg_types_flags_and_unknown_keys():
  args = config_lib.parse_arg('dataset=cifar10,seed=3,runlocal',
                              dataset='imagenet2012', seed=0, runlocal=False)
  assert (args.dataset, args.seed, args.runlocal) == ('cifar10', 3, True)
  assert config_lib.parse_arg(None, seed=0).seed == 0
  with pytest.raises(UserError, match="Unknown config argument 'sed'.*seed"):
    config_lib.parse_arg('sed=3', seed=0)
  with pytest.raises(UserError, match='must be an integer'):
    config_lib.parse_arg('seed=x', seed=0)
  with pytest.raises(UserError, match='needs a value'):
    config_lib.parse_arg('seed', seed=0)


def test_m_n_default_is_the_papers_imagenet_setup():
  c = load('m_n_split.py')
  assert (c.dataset, c.split, c.model) == ('imagenet2012', 'm_n', 'caffenet')
  assert (c.batch_size, c.lr, c.total_steps, c.lr_step, c.lr_gamma) == (
      256, 0.01, 450_000, 100_000, 0.1)
  assert (c.momentum, c.weight_decay, c.bias_lr_mult) == (0.9, 5e-4, 2.0)
  assert c.eval_every == 1000 and tuple(c.layers) == ()  # () = all: n = 1..7.
  from tfx_jax.grid import experiments  # pylint: disable=g-import-not-at-top
  assert sorted({s.n for s in experiments.study(c)} - {0}) == list(range(1, 8))


def test_dataset_and_runlocal_arguments():
  c = load('m_n_split.py', 'dataset=fashion_mnist,runlocal')
  assert (c.dataset, c.model, c.split) == ('fashion_mnist', 'small', 'm_n')
  assert c.total_steps == config_lib.RUNLOCAL['total_steps']
  r = load('random_split.py', 'seed=2')
  assert r.split == 'random:2' and r.dataset == 'imagenet2012'
  f = load('random_filters.py')
  assert (f.experiment, f.split) == ('random_filters', 'all')


def test_bad_config_arguments():
  with pytest.raises(UserError, match="Unknown dataset 'imagenet'.*cifar10"):
    load('m_n_split.py', 'dataset=imagenet')
  with pytest.raises(UserError, match="Unknown config argument 'datset'"):
    load('m_n_split.py', 'datset=cifar10')


@pytest.mark.parametrize('name, arg', [
    ('m_n_split.py', None), ('random_split.py', 'seed=3'), ('random_filters.py', None),
    ('default.py', None), ('default.py', 'split=m_n,runlocal'), ('resnet.py', None),
    ('resnet.py', 'experiment=random_filters,runlocal'),
    ('m_n_split.py', 'dataset=cifar100,runlocal')])
def test_shipped_configs_are_valid(name, arg):
  checks.validate(load(name, arg), num_devices=4, num_processes=2)


@pytest.mark.parametrize('change, message', [
    ({'model': 'resnet'}, "Unknown model 'resnet'; known: caffenet, narrow, resnet18, "
                          "resnet18_w16, small, or your own as package.module:factory."),
    ({'model': 'no_such_pkg.mod:make'}, "Cannot import module 'no_such_pkg.mod'"),
    ({'model': 'tfx_jax.models.resnet:nothing'}, "Module 'tfx_jax.models.resnet' has no callable 'nothing'"),
    ({'layer_groups': ('conv1', 'conv9+fc6')}, "Layer group 'conv9+fc6' of model 'small': "
                                              "'conv9' matches no parameter"),
    ({'dataset': 'imagenet'}, "Unknown dataset 'imagenet'"),
    ({'split': 'halves'}, 'halves'),
    ({'batch_size': 30}, 'batch_size 30 is not divisible by the 4 devices; use a '
                         'multiple of 4.'),
    ({'eval_batch_size': 6}, 'eval_batch_size 6 is not divisible by the 4 devices'),
    ({'batch_size': 12}, 'batch_size 12 is not divisible by the 8 processes.'),
    ({'layers': (0, 8)}, 'config.layers has [0, 8]: n must be 1..7'),
    ({'only': ('random_frozen',)}, "config.only names ['random_frozen']"),
    ({'sweep.shard': 2}, 'sweep.shard must be in 0..1'),
    ({'frozen_norm': 'keras'}, "config.frozen_norm must be one of batch, running, got 'keras'; "
                               "e.g. --config.frozen_norm=running."),
])
def test_validate_names_the_problem(change, message):
  c = load('m_n_split.py', 'dataset=fashion_mnist,runlocal')
  c.sweep.num_shards = 2
  for key, value in change.items():
    node, _, leaf = key.rpartition('.')
    (c[node] if node else c)[leaf] = value
  processes = 8 if change.get('batch_size') == 12 else 1
  with pytest.raises(UserError) as e:
    checks.validate(c, num_devices=4, num_processes=processes)
  assert message in str(e.value)


def test_default_parts_and_their_errors():
  from tfx_jax.grid import experiments  # pylint: disable=g-import-not-at-top
  c = load('default.py', 'runlocal')
  assert experiments.parts(c) == [
      ('transfer', 'random:0', ('base', 'selffer', 'selffer_ft', 'transfer', 'transfer_ft')),
      ('transfer', 'm_n', ('base', 'transfer')),
      ('random_filters', 'random:0', ('base', 'random_frozen'))]
  paper = load('default.py', 'runlocal,all_classes')  # As the paper: every class.
  assert experiments.parts(paper)[2] == ('random_filters', 'all', ('base', 'random_frozen'))
  assert [s.run_id for s in experiments.study(paper)][:5] == [
      'random0-baseB-s0', 'random0-baseA-s0', 'm_n-baseB-s0', 'm_n-baseA-s0',
      'all-baseall-s0']
  c.only = ('selffer',)  # Narrows every part; parts without it drop out.
  assert experiments.parts(c) == [('transfer', 'random:0', ('selffer',))]
  specs = experiments.study(c)
  assert [s.run_id for s in specs[:1]] == ['random0-baseB-s0'] and len(specs) == 8
  c.only = ('random_frozen', 'base')
  ids = [s.run_id for s in experiments.study(c)]
  # Figure 2's baseB is the random filters' base too: one run, listed once.
  assert ids == ['random0-baseB-s0', 'm_n-baseB-s0'] + [
      f'random0-random{n}B-s0' for n in range(1, 8)]
  for change, message in (({'split': 'm_n'}, 'config.parts is set'),
                          ({'only': ('dip',)}, "config.only=('dip',) selects no treatment"),
                          ({'parts': ('transfer',)}, "config.parts has 'transfer'"),
                          ({'parts': ('transfer/halves',)}, 'halves')):
    c = load('default.py', 'runlocal')
    c.update(change)
    with pytest.raises(UserError, match=re.escape(message)):
      checks.validate(c, num_devices=1, num_processes=1)


@pytest.mark.parametrize('change, message', [
    ({'precision': 'fp16'}, "config.precision must be one of float32, tf32, bfloat16, got 'fp16'"),
    ({'device_prefetch': -1}, 'config.device_prefetch must be 0 or more'),
    ({'data_cache_dir': 'gs://tfx/cache'}, 'config.data_cache_dir must be a local directory'),
    ({'data_cache_dir': 'gs:/tfx/cache'}, 'is not a URL')])
def test_the_accelerator_fields_are_checked(change, message):
  c = load('m_n_split.py', 'dataset=fashion_mnist,runlocal')
  c.update(change)
  with pytest.raises(UserError, match=re.escape(message)):
    checks.validate(c, num_devices=1, num_processes=1)


def test_the_configs_choices_are_what_the_modules_implement():
  from tfx_jax.models import norm, optim  # pylint: disable=g-import-not-at-top
  from tfx_jax.training import precision  # pylint: disable=g-import-not-at-top
  assert config_lib.CHOICES == {'precision': precision.NAMES, 'frozen_norm': norm.MODES,
                                'schedule': optim.SCHEDULES}


def test_dataset_tables_agree():
  from tfx_jax.data import datasets, splits  # pylint: disable=g-import-not-at-top
  assert set(config_lib.DATASET_PRESETS) == set(datasets.DATASETS)
  for name, (_, num_classes) in splits.DISSIMILAR.items():
    assert datasets.DATASETS[name].num_classes == num_classes, name


def test_every_field_changes_results_unless_listed():
  c = config_lib.base_config()
  listed = set(config_lib.SELECTS_RUNS) | set(config_lib.LOGISTICS)
  assert listed <= set(c), listed - set(c)  # No stale names in the lists.
  snapshot = c.to_dict()
  for field in set(c) - listed:
    changed = {**snapshot, field: 'changed'}
    assert config_lib.differing_fields(snapshot, changed) == [field]
  for field in listed:
    assert config_lib.differing_fields(snapshot, {**snapshot, field: 'x'}) == []


def test_a_snapshot_from_before_layer_groups_reads_as_its_default():
  snapshot = json.loads(config_lib.base_config().to_json_best_effort())
  older = {k: v for k, v in snapshot.items() if k != 'layer_groups'}
  assert config_lib.differing_fields(older, snapshot) == []
  assert config_lib.differing_fields(older, {**snapshot, 'layer_groups': ['a']}) == [
      'layer_groups']
