"""Which layers to tune, and how (docs/tune.md): the tuning treatments by n
against AnB+ and the base, a figure per split family; the WiSE curves (top-1
by alpha); and per n the best treatment and whether its lead over the
runner-up is beyond the seed spread (the findings' t-test, SPREAD_RULE)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from scipy import stats

from tfx_jax.grid.experiments import LABELS, TUNE_TREATMENTS, WISE_TREATMENTS
from tfx_jax.grid.results import METRIC, Result
from tfx_jax.report.comparisons import FAMILY_NAMES, pct

COMPARED = ('transfer_ft', *TUNE_TREATMENTS)
COLOURS = {'base': 'black', 'transfer_ft': '#f08a8a', 'surgical': '#2a9d8f',
           'linear_probe': '#264653', 'lp_ft': '#e9c46a', 'l2sp': '#8d5fd3', 'llrd': '#f4a261'}


def families(runs: Sequence[Result]) -> list[str]:
  """The split families that hold runs of a tuning treatment, sorted."""
  return sorted({r.family for r in runs if r.treatment in TUNE_TREATMENTS})


def _by_n(runs: Sequence[Result], family: str, treatment: str) -> dict[int, dict[int, float]]:
  """{n: {seed: best10 top-1}} of one treatment on target B (or the task's target)."""
  out = defaultdict(dict)
  for r in runs:
    if r.family == family and r.treatment == treatment:
      out[r.n][r.seed] = r.accuracy
  return dict(sorted(out.items()))


def _mean_sd(values: Sequence[float]) -> str:
  mean = 100 * float(np.mean(values))
  return (f'{mean:.1f} ± {100 * float(np.std(values, ddof=1)):.1f}' if len(values) > 1
          else f'{mean:.1f}')


def lead(scores: dict[str, dict[int, float]]) -> tuple[str, str, float, bool | None] | None:
  """The best treatment by mean, the runner-up, the best's mean paired lead
  over it (seeds both ran), and whether that lead is beyond the seed spread
  (|mean| > t(0.975, k - 1) sd / sqrt k; None with fewer than 2 paired seeds)."""
  ranked = sorted(scores, key=lambda t: -float(np.mean(list(scores[t].values()))))
  if len(ranked) < 2:
    return None
  best, second = ranked[:2]
  seeds = sorted(set(scores[best]) & set(scores[second]))
  diffs = [scores[best][s] - scores[second][s] for s in seeds]
  if not diffs:
    return best, second, math.nan, None
  mean = float(np.mean(diffs))
  if len(diffs) < 2:
    return best, second, mean, None
  sd = float(np.std(diffs, ddof=1))
  return best, second, mean, bool(abs(mean) > stats.t.ppf(0.975, len(diffs) - 1)
                                  * sd / math.sqrt(len(diffs)))


def markdown(runs: Sequence[Result], dataset: str | None, groups: Sequence[str]) -> str:
  """tune.md: per family, a table by n and the WiSE table."""
  lines = [f'# Which layers to tune, and how ({dataset or "dataset unknown"})', '',
           f'{METRIC} in points, mean ± sd over seeds. Surgical: group n alone (and the '
           f'head) trains; linear probe: the head alone (shown at n = {len(groups)}); '
           f'AnB+, LP-FT, L2-SP and LLRD copy groups 1..n and train everything. '
           f'"Beyond spread": the best\'s paired lead over the runner-up exceeds '
           f't(0.975, k - 1) sd / sqrt(k) over k seeds.', '']
  for family in families(runs):
    present = [t for t in COMPARED if _by_n(runs, family, t)]
    base = [r.accuracy for r in runs if r.family == family and r.treatment == 'base'
            and r.target == 'B']
    lines += [f'## {FAMILY_NAMES[family]}', '',
              f'Base B: {_mean_sd(base) if base else "not in this grid"}.', '',
              '| n | ' + ' | '.join(LABELS[t] for t in present)
              + ' | best | lead over runner-up | beyond spread |',
              '|---' * (len(present) + 4) + '|']
    scores_by_n = {t: _by_n(runs, family, t) for t in present}
    for n in sorted({n for s in scores_by_n.values() for n in s}):
      at_n = {t: s[n] for t, s in scores_by_n.items() if n in s}
      cells = [_mean_sd(list(at_n[t].values())) if t in at_n else '' for t in present]
      found = lead(at_n)
      if found:
        best, second, gap, beyond = found
        tail = [LABELS[best], f'{pct(gap)} over {LABELS[second]}',
                {True: 'yes', False: 'no', None: 'one seed'}[beyond]]
      else:
        tail = [LABELS[next(iter(at_n))], '', '']
      lines.append(f'| {n} | ' + ' | '.join(cells + tail) + ' |')
    lines += ['', *_wise_table(runs, family)]
  return '\n'.join(lines) + '\n'


def _wise(runs: Sequence[Result], family: str, treatment: str) -> dict[int, dict[float, list]]:
  """{n: {alpha: [top-1 of each seed]}} of one treatment's WiSE evaluations."""
  out = defaultdict(lambda: defaultdict(list))
  for r in runs:
    if r.family == family and r.treatment == treatment:
      for alpha, top1 in r.wise:
        out[r.n][alpha].append(top1)
  return {n: dict(sorted(v.items())) for n, v in sorted(out.items())}


def _wise_table(runs: Sequence[Result], family: str) -> list[str]:
  rows = []
  for t in WISE_TREATMENTS:
    for n, curve in _wise(runs, family, t).items():
      best = max(curve, key=lambda a: np.mean(curve[a]))
      rows.append(f'| {LABELS[t]} | {n} | ' + ', '.join(
          f'{a:g}: {100 * np.mean(v):.1f}' for a, v in curve.items()) + f' | {best:g} |')
  if not rows:
    return []
  return ['### WiSE: top-1 at the last step, copied groups at (1 - a) transferred + a '
          'fine-tuned', '', '| treatment | n | top-1 by a | best a |', '|---|---|---|---|',
          *rows, '']


def figure(runs: Sequence[Result], family: str, dataset: str | None,
           groups: Sequence[str]) -> Figure:
  """Top-1 by n: every run a point, the means joined, error bars one sd; the
  base B as a horizontal band (mean ± sd)."""
  fig = Figure(figsize=(9, 4.5))
  ax = fig.add_subplot()
  present = [t for t in COMPARED if _by_n(runs, family, t)]
  base = [r.accuracy for r in runs if r.family == family and r.treatment == 'base'
          and r.target == 'B']
  if base:
    mean, sd = float(np.mean(base)), float(np.std(base))
    ax.axhline(mean, color='black', lw=1, label='base B')
    ax.axhspan(mean - sd, mean + sd, color='black', alpha=0.08)
  for i, t in enumerate(present):
    offset = (i - (len(present) - 1) / 2) * 0.08
    by_n = _by_n(runs, family, t)
    xs = [n + offset for n, seeds in by_n.items() for _ in seeds]
    ys = [v for seeds in by_n.values() for v in seeds.values()]
    ax.scatter(xs, ys, s=14, color=COLOURS[t], edgecolors='black', linewidths=0.4, zorder=3)
    means = [float(np.mean(list(s.values()))) for s in by_n.values()]
    sds = [float(np.std(list(s.values()))) for s in by_n.values()]
    ax.errorbar([n + offset for n in by_n], means, yerr=sds, color=COLOURS[t], marker='D',
                ms=4, capsize=3, lw=1.2, label=LABELS[t], zorder=2)
  ax.set_xticks(range(1, len(groups) + 1))
  ax.set_xlabel('n: surgical tunes group n; the others copy groups 1..n')
  ax.set_ylabel(f'top-1 ({METRIC})')
  ax.set_title(f'{dataset or "dataset unknown"}, {FAMILY_NAMES[family]}: which layers to tune')
  ax.legend(fontsize=8, loc='upper left', bbox_to_anchor=(1.01, 1))
  ax.grid(alpha=0.3)
  fig.tight_layout()
  return fig


def wise_figure(runs: Sequence[Result], family: str, dataset: str | None) -> Figure:
  """Top-1 by WiSE alpha: a panel per treatment, a line per n (mean over seeds)."""
  present = [t for t in WISE_TREATMENTS if _wise(runs, family, t)]
  fig = Figure(figsize=(3.2 * max(len(present), 1), 3.4))
  for i, t in enumerate(present):
    ax = fig.add_subplot(1, len(present), i + 1)
    curves = _wise(runs, family, t)
    for j, (n, curve) in enumerate(curves.items()):
      colour = colormaps['viridis'](j / max(len(curves) - 1, 1))
      ax.plot(list(curve), [np.mean(v) for v in curve.values()], marker='o', ms=3,
              color=colour, label=f'n = {n}')
    ax.set_title(LABELS[t], fontsize=9)
    ax.set_xlabel('alpha (0: transferred, 1: fine-tuned)', fontsize=8)
    ax.grid(alpha=0.3)
    if i == 0:
      ax.set_ylabel('top-1, last step')
      ax.legend(fontsize=6)
  fig.suptitle(f'{dataset or "dataset unknown"}, {FAMILY_NAMES[family]}: WiSE interpolation',
               fontsize=10)
  fig.tight_layout()
  return fig
