"""The offline default (`make demo`): Figure 2's grid on Fashion-MNIST.

Random halves of the 10 classes (split random:0), the `small` net, the paper's
solver shape (SGD, momentum, step schedule) shortened to fit the whole grid
in about 8 minutes on a 2-core laptop. One direction (target B: baseB, BnB,
BnB+, AnB, AnB+) to halve the cost; `targets=('B', 'A')` adds AnA, BnA.
Arguments: seed=S (which random halves), as in random_split.py;
split=m_n (the dissimilar halves instead, finding 5) and
experiment=random_filters (random frozen layers on all 10 classes, finding 6),
each with this solver, so all three share `make demo`'s workdir and report.
"""

from tfx_jax import config as config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg, seed=0, split='random', experiment='transfer',
                              runlocal=False)
  c = config_lib.base_config()
  config_lib.apply_dataset(c, 'fashion_mnist')
  c.experiment = args.experiment
  if args.experiment == 'random_filters':
    c.split = 'all'
  elif args.split == 'random':
    c.split = f'random:{args.seed}'
  else:
    c.split = args.split
  c.targets = ('B',)
  c.batch_size = 128
  c.total_steps = 480
  c.lr_step = 320
  c.eval_every = 24  # 20 evaluations: best10_top1 averages the upper half.
  c.eval_examples = 2000
  c.checkpoint_every = 96
  c.log_every = 24
  if args.runlocal:
    config_lib.apply_runlocal(c)
  return c
