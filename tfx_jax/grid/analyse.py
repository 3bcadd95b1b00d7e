"""What is being transferred, from a workdir's checkpoints (tfx_jax.analysis):
for each split of the transfer experiment and each seed whose bases still
have their final checkpoints,

- probe sets of target B: `analysis.train_examples` train and
  `analysis.eval_examples` eval images, class-balanced, drawn with the seed;
- every layer's features (forward passes only) of baseA, baseB, both at
  their initialisation, and each BnB+ and AnB+ that has its checkpoint;
- CKA (unbiased, minibatch) baseA x baseB layer by layer, baseB against each
  BnB+ and AnB+ at its n, and each base at initialisation against trained;
- for n = 1..L, from baseA's layer-n features of B: a linear probe's top-1,
  LogME, H-score (plain and shrunk), CKA(baseA_n, baseB_n); and baseB's top-1
  with group n reset to its initial values and to fresh random ones;
- each predictor's rank agreement by n with the measured AnB and AnB+
  (results.csv's best10_top1), over the seeds, and the n it would choose.

Target-set sizes other than "all" are not analysed. Nothing is trained and
nothing is written here: `analyse` returns the dict that the report writes
as report/analysis.json (report/analysis.py).
"""

from __future__ import annotations

import json
import os
import time

import jax
import ml_collections

from tfx_jax import config as config_lib
from tfx_jax import files
from tfx_jax.analysis import criticality, forward, transfer
from tfx_jax.data import probe_sets, tasks
from tfx_jax.errors import UserError
from tfx_jax.grid import experiments, results
from tfx_jax.grid.experiments import RunSpec
from tfx_jax.grid.workdir import Workdir
from tfx_jax.models import registry
from tfx_jax.training import checkpoints, steps

# name -> what it is; every one is "higher: more transferable" as a ranking.
PREDICTORS = {
    'probe_top1': "a linear probe's eval top-1 on baseA's layer-n features of B",
    'logme': "LogME of baseA's layer-n features for B's labels",
    'h_score': "H-score of baseA's layer-n features for B's labels",
    'h_score_shrunk': 'H-score with Ledoit-Wolf shrinkage (Ibrahim et al. 2022)',
    'cka_ab': 'CKA between baseA and baseB at layer n, on B images',
    'reinit_top1': "baseB's top-1 with group n reset to its initial values",
    'rerandom_top1': "baseB's top-1 with group n re-randomised",
}
MEASURED = ('transfer', 'transfer_ft')  # AnB and AnB+, by n.
FINE_TUNED = ('selffer_ft', 'transfer_ft')  # BnB+ and AnB+: CKA against baseB.


def config_of(workdir: str) -> ml_collections.ConfigDict:
  """The workdir's config: its config.json over today's defaults (fields added
  since, as `analysis`, take their defaults)."""
  path = os.path.join(workdir, 'config.json')
  if not files.exists(path):
    raise UserError(f'{workdir} has no config.json: give the --workdir of a grid.')
  snapshot = json.loads(files.read_text(path))
  merged = config_lib.base_config().to_dict()
  for key, value in {**config_lib.ADDED_LATER, **snapshot}.items():
    merged[key] = ({**merged[key], **value} if isinstance(value, dict)
                   and isinstance(merged.get(key), dict) else value)
  return ml_collections.ConfigDict(merged)


def groups_of(workdir: str) -> tuple[str, ...]:
  path = os.path.join(workdir, results.GROUPS_FILE)
  if not files.exists(path):
    raise UserError(f'{path} is missing: rerun the main job on {workdir}, which writes it.')
  return tuple(json.loads(files.read_text(path))['groups'])


