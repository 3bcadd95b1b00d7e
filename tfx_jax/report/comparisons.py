"""Paired comparisons of runs: each run against its reference network.

A run is paired with the network trained on its target half, in the same
split, with the same seed (the base for "AnB - base", the BnB+ at the same n
for "AnB+ - BnB+"). When that network is missing the mean over the
reference's other seeds stands in. Differences are in accuracy units (0.01 =
1 point of top-1) and printed in points ("%").
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from tfx_jax.grid.experiments import LABELS
from tfx_jax.grid.results import Result

FAMILY_NAMES = {'random': 'random split', 'm_n': 'm/n split',
                'custom': 'custom split', 'from': 'cross-dataset task',
                'all': 'all-classes task'}


@dataclasses.dataclass(frozen=True)
class Gap:
  """Paired differences (or ratios) at one n, one per run, sorted by unit.

  A unit is (split, target half, seed): one series of networks.
  """
  n: int
  values: tuple[float, ...]
  units: tuple[tuple[str, str, int], ...]

  @property
  def k(self) -> int:
    return len(self.values)

  @property
  def mean(self) -> float:
    return float(np.mean(self.values))

  @property
  def sd(self) -> float:
    return float(np.std(self.values, ddof=1)) if self.k > 1 else 0.0

  @property
  def se(self) -> float:
    return self.sd / math.sqrt(self.k)

  @property
  def seeds(self) -> frozenset[int]:
    return frozenset(seed for _, _, seed in self.units)


def select(runs: Iterable[Result], treatment: str, family: str,
           direction: str | None = None) -> list[Result]:
  """The runs of one treatment in one split family; direction 'AB' or 'BA'."""
  chosen = [r for r in runs if r.treatment == treatment and r.family == family]
  if direction is not None:
    chosen = [r for r in chosen if r.source + r.target == direction]
  return sorted(chosen, key=lambda r: r.sort_key)


def values_by_n(runs: Iterable[Result], treatment: str, family: str,
                direction: str | None = None,
                target: str | None = None) -> dict[int, list[float]]:
  """Accuracies of the chosen runs by n, each list sorted."""
  out = defaultdict(list)
  for run in select(runs, treatment, family, direction):
    if target is None or run.target == target:
      out[run.n].append(run.accuracy)
  return {n: sorted(v) for n, v in sorted(out.items())}


def compare(runs: Sequence[Result], treatment: str, family: str, *,
            against: str = 'base', direction: str | None = None,
            ratio: bool = False) -> dict[int, Gap]:
  """Paired `treatment - against` (or `/` when ratio) by n, in one family.

  `against` is 'base' (the base on the run's target half) or a treatment at
  the same n on the target half (e.g. 'selffer_ft'). Runs with no reference
  at all (or, for a ratio, one at 0) are left out.
  """
  exact, pooled = {}, defaultdict(list)
  for ref in select(runs, against, family):
    exact[(ref.split, ref.target, ref.n, ref.seed)] = ref.accuracy
    pooled[(ref.split, ref.target, ref.n)].append(ref.accuracy)
  by_n = defaultdict(list)
  for run in select(runs, treatment, family, direction):
    n_ref = 0 if against == 'base' else run.n
    ref = exact.get((run.split, run.target, n_ref, run.seed))
    if ref is None and (run.split, run.target, n_ref) in pooled:
      ref = float(np.mean(pooled[(run.split, run.target, n_ref)]))
    if ref is None or (ratio and ref == 0):  # A base that learnt nothing has no ratio.
      continue
    value = run.accuracy / ref if ratio else run.accuracy - ref
    by_n[run.n].append(((run.split, run.target, run.seed), value))
  gaps = {}
  for n, pairs in sorted(by_n.items()):
    pairs.sort()
    gaps[n] = Gap(n, tuple(v for _, v in pairs), tuple(u for u, _ in pairs))
  return gaps


def unit_means(gaps: Mapping[int, Gap], ns: Sequence[int]) -> list[float]:
  """Per unit, its mean over `ns`; only units present at every n in `ns`."""
  per_unit = defaultdict(dict)
  for n in ns:
    for unit, value in zip(gaps[n].units, gaps[n].values):
      per_unit[unit][n] = value
  return [float(np.mean([vals[n] for n in ns]))
          for unit, vals in sorted(per_unit.items()) if len(vals) == len(ns)]


def pct(x: float) -> str:
  """Accuracy difference in points, signed: 0.0123 -> '+1.23%'."""
  return f'{100 * x:+.2f}%'


def primary_family(runs: Iterable[Result]) -> str | None:
  """The split family of findings 1-4, Figure 2 and Table 1: random, else m/n,
  else a custom split, else tasks from two datasets."""
  families = {r.family for r in runs}
  return next((f for f in ('random', 'm_n', 'custom', 'from') if f in families), None)


def frozen_family(runs: Iterable[Result]) -> str:
  """The split family of the random frozen filters (finding 6): the paper's
  all-classes task when it has runs, else the random split, else m/n."""
  families = {r.family for r in runs if r.treatment == 'random_frozen'}
  return next((f for f in ('all', 'random', 'm_n', 'custom', 'from') if f in families),
              'all')


def why_missing(runs: Sequence[Result], family: str | None, treatment: str,
                against: str = 'base') -> str:
  """Why compare(runs, treatment, family, against) is empty, in words."""
  if family is None:
    return 'no runs on a random, m/n or custom split, or across datasets'
  where = FAMILY_NAMES[family]
  if not select(runs, treatment, family):
    return f'no {name(treatment)} runs on the {where}'
  return (f'no {name(against)} runs on the {where} to compare '
          f'{name(treatment)} with')


def name(treatment: str) -> str:
  label = LABELS[treatment]
  return label if label == treatment else f'{label} ({treatment})'
