"""Top-1 against the size of the target's training set (config.target_examples_per_class).

Each size is a grid of its own; the findings and figures 2 and 3 use one size
(`main_size`: all images, else the largest). Here, for every size: base (the
target trained from scratch), and AnB and AnB+ each at its best n (the n with
the highest mean over seeds at that size), with their seeds' spread. Scratch
"catches up" at the smallest size from which base is within CATCH_UP of the
better transfer at that size and every larger one. Transfer "helps" at a size
when the better transfer minus base, paired by seed, exceeds CATCH_UP beyond
the seeds' spread (the findings' t-test), and "hurts" when it is below
-CATCH_UP so (its best n below base: every n's mean is).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from scipy import stats

from tfx_jax.grid.results import METRIC, Result

CATCH_UP = 0.01  # 1 point of top-1.
SERIES = (('base', 'base'), ('transfer', 'AnB'), ('transfer_ft', 'AnB+'))


def sizes(runs: Sequence[Result]) -> list[int]:
  """The target sizes of the runs on target B, smallest first, all images (0)
  last (the source's runs see all its images, whatever the grid's sizes).
  The shift experiment's runs have their own report (shift.py)."""
  paper = [r for r in runs if r.family != 'shift']
  on_b = [r for r in paper if r.target == 'B'] or paper
  return sorted({r.examples_per_class for r in on_b}, key=lambda k: (k == 0, k))


def label(size: int) -> str:
  return 'all' if size == 0 else str(size)


def main_size(runs: Sequence[Result]) -> int:
  found = sizes(runs)
  return found[-1] if found else 0


def at_size(runs: Sequence[Result], size: int) -> list[Result]:
  """The runs of one size's grid: its target runs, and the source's bases."""
  return [r for r in runs if r.examples_per_class == size
          or (r.target != 'B' and r.examples_per_class == 0)]


def table(runs: Sequence[Result]) -> dict[int, dict[str, dict]]:
  """size -> series -> {'n', 'mean', 'sd', 'values', 'by_seed'} (target B runs only)."""
  out = {}
  for size in sizes(runs):
    rows = {}
    for treatment, name in SERIES:
      by_n = defaultdict(dict)
      for r in runs:
        if (r.examples_per_class == size and r.treatment == treatment and r.target == 'B'
            and r.family not in (None, 'all')):
          by_n[r.n][r.seed] = r.accuracy
      if by_n:
        n = max(sorted(by_n), key=lambda k: np.mean(list(by_n[k].values())))
        v = [by_n[n][seed] for seed in sorted(by_n[n])]
        rows[name] = {'n': n, 'mean': float(np.mean(v)), 'values': v, 'by_seed': by_n[n],
                      'sd': float(np.std(v, ddof=1)) if len(v) > 1 else 0.0}
    out[size] = rows
  return out


def catches_up(rows: dict[int, dict[str, dict]]) -> int | None:
  """The smallest size from which base stays within CATCH_UP of the better
  transfer (AnB or AnB+ at its best n); None if it never does."""
  found = None
  for size in reversed(list(rows)):
    r = rows[size]
    best = max((r[k]['mean'] for k in ('AnB', 'AnB+') if k in r), default=None)
    if 'base' not in r or best is None or r['base']['mean'] < best - CATCH_UP:
      break
    found = size
  return found


def verdict(row: dict[str, dict]) -> tuple[str, str]:
  """('helps' / 'hurts' / 'cannot tell' / '-', the paired difference in words)
  of the better transfer at one size against base."""
  transfers = [k for k in ('AnB', 'AnB+') if k in row]
  if 'base' not in row or not transfers:
    return '-', '-'
  best = max(transfers, key=lambda k: row[k]['mean'])
  base = row['base']['by_seed']
  diffs = [row[best]['by_seed'][s] - base[s] for s in sorted(row[best]['by_seed']) if s in base]
  if not diffs:
    return '-', '-'
  mean = float(np.mean(diffs))
  k = len(diffs)
  sd = float(np.std(diffs, ddof=1)) if k > 1 else 0.0
  beyond = k > 1 and abs(mean) > stats.t.ppf(0.975, k - 1) * sd / math.sqrt(k)
  words = f'{best} {100 * mean:+.2f} ± {100 * sd:.2f} over {k} seed{"s" if k > 1 else ""}'
  if beyond and mean > CATCH_UP:
    return 'helps', words
  if beyond and mean < -CATCH_UP:
    return 'hurts', words
  return 'cannot tell', words


