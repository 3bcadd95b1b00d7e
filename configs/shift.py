"""Which group to tune for a distribution shift (docs/shift/): surgical
fine-tuning (Lee et al. 2023) against full fine-tuning, LP-FT and L2-SP, on
Fashion-MNIST with the `narrow` net, 3 seeds.

The source base trains once per seed on the clean dataset, every class
(subpopulation: its superclasses, on the source side's classes), with its own
solver (source_solver: 7,680 steps at batch 64, 8 epochs); every shift's
target runs start from it, head included, on K shifted images per class, and
are evaluated on the first 2,000 images of the shifted test set; WiSE at
alpha 0.5 alone. Arguments:
  shift=NAME[:SEVERITY]  one shift (default: the study's five, SHIFTS)
  sizes=10+100   target images per class
  steps=T        the target runs' length (docs/shift/: the doubling test)
  seeds=3        how many seeds (0..seeds-1)
  runlocal       shrink every run to seconds: one seed, one size, a shift of each
                 level (the tests)
"""

from tfx_jax import config as config_lib

SHIFTS = 'gaussian_noise:5,motion_blur:5,contrast:5,subpopulation,permute_labels'


def get_config(arg=None):
  args = config_lib.parse_arg(arg, shift='', sizes='10+100', steps=1024, seeds=3,
                              runlocal=False)
  c = config_lib.base_config()
  config_lib.apply_dataset(c, 'fashion_mnist')
  c.experiment, c.shifts = 'shift', args.shift or SHIFTS
  c.target_examples_per_class = tuple(int(k) for k in str(args.sizes).split('+') if k)
  c.seeds = tuple(range(args.seeds))
  c.update(model='narrow', batch_size=32, lr=0.01, total_steps=args.steps,
           lr_step=args.steps * 2 // 3, eval_every=max(args.steps // 24, 1),
           checkpoint_every=args.steps, log_every=max(args.steps // 4, 1), eval_examples=2000)
  c.source_solver.update(batch_size=64, total_steps=7680, lr_step=5120, eval_every=960)
  c.tune.wise_alphas = (0.5,)  # 0 and 1 are the transferred and fine-tuned networks.
  if args.runlocal:
    config_lib.apply_runlocal(c)
    # A source that has learnt something (~70% top-1), so no_adapt means something.
    c.source_solver.update(batch_size=32, total_steps=320, lr_step=240, eval_every=80)
    c.seeds, c.target_examples_per_class = (0,), c.target_examples_per_class[:1]
    c.shifts = args.shift or 'gaussian_noise:5,subpopulation,permute_labels'
  return c