class _Networks:
  """One split's models and their variables, read from the workdir's checkpoints."""

  def __init__(self, config, workdir: Workdir, split: str, groups, pretrained: set):
    self.config, self.workdir, self.split, self.groups = config, workdir, split, groups
    self.tasks = tasks.resolve(split, config)
    self.image_shape = tasks.model_input(config).image_shape
    self.pretrained = pretrained
    b = self.tasks['B'].data
    preprocess = steps.normalizer(b.mean, b.std)  # What every run on B is fed.
    self.models = {t: registry.create(config.model, len(self.tasks[t].classes),
                                      config.axis_name) for t in ('A', 'B')}
    self.forward, self.initials, self._like = {}, {}, {}
    for target, model in self.models.items():  # One of each for halves of one size.
      if len(self.tasks[target].classes) not in self.forward:
        self.forward[len(self.tasks[target].classes)] = forward.Forward(
            model, groups, preprocess, config.analysis.batch_size, config.precision,
            config.analysis.max_features)

  def forward_of(self, target: str) -> forward.Forward:
    return self.forward[len(self.tasks[target].classes)]

  def initial(self, spec: RunSpec, fold: int = 0) -> dict:
    """The run's initial variables (its init seed), or with fold > 0 another
    draw; kept in `initials` until the caller clears it."""
    if (spec, fold) not in self.initials:
      key = jax.random.PRNGKey(spec.init_seed)
      self.initials[spec, fold] = registry.init_variables(
          self.models[spec.target], jax.random.fold_in(key, fold) if fold else key,
          self.image_shape)
    return self.initials[spec, fold]

  def trained(self, spec: RunSpec) -> dict | None:
    """The run's final variables; None when it is unfinished or has no final
    checkpoint (a resumed copy's newest may be part-way). A pretrained base
    has them once imported, with a result (steps 0) only if its head fit."""
    directory = self.workdir.checkpoint_dir(spec.run_id)
    step, result = checkpoints.final_step(directory), self.workdir.read_result(spec.run_id)
    if step is None or (result is None and spec.run_id not in self.pretrained) or (
        result is not None and result.steps and step != result.steps):
      return None
    if spec.target not in self._like:
      device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
      self._like[spec.target] = jax.tree.map(
          lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
          jax.eval_shape(lambda: registry.init_variables(
              self.models[spec.target], jax.random.PRNGKey(0), self.image_shape)))
    return checkpoints.load_variables(directory, step, self._like[spec.target])


def missing_bases(bases: dict, planned: set) -> str | None:
  """A note on the bases of a seed that have no final variables, or None."""
  absent = [s.run_id for s, v in bases.items() if v is None and s.run_id not in planned]
  unfinished = [s.run_id for s, v in bases.items() if v is None and s.run_id in planned]
  why = ([f'{", ".join(absent)} (not in this grid: config.only and config.targets leave '
          f'it out; the analysis compares base A with base B)'] if absent else [])
  why += ([f'{", ".join(unfinished)} (unfinished, or no final checkpoint: a workdir copied '
           f'without checkpoints; rerun the main job on it to train what is missing)']
          if unfinished else [])
  return f'Not analysed: {"; ".join(why)}.' if why else None


def _seed(net: _Networks, seed: int, ns: list[int], notes: list[str],
          planned: set) -> dict | None:
  """The analysis of one seed of one split, or None (a note) without its bases."""
  c, groups, split = net.config.analysis, net.groups, net.split
  net.initials.clear()  # A seed's own: CaffeNet's are 240 MB each.
  base_a, base_b = (RunSpec(split, 'base', t, t, 0, seed) for t in ('A', 'B'))
  bases = {base_a: net.trained(base_a), base_b: net.trained(base_b)}
  if (note := missing_bases(bases, planned)) is not None:
    notes.append(note)
    return None
  trained = {'A': bases[base_a], 'B': bases[base_b]}
  # A pretrained base B whose head did not fit (no result): its head is the
  # model's initial one, so its top-1s mean nothing.
  headless = base_b.run_id in net.pretrained and net.workdir.read_result(base_b.run_id) is None
  if headless:
    notes.append(f'{base_b.run_id} is pretrained with a head that does not fit task B: '
                 f'its top-1, reinit_top1 and rerandom_top1 are not measured.')
  task = net.tasks['B']
  probe = {part: probe_sets.probe_set(task.data, task.classes, part, examples, seed,
                                      data_dir=task.data_dir,
                                      cache_dir=os.path.join(net.workdir.path, 'labels'))
           for part, examples in (('train', c.train_examples), ('eval', c.eval_examples))}
  fa, fb = net.forward_of('A'), net.forward_of('B')
  a_train = fa.features(trained['A'], probe['train']['image'])
  a_eval = fa.features(trained['A'], probe['eval']['image'])
  b_eval = fb.features(trained['B'], probe['eval']['image'])
  layers = transfer.predictors(a_train, probe['train']['label'], a_eval,
                               probe['eval']['label'], len(task.classes), groups,
                               c.probe_steps)
  cka_ab = transfer.cka(a_eval, b_eval, groups, c.batch_size)
  out = {'probe_examples': {p: int(len(v['label'])) for p, v in probe.items()},
         'feature_widths': {g: int(a_train[g].shape[1]) for g in groups},
         'cka_ab': cka_ab, 'cka_init_trained': {}, 'cka_b_vs': {t: {} for t in FINE_TUNED}}
  for target, spec in (('A', base_a), ('B', base_b)):
    if spec.run_id in net.pretrained:  # Its initialisation is not ours to know.
      continue
    start = net.forward_of(target).features(net.initial(spec), probe['eval']['image'])
    ends = a_eval if target == 'A' else b_eval
    out['cka_init_trained'][target] = transfer.diagonal(
        transfer.cka(start, ends, groups, c.batch_size))
  for n in ns:
    for treatment in FINE_TUNED:
      source = 'B' if treatment.startswith('selffer') else 'A'
      variables = net.trained(RunSpec(split, treatment, source, 'B', n, seed))
      if variables is not None:
        out['cka_b_vs'][treatment][str(n)] = transfer.diagonal(transfer.cka(
            b_eval, fb.features(variables, probe['eval']['image']), groups, c.batch_size))

  def top1(variables) -> float:
    return fb.top1(variables, probe['eval']['image'], probe['eval']['label'])

  fresh = net.initial(base_b, fold=1)  # Another draw of the same initialiser.
  initial = None if base_b.run_id in net.pretrained else net.initial(base_b)
  none = {g: {'trained': None, 'reinit': None, 'rerandom': None} for g in groups}
  critical = none if headless else criticality.criticality(
      top1, trained['B'], initial or fresh, fresh, groups)
  out['base_b_top1'] = critical[groups[0]]['trained']
  for i, group in enumerate(groups):
    layers[group]['cka_ab'] = cka_ab[i][i]
    layers[group]['reinit_top1'] = critical[group]['reinit'] if initial else None
    layers[group]['rerandom_top1'] = critical[group]['rerandom']
  out['layers'] = layers
  return out


