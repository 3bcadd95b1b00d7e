"""Every check of a job's config, once, before anything runs or is written:
each field's range, the dataset, the model's groups, the splits, the batch
against the devices, the sweep shard and the study the grid makes; then the
data, the pretrained bases, the workdir and its lock (`prepare`)."""

from __future__ import annotations

import math

import jax
import ml_collections

from tfx_jax import config as config_lib
from tfx_jax import files
from tfx_jax.data import input_pipeline, tasks
from tfx_jax.data.sources import reader
from tfx_jax.errors import UserError
from tfx_jax.grid import experiments, lock, pretrained
from tfx_jax.grid.workdir import Workdir
from tfx_jax.models import optim, registry
from tfx_jax.training import precision

# Fields that count something: at least 1 (keep_checkpoints too: the final
# checkpoint is what transplants read), or at least 0.
AT_LEAST_1 = ('batch_size', 'eval_batch_size', 'total_steps', 'lr_step', 'eval_every',
              'log_every', 'checkpoint_every', 'keep_checkpoints', 'sweep.num_shards',
              'analysis.train_examples', 'analysis.probe_steps')
AT_LEAST_0 = ('eval_examples', 'warmup_steps')


def _field(c: ml_collections.ConfigDict, name: str):
  value = c
  for key in name.split('.'):
    value = value[key]
  return value


def fields(c: ml_collections.ConfigDict) -> None:
  """Each field's own range, one UserError naming the field and a valid value."""
  for names, low in ((AT_LEAST_1, 1), (AT_LEAST_0, 0)):
    for name in names:
      value = _field(c, name)
      if value < low:
        raise UserError(f'config.{name} must be {low} or more, got {value}; e.g. '
                        f'--config.{name}={max(low, _field(config_lib.base_config(), name))}.')
  for name, ok, rule, example in (
      ('lr', c.lr > 0 and math.isfinite(c.lr), 'a positive number', 0.01),
      ('lr_gamma', c.lr_gamma > 0 and math.isfinite(c.lr_gamma), 'a positive number', 0.1),
      ('momentum', 0 <= c.momentum < 1, 'in [0, 1)', 0.9),
      ('weight_decay', 0 <= c.weight_decay < math.inf, '0 or more', 5e-4),
      ('bias_lr_mult', 0 <= c.bias_lr_mult < math.inf, '0 or more', 2),
      ('num_workers', c.num_workers >= -1, '-1 (auto), 0 or more', -1),
      ('device_prefetch', c.device_prefetch >= 0, '0 or more', 2),
      ('sweep.wait_minutes', c.sweep.wait_minutes > 0, 'a positive number', 60),
      ('sweep.poll_seconds', c.sweep.poll_seconds > 0, 'a positive number', 30),
      # CKA's unbiased HSIC needs minibatches of 4 or more.
      ('analysis.batch_size', c.analysis.batch_size >= 4, '4 or more', 250),
      ('analysis.eval_examples', c.analysis.eval_examples >= 4, '4 or more', 1000),
      ('tune.probe_fraction', 0 < c.tune.probe_fraction < 1, 'in (0, 1)', 0.5),
      ('tune.l2sp_alpha', 0 <= c.tune.l2sp_alpha < math.inf, '0 or more', 0.1),
      ('tune.l2sp_beta', 0 <= c.tune.l2sp_beta < math.inf, '0 or more', 0.01),
      ('tune.layer_decay', 0 < c.tune.layer_decay <= 1, 'in (0, 1]', 0.75)):
    if not ok:
      raise UserError(f'config.{name} must be {rule}, got {_field(c, name)}; e.g. '
                      f'--config.{name}={example}.')
  experiments.wise_alphas(c)
  if c.get('image_size') is not None and not 8 <= c.image_size <= 4096:
    raise UserError(f'config.image_size must be 8..4096 (or unset), got {c.image_size}; '
                    f'e.g. --config.image_size=32.')
  if not (isinstance(c.axis_name, str) and c.axis_name.isidentifier()):
    raise UserError(f'config.axis_name must be a name, got {c.axis_name!r}; e.g. '
                    f'--config.axis_name=batch.')
  if c.precision not in precision.NAMES:
    raise UserError(f'config.precision must be one of {", ".join(precision.NAMES)}, got '
                    f'{c.precision!r}; e.g. --config.precision=float32.')
  if c.schedule not in optim.SCHEDULES:
    raise UserError(f'config.schedule must be one of {", ".join(optim.SCHEDULES)}, got '
                    f'{c.schedule!r}; e.g. --config.schedule=step.')


def validate(c: ml_collections.ConfigDict, num_devices: int,
             num_processes: int) -> tuple[str, ...]:
  """Every check of a config, once, before anything runs; UserError on the first
  problem. `num_devices` and `num_processes`: of the whole job. Returns the
  model's ordered transferable groups, which the checks need."""
  fields(c)
  for name in ('data_dir', 'source_data_dir', 'data_cache_dir'):
    if c.get(name):
      files.check_path(c[name], f'--config.{name}')
  if c.get('data_cache_dir') and not files.is_local(c.data_cache_dir):
    raise UserError(f'config.data_cache_dir must be a local directory, got '
                    f'{c.data_cache_dir!r}; e.g. --config.data_cache_dir=/mnt/disk/data.')
  model_input = tasks.model_input(c)
  groups = registry.transferable_groups(c.model, model_input.image_shape,
                                        experiments.names(c.layer_groups), c.axis_name)
  for _, split, _ in experiments.parts(c):
    tasks.resolve(split, c)
  solver = {k: v for k, v in c.source_solver.items() if v is not None}
  if solver and not c.source_dataset:
    raise UserError(f'config.source_solver sets {", ".join(sorted(solver))}, but there '
                    f'is no source dataset: set --config.source_dataset, or leave '
                    f'source_solver unset.')
  if solver:
    source_c = ml_collections.ConfigDict(c.to_dict())
    source_c.update(solver)
    try:
      fields(source_c)
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
