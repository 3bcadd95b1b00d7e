"""The config schema shared by every file in configs/, and its argument parsing.

A config file's `get_config(arg)` starts from `base_config()`, applies a
dataset preset, and takes big_vision-style arguments `key=value,flag`.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from tfx_jax.errors import UserError

# The analysis refuses fewer than 10 train probe images a class of target B
# (grid/checks.py): ImageNet's halves have about 500 classes, so 20 a class.
IMAGENET_ANALYSIS = {'train_examples': 10_000}
# Datasets of many classes: `runlocal` keeps 10 train probe images a class.
MANY_CLASSES = {'cifar100': 100, 'imagenet2012': 1000, 'imagenet_resized_32': 1000,
                'imagenet_resized_64': 1000}

# Sensible values per dataset (model, input size, solver length). ImageNet is
# the paper's: CaffeNet, batch 256, lr 0.01 x0.1 every 100k, 450k iterations.
DATASET_PRESETS = {
    'imagenet2012': dict(model='caffenet', batch_size=256, lr=0.01,
                         total_steps=450_000, lr_step=100_000,
                         eval_every=1000, checkpoint_every=5000,
                         analysis=IMAGENET_ANALYSIS),
    'imagenet_resized_32': dict(model='small', batch_size=256, lr=0.01,
                                total_steps=100_000, lr_step=40_000,
                                eval_every=1000, checkpoint_every=5000,
                                analysis=IMAGENET_ANALYSIS),
    'imagenet_resized_64': dict(model='small', batch_size=256, lr=0.01,
                                total_steps=100_000, lr_step=40_000,
                                eval_every=1000, checkpoint_every=5000,
                                analysis=IMAGENET_ANALYSIS),
    'cifar10': dict(model='small', batch_size=128, lr=0.01, total_steps=20_000,
                    lr_step=8_000, eval_every=500, checkpoint_every=1000),
    'cifar100': dict(model='small', batch_size=128, lr=0.01, total_steps=30_000,
                     lr_step=12_000, eval_every=500, checkpoint_every=1000),
    'fashion_mnist': dict(model='small', batch_size=256, lr=0.01,
                          total_steps=1_200, lr_step=800, eval_every=100,
                          checkpoint_every=100),
    'mnist': dict(model='small', batch_size=256, lr=0.01, total_steps=1_200,
                  lr_step=800, eval_every=100, checkpoint_every=100),
    # 1,438 train images: small batches, ~68 epochs, where a base on every
    # image converges (docs/cross_dataset: 1,536 steps did not).
    'digits': dict(model='narrow', batch_size=32, lr=0.01, total_steps=3_072,
                   lr_step=2_048, eval_every=128, checkpoint_every=1_024),
}

# The solver fields `source_solver` may set for the runs trained on the source
# dataset (base A of a cross-dataset grid); unset ones are the grid's.
SOLVER_FIELDS = {'batch_size': int, 'lr': float, 'schedule': str, 'lr_step': int,
                 'lr_gamma': float, 'warmup_steps': int, 'total_steps': int,
                 'momentum': float, 'weight_decay': float, 'bias_lr_mult': float,
                 'eval_every': int, 'checkpoint_every': int}

# The values of the fields that name a choice, checked before JAX is imported
# (grid/fields.py); each is what its module implements (a test holds them equal):
# training/precision.py's NAMES, models/norm.py's MODES, models/optim.py's SCHEDULES.
CHOICES = {'precision': ('float32', 'tf32', 'bfloat16'), 'frozen_norm': ('batch', 'running'),
           'schedule': ('step', 'cosine', 'constant')}

# `runlocal`: the whole grid in a couple of minutes on a 2-core laptop.
RUNLOCAL = dict(batch_size=32, total_steps=24, lr_step=16, eval_every=8,
                checkpoint_every=8, eval_examples=256, eval_batch_size=256,
                log_every=8,
                targets=('B',),
                analysis={'train_examples': 500, 'eval_examples': 256, 'probe_steps': 100,
                          'batch_size': 128})

# The fields that do not change what a run computes: those that select runs
# (`experiment` and `split` are in every run id, so one workdir holds the runs
# of all three experiments), and where and how the job runs. A workdir refuses
# a config that differs from its snapshot in ANY other field, so a new field
# is compared unless it is listed here.
SELECTS_RUNS = ('experiment', 'split', 'seeds', 'layers', 'only', 'targets', 'parts',
                'sweep', 'shifts')
LOGISTICS = ('data_dir', 'source_data_dir', 'data_cache_dir', 'num_workers', 'device_prefetch',
             'feature_cache_mb',
             'eval_batch_size', 'checkpoint_every', 'keep_checkpoints', 'log_every', 'report',
             'analysis')


# Fields added after workdirs existed, each with the value that computes what
# those workdirs computed: a snapshot without one is read as having it. Any
# other field missing from an older snapshot refuses it.
ADDED_LATER = {'layer_groups': [], 'source_dataset': '', 'target_examples_per_class': [],
               'source_data_dir': None, 'axis_name': 'batch', 'base_a': '', 'base_b': '',
               'image_size': None, 'train_split': None, 'eval_split': None,
               'source_solver': {k: None for k in SOLVER_FIELDS}, 'precision': 'float32',
               'frozen_norm': 'batch',
               'tune': {'probe_fraction': 0.5, 'l2sp_alpha': 0.1, 'l2sp_beta': 0.01,
                        'layer_decay': 0.75, 'wise_alphas': [0.0, 0.25, 0.5, 0.75, 1.0]}}


def differing_fields(old: dict, new: dict) -> list[str]:
  """Fields of two config snapshots that change results and differ, sorted."""
  old, new = {**ADDED_LATER, **old}, {**ADDED_LATER, **new}
  compared = (set(old) | set(new)) - set(SELECTS_RUNS) - set(LOGISTICS)
  return [k for k in sorted(compared) if old.get(k) != new.get(k)]


def base_config() -> ml_collections.ConfigDict:
  """Every field, with the paper's solver as defaults."""
  c = ml_collections.ConfigDict()
  # 'transfer' (Figures 2, 3), 'random_filters', or 'shift' (docs/shift/:
  # which group to tune for each of `shifts`; `split` is not used).
  c.experiment = 'transfer'
  c.dataset = 'imagenet2012'
  c.split = 'm_n'  # 'm_n' (dissimilar halves) or 'random:<seed>'.
  c.model = 'caffenet'  # models.REGISTRY, or your own: 'package.module:factory'.
  # The model's ordered transferable groups: paths in its params tree ('a/b'),
  # 'a+b' joins two into one group. Empty: the registry's, else the tree's
  # top-level keys but the last (the head). The head is never transferred.
  c.layer_groups = ()
  # The collective axis name a user's module reduces over (BatchNorm's
  # axis_name): bound to the global batch (docs/own_model.md).
  c.axis_name = 'batch'
  # Bases trained elsewhere (docs/own_model.md): a checkpoint used as base A
  # (B) instead of training it: an Orbax checkpoint or tfx_jax run directory,
  # a flax msgpack file or an .npz; '{seed}' in it is the run's seed.
  c.base_a = ''
  c.base_b = ''
  # Tasks from two datasets (docs/own_data.md): A is every class of this one
  # ('name', or 'name:0-4,7' for some), B every class of `dataset`; the split
  # is then 'from:<source_dataset>'. Empty: A and B are halves of `dataset`.
  c.source_dataset = ''
  c.source_data_dir = config_dict.placeholder(str)  # Where it is; None: its default place.
  # The runs on the source (base A) may train with their own solver: any of
  # SOLVER_FIELDS set here; unset (None) ones are the grid's.
  c.source_solver = ml_collections.ConfigDict(
      {k: config_dict.placeholder(t) for k, t in SOLVER_FIELDS.items()})
  # Target-set sizes: train the target (half B, or `dataset` across datasets)
  # on K images per class, one grid per K (0: all), in one workdir.
  c.target_examples_per_class = ()
  c.data_dir = config_dict.placeholder(str)  # When set, the only data location.
  # Prepared JPEG shards on gs:// are copied here (a local directory) once per
  # host before training, and read from local disk (docs/cloud.md).
  c.data_cache_dir = config_dict.placeholder(str)
  # tfds:NAME and folder:NAME datasets (docs/own_data.md): the side every image
  # is resized to (None: their own size if they share one, else 64), and the
  # splits (None: train, then test or validation).
  c.image_size = config_dict.placeholder(int)
  c.train_split = config_dict.placeholder(str)
  c.eval_split = config_dict.placeholder(str)
  c.augment = config_dict.placeholder(bool)  # None: the dataset's default.
  # The steps' arithmetic (training/precision.py): 'float32' (faithful: what
  # the CPU computes, on every device), 'tf32' or 'bfloat16' (faster on GPUs
  # and TPUs; parameters and optimizer state stay float32).
  c.precision = 'float32'
  # A frozen group's BatchNorm in training (models/norm.py): 'batch' (the
  # batch's statistics, as the module is written) or 'running' (its running
  # averages, Keras' inference mode); docs/own_model.md#frozen-batchnorm.
  c.frozen_norm = 'batch'
  # Host parallelism of the input pipeline: train worker processes (grain) and
  # eval threads. -1 (auto): for datasets bound by JPEG decoding (imagenet2012),
  # one train worker per core but two (the loop's and the device prefetch's,
  # at least one worker) and one eval thread per core; 0 for the others
  # (Fashion-MNIST, MNIST, CIFAR), which load faster in
  # the training process. Results do not depend on it.
  c.num_workers = -1
  # Batches put on the devices ahead of the step, by a thread (0: none).
  c.device_prefetch = 2
  # The frozen prefix's output kept per example, up to this many MB a run (0:
  # off): runs that freeze the groups below the first that trains (AnB,
  # linear_probe, surgical) compute them once (training/feature_cache.py).
  c.feature_cache_mb = 2048.0

  c.seeds = (0,)
  c.layers = ()  # The n to run; empty: 1..L, every transferable group.
  c.only = ()  # Treatments to run; empty: all of the experiment's.
  c.targets = ('B', 'A')  # Target halves: 'B' gives BnB, AnB; 'A' AnA, BnA.
  # Several grids in one job, workdir and report (configs/default.py runs the
  # whole paper so): 'experiment/split' or 'experiment/split/treatment+...',
  # e.g. 'transfer/m_n/base+transfer'. When set, experiment, split and only
  # are empty: each part names its own.
  c.parts = ()
  # The shift experiment's shifts, NAME[:SEVERITY],... (docs/shifts.md), e.g.
  # 'gaussian_noise:5,subpopulation,permute_labels'; each is a split 'shift:NAME'.
  c.shifts = ''

  # Solver (PAPER.md): SGD, momentum 0.9, wd 5e-4, biases 2x lr and no decay.
  c.batch_size = 256  # Global batch, split over all devices.
  c.lr = 0.01
  c.schedule = 'step'  # 'step' (Caffe), 'cosine' or 'constant'.
  c.lr_step = 100_000
  c.lr_gamma = 0.1
  c.warmup_steps = 0
  c.total_steps = 450_000
  c.momentum = 0.9
  c.weight_decay = 5e-4
  c.bias_lr_mult = 2.0
  # Which layers to tune, and how (docs/tune.md): the treatments surgical,
  # linear_probe, lp_ft, l2sp and llrd, run when config.only names them.
  # probe_fraction: LP-FT's steps of the head alone; l2sp_alpha (toward the
  # transferred values) and l2sp_beta (toward 0, the other weights) replace
  # weight_decay in l2sp (Li et al. 2018's 0.1 and 0.01); layer_decay: llrd's
  # group g of L trains at lr * layer_decay ** (L - g); wise_alphas: every
  # fine-tuned run that copies groups (AnB+ and the four above) is also
  # evaluated with them at (1 - a) * transferred + a * fine-tuned (WiSE-FT).
  c.tune = ml_collections.ConfigDict({'probe_fraction': 0.5, 'l2sp_alpha': 0.1,
                                      'l2sp_beta': 0.01, 'layer_decay': 0.75,
                                      'wise_alphas': (0.0, 0.25, 0.5, 0.75, 1.0)})

  c.eval_every = 1000  # PAPER.md: validation every 1000 iterations.
  c.eval_examples = 0  # 0: the whole eval split of the half.
  c.eval_batch_size = 1024  # Global; eval is forward-only, so larger is faster.
  c.checkpoint_every = 5000
  c.keep_checkpoints = 2
  c.log_every = 100
  c.report = True  # Write WORKDIR/report/ at the end of the main job.
  # What is transferred (docs/report.md#what-is-transferred): at the end of the
  # main job (with the report), from the checkpoints; forward passes only.
  # Probe sets of target B drawn with each seed, class-balanced; CKA minibatches
  # and forward batches of batch_size; the linear probe's L-BFGS steps; a
  # layer wider than max_features is count-sketched to it (bounds the memory).
  c.analysis = ml_collections.ConfigDict({'run': True, 'train_examples': 2000,
                                          'eval_examples': 1000, 'probe_steps': 300,
                                          'batch_size': 250, 'max_features': 4096})

  # Sweep sharding: run part `shard` of `num_shards` of the grid (machines
  # sharing one workdir); a transfer waits for a base that another shard trains.
  # `runs`: only these run ids, space-separated (a SLURM task's, tfx_jax.slurm;
  # their bases must be finished); '': every run.
  c.sweep = ml_collections.ConfigDict({'num_shards': 1, 'shard': 0,
                                       'wait_minutes': 7 * 24 * 60.0,
                                       'poll_seconds': 30.0, 'runs': ''})
  return c


