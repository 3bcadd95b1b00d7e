"""Every check of a job's config, once, before anything runs or is written:
the dataset, the model's groups, the splits, the batch against the devices,
the sweep shard and the study the grid makes."""

from __future__ import annotations

import ml_collections

from tfx_jax.data import datasets, splits
from tfx_jax.errors import UserError
from tfx_jax.grid import experiments
from tfx_jax.models import registry


def validate(c: ml_collections.ConfigDict, num_devices: int,
             num_processes: int) -> tuple[str, ...]:
  """Every check of a config, once, before anything runs; UserError on the first
  problem. `num_devices` and `num_processes`: of the whole job. Returns the
  model's ordered transferable groups, which the checks need."""
  spec = datasets.dataset_spec(c.dataset)
  groups = registry.transferable_groups(c.model, spec.image_shape,
                                        experiments.names(c.layer_groups))
  for _, split, _ in experiments.parts(c):
    if split != experiments.ALL:
      splits.resolve(split, c.dataset, spec.num_classes)
  for name in ('batch_size', 'eval_batch_size'):
    if c[name] % num_devices:
      raise UserError(f'{name} {c[name]} is not divisible by the {num_devices} '
                      f'devices; use a multiple of {num_devices}.')
  if c.batch_size % num_processes:
    raise UserError(f'batch_size {c.batch_size} is not divisible by the '
                    f'{num_processes} processes.')
  if not 0 <= c.sweep.shard < c.sweep.num_shards:
    raise UserError(f'sweep.shard must be in 0..{c.sweep.num_shards - 1} '
                    f'(sweep.num_shards - 1), got {c.sweep.shard}.')
  experiments.study(c, len(groups))
  return groups
