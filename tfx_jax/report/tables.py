"""The report's tables as Markdown: Table 1 (AnB+'s gain over its controls),
per-layer generality (AnB / base), and the six findings (findings.md)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tfx_jax import paper_reference as paper
from tfx_jax.grid.experiments import LABELS
from tfx_jax.grid.results import METRIC, Result
from tfx_jax.report import comparisons, over_time
from tfx_jax.report import findings as fnd
from tfx_jax.report.comparisons import FAMILY_NAMES

GENERALITY_THRESHOLDS = (0.99, 0.95, 0.90)


def _split_list(runs: Sequence[Result], family: str | None) -> str:
  return ', '.join(sorted({r.split for r in runs if r.family == family}))


def _range_gain(gaps: dict[int, comparisons.Gap], lo: int, hi: int) -> str:
  ns = [n for n in range(lo, hi + 1) if n in gaps]
  if not ns:
    return 'n/a'
  mean = float(np.mean([gaps[n].mean for n in ns]))
  per_unit = comparisons.unit_means(gaps, ns)
  text = comparisons.pct(mean)
  if len(per_unit) > 1:
    sd = float(np.std(per_unit, ddof=1))
    text += f' (sd {100 * sd:.2f}%, {len(per_unit)} series)'
  if len(ns) < hi - lo + 1:
    text += f' (only n = {", ".join(map(str, ns))})'
  return text


def table1_ranges(num_groups: int) -> list[tuple[int, int, tuple[int, int]]]:
  """(lo, hi, the paper's range) for each row of Table 1: the paper's ranges of
  n (all 7 layers, the top 5, the top 3), scaled to `num_groups` layers."""
  rows = []
  for lo, hi in paper.TABLE1_RANGES:
    ours = 1 + round((lo - 1) * (num_groups - 1) / (hi - 1))
    rows.append((ours, num_groups, (lo, hi)))
  return rows


def table1(runs: Sequence[Result], dataset: str | None = None,
           num_groups: int = 7) -> str:
  """Markdown: the gain of AnB+ over base and over BnB+, ours beside the paper's."""
  family = comparisons.primary_family(runs)
  over_base = comparisons.compare(runs, 'transfer_ft', family) if family else {}
  over_selffer = (comparisons.compare(runs, 'transfer_ft', family, against='selffer_ft')
                  if family else {})
  where = (f'{FAMILY_NAMES[family]} ({_split_list(runs, family)})' if family
           else 'no random or m/n split in the results')
  lines = [
      '# Table 1: gain of AnB+ (transfer, fine-tuned) over its controls', '',
      f'Ours: {dataset or "dataset unknown"}, {where}. Paper: ImageNet, '
      'random 500/500-class halves.', '',
      f'Gain: AnB+ minus its control on the same target half, split and seed, '
      f'averaged over the runs at each n, then over the n of the range; in '
      f'points of top-1 ({METRIC}). sd is over the paired series (split, '
      f'target half, seed) that have every n of the range.', '',
      '| layers | over base: ours | over base: paper | over BnB+: ours | '
      'over BnB+: paper |',
      '|---|---|---|---|---|',
  ]
  for lo, hi, theirs in table1_ranges(num_groups):
    label = f'n = {lo}-{hi}' + ('' if (lo, hi) == theirs else
                                f' (paper: {theirs[0]}-{theirs[1]})')
    lines.append(
        f'| {label} | {_range_gain(over_base, lo, hi)} | '
        f'{100 * paper.TABLE1_GAIN_OVER_BASE[theirs]:+.1f}% | '
        f'{_range_gain(over_selffer, lo, hi)} | '
        f'{100 * paper.TABLE1_GAIN_OVER_SELFFER_FT[theirs]:+.1f}% |')
  if num_groups != 7:
    lines += ['', f'The paper\'s ranges of n (all 7 layers, the top 5, the top 3) '
              f'are scaled to this network\'s {num_groups} layers.']
  for gaps, against in ((over_base, 'base'), (over_selffer, 'selffer_ft')):
    if not gaps:
      why = comparisons.why_missing(runs, family, 'transfer_ft', against)
      lines += ['', f'Over {LABELS[against]}: {why}.']
  lines += ['', f'Paper numbers: {paper.SOURCE}', '']
  return '\n'.join(lines)


def generality(runs: Sequence[Result], dataset: str | None = None) -> str:
  """Markdown: AnB / base by n, and the first n below each threshold."""
  lines = [
      '# Generality of features by layer: AnB / base', '',
      f'For each n, the mean over runs of AnB top-1 ({METRIC}) divided by the '
      f'base on the same target half, split and seed (1.000 = as good as '
      f'training from scratch; AnB and BnA pooled). The transition is the first '
      f'n where the mean ratio falls below each threshold '
      f'({", ".join(f"{t:.2f}" for t in GENERALITY_THRESHOLDS)}). BnB / base, '
      f'where present, separates co-adaptation from specificity.', '',
      f'Dataset: {dataset or "unknown"}.', '']
  shown = False
  for family in ('random', 'm_n', 'custom'):
    transfer = comparisons.compare(runs, 'transfer', family, ratio=True)
    if not transfer:
      continue
    shown = True
    selffer = comparisons.compare(runs, 'selffer', family, ratio=True)
    with_paper = family == 'random' and paper.applies_to(dataset)
    lines += [f'## {FAMILY_NAMES[family]} ({_split_list(runs, family)})', '',
              '| n | AnB / base | sd | runs | BnB / base |' +
              (' paper AnB / base |' if with_paper else ''),
              '|---|---|---|---|---|' + ('---|' if with_paper else '')]
    for n, g in transfer.items():
      s = f'{selffer[n].mean:.3f}' if n in selffer else '-'
      row = f'| {n} | {g.mean:.3f} | {g.sd:.3f} | {g.k} | {s} |'
      if with_paper:
        ratio = paper.RANDOM_SPLIT_TOP1['transfer'][n - 1] / paper.BASE_HALF
        row += f' {ratio:.3f} |'
      lines.append(row)
    lines.append('')
    for threshold in GENERALITY_THRESHOLDS:
      below = [n for n, g in transfer.items() if g.mean < threshold]
      lines.append(f'- below {threshold:.2f}: ' +
                   (f'first at n = {below[0]}' if below else
                    f'not reached (n = {min(transfer)}-{max(transfer)} present)'))
    lines.append('')
  if not shown:
    lines += ['No AnB runs with a base on a random or m/n split.', '']
  return '\n'.join(lines)


def _spread_cells(f: fnd.Finding) -> tuple[str, str, str]:
  """(headline difference, sd over seeds, beyond the seed spread) as text."""
  if f.difference is None:
    return '-', '-', '-'
  if f.sd is None:
    return comparisons.pct(f.difference), '-', 'single seed'
  beyond = 'yes' if f.beyond_spread else 'no'
  return comparisons.pct(f.difference), f'{100 * f.sd:.2f}', beyond


def findings_markdown(found: list[fnd.Finding], runs: Sequence[Result],
                      dataset: str | None, notes: Sequence[str],
                      when: dict[int, tuple] | None = None) -> str:
  verdict = {True: 'yes', False: 'no', None: 'not testable (runs missing)'}
  when = when or {}
  splits = sorted({r.split for r in runs})
  seeds = sorted({r.seed for r in runs})
  lines = [
      "# Findings: which of the paper's six claims this run shows", '',
      f'Dataset: {dataset or "unknown"}. {len(runs)} runs (splits: '
      f'{", ".join(splits) or "none"}; seeds: '
      f'{", ".join(map(str, seeds)) or "none"}). Metric: {METRIC}, per run the '
      f'mean of its 10 best validation top-1 values. Differences are in points '
      f'of top-1, each run paired with its reference network on the same split, '
      f'target half and seed. Every verdict is computed by a rule in '
      f'tfx_jax/report/findings.py. "Difference" is each finding\'s headline '
      f'difference; "sd" its spread over seeds; "beyond spread" whether it '
      f'exceeds that spread ({fnd.SPREAD_RULE}). "Over time": the first '
      f'evaluation step at which the rule holds when every run\'s top-1 at '
      f'that step stands in for its {METRIC} (over_time.md).', '',
      '| id | finding (paper) | holds | difference | sd | beyond spread | over time |',
      '|---|---|---|---|---|---|---|']
  for f in found:
    over = (over_time.finding_step_text(*when[f.id]) if f.id in when
            else 'not testable' if when else '-')
    cells = ' | '.join(_spread_cells(f))
    lines.append(f'| {f.id} | {fnd.CLAIMS[f.id]} | {verdict[f.holds]} | {cells} | '
                 f'{over} |')
  for f in found:
    difference, sd, beyond = _spread_cells(f)
    per_seed = ', '.join(comparisons.pct(d) for d in f.per_seed)
    lines += ['', f'## {f.id}. {fnd.CLAIMS[f.id]}', '',
              f'Holds: **{verdict[f.holds]}**', '',
              f'- Rule: {f.rule}', f'- Evidence: {f.evidence}',
              f'- Headline: {f.headline} = {difference}' +
              (f'; per seed {per_seed}; sd {sd} points; beyond the seed spread: '
               f'{beyond}' if f.per_seed else '')]
    if f.id in when:
      lines.append(f'- Over time: {over_time.finding_step_text(*when[f.id])}.')
  lines += ['', '## Notes', '']
  family = comparisons.primary_family(runs)
  if family in ('m_n', 'custom'):
    which = 'm/n split' if family == 'm_n' else f'custom split ({_split_list(runs, family)})'
    notes = [*notes, f'No random split in the results: findings 1-4, Figure 2 and '
             f'Table 1 use the {which}.']
  lines += [f'- {note}' for note in notes]
  lines += ['- Per-layer generality (AnB / base, and where it falls): '
            'generality.md; each treatment against its base over training: '
            'over_time.md and over_time.png.', '']
  return '\n'.join(lines)
