import importlib.util
import os

import pytest

from tfx_jax import config as config_lib
from tfx_jax.errors import UserError

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
  assert c.eval_every == 1000 and tuple(c.layers) == (1, 2, 3, 4, 5, 6, 7)


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