def _agreements(seeds: dict, measured: dict, groups, ns: list[int]) -> dict:
  """{predictor: {treatment: agreement}} over the seeds with both numbers at every n."""
  out = {}
  for name in PREDICTORS:
    out[name] = {}
    for treatment, by_seed in measured.items():
      predicted = {s: [seeds[s]['layers'][groups[n - 1]][name] for n in ns]
                   for s in seeds if s in by_seed}
      predicted = {s: v for s, v in predicted.items() if None not in v}
      if predicted and len(ns) >= 3:
        out[name][treatment] = transfer.agreement(
            predicted, {s: by_seed[s] for s in predicted}, ns)
  return out


def analyse(workdir: str, config: ml_collections.ConfigDict | None = None,
            log=lambda line: print(line, flush=True)) -> dict:
  """The analysis of `workdir` (see the module's doc), as a JSON-ready dict."""
  start = time.time()
  config = config or config_of(workdir)
  groups, wd = groups_of(workdir), Workdir(workdir)
  runs, _ = results.read_csv(os.path.join(workdir, 'results.csv'))
  pretrained = set(results.read_pretrained(workdir))
  planned = {s.run_id for s in experiments.study(config, len(groups))}
  # The grid's n (config.layers; all of them when empty).
  ns = sorted(set(config.layers)) or list(range(1, len(groups) + 1))
  out = {'settings': {k: config.analysis[k] for k in ('train_examples', 'eval_examples',
                                                      'probe_steps', 'batch_size',
                                                      'max_features')},
         'groups': list(groups), 'predictors': PREDICTORS, 'splits': {}, 'notes': []}
  splits = [s for e, s, _ in experiments.parts(config) if e == 'transfer']
  for split in splits:
    mine = [r for r in runs if r.split == split and r.examples_per_class == 0
            and r.target == 'B']
    measured = {t: {} for t in MEASURED}
    for t in MEASURED:
      for seed in sorted({r.seed for r in mine}):
        by_n = {r.n: r.best10_top1 for r in mine if r.treatment == t and r.seed == seed}
        if all(n in by_n for n in ns):
          measured[t][seed] = [by_n[n] for n in ns]
    net, seeds = _Networks(config, wd, split, groups, pretrained), {}
    for seed in config.seeds:
      log(f'Analysis: {split}, seed {seed}...')
      if (found := _seed(net, seed, ns, out['notes'], planned)) is not None:
        seeds[seed] = found
    measured = {t: v for t, v in measured.items() if v}
    out['splits'][split] = {
        'seeds': {str(s): v for s, v in seeds.items()},
        'measured': {t: {str(s): v for s, v in by.items()} for t, by in measured.items()},
        'agreement': _agreements(seeds, measured, groups, ns), 'ns': ns}
  if not any(s['seeds'] for s in out['splits'].values()):
    raise UserError(f'Nothing in {workdir} to analyse: '
                    + (' '.join(out['notes']) if out['notes'] else
                       'its config has no transfer experiment (baseA, baseB).'))
  training = sum(r.wall_s for r in runs)
  seconds = time.time() - start
  out['cost'] = {'analysis_s': seconds, 'training_s': training,
                 'ratio': seconds / training if training else None,
                 'devices': f'{jax.device_count()} x {jax.devices()[0].device_kind}'}
  return out

