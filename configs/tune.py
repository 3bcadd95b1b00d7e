"""Which layers to tune, and how (docs/tune/): the tuning treatments (surgical,
linear probe, LP-FT, L2-SP, LLRD) against AnB+ and the base on Fashion-MNIST's
random halves, target B at a few images per class, where transfer matters.

Base A is the offline default's (`make demo`'s baseA: the `narrow` net, 15,360
steps at batch 64, converged: docs/solver/), trained once per seed in its own
workdir and read here as a pretrained base (--config.base_a). The target's
runs see 100 images (20 a class), so they train with the digits preset's
short solver (3,072 steps at batch 32: ~1,000 epochs of the target). Arguments:
  base_a=PATH  base A's run directory, '{seed}' for the seed (empty: trained here)
  seed=S       which random halves (split random:S)
  size=K       target images per class (default 20)
  layers=1+3+5+7  the n to run
  runlocal     shrink every run to seconds (the tests)
"""

from tfx_jax import config as config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg, base_a='', seed=0, size=20, layers='1+3+5+7',
                              runlocal=False)
  c = config_lib.base_config()
  config_lib.apply_dataset(c, 'fashion_mnist')
  c.split = f'random:{args.seed}'
  c.targets = ('B',)
  c.only = ('base', 'transfer_ft', 'surgical', 'linear_probe', 'lp_ft', 'l2sp', 'llrd')
  c.layers = tuple(int(n) for n in args.layers.split('+') if n)
  c.target_examples_per_class = (args.size,)
  c.base_a = args.base_a
  c.seeds = (0, 1, 2)
  c.update(model='narrow', batch_size=32, lr=0.01, total_steps=3072, lr_step=2048,
           eval_every=128, checkpoint_every=1024, log_every=512, eval_examples=0)
  if args.runlocal:
    config_lib.apply_runlocal(c)
    c.seeds = (0,)
  return c
