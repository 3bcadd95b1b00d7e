"""The paper's grid of runs as data: one `RunSpec` per network to train."""

from __future__ import annotations

import dataclasses
import re
import zlib
from collections.abc import Sequence

from tfx_jax.data.tasks import ALL, CLEAN, FROM, SHIFT
from tfx_jax.errors import UserError

# name -> (copies layers from a base, first n frozen, notation in figures)
TREATMENTS = {
    'base': (False, False, 'base'),
    'selffer': (True, True, 'BnB'),
    'selffer_ft': (True, False, 'BnB+'),
    'transfer': (True, True, 'AnB'),
    'transfer_ft': (True, False, 'AnB+'),
    'random_frozen': (False, True, 'random frozen'),
    # Which layers to tune, and how (docs/tune.md); each copies from the other
    # half's base, as AnB. Surgical fine-tuning (Lee et al. 2023): every group
    # copied, group n alone (and the head) trains; linear probe: every group
    # copied and frozen (n = L); LP-FT (Kumar et al. 2022): a probe, then AnB+;
    # L2-SP (Li et al. 2018) and layer-wise learning-rate decay (ULMFiT, BEiT): AnB+.
    'surgical': (True, False, 'surgical'),
    'linear_probe': (True, True, 'linear probe'),
    'lp_ft': (True, False, 'LP-FT'),
    'l2sp': (True, False, 'L2-SP'),
    'llrd': (True, False, 'LLRD'),
    # Distribution shifts (docs/shift/): the source base evaluated on the
    # shifted test set; the target trained from scratch; every group and the
    # head copied and all trained. surgical, lp_ft and l2sp copy the head too.
    'no_adapt': (True, True, 'no adapt'),
    'scratch': (False, False, 'scratch'),
    'full_ft': (True, False, 'full FT'),
}
LABELS = {name: label for name, (_, _, label) in TREATMENTS.items()}
TRANSFER_TREATMENTS = ('selffer', 'selffer_ft', 'transfer', 'transfer_ft')
TUNE_TREATMENTS = ('surgical', 'linear_probe', 'lp_ft', 'l2sp', 'llrd')
# Fine-tuned runs that copy groups: each is also evaluated WiSE-interpolated.
WISE_TREATMENTS = ('transfer_ft', 'surgical', 'lp_ft', 'l2sp', 'llrd')
SHIFT_TREATMENTS = ('no_adapt', 'scratch', 'full_ft', 'surgical', 'lp_ft', 'l2sp')
EXPERIMENTS = {'transfer': ('base', *TRANSFER_TREATMENTS),
               'random_filters': ('base', 'random_frozen'),
               'shift': ('base', *SHIFT_TREATMENTS)}
# Treatments an experiment runs only when config.only names them.
ON_REQUEST = {'transfer': TUNE_TREATMENTS}
# ALL ('all'): the paper's task of the random-filters experiment, every class.
# FROM ('from:'): the split of tasks from two datasets, 'from:<source_dataset>'.
# SHIFT ('shift:'): a split of the shift experiment, 'shift:<shift>' (tasks.py).


