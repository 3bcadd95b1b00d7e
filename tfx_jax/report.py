"""The report: Figures 2 and 3, Table 1, the six findings and per-layer generality.

Reads only W/results.csv (and W/config.json's "dataset", for titles and the
paper overlay), retrains nothing, and writes W/report/. The same results give
byte-identical tables, findings and figures.

  python -m tfx_jax.report --workdir=W
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np
from absl import flags

from tfx_jax import comparisons, errors, figures, files, over_time
from tfx_jax import findings as fnd
from tfx_jax import paper_reference as paper
from tfx_jax import results
from tfx_jax.comparisons import FAMILY_NAMES
from tfx_jax.experiments import LABELS
from tfx_jax.results import METRIC, Result

REPORT_DIR = 'report'
GENERALITY_THRESHOLDS = (0.99, 0.95, 0.90)


# Reading -------------------------------------------------------------------

def read_dataset(workdir: str) -> tuple[str | None, list[str]]:
  """config.json's "dataset" (None without one), and a note when unreadable."""
  path = os.path.join(workdir, 'config.json')
  if not files.exists(path):
    return None, ['No config.json: dataset unknown, no paper overlay.']
  try:
    dataset = json.loads(files.read_text(path)).get('dataset')
  except (OSError, ValueError, AttributeError) as e:
    return None, [f'config.json unreadable ({type(e).__name__}): dataset '
                  f'unknown, no paper overlay.']
  if isinstance(dataset, dict):
    dataset = dataset.get('name')
  return (str(dataset) if dataset else None), []


def read_groups(workdir: str) -> tuple[str, ...]:
  """The model's transferable groups (W/groups.json, written by the runner);
  conv1..fc7 for workdirs without one (the presets')."""
  path = os.path.join(workdir, results.GROUPS_FILE)
  if files.exists(path):
    try:
      groups = json.loads(files.read_text(path))['groups']
      if groups and all(isinstance(g, str) for g in groups):
        return tuple(groups)
    except (OSError, ValueError, KeyError, TypeError):
      pass
    raise errors.UserError(f'{path} is unreadable; delete it and rerun the main '
                           f'job, which writes it again.')
  return figures.PRESET_GROUPS


# Tables --------------------------------------------------------------------

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
  for family in ('random', 'm_n'):
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
      f'tfx_jax/findings.py. "Difference" is each finding\'s headline '
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
  if family == 'm_n':
    notes = [*notes, 'No random split in the results: findings 1-4, Figure 2 '
             'and Table 1 use the m/n split.']
  lines += [f'- {note}' for note in notes]
  lines += ['- Per-layer generality (AnB / base, and where it falls): '
            'generality.md; each treatment against its base over training: '
            'over_time.md and over_time.png.', '']
  return '\n'.join(lines)


# Writing -------------------------------------------------------------------

def write_report(workdir: str) -> dict:
  """Writes W/report/ from W/results.csv; returns the findings dict.

  Raises UserError if results.csv is missing or malformed.
  """
  runs, notes = results.read_csv(os.path.join(workdir, 'results.csv'))
  dataset, config_notes = read_dataset(workdir)
  groups = read_groups(workdir)
  curves, curve_notes = over_time.read_curves(workdir, runs)
  found = fnd.evaluate(runs, len(groups))
  when = over_time.finding_steps(runs, curves, len(groups))
  family = comparisons.primary_family(runs)
  table = over_time.gaps(runs, curves, family) if family else {}
  result = {'findings': [{**f.as_dict(), 'first_holds_at_step': when.get(f.id, (None,))[0],
                          'holds_from_step': when.get(f.id, (None, None))[1]}
                         for f in found]}
  out = os.path.join(workdir, REPORT_DIR)
  files.makedirs(out)
  texts = {
      'findings.json': json.dumps(result, indent=2) + '\n',
      'findings.md': findings_markdown(found, runs, dataset,
                                       [*config_notes, *notes], when),
      'table1.md': table1(runs, dataset, len(groups)),
      'generality.md': generality(runs, dataset),
      'over_time.md': over_time.markdown(when, table, family, curve_notes),
  }
  for name, text in texts.items():
    files.atomic_write(os.path.join(out, name), text.encode('utf-8'))
  title = (f'{dataset or "dataset unknown"}, {FAMILY_NAMES[family]}: each treatment '
           f'minus its base over training' if family else 'No transfer runs')
  for name, fig, formats in (
      ('figure2', figures.figure2(runs, dataset, groups), ('png', 'svg')),
      ('figure3', figures.figure3(runs, dataset, groups), ('png',)),
      ('over_time', figures.over_time(table, title, len(groups)), ('png',))):
    for fmt in formats:
      files.atomic_write(os.path.join(out, f'{name}.{fmt}'), figures.to_bytes(fig, fmt))
  return result


def main(argv: Sequence[str]) -> None:
  """`python -m tfx_jax.report --workdir=W`: the report of W's results.csv."""
  if len(argv) > 1:
    raise errors.UserError(f'Unexpected arguments {list(argv[1:])}; give --workdir=W.')
  workdir = flags.FLAGS.workdir
  result = write_report(workdir)
  words = {True: 'holds', False: 'does not hold', None: 'not testable'}
  verdicts = ', '.join(f'{f["id"]} {words[f["holds"]]}' for f in result['findings'])
  print(f'Report in {os.path.join(workdir, REPORT_DIR)}: findings {verdicts}.')


if __name__ == '__main__':
  flags.DEFINE_string('workdir', None, 'The run directory holding results.csv.',
                      required=True)
  errors.run(main)
