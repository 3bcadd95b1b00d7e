"""The shift experiment's runs (docs/shift/): which group to tune for a shift.

Each shift is a split 'shift:<shift>' (task A the clean dataset or
subpopulation's source side, B the shifted target); its runs copy every group
and the head from the source base, whose label space the target shares.
"""

from __future__ import annotations

from collections.abc import Sequence

from tfx_jax.errors import UserError
from tfx_jax.grid import experiments
from tfx_jax.models.plan import TRANSFERRED, ZERO, GroupPlan, Plan


def plan(spec: experiments.RunSpec, num_groups: int, tune, total_steps: int):
  """A shift run's plan: every group and the head from the source base
  (scratch: none); surgical trains group n alone (n = L + 1: the head alone),
  no_adapt nothing, the others everything."""
  t, n = spec.treatment, spec.n
  if t in ('base', 'scratch'):
    return Plan(tuple(GroupPlan() for _ in range(num_groups)))
  trains = [t != 'no_adapt' and (t != 'surgical' or g == n) for g in range(1, num_groups + 2)]
  decay = TRANSFERRED if t == 'l2sp' else ZERO
  *groups, head = [GroupPlan(spec.source, x, decay_toward=decay) for x in trains]
  if t == 'lp_ft':
    probe = min(max(round(tune.probe_fraction * total_steps), 1), total_steps - 1)
    return Plan(tuple(groups), head, probe_steps=max(probe, 0))
  l2sp = (float(tune.l2sp_alpha), float(tune.l2sp_beta)) if t == 'l2sp' else None
  return Plan(tuple(groups), head, l2sp=l2sp)


def grid(split: str, seeds: Sequence[int], layers: Sequence[int], only: Sequence[str],
         num_groups: int, sizes: Sequence[int]) -> list[experiments.RunSpec]:
  """The shift experiment's runs of one shift (split 'shift:<shift>'): its
  source base per seed, no_adapt (once: it trains nothing), and per target
  size scratch, full_ft, surgical n in `layers` (1..L + 1; empty: all), lp_ft
  and l2sp (every group copied: n = L)."""
  chosen = [t for t in experiments.EXPERIMENTS['shift'] if not only or t in only]
  layers = tuple(layers) or tuple(range(1, num_groups + 2))
  bad = [n for n in layers if isinstance(n, bool) or not isinstance(n, int)
         or not 1 <= n <= num_groups + 1]
  if bad:
    raise UserError(f'config.layers has {bad}: in the shift experiment n is the group '
                    f'surgical fine-tuning tunes, 1..{num_groups}, or {num_groups + 1} for '
                    f'the head alone.')
  run, runs = experiments.RunSpec, []
  for seed in seeds:
    if 'no_adapt' in chosen:
      runs.append(run(split, 'no_adapt', 'A', 'B', num_groups, seed))
    for size in sizes:
      for t in chosen:
        if t in ('base', 'no_adapt'):
          continue
        for n in (sorted(set(layers)) if t == 'surgical' else
                  (0,) if t == 'scratch' else (num_groups,)):
          runs.append(run(split, t, '' if t == 'scratch' else 'A', 'B', n, seed, size))
  bases = {r.base for r in runs if r.base}
  if 'base' in chosen:
    bases |= {run(experiments.shift_source(split), 'base', 'A', 'A', 0, s) for s in seeds}
  return sorted(bases, key=lambda r: (r.seed, r.split)) + runs

