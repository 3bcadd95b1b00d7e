"""The dissimilar split (Figure 3): man-made vs natural classes.

Default: ILSVRC2012 with CaffeNet and the paper's solver. Arguments:
  dataset=NAME  imagenet2012 | imagenet_resized_32 | imagenet_resized_64 |
                cifar10 | cifar100 | fashion_mnist | mnist
  runlocal      shrink everything so the grid runs in minutes on a laptop.
Example: --config=configs/m_n_split.py:dataset=fashion_mnist,runlocal
"""

from tfx_jax import config as config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg, dataset='imagenet2012', runlocal=False)
  c = config_lib.base_config()
  config_lib.apply_dataset(c, args.dataset)
  c.split = 'm_n'
  if args.runlocal:
    config_lib.apply_runlocal(c)
  return c
