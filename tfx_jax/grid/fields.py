"""Each config field's own range, checked before JAX is imported: the CLI
refuses a bad value in a fraction of a second, where importing JAX and
tracing the model take seconds. The checks that need the model, the data or
the devices are in `checks`."""

from __future__ import annotations

import math

import ml_collections

from tfx_jax import config as config_lib
from tfx_jax.errors import UserError
from tfx_jax.grid import experiments

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


def check(c: ml_collections.ConfigDict) -> None:
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
      ('analysis.max_features', c.analysis.max_features >= 16, '16 or more', 4096),
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
  for name, example in (('precision', 'float32'), ('frozen_norm', 'running'),
                        ('schedule', 'step')):
    if c[name] not in config_lib.CHOICES[name]:
      raise UserError(f'config.{name} must be one of {", ".join(config_lib.CHOICES[name])}, '
                      f'got {c[name]!r}; e.g. --config.{name}={example}.')
