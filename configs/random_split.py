"""Random halves of the classes (Figure 2). Arguments as m_n_split.py, plus
seed=S: which random halves (the original used 0..3 for ImageNet)."""

from tfx_jax import config as config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg, dataset='imagenet2012', seed=0, runlocal=False)
  c = config_lib.base_config()
  config_lib.apply_dataset(c, args.dataset)
  c.split = f'random:{args.seed}'
  if args.runlocal:
    config_lib.apply_runlocal(c)
  return c
