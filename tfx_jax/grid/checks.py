"""Every check of a job's config, once, before anything runs or is written:
each field's range, the dataset, the model's groups, the splits, the batch
against the devices, the sweep shard and the study the grid makes; then the
data, the pretrained bases, the workdir and its lock (`prepare`)."""

from __future__ import annotations

import jax
import ml_collections
import numpy as np
from flax import traverse_util

from tfx_jax import files
from tfx_jax.data import input_pipeline, tasks
from tfx_jax.data.sources import reader
from tfx_jax.errors import UserError
from tfx_jax.grid import experiments, fields, lock, pretrained
from tfx_jax.grid.workdir import Workdir
from tfx_jax.models import registry

# The analysis's train probe images per class of target B (docs/report.md): with
# one, a class has no spread and H-score is C - 1 at every layer; with a few,
# the probe's top-1 and the scores are noise.
ANALYSIS_PER_CLASS = 10


def validate(c: ml_collections.ConfigDict, num_devices: int,
             num_processes: int) -> tuple[str, ...]:
  """Every check of a config, once, before anything runs; UserError on the first
  problem. `num_devices` and `num_processes`: of the whole job. Returns the
  model's ordered transferable groups, which the checks need."""
  fields.check(c)
  for name in ('data_dir', 'source_data_dir', 'data_cache_dir'):
    if c.get(name):
      files.check_path(c[name], f'--config.{name}')
  if c.get('data_cache_dir') and not files.is_local(c.data_cache_dir):
    raise UserError(f'config.data_cache_dir must be a local directory, got '
                    f'{c.data_cache_dir!r}; e.g. --config.data_cache_dir=/mnt/disk/data.')
  model_input = tasks.model_input(c)
  groups = registry.transferable_groups(c.model, model_input.image_shape,
                                        experiments.names(c.layer_groups), c.axis_name)
  resolved = {split: tasks.resolve(split, c) for _, split, _ in experiments.parts(c)}
  head(c, model_input.image_shape, groups,
       max(len(t.classes) for split in resolved.values() for t in split.values()))
  for experiment, split, _ in experiments.parts(c):
    if experiment == 'transfer' and c.report and c.analysis.run:  # Analysed at the end.
      analysis_sizes(c, split, resolved[split])
  solver = {k: v for k, v in c.source_solver.items() if v is not None}
  if solver and not c.source_dataset and c.experiment != 'shift':
    raise UserError(f'config.source_solver sets {", ".join(sorted(solver))}, but there '
                    f'is no source dataset (nor the shift experiment\'s source base): set '
                    f'--config.source_dataset, or leave source_solver unset.')
  if solver:
    source_c = ml_collections.ConfigDict(c.to_dict())
    source_c.update(solver)
    try:
      fields.check(source_c)
    except UserError as e:
      raise UserError(str(e).replace('config.', 'config.source_solver.')) from None
  batches = [('batch_size', c.batch_size), ('eval_batch_size', c.eval_batch_size)]
  if solver.get('batch_size'):
    batches.append(('source_solver.batch_size', solver['batch_size']))
  for name, value in batches:
    if value % num_devices:
      raise UserError(f'{name} {value} is not divisible by the {num_devices} '
                      f'devices; use a multiple of {num_devices}.')
    if name != 'eval_batch_size' and value % num_processes:
      raise UserError(f'{name} {value} is not divisible by the '
                      f'{num_processes} processes.')
  if not 0 <= c.sweep.shard < c.sweep.num_shards:
    raise UserError(f'sweep.shard must be in 0..{c.sweep.num_shards - 1} '
                    f'(sweep.num_shards - 1), got {c.sweep.shard}.')
  experiments.selected(experiments.study(c, len(groups)), c.sweep.runs)
  return groups


