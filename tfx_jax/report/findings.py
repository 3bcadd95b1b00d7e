"""The paper's six findings as rules over paired comparisons (comparisons.py).

Each rule states its threshold in `rules()`, built from the constants below
and the n ranges of `Depth` (the paper's for 7 transferable layers, the same
fractions of any other depth), so the text the report prints and the code
that decides cannot drift apart. Each finding also has one headline
difference (`headlines()`), computed again on
every seed's runs alone: its spread over seeds says whether the difference
exceeds the run-to-run noise (`SPREAD_RULE`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats

from tfx_jax.grid.experiments import LABELS
from tfx_jax.grid.results import Result
from tfx_jax.report.comparisons import (
  FAMILY_NAMES,
  Gap,
  compare,
  frozen_family,
  pct,
  primary_family,
  unit_means,
  why_missing,
)

# The smallest difference called real: 1 point of top-1, or N_SE standard
# errors of the paired mean when several seeds give a spread and that is larger.
TOLERANCE = 0.01
N_SE = 2.0
SINGLE_SEED = '(single seed: verdict from means, no spread)'
_TOL_TEXT = (f'tolerance = max({100 * TOLERANCE:.0f} point, {N_SE:g} standard '
             f'errors of the paired mean; 1 point alone with a single seed)')


def _layers(ns: Sequence[int]) -> str:
  if not ns:
    return 'none'
  return f'{ns[0]}-{ns[-1]}' if len(ns) > 1 else str(ns[0])


@dataclasses.dataclass(frozen=True)
class Depth:
  """The n ranges the rules compare, for L transferable groups: the paper's
  for L = 7 (early 1-2, late 3-7, dip 3-5, recovery 6-7, drop 4-7), the same
  fractions of the depth for any other L."""
  groups: int = 7

  def _upto(self, sevenths: int) -> int:
    return int(math.floor(self.groups * sevenths / 7 + 0.5))

  def _range(self, after: int, upto: int) -> tuple[int, ...]:
    return tuple(range(self._upto(after) + 1, self._upto(upto) + 1))

  @property
  def early(self) -> tuple[int, ...]:  # finding 1: where AnB should match base
    return self._range(0, 2)

  @property
  def late(self) -> tuple[int, ...]:  # finding 1: where AnB should fall
    return self._range(2, 7)

  @property
  def dip(self) -> tuple[int, ...]:  # finding 2: BnB's co-adaptation dip
    return self._range(2, 5)

  @property
  def recovery(self) -> tuple[int, ...]:  # finding 2: and its recovery
    return self._range(5, 7)

  @property
  def drop(self) -> tuple[int, ...]:  # finding 5: where the m/n drop should be larger
    return self._range(3, 7)


CLAIMS = {
    1: 'AnB ~ base for n = 1, 2, then falls as n grows (specificity).',
    2: 'BnB dips for n = 3-5 and recovers at 6-7 (co-adaptation in the middle).',
    3: 'BnB+ ~ base everywhere: fine-tuning repairs the co-adaptation loss.',
    4: 'AnB+ > base for every n: transfer plus fine-tuning generalises better.',
    5: 'The drop of AnB grows faster for the dissimilar (m/n) split.',
    6: 'Transferred features, even from a distant task, beat random frozen '
       'filters.',
}


def rules(d: Depth = Depth()) -> dict[int, str]:
  """Each finding's rule, in words, for the depth `d`."""
  return {
    1: (f'AnB - base is not below -tolerance at n = {_layers(d.early)}, is '
        f'below -tolerance at some n in {_layers(d.late)}, and the '
        f'least-squares slope of AnB - base over n is negative; {_TOL_TEXT}.'),
    2: (f'The lowest BnB - base over n = {_layers(d.dip)} is below '
        f'-tolerance, and the highest over n = {_layers(d.recovery)} is '
        f'above that dip by more than the tolerance of the difference; '
        f'{_TOL_TEXT}.'),
    3: f'|BnB+ - base| <= tolerance at every n present; {_TOL_TEXT}.',
    4: (f'Mean AnB+ - base > 0 at every n present; the evidence also counts '
        f'the n where the gain exceeds {N_SE:g} standard errors.'),
    5: (f'The mean of (m/n AnB - base) - (random-split AnB - base) over the n in '
        f'{_layers(d.drop)} present in both is below -tolerance; AnB pools '
        f'both directions (AnB, BnA); {_TOL_TEXT}.'),
    6: ('Mean transfer AnB - base > mean random frozen - base at every n present '
        'in both, each against its own base (AnB from the m/n split when '
        'present, else the random split; random frozen against the base on all '
        'classes).'),
  }


