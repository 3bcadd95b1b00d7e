"""Paired comparisons of runs, and the paper's six findings as rules over them.

Every comparison pairs a run with its reference network: the one trained on the
run's target half, in the same split, with the same seed (the base for "AnB -
base", the BnB+ at the same n for "AnB+ - BnB+"). When that network is missing
the mean over the reference's other seeds stands in. Differences are in
accuracy units (0.01 = 1 point of top-1) and printed in points ("%").

Each rule states its threshold in `RULES`, built from the constants below, so
the text the report prints and the code that decides cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from tfx_jax.experiments import LABELS
from tfx_jax.results import Result

FAMILY_NAMES = {'random': 'random split', 'm_n': 'm/n split',
                'all': 'all-classes task'}

# The smallest difference called real: 1 point of top-1, or N_SE standard
# errors of the paired mean when several seeds give a spread and that is larger.
TOLERANCE = 0.01
N_SE = 2.0
EARLY_LAYERS = (1, 2)         # finding 1: where AnB should match base
LATE_LAYERS = (3, 4, 5, 6, 7)  # finding 1: where AnB should fall
DIP_LAYERS = (3, 4, 5)        # finding 2: BnB's co-adaptation dip
RECOVERY_LAYERS = (6, 7)      # finding 2: and its recovery
DROP_LAYERS = (4, 5, 6, 7)    # finding 5: where the m/n drop should be larger

SINGLE_SEED = '(single seed: verdict from means, no spread)'
_TOL_TEXT = (f'tolerance = max({100 * TOLERANCE:.0f} point, {N_SE:g} standard '
             f'errors of the paired mean; 1 point alone with a single seed)')


def _layers(ns: Sequence[int]) -> str:
  return f'{ns[0]}-{ns[-1]}' if len(ns) > 1 else str(ns[0])


CLAIMS = {
    1: 'AnB ~ base for n = 1, 2, then falls as n grows (specificity).',
    2: 'BnB dips for n = 3-5 and recovers at 6-7 (co-adaptation in the middle).',
    3: 'BnB+ ~ base everywhere: fine-tuning repairs the co-adaptation loss.',
    4: 'AnB+ > base for every n: transfer plus fine-tuning generalises better.',
    5: 'The drop of AnB grows faster for the dissimilar (m/n) split.',
    6: 'Transferred features, even from a distant task, beat random frozen '
       'filters.',
}
RULES = {
    1: (f'AnB - base is not below -tolerance at n = {_layers(EARLY_LAYERS)}, is '
        f'below -tolerance at some n in {_layers(LATE_LAYERS)}, and the '
        f'least-squares slope of AnB - base over n is negative; {_TOL_TEXT}.'),
    2: (f'The lowest BnB - base over n = {_layers(DIP_LAYERS)} is below '
        f'-tolerance, and the highest over n = {_layers(RECOVERY_LAYERS)} is '
        f'above that dip by more than the tolerance of the difference; '
        f'{_TOL_TEXT}.'),
    3: f'|BnB+ - base| <= tolerance at every n present; {_TOL_TEXT}.',
    4: (f'Mean AnB+ - base > 0 at every n present; the evidence also counts '
        f'the n where the gain exceeds {N_SE:g} standard errors.'),
    5: (f'The mean of (m/n AnB - base) - (random-split AnB - base) over the n in '
        f'{_layers(DROP_LAYERS)} present in both is below -tolerance; AnB pools '
        f'both directions (AnB, BnA); {_TOL_TEXT}.'),
    6: ('Mean transfer AnB - base > mean random frozen - base at every n present '
        'in both, each against its own base (AnB from the m/n split when '
        'present, else the random split; random frozen against the base on all '
        'classes).'),
}


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


def _seeds(*gap_dicts: Mapping[int, Gap]) -> frozenset[int]:
  return frozenset().union(*(g.seeds for d in gap_dicts for g in d.values()))


def _margin(gap: Gap, spread: bool) -> float:
  return max(TOLERANCE, N_SE * gap.se) if spread else TOLERANCE


def _by_n(gaps: Mapping[int, Gap]) -> str:
  return ', '.join(f'{n}: {pct(g.mean)}' for n, g in sorted(gaps.items()))


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
  id: int
  holds: bool | None
  evidence: str

  def as_dict(self) -> dict:
    return {'id': self.id, 'claim': CLAIMS[self.id], 'holds': self.holds,
            'evidence': self.evidence, 'rule': RULES[self.id]}


def why_missing(runs: Sequence[Result], family: str | None, treatment: str,
             against: str = 'base') -> str:
  """Why compare(runs, treatment, family, against) is empty, in words."""
  if family is None:
    return 'no runs on a random or m/n split'
  where = FAMILY_NAMES[family]
  if not select(runs, treatment, family):
    return f'no {_name(treatment)} runs on the {where}'
  return (f'no {_name(against)} runs on the {where} to compare '
          f'{_name(treatment)} with')


def _name(treatment: str) -> str:
  label = LABELS[treatment]
  return label if label == treatment else f'{label} ({treatment})'


def _in_ranges(runs: Sequence[Result], family: str | None, finding: int):
  """For finding 1 or 2: `treatment - base` by n, its n in the two ranges the
  rule compares, and why the finding is not testable (None when it is)."""
  treatment, first, second = {1: ('transfer', EARLY_LAYERS, LATE_LAYERS),
                              2: ('selffer', DIP_LAYERS, RECOVERY_LAYERS)}[finding]
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


def specificity(runs: Sequence[Result], family: str | None) -> Finding:
  """Finding 1."""
  gaps, early, late, untestable = _in_ranges(runs, family, 1)
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
      f'{early}', fell_text, f'trend {pct(slope)} per layer']))


def co_adaptation(runs: Sequence[Result], family: str | None) -> Finding:
  """Finding 2."""
  gaps, dip_ns, rec_ns, untestable = _in_ranges(runs, family, 2)
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
      f'the dip (needs > {100 * needed:.2f}%)']))


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
      f'by n: {_by_n(gaps)}']))


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
      f'by n: {_by_n(gaps)}']))


def dissimilar_drop(runs: Sequence[Result]) -> Finding:
  """Finding 5."""
  m_n, rand = compare(runs, 'transfer', 'm_n'), compare(runs, 'transfer', 'random')
  common = [n for n in DROP_LAYERS if n in m_n and n in rand]
  if not common:
    why = []
    for family, gaps in (('m_n', m_n), ('random', rand)):
      if not gaps:
        why.append(why_missing(runs, family, 'transfer'))
    if not why:
      why.append(f'no n in {_layers(DROP_LAYERS)} present in both splits '
                 f'(m/n n = {sorted(m_n)}, random n = {sorted(rand)})')
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
  return Finding(5, gap < -needed, evidence)


def beats_random_filters(runs: Sequence[Result]) -> Finding:
  """Finding 6."""
  frozen = compare(runs, 'random_frozen', 'all')
  family = 'm_n' if compare(runs, 'transfer', 'm_n') else 'random'
  transfer = compare(runs, 'transfer', family)
  common = sorted(set(frozen) & set(transfer))
  if not common:
    why = []
    if not frozen:
      why.append(why_missing(runs, 'all', 'random_frozen'))
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
  evidence = (f'[AnB on the {FAMILY_NAMES[family]}] AnB - base above random '
              f'frozen - base at {len(wins)}/{len(common)} n; AnB minus random '
              f'frozen (each against its base) by n: {margins}; AnB - base by '
              f'n: {_by_n(transfer)}; random frozen - base by n: '
              f'{_by_n(frozen)}; {_runs_note(transfer, frozen)}.')
  return Finding(6, len(wins) == len(common), evidence)


def primary_family(runs: Iterable[Result]) -> str | None:
  """The split family of findings 1-4, Figure 2 and Table 1: random, else m/n."""
  families = {r.family for r in runs}
  return next((f for f in ('random', 'm_n') if f in families), None)


def evaluate(runs: Sequence[Result]) -> list[Finding]:
  """The six findings, ids 1..6, in order."""
  family = primary_family(runs)
  return [specificity(runs, family), co_adaptation(runs, family),
          fine_tuning_repairs(runs, family), transfer_generalises(runs, family),
          dissimilar_drop(runs), beats_random_filters(runs)]