def head(c: ml_collections.ConfigDict, image_shape, groups: tuple[str, ...],
         num_classes: int) -> None:
  """The head (the parameters whose shapes follow the class count) in no
  transferable group, wherever the model keeps it (the registry refuses it as
  the params tree's last entry, and logits that are not [batch, classes]):
  else the runs train and their transplants fail."""
  def built(k):
    model = registry.create(c.model, k, c.axis_name)
    variables = jax.eval_shape(lambda: registry.init_variables(
        model, jax.random.PRNGKey(0), image_shape))
    return traverse_util.flatten_dict(dict(variables['params']), sep='/')

  params, wider = built(num_classes), built(num_classes + 1)
  for group in groups:
    for path in group.split('+'):
      inside = [p for p in params if (p == path or p.startswith(path + '/'))
                and getattr(wider.get(p), 'shape', None) != params[p].shape]
      if inside:
        rest = ','.join(g for g in groups if g != group)
        fix = (f'leave it out, e.g. --config.layer_groups={rest}' if rest else
               'list the layers below it as groups (nested paths as a/b)')
        layer = inside[0].rpartition('/')[0] or inside[0]
        raise UserError(f'Layer group {group!r} holds the head ({layer}, whose shape '
                        f'follows the number of classes), which is never transferred: '
                        f'{fix}.')


def analysis_sizes(c: ml_collections.ConfigDict, split: str, resolved: dict) -> None:
  """At least ANALYSIS_PER_CLASS train probe images per class of target B."""
  if 'B' not in resolved:
    return
  classes = len(resolved['B'].classes)
  if c.analysis.train_examples // classes < ANALYSIS_PER_CLASS:
    raise UserError(f'config.analysis.train_examples={c.analysis.train_examples} gives '
                    f'{max(1, c.analysis.train_examples // classes)} image(s) per class of '
                    f'target B ({classes} classes, split {split}); the analysis needs '
                    f'{ANALYSIS_PER_CLASS} or more to mean something: '
                    f'--config.analysis.train_examples={ANALYSIS_PER_CLASS * classes}, or '
                    f'--config.analysis.run=false.')


def target_sizes(c: ml_collections.ConfigDict) -> None:
  """Each target-set size at most the smallest class of target B's train split,
  whose images it would otherwise all take while recording the size asked."""
  largest = max((int(k) for k in c.target_examples_per_class), default=0)
  if not largest:
    return
  for _, split, _ in experiments.parts(c):
    task = tasks.resolve(split, c).get('B')
    if task is None:
      continue
    _, _, _, _, _, labels = input_pipeline.open_subset(
        task.data, 'train', task.classes, 1, task.data_dir, 0, 1, None)
    counts = np.bincount(labels, minlength=len(task.classes))
    if largest > counts.min():
      smallest = int(task.classes[int(counts.argmin())])
      raise UserError(f'config.target_examples_per_class has {largest}, but class '
                      f'{smallest} of target B ({task.data.name}) holds {counts.min()} '
                      f'train images, the fewest: give sizes up to {counts.min()} '
                      f'(0: all images).')


def prepare(config: ml_collections.ConfigDict, workdir: str, *, write: bool = True,
            this_host: bool = True) -> tuple[str, ...]:
  """What a job checks before it trains (the config, the data, the workdir:
  its path, its config, no other live job on it), one clear error each, before
  anything is written; creates the workdir (unless not `write`) and returns
  the model's transferable groups. `this_host`: also check this machine's
  shared memory for the data workers (not where a job only submits others)."""
  files.check_path(workdir, '--workdir')
  groups = validate(config, jax.device_count(), jax.process_count())
  batch = max(config.batch_size, config.source_solver.batch_size or 0) // jax.process_count()
  for task in {t.data.name: t for split in {s for _, s, _ in experiments.parts(config)}
               for t in tasks.resolve(split, config).values()}.values():
    reader.check_prepared(task.data, task.data_dir)
    if this_host:
      input_pipeline.check_shared_memory(task.data, config.num_workers, batch,
                                         task.data.image_shape, ahead=config.device_prefetch)
  target_sizes(config)
  bases = pretrained.check(config, groups)
  pretrained.check_recorded(workdir, bases)
  if jax.process_index() == 0:
    lock.check_free(workdir, config.sweep.shard, config.sweep.num_shards, config.sweep.runs)
  if not write:
    Workdir(workdir).check(config)
    return groups
  Workdir(workdir).prepare(config, groups)
  if bases and jax.process_index() == 0:
    pretrained.record(workdir, bases)
  if jax.process_index() == 0 and config.sweep.shard == 0:
    how = ('config.layer_groups' if config.layer_groups else
           'the default; --config.layer_groups chooses others')
    print(f'Layer groups, n = 1..{len(groups)} ({how}): {", ".join(groups)}.', flush=True)
  return groups