def headlines(d: Depth = Depth()) -> dict[int, str]:
  """The one difference each finding is about, in points; computed on all
  runs, and again on each seed's runs alone for its spread."""
  return {
    1: f'mean AnB - base over n = {_layers(d.late)}',
    2: f'BnB - base at the dip (lowest of n = {_layers(d.dip)})',
    3: 'mean BnB+ - base over n',
    4: 'mean AnB+ - base over n',
    5: f'(m/n AnB - base) - (random AnB - base), mean over n = {_layers(d.drop)}',
    6: '(AnB - base) - (random frozen - base), mean over n',
  }
SPREAD_RULE = ('beyond the seed spread when the headline difference, computed '
               "on each seed's runs alone, differs from 0 in a two-sided "
               'one-sample t-test at the 5% level: |mean| > t(0.975, k-1) sd / '
               'sqrt(k) over k seeds (k = 3: |mean| > 2.48 sd); with one seed '
               'there is no spread to compare with.')


def _seeds(*gap_dicts: Mapping[int, Gap]) -> frozenset[int]:
  return frozenset().union(*(g.seeds for d in gap_dicts for g in d.values()))


def _margin(gap: Gap, spread: bool) -> float:
  return max(TOLERANCE, N_SE * gap.se) if spread else TOLERANCE


def _by_n(gaps: Mapping[int, Gap]) -> str:
  return ', '.join(f'{n}: {pct(g.mean)}' for n, g in sorted(gaps.items()))


def _mean_over(gaps: Mapping[int, Gap], ns: Sequence[int]) -> float:
  return float(np.mean([gaps[n].mean for n in ns]))


def _slope(gaps: Mapping[int, Gap]) -> float:
  ns = sorted(gaps)
  if len(ns) < 2:
    return 0.0
  return float(np.polyfit(np.array(ns, float), [gaps[n].mean for n in ns], 1)[0])


def _runs_note(*gap_dicts: Mapping[int, Gap]) -> str:
  seeds = _seeds(*gap_dicts)
  ks = sorted({g.k for d in gap_dicts for g in d.values()})
  runs = f'{ks[0]}' if len(ks) == 1 else f'{ks[0]}-{ks[-1]}'
  note = f'{len(seeds)} seed{"s" if len(seeds) != 1 else ""}, {runs} runs per n'
  return f'{note} {SINGLE_SEED}' if len(seeds) <= 1 else note


def _evidence(family: str, gaps: Mapping[int, Gap], parts: Sequence[str]) -> str:
  """'[split family] part; part; ...; runs note.'"""
  return f'[{FAMILY_NAMES[family]}] ' + '; '.join([*parts, _runs_note(gaps)]) + '.'


@dataclasses.dataclass(frozen=True)
class Finding:
  """A verdict, its evidence, and its headline difference with one value per seed."""
  id: int
  holds: bool | None
  evidence: str
  difference: float | None = None  # The headline difference, over all runs.
  per_seed: tuple[float, ...] = ()  # The same on each seed's runs alone.
  rule: str = ''  # rules(depth)[id]
  headline: str = ''  # headlines(depth)[id]

  @property
  def sd(self) -> float | None:
    return float(np.std(self.per_seed, ddof=1)) if len(self.per_seed) > 1 else None

  @property
  def beyond_spread(self) -> bool | None:
    """SPREAD_RULE; None with fewer than two seeds."""
    k = len(self.per_seed)
    if k < 2:
      return None
    mean = abs(float(np.mean(self.per_seed)))
    return bool(mean > stats.t.ppf(0.975, k - 1) * self.sd / math.sqrt(k))

  def as_dict(self) -> dict:
    return {'id': self.id, 'claim': CLAIMS[self.id], 'holds': self.holds,
            'evidence': self.evidence, 'rule': self.rule,
            'headline': self.headline, 'difference': self.difference,
            'per_seed': list(self.per_seed), 'sd_over_seeds': self.sd,
            'beyond_seed_spread': self.beyond_spread}


def _in_ranges(runs: Sequence[Result], family: str | None, finding: int, d: Depth):
  """For finding 1 or 2: `treatment - base` by n, its n in the two ranges the
  rule compares, and why the finding is not testable (None when it is)."""
  treatment, first, second = {1: ('transfer', d.early, d.late),
                              2: ('selffer', d.dip, d.recovery)}[finding]
  gaps, untestable = _against_base(runs, family, treatment)
  ns_first = [n for n in first if n in gaps]
  ns_second = [n for n in second if n in gaps]
  if gaps and not (ns_first and ns_second):
    untestable = (f'not testable: {LABELS[treatment]} - base needs n in '
                  f'{_layers(first)} and in {_layers(second)}; results have n = '
                  f'{sorted(gaps)}.')
  return gaps, ns_first, ns_second, untestable


