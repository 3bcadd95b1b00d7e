"""The report: Figures 2 and 3, Table 1, the six findings and per-layer generality.

Reads only W/results.csv (and W/config.json's "dataset", for titles and the
paper overlay), retrains nothing, and writes W/report/. The same results give
byte-identical tables, findings and figures.

  python -m tfx_jax.report --workdir=W
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from collections.abc import Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from tfx_jax import files
from tfx_jax import findings as fnd
from tfx_jax import paper_reference as paper
from tfx_jax.errors import UserError
from tfx_jax.experiments import RESULT_COLUMNS as COLUMNS
from tfx_jax.findings import FAMILY_NAMES, LABELS, Run

METRIC = 'best10_top1'
REPORT_DIR = 'report'
GENERALITY_THRESHOLDS = (0.99, 0.95, 0.90)

# After the paper's Figure 2: frozen transfers as circles, fine-tuned as
# diamonds; selffers blue, transfers red. Offsets keep the columns apart.
STYLE = {  # treatment: (colour, marker, x offset)
    'base': ('white', 'o', 0.0),
    'selffer': ('#1f3b99', 'o', -0.18),
    'selffer_ft': ('#5fa8e8', 'D', -0.06),
    'transfer': ('#a11d21', 'o', 0.06),
    'transfer_ft': ('#f08a8a', 'D', 0.18),
}
FIGURE2_TREATMENTS = ('base', 'selffer', 'selffer_ft', 'transfer', 'transfer_ft')
_SAVE_RC = {'svg.hashsalt': 'tfx_jax', 'svg.fonttype': 'path'}


# Reading -------------------------------------------------------------------

def read_results(path: str) -> tuple[list[Run], list[str]]:
  """The runs of results.csv (last row wins per run key), and notes about it.

  Raises UserError, naming the file and line, if it is missing or malformed.
  """
  if not files.exists(path):
    raise UserError(f'No results file at {path}: run the grid first (it writes '
                    f'results.csv into its workdir), or pass that --workdir.')
  try:
    with io.StringIO(files.read_text(path), newline='') as f:
      reader = csv.DictReader(f)
      if reader.fieldnames is None:
        raise UserError(f'{path} is empty; expected the header '
                        f'{",".join(COLUMNS)}.')
      missing = [c for c in COLUMNS if c not in reader.fieldnames]
      if missing:
        raise UserError(f'{path} lacks the column(s) {", ".join(missing)}; '
                        f'expected the header {",".join(COLUMNS)}.')
      rows = [_parse(row, f'{path}, line {reader.line_num}') for row in reader]
  except UnicodeDecodeError as e:
    raise UserError(f'{path} is not UTF-8 text ({e.reason}).') from None
  except csv.Error as e:
    raise UserError(f'{path} is not valid CSV: {e}.') from None
  latest, notes = {}, []
  for run in rows:
    key = (run.split, run.treatment, run.source, run.target, run.n, run.seed)
    latest[key] = run
  if len(latest) < len(rows):
    notes.append(f'{len(rows) - len(latest)} repeated row(s) of the same run '
                 f'(split, treatment, source, target, n, seed): the last one '
                 f'in the file was used.')
  unknown = sorted({r.split for r in latest.values() if r.family is None})
  if unknown:
    notes.append(f'Rows of unknown split(s) {", ".join(unknown)} were ignored '
                 f'(known: random:<seed>, m_n, all).')
  runs = sorted(r for r in latest.values() if r.family is not None)
  return runs, notes


def _parse(row: dict, where: str) -> Run:
  if None in row or None in row.values():
    raise UserError(f'{where}: expected {len(COLUMNS)} fields, as in the header.')
  try:
    n, seed, steps = int(row['n']), int(row['seed']), int(row['steps'])
    scores = {c: float(row[c]) for c in ('top1', 'top5', METRIC)}
    float(row['wall_s'])
  except ValueError as e:
    raise UserError(f'{where}: {e} (n, seed, steps must be integers; top1, '
                    f'top5, best10_top1, wall_s numbers).') from None
  treatment, source, target = row['treatment'], row['source'], row['target']
  problem = None
  if treatment not in fnd.TREATMENTS:
    problem = (f'unknown treatment {treatment!r}; known: '
               f'{", ".join(fnd.TREATMENTS)}')
  elif not 0 <= n <= 7 or (n == 0) != (treatment == 'base'):
    problem = f'n = {n}, but base runs have n = 0 and the others n in 1..7'
  elif treatment == 'base' and (source != target or not target):
    problem = f'a base run needs source == target, got {source!r}, {target!r}'
  elif treatment in ('selffer', 'selffer_ft') and (
      source != target or target not in ('A', 'B')):
    problem = f'a selffer needs source == target in A, B, got {source!r}, {target!r}'
  elif treatment in ('transfer', 'transfer_ft') and {source, target} != {'A', 'B'}:
    problem = f'a transfer needs source != target in A, B, got {source!r}, {target!r}'
  elif treatment == 'random_frozen' and not target:
    problem = 'a random_frozen run needs a target'
  bad = [c for c, v in scores.items() if not 0 <= v <= 1]
  if problem is None and bad:
    problem = f'{", ".join(bad)} outside [0, 1]'
  if problem is None and steps < 0:
    problem = f'steps = {steps} is negative'
  if problem:
    raise UserError(f'{where}: {problem}.')
  return Run(row['split'], treatment, source, target, n, seed, scores[METRIC],
             row['run_id'])


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


# Figures -------------------------------------------------------------------

def figure_labels(fig: Figure) -> list[str]:
  """The series labels drawn on a figure, in drawing order, once each."""
  seen = []
  for ax in fig.axes:
    for label in ax.get_legend_handles_labels()[1]:
      if label not in seen:
        seen.append(label)
  return seen


def _points_and_means(ax, values: dict[int, list[float]], label: str,
                      colour: str, marker: str, offset: float,
                      start: tuple[int, float] | None = None) -> None:
  """Each run as a point, the means joined by a line (from `start` if given)."""
  xs = [n + offset for n, vals in values.items() for _ in vals]
  ys = [v for vals in values.values() for v in vals]
  ax.scatter(xs, ys, s=22, c=colour, marker=marker, edgecolors='black',
             linewidths=0.6, label=label, zorder=3)
  line = [start] if start else []
  line += [(n, float(np.mean(v))) for n, v in values.items()]
  if len(line) > 1:
    ax.plot([x + offset for x, _ in line], [y for _, y in line],
            color='black' if colour == 'white' else colour, lw=1.2, zorder=2)


def _means_and_sd(ax, values: dict[int, list[float]], colour: str, marker: str,
                  offset: float, label: str | None = None) -> None:
  ns = list(values)
  means = [float(np.mean(values[n])) for n in ns]
  sds = [float(np.std(values[n], ddof=1)) if len(values[n]) > 1 else 0.0
         for n in ns]
  ax.errorbar([n + offset for n in ns], means, yerr=sds, color=colour,
              marker=marker, mfc=colour, mec='black', ms=5, lw=1.2, capsize=3,
              ecolor='black' if colour == 'white' else colour, zorder=3,
              label=label)


def _no_runs(ax, text: str) -> None:
  ax.text(0.5, 0.5, text, transform=ax.transAxes, ha='center', va='center',
          color='grey')


def _layer_axis(ax, xlabel: bool = True) -> None:
  ax.set_xlim(-0.5, 7.5)
  ax.set_xticks(range(8))
  ax.grid(alpha=0.3)
  if xlabel:
    ax.set_xlabel('Layer n at which the network is chopped and retrained')


def figure2(runs: Sequence[Run], dataset: str | None = None) -> Figure:
  """Top-1 against n for base, BnB, BnB+, AnB, AnB+ (the paper's Figure 2).

  Top: every run as a point, means joined by lines. Bottom: means with the
  spread over runs (sd) as error bars, and the paper's numbers on ImageNet.
  """
  family = fnd.primary_family(runs)
  fig = Figure(figsize=(7.5, 8), layout='constrained')
  top, bottom = fig.subplots(2, 1, sharex=True)
  series = {t: fnd.values_by_n(runs, t, family) if family else {}
            for t in FIGURE2_TREATMENTS}
  # The bases the curves are measured against: those of the transfers' target
  # halves (a grid trained towards B alone has baseA only as a source).
  targets = {r.target for t in FIGURE2_TREATMENTS[1:] if family
             for r in fnd.select(runs, t, family)}
  if targets:
    series['base'] = {0: sorted(v for t in sorted(targets) for v in
                                fnd.values_by_n(runs, 'base', family, target=t).get(0, []))}
  base = series['base'].get(0)
  for ax in (top, bottom):
    _layer_axis(ax, xlabel=ax is bottom)
    ax.set_ylabel(f'Top-1 accuracy ({METRIC})')
    if base:
      ax.axhline(float(np.mean(base)), color='grey', ls=':', lw=1)
  for t in FIGURE2_TREATMENTS:
    if series[t]:
      colour, marker, offset = STYLE[t]
      _points_and_means(top, series[t], LABELS[t], colour, marker, offset)
      _means_and_sd(bottom, series[t], colour, marker, offset)
  if paper.applies_to(dataset):
    bottom.plot([0], [paper.BASE_HALF], 'o', mfc='none', mec='black',
                label='paper base')
    for t, ys in paper.RANDOM_SPLIT_TOP1.items():
      bottom.plot(paper.LAYERS, ys, ls='--', marker=STYLE[t][1], mfc='none',
                  color=STYLE[t][0], lw=1, alpha=0.8, label=f'paper {LABELS[t]}')
    bottom.legend(fontsize=7, ncol=3, loc='lower left')
  if any(series.values()):
    top.legend(fontsize=8, ncol=5, loc='lower left')
  else:
    _no_runs(top, 'no base, BnB, BnB+, AnB or AnB+ runs')
  where = FAMILY_NAMES[family] if family else 'no random or m/n split'
  top.set_title(f'Figure 2: {dataset or "dataset unknown"}, {where}; points = '
                f'runs, lines = means', fontsize=10)
  bottom.set_title('means, error bars = sd over runs' +
                   ('; dashed: the paper (ImageNet)'
                    if paper.applies_to(dataset) else ''), fontsize=9)
  return fig


def figure3(runs: Sequence[Run], dataset: str | None = None) -> Figure:
  """The paper's Figure 3: dissimilar tasks and random frozen filters.

  Left: the m/n split's AnB and BnA against their bases (the random split's
  AnB in grey). Middle: random frozen filters against the base on all
  classes. Right: each as a difference from its base.
  """
  overlay = paper.applies_to(dataset)
  fig = Figure(figsize=(15, 4.6), layout='constrained')
  left, middle, right = fig.subplots(1, 3)
  for ax in (left, middle):
    _layer_axis(ax)
    ax.set_ylabel(f'Top-1 accuracy ({METRIC})')
  _layer_axis(right)
  right.set_ylabel('Top-1 minus its base (higher is better)')

  drew = False
  for direction, target, colour, offset in (('AB', 'B', '#2a8c3c', 0.06),
                                           ('BA', 'A', '#8c6d2a', -0.06)):
    base = fnd.values_by_n(runs, 'base', 'm_n', target=target)
    moved = fnd.values_by_n(runs, 'transfer', 'm_n', direction=direction)
    start = (0, float(np.mean(base[0]))) if base else None
    if base:
      _points_and_means(left, base, f'base{target} (m/n)', colour, 's', offset)
    if moved:
      label = f'{direction[0]}n{direction[1]} (m/n)'
      _points_and_means(left, moved, label, colour, 'o', offset, start)
    drew = drew or bool(base or moved)
  random_base = fnd.values_by_n(runs, 'base', 'random')
  random_moved = fnd.values_by_n(runs, 'transfer', 'random')
  if random_moved and drew:
    line = ([(0, float(np.mean(random_base[0])))] if random_base else [])
    line += [(n, float(np.mean(v))) for n, v in random_moved.items()]
    left.plot(*zip(*line), color='grey', lw=1.2, marker='.',
              label='AnB (random split, means)')
  if drew:
    left.legend(fontsize=7, loc='lower left')
  else:
    _no_runs(left, 'no m/n split runs')
  left.set_title('Dissimilar tasks: m/n split', fontsize=10)

  base_all = fnd.values_by_n(runs, 'base', 'all')
  frozen = fnd.values_by_n(runs, 'random_frozen', 'all')
  if base_all:
    _points_and_means(middle, base_all, 'base (all classes)', 'white', 's', 0.0)
  if frozen:
    start = (0, float(np.mean(base_all[0]))) if base_all else None
    _points_and_means(middle, frozen, 'random frozen', '#3b5bdb', 'o', 0.0, start)
  if overlay:
    middle.plot([0, *paper.RANDOM_FROZEN_TOP1],
                [paper.BASE_ALL, *paper.RANDOM_FROZEN_TOP1.values()], ls='--',
                marker='o', mfc='none', color='#3b5bdb', lw=1, alpha=0.8,
                label='paper random frozen')
  if base_all or frozen:
    middle.legend(fontsize=7, loc='lower left')
  else:
    _no_runs(middle, 'no runs on all classes (random frozen filters)')
  middle.set_title('Random frozen filters (all classes)', fontsize=10)

  right.axhline(0, color='grey', ls=':', lw=1)
  relative = (('random split: AnB - base', 'transfer', 'random', '#a11d21'),
              ('m/n split: AnB - base', 'transfer', 'm_n', '#2a8c3c'),
              ('random frozen - base', 'random_frozen', 'all', '#3b5bdb'))
  for label, treatment, family, colour in relative:
    gaps = fnd.compare(runs, treatment, family)
    if gaps:
      _means_and_sd(right, {n: list(g.values) for n, g in gaps.items()},
                    colour, 'o', 0.0, label)
  if overlay:
    drops = (('paper random split', paper.RANDOM_SPLIT_TRANSFER_DROP, '#a11d21'),
             ('paper m/n split', paper.M_N_TRANSFER_DROP, '#2a8c3c'))
    for label, ys, colour in drops:
      right.plot(paper.LAYERS, ys, ls='--', color=colour, lw=1, alpha=0.8,
                 marker='o', mfc='none', label=label)
    right.plot(list(paper.RANDOM_FROZEN_TOP1),
               [v - paper.BASE_ALL for v in paper.RANDOM_FROZEN_TOP1.values()],
               ls='--', color='#3b5bdb', lw=1, alpha=0.8, marker='o', mfc='none',
               label='paper random frozen')
  if right.get_legend_handles_labels()[1]:
    right.legend(fontsize=7, loc='lower left')
  else:
    _no_runs(right, 'no transfer or random frozen runs with a base')
  right.set_title('Relative to base (means, error bars = sd over runs)',
                  fontsize=10)
  fig.suptitle(f'Figure 3: {dataset or "dataset unknown"}', fontsize=11)
  return fig


def _figure_bytes(fig: Figure, fmt: str) -> bytes:
  """The figure, rendered without timestamps or random ids (reproducible)."""
  metadata = {'Date': None} if fmt == 'svg' else {'Software': None}
  buffer = io.BytesIO()
  with matplotlib.rc_context(_SAVE_RC):
    fig.savefig(buffer, format=fmt, dpi=120, metadata=metadata)
  return buffer.getvalue()


# Tables --------------------------------------------------------------------

def _split_list(runs: Sequence[Run], family: str | None) -> str:
  return ', '.join(sorted({r.split for r in runs if r.family == family}))


def _range_gain(gaps: dict[int, fnd.Gap], lo: int, hi: int) -> str:
  ns = [n for n in range(lo, hi + 1) if n in gaps]
  if not ns:
    return 'n/a'
  mean = float(np.mean([gaps[n].mean for n in ns]))
  per_unit = fnd.unit_means(gaps, ns)
  text = fnd.pct(mean)
  if len(per_unit) > 1:
    sd = float(np.std(per_unit, ddof=1))
    text += f' (sd {100 * sd:.2f}%, {len(per_unit)} series)'
  if len(ns) < hi - lo + 1:
    text += f' (only n = {", ".join(map(str, ns))})'
  return text


def table1(runs: Sequence[Run], dataset: str | None = None) -> str:
  """Markdown: the gain of AnB+ over base and over BnB+, ours beside the paper's."""
  family = fnd.primary_family(runs)
  over_base = fnd.compare(runs, 'transfer_ft', family) if family else {}
  over_selffer = (fnd.compare(runs, 'transfer_ft', family, against='selffer_ft')
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
  for lo, hi in paper.TABLE1_RANGES:
    lines.append(
        f'| n = {lo}-{hi} | {_range_gain(over_base, lo, hi)} | '
        f'{100 * paper.TABLE1_GAIN_OVER_BASE[(lo, hi)]:+.1f}% | '
        f'{_range_gain(over_selffer, lo, hi)} | '
        f'{100 * paper.TABLE1_GAIN_OVER_SELFFER_FT[(lo, hi)]:+.1f}% |')
  for gaps, against in ((over_base, 'base'), (over_selffer, 'selffer_ft')):
    if not gaps:
      why = fnd.why_missing(runs, family, 'transfer_ft', against)
      lines += ['', f'Over {LABELS[against]}: {why}.']
  lines += ['', f'Paper numbers: {paper.SOURCE}', '']
  return '\n'.join(lines)


def generality(runs: Sequence[Run], dataset: str | None = None) -> str:
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
    transfer = fnd.compare(runs, 'transfer', family, ratio=True)
    if not transfer:
      continue
    shown = True
    selffer = fnd.compare(runs, 'selffer', family, ratio=True)
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


def findings_markdown(found: list[fnd.Finding], runs: Sequence[Run],
                      dataset: str | None, notes: Sequence[str]) -> str:
  verdict = {True: 'yes', False: 'no', None: 'not testable (runs missing)'}
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
      f'tfx_jax/findings.py.', '',
      '| id | finding (paper) | holds |', '|---|---|---|']
  lines += [f'| {f.id} | {fnd.CLAIMS[f.id]} | {verdict[f.holds]} |' for f in found]
  for f in found:
    lines += ['', f'## {f.id}. {fnd.CLAIMS[f.id]}', '',
              f'Holds: **{verdict[f.holds]}**', '',
              f'- Rule: {fnd.RULES[f.id]}', f'- Evidence: {f.evidence}']
  lines += ['', '## Notes', '']
  family = fnd.primary_family(runs)
  if family == 'm_n':
    notes = [*notes, 'No random split in the results: findings 1-4, Figure 2 '
             'and Table 1 use the m/n split.']
  lines += [f'- {note}' for note in notes]
  lines += ['- Per-layer generality (AnB / base, and where it falls): '
            'generality.md.', '']
  return '\n'.join(lines)