@dataclasses.dataclass(frozen=True, order=True)
class RunSpec:
  split: str
  treatment: str
  source: str  # 'A' / 'B' (the base the layers come from); '' when none.
  target: str  # 'A' / 'B' / 'all': the classes trained and evaluated on.
  n: int
  seed: int
  # Target-set size: images per class the run trains on (target B); 0: all.
  examples_per_class: int = 0

  @property
  def run_id(self) -> str:
    """Stable, filesystem-safe on every OS, e.g. 'random0-A3B+-s0', 'm_n-baseB-s1',
    'custom0-3,8_4-7,9-A2B-s0' (a custom split's '/' becomes '_'),
    'from_fashion_mnist-A3B-k10-s0' (source dataset; 10 images per class),
    'gaussian_noise5-surgical2-k20-s0', 'clean-baseA-s0' (the shift experiment)."""
    size = f'-k{self.examples_per_class}' if self.examples_per_class else ''
    if self.split.startswith(SHIFT):
      label = {'base': 'baseA', 'surgical': f'surgical{self.n}'}.get(self.treatment,
                                                                     self.treatment)
      name = re.sub(r'[^\w.+-]', '_', self.split[len(SHIFT):].replace(':', ''))
      return f'{name}-{label}{size}-s{self.seed}'
    if self.treatment == 'base':
      label = f'base{self.target}'
    elif self.treatment == 'random_frozen':
      label = f'random{self.n}{self.target}'
    elif self.treatment in TUNE_TREATMENTS:
      label = f'{self.source}{self.n}{self.target}_{self.treatment}'
    else:
      label = f'{self.source}{self.n}{self.target}'
      label += '+' if self.treatment.endswith('_ft') else ''
    split = self.split.replace(':', '_', 1) if self.split.startswith(FROM) else self.split
    split = re.sub(r'[^\w,.+-]', '_', split.replace(':', ''))
    return f'{split}-{label}{size}-s{self.seed}'

  @property
  def copies_base(self) -> bool:
    return TREATMENTS[self.treatment][0]

  def plan(self, num_groups: int, tune=None, total_steps: int = 0):
    """What happens to each of the model's `num_groups` groups and its head
    (models/plan.py's Plan). `tune`: config.tune (probe_fraction, l2sp_alpha,
    l2sp_beta, layer_decay); `total_steps`: the run's, for LP-FT's probe."""
    # Imported here: the report reads this module and never imports JAX.
    from tfx_jax.models.plan import (  # pylint: disable=import-outside-toplevel
        FRESH, TRANSFERRED, GroupPlan, Plan)
    t, n, copies, frozen = self.treatment, self.n, *TREATMENTS[self.treatment][:2]
    values = self.source if copies else FRESH
    if self.split.startswith(SHIFT):  # The head is copied too: the label space is shared.
      from tfx_jax.grid import shift_runs  # pylint: disable=import-outside-toplevel
      return shift_runs.plan(self, num_groups, tune, total_steps)
    groups = [GroupPlan(values if g <= n else FRESH, not (frozen and g <= n))
              for g in range(1, num_groups + 1)]
    if t == 'surgical':
      groups = [GroupPlan(values, g == n) for g in range(1, num_groups + 1)]
    elif t == 'linear_probe':
      groups = [GroupPlan(values, False) for _ in range(num_groups)]
    elif t == 'lp_ft':
      probe = min(max(round(tune.probe_fraction * total_steps), 1), total_steps - 1)
      return Plan(tuple(groups), probe_steps=max(probe, 0))
    elif t == 'l2sp':
      groups = [dataclasses.replace(g, decay_toward=TRANSFERRED) if g.values != FRESH else g
                for g in groups]
      return Plan(tuple(groups), l2sp=(float(tune.l2sp_alpha), float(tune.l2sp_beta)))
    elif t == 'llrd':
      groups = [dataclasses.replace(g, lr_mult=float(tune.layer_decay) ** (num_groups - i))
                for i, g in enumerate(groups, 1)]
    return Plan(tuple(groups))

  @property
  def wise(self) -> bool:
    """Whether the run is also evaluated WiSE-interpolated (config.tune.wise_alphas)."""
    return self.treatment in WISE_TREATMENTS

  @property
  def base(self) -> RunSpec | None:
    """The base run whose layers this run copies, if any."""
    if not self.copies_base:
      return None
    if self.split.startswith(SHIFT):
      return RunSpec(shift_source(self.split), 'base', 'A', 'A', 0, self.seed)
    size = self.examples_per_class if self.source == self.target else 0
    return RunSpec(self.split, 'base', self.source, self.source, 0, self.seed, size)

  @property
  def on_source(self) -> bool:
    """Whether the run trains on the source dataset (config.source_solver's runs)."""
    return self.split.startswith((FROM, SHIFT)) and self.target == 'A'

  @property
  def shift(self) -> str:
    """The shift of the shift experiment's run ('gaussian_noise:5'); '' for
    the clean source base and other experiments."""
    name = self.split[len(SHIFT):] if self.split.startswith(SHIFT) else ''
    return '' if name == CLEAN else name

  @property
  def init_seed(self) -> int:
    """Seed for this run's fresh initialisation and data order: different for
    every run, so re-initialised layers never restart from the base's init."""
    return zlib.crc32(self.run_id.encode()) & 0x7FFFFFFF