def _against_base(runs: Sequence[Result], family: str | None, treatment: str):
  """`treatment - base` by n, and why the finding is not testable (None if it is)."""
  gaps = compare(runs, treatment, family) if family else {}
  if gaps:
    return gaps, None
  return gaps, f'not testable: {why_missing(runs, family, treatment)}.'


def specificity(runs: Sequence[Result], family: str | None, d: Depth = Depth()) -> Finding:
  """Finding 1."""
  gaps, early, late, untestable = _in_ranges(runs, family, 1, d)
  if untestable:
    return Finding(1, None, untestable)
  spread = len(_seeds(gaps)) > 1
  near = [n for n in early if gaps[n].mean >= -_margin(gaps[n], spread)]
  fell = [n for n in late if gaps[n].mean < -_margin(gaps[n], spread)]
  slope = _slope(gaps)
  holds = len(near) == len(early) and bool(fell) and slope < 0
  fell_text = (f'below by more than tolerance at n = {fell}' if fell else
               'never below base by more than tolerance')
  return Finding(1, holds, _evidence(family, gaps, [
      f'AnB - base by n: {_by_n(gaps)}',
      f'not below base by more than tolerance at {len(near)}/{len(early)} of n = '
      f'{early}', fell_text, f'trend {pct(slope)} per layer']),
                 _mean_over(gaps, late))


def co_adaptation(runs: Sequence[Result], family: str | None, d: Depth = Depth()) -> Finding:
  """Finding 2."""
  gaps, dip_ns, rec_ns, untestable = _in_ranges(runs, family, 2, d)
  if untestable:
    return Finding(2, None, untestable)
  spread = len(_seeds(gaps)) > 1
  n_dip = min(dip_ns, key=lambda n: (gaps[n].mean, n))
  n_rec = max(rec_ns, key=lambda n: (gaps[n].mean, -n))
  dip, rec = gaps[n_dip], gaps[n_rec]
  recovery = rec.mean - dip.mean
  needed = (max(TOLERANCE, N_SE * math.hypot(dip.se, rec.se)) if spread
            else TOLERANCE)
  dipped = dip.mean < -_margin(dip, spread)
  holds = dipped and recovery > needed
  return Finding(2, holds, _evidence(family, gaps, [
      f'BnB - base by n: {_by_n(gaps)}',
      f'dip at n = {n_dip}: {pct(dip.mean)} ({"below" if dipped else "not below"} '
      f'-{100 * _margin(dip, spread):.2f}%)',
      f'best of n = {rec_ns}: {pct(rec.mean)} at n = {n_rec}, {pct(recovery)} above '
      f'the dip (needs > {100 * needed:.2f}%)']), dip.mean)


def fine_tuning_repairs(runs: Sequence[Result], family: str | None) -> Finding:
  """Finding 3."""
  gaps, untestable = _against_base(runs, family, 'selffer_ft')
  if untestable:
    return Finding(3, None, untestable)
  spread = len(_seeds(gaps)) > 1
  inside = [n for n, g in gaps.items() if abs(g.mean) <= _margin(g, spread)]
  worst = max(gaps, key=lambda n: (abs(gaps[n].mean), -n))
  return Finding(3, len(inside) == len(gaps), _evidence(family, gaps, [
      f'BnB+ within tolerance of base at {len(inside)}/{len(gaps)} n',
      f'largest |BnB+ - base| {100 * abs(gaps[worst].mean):.2f}% at n = {worst} '
      f'(tolerance {100 * _margin(gaps[worst], spread):.2f}%)',
      f'by n: {_by_n(gaps)}']), _mean_over(gaps, sorted(gaps)))


def transfer_generalises(runs: Sequence[Result], family: str | None) -> Finding:
  """Finding 4."""
  gaps, untestable = _against_base(runs, family, 'transfer_ft')
  if untestable:
    return Finding(4, None, untestable)
  above = [n for n, g in gaps.items() if g.mean > 0]
  beyond = [n for n, g in gaps.items() if g.k > 1 and g.mean > N_SE * g.se]
  ns = sorted(gaps)
  mean = float(np.mean([gaps[n].mean for n in ns]))
  per_unit = unit_means(gaps, ns)
  seeds = _seeds(gaps)
  spread = (f'sd {100 * float(np.std(per_unit, ddof=1)):.2f}% over '
            f'{len(per_unit)} paired series, ' if len(per_unit) > 1 else '')
  return Finding(4, len(above) == len(ns), _evidence(family, gaps, [
      f'AnB+ > base at {len(above)}/{len(ns)} n, mean gain {pct(mean)} ({spread}'
      f'{len(seeds)} seed{"s" if len(seeds) != 1 else ""})',
      f'above base by more than {N_SE:g} SE at {len(beyond)}/{len(ns)} n',
      f'by n: {_by_n(gaps)}']), mean)