def markdown(runs: Sequence[Result]) -> str:
  rows = table(runs)
  lines = ['# Top-1 against target-set size', '',
           f'Images per class of the target task B that its runs trained on (all: the '
           f'whole train split); evaluation is always on the whole eval split. {METRIC}, '
           f'mean over seeds ± sd; AnB and AnB+ at the n where their mean is highest.', '',
           '| images per class | base | AnB (best n) | AnB+ (best n) | better transfer '
           '- base, paired by seed | transfer | seeds |',
           '|---|---|---|---|---|---|---|']
  for size, r in rows.items():
    cell = {k: (f'{100 * v["mean"]:.2f} ± {100 * v["sd"]:.2f}' +
                (f' (n = {v["n"]})' if k != 'base' else '')) if (v := r.get(k)) else '-'
            for k in ('base', 'AnB', 'AnB+')}
    seeds = max((len(v['values']) for v in r.values()), default=0)
    said, words = verdict(r)
    lines.append(f'| {label(size)} | {cell["base"]} | {cell["AnB"]} | {cell["AnB+"]} | '
                 f'{words} | {said} | {seeds} |')
  up = catches_up(rows)
  lines += ['', f'Transfer "helps" at a size when the better transfer minus base, paired by '
            f'seed, is above {100 * CATCH_UP:.0f} point and beyond the seeds\' spread '
            f'(two-sided one-sample t-test at 5%); "hurts" when below -{100 * CATCH_UP:.0f} '
            f'point so; with one seed there is no spread, and it cannot tell.',
            '', 'Training from scratch ' + (
      f'catches up with transfer from {label(up)} images per class: from there on, base '
      f'is within {100 * CATCH_UP:.0f} point of the better of AnB and AnB+.'
      if up is not None else
      f'does not catch up with transfer at any size here: base stays more than '
      f'{100 * CATCH_UP:.0f} point below the better of AnB and AnB+ at the largest size.'), '']
  return '\n'.join(lines)


def figure(runs: Sequence[Result], dataset: str | None = None) -> Figure:
  rows = table(runs)
  fig = Figure(figsize=(6.4, 4.4), layout='constrained')
  ax = fig.subplots()
  xs = np.arange(len(rows))
  for (name, colour, marker), offset in zip((('base', '#444444', 's'),
                                             ('AnB', '#2a6f8c', 'o'),
                                             ('AnB+', '#c0392b', '^')), (-0.06, 0, 0.06)):
    pts = [(x, r[name]) for x, r in zip(xs, rows.values()) if name in r]
    if not pts:
      continue
    for x, v in pts:
      ax.scatter([x + offset] * len(v['values']), v['values'], color=colour, s=10, alpha=0.4)
    ax.errorbar([x + offset for x, _ in pts], [v['mean'] for _, v in pts],
                yerr=[v['sd'] for _, v in pts], color=colour, marker=marker, capsize=3,
                label=name + ('' if name == 'base' else ' (best n)'))
  ax.set_xticks(xs, [label(s) for s in rows])
  ax.set_xlabel('Target images per class')
  ax.set_ylabel(f'Top-1 accuracy ({METRIC})')
  ax.set_title(f'{dataset or "target"}: transfer against training from scratch', fontsize=10)
  ax.grid(alpha=0.3)
  if rows:
    ax.legend(fontsize=8, loc='best')
  return fig
