"""The paper's solver as an optax partition over freeze labels, and schedules;
L2-SP's decay toward the starting values, layer-wise learning rates and
LP-FT's two phases as optax transforms (models/plan.py makes their labels)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from tfx_jax.models import plan as plan_lib
from tfx_jax.models.plan import ANCHORED
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


class _AnchorState(NamedTuple):
  anchor: Any  # The parameters' values when the optimizer was initialised.


def decay_toward_init(rate: float) -> optax.GradientTransformation:
  """g + rate * (w - w0), w0 the parameters at `init`: L2-SP's gradient of
  rate / 2 ||w - w0||^2. Initialised on a transplanted network, w0 are the
  transferred values; they live in the optimizer state (checkpointed with it)."""

  def init(params):
    return _AnchorState(jax.tree.map(jnp.copy, params))

  def update(updates, state, params=None):
    if params is None:
      raise ValueError('decay_toward_init needs the parameters.')
    return jax.tree.map(lambda g, w, w0: g + rate * (w - w0), updates, params,
                        state.anchor), state

  return optax.GradientTransformation(init, update)


def scale_per_leaf(multipliers) -> optax.GradientTransformation:
  """Each leaf's update times its multiplier (a tree of numbers like the params):
  layer-wise learning rates. Exact for the Caffe SGD above, whose momentum is
  linear in the learning rate."""
  return optax.stateless(
      lambda updates, params=None: jax.tree.map(lambda u, m: u * m, updates, multipliers))


class PhasedState(NamedTuple):
  count: jax.Array
  first: Any
  second: Any


def phased(first: optax.GradientTransformation, second: optax.GradientTransformation,
           switch_step: int) -> optax.GradientTransformation:
  """`first` for the first `switch_step` updates, then `second` from its own
  fresh state (LP-FT: a probe of the head, then fine-tuning everything). Both
  states are always held, so a checkpoint has one layout in either phase."""

  def init(params):
    return PhasedState(jnp.zeros([], jnp.int32), first.init(params), second.init(params))

  def update(updates, state, params=None):
    def run_first(_):
      out, new = first.update(updates, state.first, params)
      return out, new, state.second

    def run_second(_):
      out, new = second.update(updates, state.second, params)
      return out, state.first, new

    out, one, two = jax.lax.cond(state.count < switch_step, run_first, run_second, None)
    return out, PhasedState(state.count + 1, one, two)

  return optax.GradientTransformation(init, update)


def make_optimizer(labels, schedule: optax.Schedule, *, momentum: float = 0.9,
                   weight_decay: float = 5e-4, bias_lr_mult: float = 2.0,
                   l2sp: tuple[float, float] | None = None,
                   lr_multipliers=None) -> optax.GradientTransformation:
  """optax.partition over `labels` (see surgery.freeze_labels, plan.tune_labels).

  Frozen leaves get zero updates and keep no optimizer state; biases get
  bias_lr_mult x the learning rate and no weight decay (PAPER.md: 2x, none);
  'no_decay' leaves (normalisation scales) the learning rate and no weight
  decay. A label no leaf has gets no transform, so no state either.
  `l2sp` = (alpha, beta): 'anchored' weights decay with alpha toward their
  values at init, the other weights with beta toward zero (instead of
  `weight_decay`). `lr_multipliers`: a tree of each leaf's learning-rate
  multiplier (plan.lr_multipliers), None for all 1.
  """
  decay = weight_decay if l2sp is None else l2sp[1]
  transforms = {
      FROZEN: optax.set_to_zero(),
      WEIGHTS: _caffe_sgd(schedule, momentum, decay),
      BIASES: _caffe_sgd(lambda s: bias_lr_mult * schedule(s), momentum, 0.0),
  }
  present = set(jax.tree.leaves(labels))
  if NO_DECAY in present:
    transforms[NO_DECAY] = _caffe_sgd(schedule, momentum, 0.0)
  if ANCHORED in present:
    if l2sp is None:
      raise ValueError("Leaves labelled 'anchored' need l2sp=(alpha, beta).")
    transforms[ANCHORED] = optax.chain(decay_toward_init(l2sp[0]),
                                       _caffe_sgd(schedule, momentum, 0.0))
  optimizer = optax.partition(transforms, labels)
  if lr_multipliers is None:
    return optimizer
  return optax.chain(optimizer, scale_per_leaf(lr_multipliers))


def plan_optimizer(params, names, plan: plan_lib.Plan, schedule: optax.Schedule,
                   **solver) -> optax.GradientTransformation:
  """make_optimizer for a run's plan (models/plan.py) over `params`, whose
  ordered transferable groups are `names`: its labels, L2-SP and learning-rate
  multipliers; with probe steps (LP-FT), `phased`: the head alone, then every
  group that trains, from a fresh optimizer state on the same schedule.
  `solver`: make_optimizer's momentum, weight_decay, bias_lr_mult."""
  multipliers = plan_lib.lr_multipliers(params, names, plan)

  def make(schedule, frozen=None):
    return make_optimizer(plan_lib.tune_labels(params, names, plan, frozen=frozen), schedule,
                          l2sp=plan.l2sp, lr_multipliers=multipliers, **solver)

  if not plan.probe_steps:
    return make(schedule)
  probe = plan.probe_steps
  return phased(make(schedule, plan.probe_frozen(names)),
                make(lambda count: schedule(count + probe)), probe)