def dissimilar_drop(runs: Sequence[Result], d: Depth = Depth()) -> Finding:
  """Finding 5."""
  m_n, rand = compare(runs, 'transfer', 'm_n'), compare(runs, 'transfer', 'random')
  common = [n for n in d.drop if n in m_n and n in rand]
  if not common:
    why = []
    for family, gaps in (('m_n', m_n), ('random', rand)):
      if not gaps:
        why.append(why_missing(runs, family, 'transfer'))
    if not why:
      why.append(f'no n in {_layers(d.drop)} present in both splits '
                 f'(m/n n = {sorted(m_n)}, random n = {sorted(rand)})')
    if any(r.family == 'from' for r in runs):
      why.append('it compares two splits of one dataset, and these tasks come from '
                 'two datasets')
    return Finding(5, None, f'not testable: {"; ".join(why)}.')
  spread = len(_seeds(m_n, rand)) > 1
  gap = float(np.mean([m_n[n].mean - rand[n].mean for n in common]))
  se = math.sqrt(sum(m_n[n].se ** 2 + rand[n].se ** 2 for n in common)) / len(common)
  needed = max(TOLERANCE, N_SE * se) if spread else TOLERANCE
  mean_m_n = float(np.mean([m_n[n].mean for n in common]))
  mean_rand = float(np.mean([rand[n].mean for n in common]))
  evidence = (f'mean AnB - base over n = {common}: m/n {pct(mean_m_n)}, random '
              f'{pct(mean_rand)}, difference {pct(gap)} (needs < '
              f'-{100 * needed:.2f}%); trend per layer m/n '
              f'{pct(_slope(m_n))}, random {pct(_slope(rand))}; m/n by n: '
              f'{_by_n(m_n)}; random by n: {_by_n(rand)}; '
              f'{_runs_note(m_n, rand)}.')
  return Finding(5, gap < -needed, evidence, gap)


def beats_random_filters(runs: Sequence[Result]) -> Finding:
  """Finding 6."""
  frozen_on = frozen_family(runs)
  frozen = compare(runs, 'random_frozen', frozen_on)
  family = next((f for f in ('m_n', 'random', 'custom', 'from')
                 if compare(runs, 'transfer', f)), 'random')
  transfer = compare(runs, 'transfer', family)
  common = sorted(set(frozen) & set(transfer))
  if not common:
    why = []
    if not frozen:
      why.append(why_missing(runs, frozen_on, 'random_frozen'))
    if not transfer:
      why.append(why_missing(runs, 'm_n', 'transfer') + ' or ' +
                 why_missing(runs, 'random', 'transfer'))
    if not why:
      why.append(f'no n present in both (AnB n = {sorted(transfer)}, random '
                 f'frozen n = {sorted(frozen)})')
    return Finding(6, None, f'not testable: {"; ".join(why)}.')
  wins = [n for n in common if transfer[n].mean > frozen[n].mean]
  margins = ', '.join(f'{n}: {pct(transfer[n].mean - frozen[n].mean)}'
                      for n in common)
  evidence = (f'[AnB on the {FAMILY_NAMES[family]}, random frozen on the '
              f'{FAMILY_NAMES[frozen_on]}] AnB - base above random frozen - base '
              f'at {len(wins)}/{len(common)} n; AnB minus random frozen (each '
              f'against its base) by n: {margins}; AnB - base by '
              f'n: {_by_n(transfer)}; random frozen - base by n: '
              f'{_by_n(frozen)}; {_runs_note(transfer, frozen)}.')
  return Finding(6, len(wins) == len(common), evidence,
                 float(np.mean([transfer[n].mean - frozen[n].mean for n in common])))


def _evaluate(runs: Sequence[Result], family: str | None, d: Depth) -> list[Finding]:
  return [specificity(runs, family, d), co_adaptation(runs, family, d),
          fine_tuning_repairs(runs, family), transfer_generalises(runs, family),
          dissimilar_drop(runs, d), beats_random_filters(runs)]


def evaluate(runs: Sequence[Result], num_groups: int = 7) -> list[Finding]:
  """The six findings, ids 1..6, in order, each with its per-seed differences;
  `num_groups`: the model's transferable groups (n = 1..num_groups)."""
  d = Depth(num_groups)
  family = primary_family(runs)
  found = _evaluate(runs, family, d)
  seeds = sorted({r.seed for r in runs})
  by_seed = ([_evaluate([r for r in runs if r.seed == seed], family, d) for seed in seeds]
             if len(seeds) > 1 else [])
  texts, heads = rules(d), headlines(d)
  return [dataclasses.replace(
      f, rule=texts[f.id], headline=heads[f.id], per_seed=tuple(
          one[i].difference for one in by_seed if one[i].difference is not None))
          for i, f in enumerate(found)]
