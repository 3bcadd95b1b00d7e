"""The paper's solver as an optax partition over freeze labels, and schedules."""

from __future__ import annotations

import jax
import optax

from tfx_jax.models.surgery import BIASES, FROZEN, NO_DECAY, WEIGHTS

SCHEDULES = ('step', 'cosine', 'constant')


def make_schedule(kind: str, base_lr: float, total_steps: int, *,
                  step_size: int = 100_000, gamma: float = 0.1,
                  warmup_steps: int = 0) -> optax.Schedule:
  """Learning rate by step.

  'step' is Caffe's: base_lr * gamma ** (step // step_size) (PAPER.md: 0.01,
  x0.1 every 100k). 'cosine' decays to 0 at total_steps. An optional linear
  warm-up from 0 precedes either.
  """
  if kind == 'step':
    if step_size < 1:
      raise ValueError(f'step_size must be >= 1, got {step_size}.')
    main = optax.exponential_decay(base_lr, step_size, gamma, staircase=True)
  elif kind == 'cosine':
    main = optax.cosine_decay_schedule(base_lr, max(total_steps - warmup_steps, 1))
  elif kind == 'constant':
    main = optax.constant_schedule(base_lr)
  else:
    raise ValueError(f'Unknown schedule {kind!r}; known: {", ".join(SCHEDULES)}.')
  if warmup_steps <= 0:
    return main
  warmup = optax.linear_schedule(0.0, base_lr, warmup_steps)
  return optax.join_schedules([warmup, main], [warmup_steps])


def _caffe_sgd(schedule: optax.Schedule, momentum: float,
               weight_decay: float) -> optax.GradientTransformation:
  """Caffe's SGD: v = momentum * v - lr * (g + wd * w); w += v.

  The learning rate is applied before the momentum trace (optax.sgd applies it
  after), so a step in the schedule does not rescale the accumulated velocity,
  exactly as in Caffe.
  """
  return optax.chain(
      optax.add_decayed_weights(weight_decay) if weight_decay else optax.identity(),
      optax.scale_by_schedule(lambda step: -schedule(step)),
      optax.trace(decay=momentum),
  )


def make_optimizer(labels, schedule: optax.Schedule, *, momentum: float = 0.9,
                   weight_decay: float = 5e-4,
                   bias_lr_mult: float = 2.0) -> optax.GradientTransformation:
  """optax.partition over `labels` (see surgery.freeze_labels).

  Frozen leaves get zero updates and keep no optimizer state; biases get
  bias_lr_mult x the learning rate and no weight decay (PAPER.md: 2x, none);
  'no_decay' leaves (normalisation scales) the learning rate and no weight
  decay. A label no leaf has gets no transform, so no state either.
  """
  transforms = {
      FROZEN: optax.set_to_zero(),
      WEIGHTS: _caffe_sgd(schedule, momentum, weight_decay),
      BIASES: _caffe_sgd(lambda s: bias_lr_mult * schedule(s), momentum, 0.0),
  }
  if NO_DECAY in jax.tree.leaves(labels):
    transforms[NO_DECAY] = _caffe_sgd(schedule, momentum, 0.0)
  return optax.partition(transforms, labels)