# Writing -------------------------------------------------------------------

def write_report(workdir: str) -> dict:
  """Writes W/report/ from W/results.csv; returns the findings dict.

  Raises UserError if results.csv is missing or malformed.
  """
  runs, notes = read_results(os.path.join(workdir, 'results.csv'))
  dataset, config_notes = read_dataset(workdir)
  found = fnd.evaluate(runs)
  result = {'findings': [f.as_dict() for f in found]}
  out = os.path.join(workdir, REPORT_DIR)
  files.makedirs(out)
  texts = {
      'findings.json': json.dumps(result, indent=2) + '\n',
      'findings.md': findings_markdown(found, runs, dataset,
                                       [*config_notes, *notes]),
      'table1.md': table1(runs, dataset),
      'generality.md': generality(runs, dataset),
  }
  for name, text in texts.items():
    files.atomic_write(os.path.join(out, name), text.encode('utf-8'))
  for name, fig, formats in (('figure2', figure2(runs, dataset), ('png', 'svg')),
                             ('figure3', figure3(runs, dataset), ('png',))):
    for fmt in formats:
      files.atomic_write(os.path.join(out, f'{name}.{fmt}'), _figure_bytes(fig, fmt))
  return result


def main(argv: Sequence[str] | None = None) -> int:
  """CLI; `argv` as sys.argv (argv[0] is the program). Returns the exit code."""
  argv = sys.argv if argv is None else argv
  parser = argparse.ArgumentParser(
      prog='python -m tfx_jax.report',
      description='Figures 2 and 3, Table 1 and the findings from W/results.csv.')
  parser.add_argument('--workdir', required=True,
                      help='the run directory holding results.csv')
  args = parser.parse_args(list(argv[1:]))
  try:
    result = write_report(args.workdir)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  words = {True: 'holds', False: 'does not hold', None: 'not testable'}
  verdicts = ', '.join(f'{f["id"]} {words[f["holds"]]}' for f in result['findings'])
  print(f'Report in {os.path.join(args.workdir, REPORT_DIR)}: findings {verdicts}.')
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
