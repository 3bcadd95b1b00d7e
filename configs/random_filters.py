"""Experiment 3: the first n layers random and frozen, the rest trained on all
classes, against a base trained on all classes. Arguments as m_n_split.py."""

from tfx_jax import config as config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg, dataset='imagenet2012', runlocal=False)
  c = config_lib.base_config()
  config_lib.apply_dataset(c, args.dataset)
  c.experiment = 'random_filters'
  c.split = 'all'
  if args.runlocal:
    config_lib.apply_runlocal(c)
  return c