def shift_source(split: str) -> str:
  """The split of a shift's source base: subpopulation's own (its source side
  sees other classes), else the clean dataset's, shared by every shift."""
  return split if split.split(':')[1] == 'subpopulation' else SHIFT + CLEAN


def names(values: Sequence[str]) -> tuple[str, ...]:
  """Names from a flag-given tuple: ml_collections reads `--config.only=a,b` or
  `(a,)` as ONE string, so split on commas and drop brackets and quotes."""
  return tuple(part for value in values
               for part in re.split(r'[\s,()\[\]\'"]+', value) if part)


def grid(experiment: str, split: str, seeds: Sequence[int], layers: Sequence[int],
         only: Sequence[str] = (), targets: Sequence[str] = ('B', 'A'),
         num_groups: int = 7, sizes: Sequence[int] = ()) -> list[RunSpec]:
  """Every run, bases first, then by size, seed, n, target and treatment.

  `layers`: the n to run, each in 1..num_groups (the model's transferable
  groups); empty: all of them. Bases needed by a selected transfer are always
  included. `sizes`: target-set sizes (images per class of target B, 0: all),
  one grid each; base A is shared by all of them.
  """
  sizes = tuple(dict.fromkeys(sizes)) or (0,)
  bad = [k for k in sizes if isinstance(k, bool) or not isinstance(k, int) or k < 0]
  if bad:
    raise UserError(f'config.target_examples_per_class has {bad}: each size is a '
                    f'number of images per class, 1 or more (0: all of them).')
  if experiment == 'shift':
    if not seeds:
      raise UserError('config.seeds is empty; give at least one seed, e.g. (0,).')
    from tfx_jax.grid import shift_runs  # pylint: disable=import-outside-toplevel
    return shift_runs.grid(split, seeds, layers, names(only), num_groups, sizes)
  if sizes != (0,) and tuple(names(targets)) != ('B',):
    raise UserError('config.target_examples_per_class sizes the target B: set '
                    '--config.targets=B.')
  runs = []
  for size in sizes:
    runs += [dataclasses.replace(r, examples_per_class=size if r.target == 'B' else 0)
             for r in _grid(experiment, split, seeds, layers, only, targets, num_groups)]
  runs = list(dict.fromkeys(runs))
  bases = [r for r in runs if r.treatment == 'base']
  order = {k: i for i, k in enumerate((*sizes, 0))}  # Base A (size 0) after B's sizes.
  bases.sort(key=lambda r: (r.seed, r.target != 'B', r.target,
                            order[r.examples_per_class]))
  return bases + [r for r in runs if r.treatment != 'base']