# Any TFDS dataset ('tfds:NAME') or image folder ('folder:NAME'): CIFAR-10's
# solver, a start to tune from (docs/own_data.md).
OWN_DATA_PRESET = DATASET_PRESETS['cifar10']


def apply_dataset(c: ml_collections.ConfigDict, dataset: str) -> None:
  if dataset.startswith(('tfds:', 'folder:')):
    preset = OWN_DATA_PRESET
  elif dataset in DATASET_PRESETS:
    preset = DATASET_PRESETS[dataset]
  else:
    raise UserError(f'Unknown dataset {dataset!r}; known: '
                    f'{", ".join(sorted(DATASET_PRESETS))}, tfds:NAME or folder:NAME.')
  c.dataset = dataset
  c.update(preset)


# The whole paper on one dataset, as config.parts (configs/default.py). Random
# frozen filters train on the random split's half B, against the same baseB as
# Figure 2's grid; the paper trained them on every class (argument all_classes),
# whose base needs twice the steps of a half's to converge (docs/paper.md, docs/solver).
PAPER_PARTS = {'random': 'transfer/random:{seed}', 'm_n': 'transfer/m_n/base+transfer',
               'random_filters': 'random_filters/random:{seed}'}
ALL_CLASSES = 'random_filters/all'


def paper_parts(seed: int = 0, split: str = '', experiment: str = '',
                all_classes: bool = False) -> tuple[str, ...]:
  """PAPER_PARTS, all three or those that config arguments select: split=random
  or split=m_n (one split), experiment=transfer (both), experiment=random_filters;
  all_classes: random frozen filters on every class, as the paper."""
  if experiment not in ('', 'transfer', 'random_filters'):
    raise UserError(f'experiment={experiment!r}: the study has transfer and '
                    'random_filters.')
  if split not in ('', 'random', 'm_n'):
    raise UserError(f'split={split!r}: the study has split=random and split=m_n.')
  if experiment == 'random_filters':
    chosen = ['random_filters']
  elif split:
    chosen = [split]
  else:
    chosen = ['random', 'm_n'] if experiment else list(PAPER_PARTS)
  return tuple(ALL_CLASSES if name == 'random_filters' and all_classes
               else PAPER_PARTS[name].format(seed=seed) for name in chosen)


