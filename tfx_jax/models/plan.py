"""A run's plan: for every transferable group and the head, where its values
come from, whether it trains, its learning-rate multiplier and what its weight
decay pulls toward. The paper's treatments (base, BnB, AnB+, random frozen
filters...) and the later tuning methods (surgical fine-tuning, linear probe,
LP-FT, L2-SP, layer-wise learning rates) are plans; the runner, the optimizer
and the train step read nothing else. Everything here is a pure function of
parameter trees and the ordered groups ('conv1', 'a+b', 'encoder/block_0').
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import jax.numpy as jnp
from flax import traverse_util

from tfx_jax.models import surgery

FRESH = 'fresh'  # The run's own initialisation (a base's, random frozen filters').
ZERO, TRANSFERRED = 'zero', 'transferred'  # What weight decay pulls toward.
ANCHORED = 'anchored'  # The label of weights that L2-SP pulls toward their transferred values.


@dataclasses.dataclass(frozen=True)
class GroupPlan:
  """One group's (or the head's) part of a run."""
  values: str = FRESH  # 'A' / 'B': copied from that base; FRESH: the run's own init.
  trains: bool = True
  lr_mult: float = 1.0  # Times the run's learning rate (and the biases' 2x).
  decay_toward: str = ZERO  # TRANSFERRED: L2-SP's alpha toward the copied values.


@dataclasses.dataclass(frozen=True)
class Plan:
  """A run: a GroupPlan per transferable group (in order) and for the head.

  `probe_steps` (LP-FT): the first steps train the head alone, every group
  frozen; then every group marked `trains` trains, with a fresh optimizer.
  `l2sp`: (alpha, beta) when weight decay is L2-SP's (Li et al. 2018):
  alpha / 2 ||w - w0||^2 on weights of groups that decay toward TRANSFERRED,
  beta / 2 ||w||^2 on every other weight, instead of config.weight_decay.
  """
  groups: tuple[GroupPlan, ...]
  head: GroupPlan = GroupPlan()
  probe_steps: int = 0
  l2sp: tuple[float, float] | None = None

  def copied(self, names: Sequence[str], head: Sequence[str] = ()) -> tuple[str, ...]:
    """The paths whose values come from a base; `head` (`outside`'s paths)
    among them when the head's do (the shift experiment's)."""
    return self._paths(names, head, lambda g: g.values != FRESH)

  def frozen(self, names: Sequence[str], head: Sequence[str] = ()) -> tuple[str, ...]:
    """The paths that never train (after the probe steps, for LP-FT)."""
    return self._paths(names, head, lambda g: not g.trains)

  def probe_frozen(self, names: Sequence[str]) -> tuple[str, ...]:
    """The paths frozen during the probe steps: every group."""
    return _paths(names, [True] * len(self.groups))

  def moved(self, names: Sequence[str], head: Sequence[str] = ()) -> tuple[str, ...]:
    """The copied paths that train (WiSE interpolates these: a frozen one
    keeps its base's values, which interpolating would only round)."""
    return self._paths(names, head, lambda g: g.values != FRESH and g.trains)

  def prefix(self, names: Sequence[str]) -> tuple[str, ...]:
    """The paths of the groups below the first that trains, all frozen (the
    feature cache's); every group's when none trains (a linear probe)."""
    first = next((i for i, g in enumerate(self.groups) if g.trains), len(self.groups))
    return _paths(names[:first], [True] * first)

  def _paths(self, names: Sequence[str], head: Sequence[str], chosen) -> tuple[str, ...]:
    paths = _paths(names, [chosen(g) for g in self.groups])
    return paths + (tuple(head) if chosen(self.head) else ())

  def solver_key(self) -> tuple:
    """What the optimizer depends on (not which base the values came from)."""
    groups = tuple(dataclasses.replace(g, values='') for g in (*self.groups, self.head))
    return groups, self.probe_steps, self.l2sp


def _paths(names: Sequence[str], chosen: Sequence[bool]) -> tuple[str, ...]:
  if len(names) != len(chosen):
    raise ValueError(f'The plan has {len(chosen)} groups, the model {len(names)}: {names}.')
  return tuple(p for name, c in zip(names, chosen) if c for p in name.split('+'))


def _group_of(path: str, names: Sequence[str]) -> int | None:
  """The index of the group holding the leaf `path`; None for the head."""
  for i, name in enumerate(names):
    if any(surgery.under(path, p) for p in name.split('+')):
      return i
  return None


def outside(params: Mapping, names: Sequence[str]) -> tuple[str, ...]:
  """The leaf paths of `params` in no group: the head's (and any layer the
  groups leave out, e.g. a final norm), which the head's GroupPlan governs."""
  flat = traverse_util.flatten_dict(surgery.merge(params), sep='/')
  return tuple(p for p in flat if _group_of(p, names) is None)


def _per_leaf(params: Mapping, names: Sequence[str], plan: Plan, fn) -> dict:
  flat = traverse_util.flatten_dict(surgery.merge(params), sep='/')
  out = {}
  for path, _ in flat.items():
    index = _group_of(path, names)
    out[path] = fn(path, plan.head if index is None else plan.groups[index])
  return traverse_util.unflatten_dict(out, sep='/')


def tune_labels(params: Mapping, names: Sequence[str], plan: Plan, *,
                frozen: Sequence[str] | None = None) -> dict:
  """optax partition labels of `plan` for every leaf of `params`:
  surgery.freeze_labels' ('frozen' under the paths that do not train, or
  `frozen` when given: LP-FT's probe steps), with the weights that L2-SP pulls
  toward their transferred values labelled ANCHORED."""
  frozen = plan.frozen(names, outside(params, names)) if frozen is None else tuple(frozen)
  labels = surgery.freeze_labels(params, frozen)
  if plan.l2sp is None:
    return labels
  anchored = traverse_util.flatten_dict(
      _per_leaf(params, names, plan, lambda _, g: g.decay_toward == TRANSFERRED), sep='/')
  flat = traverse_util.flatten_dict(labels, sep='/')
  flat = {p: ANCHORED if label == surgery.WEIGHTS and anchored[p] else label
          for p, label in flat.items()}
  return traverse_util.unflatten_dict(flat, sep='/')


def lr_multipliers(params: Mapping, names: Sequence[str], plan: Plan) -> dict | None:
  """Each leaf's learning-rate multiplier (its group's, the head's for the rest);
  None when every one is 1, so the paper's solver runs exactly as before."""
  if all(g.lr_mult == 1 for g in (*plan.groups, plan.head)):
    return None
  return _per_leaf(params, names, plan, lambda _, g: float(g.lr_mult))


def anchor(params: Mapping, names: Sequence[str], plan: Plan) -> dict:
  """L2-SP's w0: the values of the ANCHORED leaves of `params` (the run's
  starting values: the transferred ones), zero for every other leaf."""
  labels = traverse_util.flatten_dict(tune_labels(params, names, plan), sep='/')
  flat = traverse_util.flatten_dict(surgery.merge(params), sep='/')
  return traverse_util.unflatten_dict(
      {p: v if labels[p] == ANCHORED else jnp.zeros_like(v) for p, v in flat.items()},
      sep='/')


def interpolate(fine_tuned: Mapping, transferred: Mapping, alpha: float,
                layers: Sequence[str]) -> dict:
  """WiSE-FT (Wortsman et al. 2022): every floating leaf under the paths
  `layers` (the copied groups) at (1 - alpha) * transferred + alpha *
  fine_tuned; every other leaf (the head trained from scratch, which has no
  transferred value) as fine-tuned. One tree: params, or one collection of the
  model's variables (the runner interpolates BatchNorm statistics alike)."""
  if not 0 <= alpha <= 1:
    raise ValueError(f'alpha must be in [0, 1], got {alpha}.')
  layers = tuple(layers)
  flat_ft = traverse_util.flatten_dict(surgery.merge(fine_tuned), sep='/')
  flat_tr = traverse_util.flatten_dict(surgery.merge(transferred), sep='/')
  out = {}
  for path, value in flat_ft.items():
    under = any(surgery.under(path, p) for p in layers)
    if under and jnp.issubdtype(value.dtype, jnp.floating):
      if path not in flat_tr or flat_tr[path].shape != value.shape:
        raise ValueError(f'Cannot interpolate {path}: the transferred tree has '
                         f'{getattr(flat_tr.get(path), "shape", "nothing")} there, '
                         f'the fine-tuned {value.shape}.')
      value = (1 - alpha) * flat_tr[path] + alpha * value
    out[path] = value
  return traverse_util.unflatten_dict(out, sep='/')


def wise_curve(variables: Mapping, transferred: Mapping, layers: Sequence[str],
               alphas: Sequence[float], evaluate) -> tuple[tuple[float, float], ...]:
  """(alpha, top-1) of Flax `variables` with every collection's leaves under
  `layers` interpolated toward `transferred`'s (`interpolate`) for each alpha;
  `evaluate(variables)` gives {'top1': ...}."""
  return tuple((float(a), float(evaluate(
      {name: interpolate(tree, transferred[name], a, layers)
       for name, tree in variables.items()})['top1'])) for a in alphas)