def _grid(experiment: str, split: str, seeds: Sequence[int], layers: Sequence[int],
          only: Sequence[str], targets: Sequence[str], num_groups: int) -> list[RunSpec]:
  """grid() of one size."""
  if experiment not in EXPERIMENTS:
    raise UserError(f'Unknown experiment {experiment!r}; known: '
                    f'{", ".join(EXPERIMENTS)}.')
  allowed = EXPERIMENTS[experiment] + ON_REQUEST.get(experiment, ())
  only, targets = names(only), names(targets)
  bad = [t for t in only if t not in allowed]
  if bad:
    raise UserError(f'config.only names {bad}, not treatments of the '
                    f'{experiment!r} experiment; choose from {", ".join(allowed)}.')
  layers = tuple(layers) or tuple(range(1, num_groups + 1))
  bad = [n for n in layers if isinstance(n, bool) or not isinstance(n, int)
         or not 1 <= n <= num_groups]
  if bad:
    groups = '(conv1..fc7; ' if num_groups == 7 else '(the model\'s transferable groups; '
    raise UserError(f'config.layers has {bad}: n must be 1..{num_groups} {groups}'
                    f'n = 0 is the base network).')
  if not seeds:
    raise UserError('config.seeds is empty; give at least one seed, e.g. (0,).')
  chosen = [t for t in allowed if t in only or not only and t in EXPERIMENTS[experiment]]
  if split == ALL:
    if experiment != 'random_filters':
      raise UserError(f'Split {ALL!r} (every class) has no halves to transfer '
                      f'between; use it with experiment random_filters.')
    targets = (ALL,)
  elif not targets or any(t not in ('A', 'B') for t in targets):
    raise UserError(f'config.targets must be a non-empty subset of (B, A), '
                    f'got {tuple(targets)}.')
  runs: list[RunSpec] = []
  for seed in seeds:
    for n in sorted(set(layers)):
      for target in targets:
        for treatment in chosen:
          if treatment == 'base':
            continue
          if treatment == 'random_frozen':
            source = ''
          elif treatment.startswith('selffer'):
            source = target
          else:
            source = 'A' if target == 'B' else 'B'
          # The linear probe tunes no group: one run, n = L, whatever the n.
          at = num_groups if treatment == 'linear_probe' else n
          runs.append(RunSpec(split, treatment, source, target, at, seed))
  runs = list(dict.fromkeys(runs))
  bases = {r.base for r in runs if r.base}
  if 'base' in chosen:
    bases |= {RunSpec(split, 'base', t, t, 0, s) for s in seeds for t in targets}
  return list(bases) + runs


def parse_part(text: str) -> tuple[str, str, tuple[str, ...]]:
  """'experiment/split' or 'experiment/split/treatment+treatment' -> (experiment,
  split, only), e.g. 'transfer/m_n/base+transfer'."""
  fields = text.split('/')
  if not 2 <= len(fields) <= 3 or not all(fields):
    raise UserError(f'config.parts has {text!r}; each part is experiment/split or '
                    f'experiment/split/treatment+treatment, e.g. '
                    f'transfer/m_n/base+transfer or random_filters/{ALL}.')
  return fields[0], fields[1], tuple(fields[2].split('+')) if len(fields) == 3 else ()


def parts(config) -> list[tuple[str, str, tuple[str, ...]]]:
  """The grids a config runs, as (experiment, split, only): each of its `parts`,
  narrowed to the treatments in `only` when that is set, or the one grid that
  its `experiment`, `split` and `only` name."""
  chosen = _parts(config)
  if config.get('source_dataset'):  # Every part's halves are the two datasets.
    split = FROM + config.source_dataset
    chosen = list(dict.fromkeys((e, s if s == ALL else split, o) for e, s, o in chosen))
  return chosen


def _parts(config) -> list[tuple[str, str, tuple[str, ...]]]:
  only = names(config.only)
  if not config.parts and config.experiment == 'shift':
    return [('shift', SHIFT + str(shift), only) for shift in shift_list(config)]
  if not config.parts:
    return [(config.experiment, config.split, only)]
  if config.experiment or config.split:
    raise UserError(
        f'config.parts is set ({", ".join(names(config.parts))}), so '
        f'config.experiment and config.split must be empty: each part names its '
        f'own. Choose parts with the config file\'s arguments '
        f'(configs/default.py:split=m_n), or clear them with --config.parts=().')
  chosen = []
  for experiment, split, part_only in map(parse_part, names(config.parts)):
    treatments = part_only or EXPERIMENTS.get(experiment, ())
    if only:
      treatments += ON_REQUEST.get(experiment, ()) if not part_only else ()
      treatments = tuple(t for t in treatments if t in only)
    if treatments or not only:
      chosen.append((experiment, split, treatments))
  if not chosen:
    raise UserError(f'config.only={only} selects no treatment of any part '
                    f'({", ".join(names(config.parts))}).')
  return chosen


