"""Transfer across datasets (docs/own_data.md): task A is every class of a
source dataset, task B every class of the target, at several target-set sizes.

Default: Fashion-MNIST to UCI's digits (both offline), the `narrow` net. The
source base trains with the offline default's all-classes solver (30,720
steps at batch 64, where it converges: docs/solver/); the target's runs with
the digits preset (3,072 steps at batch 32), on 5, 20 and all (about 144)
images per class. Arguments:
  source=NAME  the source dataset (or NAME:0-4 for some of its classes)
  target=NAME  the target dataset
  sizes=5+20+0 target images per class, one grid each (0: all)
  runlocal     shrink every run to seconds (the tests)
Example: --config=configs/cross_dataset.py:sizes=10,runlocal
"""

from tfx_jax import config as config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg, source='fashion_mnist', target='digits',
                              sizes='5+20+0', runlocal=False)
  c = config_lib.base_config()
  config_lib.apply_dataset(c, args.target)
  c.split = ''
  c.source_dataset = args.source
  c.targets = ('B',)
  c.target_examples_per_class = tuple(int(k) for k in args.sizes.split('+') if k)
  c.update(model='narrow', eval_examples=0, log_every=512)
  c.source_solver.update(batch_size=64, total_steps=30_720, lr_step=20_480,
                         eval_every=1_536, checkpoint_every=3_072)
  if args.runlocal:
    config_lib.apply_runlocal(c)
    c.source_solver.update(batch_size=32, total_steps=24, lr_step=16, eval_every=8,
                           checkpoint_every=8)
  return c