def paper_study(arg: str | None, **fields) -> ml_collections.ConfigDict:
  """A config file's whole-paper study on Fashion-MNIST (PAPER_PARTS, target
  B) with `fields` (model, solver) set; its arguments: seed=, split=,
  experiment=, all_classes (paper_parts) and runlocal."""
  args = parse_arg(arg, seed=0, split='', experiment='', all_classes=False,
                   runlocal=False)
  c = base_config()
  apply_dataset(c, 'fashion_mnist')
  c.experiment, c.split = '', ''
  c.parts = paper_parts(args.seed, args.split, args.experiment, args.all_classes)
  c.targets = ('B',)
  c.update(fields)
  if args.runlocal:
    apply_runlocal(c)
  return c


def apply_runlocal(c: ml_collections.ConfigDict) -> None:
  c.update(RUNLOCAL)
  c.analysis.train_examples = max(c.analysis.train_examples,
                                  10 * MANY_CLASSES.get(c.dataset, 0))


def parse_arg(arg: str | None, **spec) -> ml_collections.ConfigDict:
  """big_vision's `key=value,flag` config arguments, typed by `spec`'s defaults.

  A bare `flag` sets a boolean to True. Unknown keys are an error.
  """
  out = dict(spec)
  for item in filter(None, (arg or '').split(',')):
    key, eq, value = item.partition('=')
    key = key.strip()
    if key not in spec:
      raise UserError(f'Unknown config argument {key!r} in {arg!r}; known: '
                      f'{", ".join(sorted(spec))} (form: key=value,flag).')
    default = spec[key]
    if not eq:
      if not isinstance(default, bool):
        raise UserError(f'Config argument {key!r} needs a value: {key}=...')
      out[key] = True
    elif isinstance(default, bool):
      if value.lower() not in ('true', 'false', '1', '0'):
        raise UserError(f'Config argument {key}={value!r} must be true or false.')
      out[key] = value.lower() in ('true', '1')
    elif isinstance(default, int):
      try:
        out[key] = int(value)
      except ValueError:
        raise UserError(f'Config argument {key}={value!r} must be an integer.') from None
    else:
      out[key] = value
  return ml_collections.ConfigDict(out)