def shift_list(config) -> tuple:
  """config.shifts, parsed (data/shifts.py), for the shift experiment."""
  from tfx_jax.data import shifts  # pylint: disable=import-outside-toplevel  # Loads OpenCV.
  if config.get('source_dataset'):
    raise UserError('The shift experiment shifts one dataset (config.dataset); clear '
                    'config.source_dataset (--config.source_dataset=).')
  given = config.get('shifts') or ''
  given = names(given if isinstance(given, (tuple, list)) else (given,))
  if not given:
    raise UserError('config.experiment=shift needs the shifts: --config.shifts=NAME[:SEVERITY]'
                    ',..., e.g. gaussian_noise:5,subpopulation,permute_labels (docs/shifts.md).')
  return shifts.parse_list(given)


def study(config, num_groups: int = 7) -> list[RunSpec]:
  """Every run of the config's parts: all parts' bases first, then the rest in
  part order, so transplants of any part find their bases trained.
  `num_groups`: the model's transferable groups (n = 1..num_groups)."""
  specs = []
  for experiment, split, only in parts(config):
    for spec in grid(experiment, split, config.seeds, config.layers, only,
                     config.targets, num_groups,
                     config.get('target_examples_per_class', ())):
      if spec not in specs:
        specs.append(spec)
  return ([s for s in specs if s.treatment == 'base']
          + [s for s in specs if s.treatment != 'base'])


def wise_alphas(config) -> tuple[float, ...]:
  """config.tune.wise_alphas as numbers, each in [0, 1]; UserError otherwise."""
  values = config.tune.wise_alphas
  try:
    alphas = tuple(float(a) for a in (names((values,)) if isinstance(values, str) else values))
  except (TypeError, ValueError):
    alphas = ()
  if not alphas or not all(0 <= a <= 1 for a in alphas):
    raise UserError(f'config.tune.wise_alphas must be numbers in [0, 1], got {values!r}; '
                    f'e.g. --config.tune.wise_alphas=0,0.5,1.')
  return tuple(dict.fromkeys(alphas))


def total_steps(config, spec: RunSpec) -> int:
  """The steps `spec` trains for: config.source_solver's on the source dataset."""
  solver = config.source_solver.total_steps
  return (solver or config.total_steps) if spec.on_source else config.total_steps


def selected(specs: list[RunSpec], runs: str) -> list[RunSpec]:
  """The specs `runs` names (space-separated run ids, `config.sweep.runs`), in
  grid order; every spec when it is empty. UserError for an id not in the grid."""
  wanted = set(runs.split())
  if not wanted:
    return specs
  unknown = sorted(wanted - {s.run_id for s in specs})
  if unknown:
    raise UserError(f'config.sweep.runs names {", ".join(unknown)}, not runs of this '
                    f'config\'s grid; give run ids of its results.csv, space-separated, '
                    f'or leave it empty for every run.')
  return [s for s in specs if s.run_id in wanted]


def assign(specs: list[RunSpec], costs: list[int], num_shards: int) -> list[int]:
  """The sweep shard of each run: the bases, costliest first, each to the
  shard with the least base work so far (a source base may cost 20 of the
  target's), then the other runs by `shard_of` their index."""
  shards = [shard_of(i, num_shards) for i in range(len(specs))]
  load = [0] * num_shards
  bases = [i for i, spec in enumerate(specs) if spec.treatment == 'base']
  for i in sorted(bases, key=lambda i: -costs[i]):
    shards[i] = min(range(num_shards), key=lambda k: load[k])
    load[shards[i]] += costs[i]
  return shards


def shard_of(index: int, num_shards: int) -> int:
  """The sweep shard of the grid's index-th run: 0, 1, .., n-1, n-1, .., 0, 0, 1, ..
  Runs come in pairs (frozen, fine-tuned) of unequal cost, which a plain
  round robin over 2 shards would give all to one shard each."""
  k = index % (2 * num_shards)
  return k if k < num_shards else 2 * num_shards - 1 - k
