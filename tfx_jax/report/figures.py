"""The paper's figures from results: Figure 2 (random split) and Figure 3
(dissimilar split, random frozen filters), drawn reproducibly."""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib
import numpy as np
from matplotlib.colors import SymLogNorm
from matplotlib.figure import Figure

from tfx_jax import paper_reference as paper
from tfx_jax.grid.experiments import LABELS
from tfx_jax.grid.results import METRIC, Result
from tfx_jax.report import comparisons
from tfx_jax.report import over_time as ot
from tfx_jax.report.comparisons import FAMILY_NAMES

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
PRESET_GROUPS = paper.LAYER_NAMES[:7]  # The presets' transferable groups.
_SAVE_RC = {'svg.hashsalt': 'tfx_jax', 'svg.fonttype': 'path'}


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


def _layer_axis(ax, xlabel: bool = True, groups: Sequence[str] | None = None) -> None:
  """n = 0..L on x; named by the model's groups unless they are conv1..fc7."""
  groups = tuple(groups or PRESET_GROUPS)
  ax.set_xlim(-0.5, len(groups) + 0.5)
  if groups == PRESET_GROUPS:
    ax.set_xticks(range(len(groups) + 1))
  else:
    ax.set_xticks(range(len(groups) + 1), ['0', *(f'{n} {g}' for n, g in
                                                  enumerate(groups, 1))],
                  rotation=40, ha='right', fontsize=7)
  ax.grid(alpha=0.3)
  if xlabel:
    ax.set_xlabel('Layer n at which the network is chopped and retrained')


def figure2(runs: Sequence[Result], dataset: str | None = None,
            groups: Sequence[str] | None = None) -> Figure:
  """Top-1 against n for base, BnB, BnB+, AnB, AnB+ (the paper's Figure 2).

  Top: every run as a point, means joined by lines. Bottom: means with the
  spread over runs (sd) as error bars, and the paper's numbers on ImageNet.
  """
  family = comparisons.primary_family(runs)
  fig = Figure(figsize=(7.5, 8), layout='constrained')
  top, bottom = fig.subplots(2, 1, sharex=True)
  series = {t: comparisons.values_by_n(runs, t, family) if family else {}
            for t in FIGURE2_TREATMENTS}
  # The bases the curves are measured against: those of the transfers' target
  # halves (a grid trained towards B alone has baseA only as a source).
  targets = {r.target for t in FIGURE2_TREATMENTS[1:] if family
             for r in comparisons.select(runs, t, family)}
  if targets:
    series['base'] = {0: sorted(v for t in sorted(targets) for v in
                                comparisons.values_by_n(runs, 'base', family, target=t).get(0, []))}
  base = series['base'].get(0)
  for ax in (top, bottom):
    _layer_axis(ax, xlabel=ax is bottom, groups=groups)
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


def figure3(runs: Sequence[Result], dataset: str | None = None,
            groups: Sequence[str] | None = None) -> Figure:
  """The paper's Figure 3: dissimilar tasks and random frozen filters.

  Left: the m/n split's AnB and BnA against their bases (the random split's
  AnB in grey). Middle: random frozen filters against the base on all
  classes. Right: each as a difference from its base.
  """
  overlay = paper.applies_to(dataset)
  fig = Figure(figsize=(15, 4.6), layout='constrained')
  left, middle, right = fig.subplots(1, 3)
  for ax in (left, middle):
    _layer_axis(ax, groups=groups)
    ax.set_ylabel(f'Top-1 accuracy ({METRIC})')
  _layer_axis(right, groups=groups)
  right.set_ylabel('Top-1 minus its base (higher is better)')

  drew = False
  for direction, target, colour, offset in (('AB', 'B', '#2a8c3c', 0.06),
                                           ('BA', 'A', '#8c6d2a', -0.06)):
    base = comparisons.values_by_n(runs, 'base', 'm_n', target=target)
    moved = comparisons.values_by_n(runs, 'transfer', 'm_n', direction=direction)
    start = (0, float(np.mean(base[0]))) if base else None
    if base:
      _points_and_means(left, base, f'base{target} (m/n)', colour, 's', offset)
    if moved:
      label = f'{direction[0]}n{direction[1]} (m/n)'
      _points_and_means(left, moved, label, colour, 'o', offset, start)
    drew = drew or bool(base or moved)
  random_base = comparisons.values_by_n(runs, 'base', 'random')
  random_moved = comparisons.values_by_n(runs, 'transfer', 'random')
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

  on = comparisons.frozen_family(runs)
  frozen = comparisons.values_by_n(runs, 'random_frozen', on)
  targets = {r.target for r in comparisons.select(runs, 'random_frozen', on)}
  target = targets.pop() if len(targets) == 1 else None
  where = ('all classes' if on == 'all' else FAMILY_NAMES[on]
           + (f', target {target}' if target else ''))
  base = comparisons.values_by_n(runs, 'base', on, target=target)
  if base:
    _points_and_means(middle, base, f'base ({where})', 'white', 's', 0.0)
  if frozen:
    start = (0, float(np.mean(base[0]))) if base else None
    _points_and_means(middle, frozen, 'random frozen', '#3b5bdb', 'o', 0.0, start)
  if overlay:
    middle.plot([0, *paper.RANDOM_FROZEN_TOP1],
                [paper.BASE_ALL, *paper.RANDOM_FROZEN_TOP1.values()], ls='--',
                marker='o', mfc='none', color='#3b5bdb', lw=1, alpha=0.8,
                label='paper random frozen (1000 classes)')
  if base or frozen:
    middle.legend(fontsize=7, loc='lower left')
  else:
    _no_runs(middle, 'no random frozen filter runs')
  middle.set_title(f'Random frozen filters ({where})', fontsize=10)

  right.axhline(0, color='grey', ls=':', lw=1)
  relative = (('random split: AnB - base', 'transfer', 'random', '#a11d21'),
              ('m/n split: AnB - base', 'transfer', 'm_n', '#2a8c3c'),
              ('random frozen - base', 'random_frozen', on, '#3b5bdb'))
  for label, treatment, family, colour in relative:
    gaps = comparisons.compare(runs, treatment, family)
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


def over_time(table: dict, title: str, num_groups: int = 7) -> Figure:
  """Heatmaps of treatment - base (points) by n and eval step, one per treatment
  of `table` ({treatment: {n: {step: difference}}}); a dot where a curve
  crosses its base for good (over_time.crossing)."""
  fig = Figure(figsize=(11, 7), layout='constrained')
  axes = fig.subplots(2, 2, sharex=True, sharey=True).ravel()
  all_steps = sorted({s for by_n in table.values() for series in by_n.values()
                      for s in series})
  limit = max([abs(v) for by_n in table.values() for series in by_n.values()
               for v in series.values()] + [0.01]) * 100
  image = None
  for ax, treatment in zip(axes, ot.TREATMENTS):
    by_n = table.get(treatment, {})
    ax.set_title(f'{LABELS[treatment]} - base')
    if not by_n:
      _no_runs(ax, f'no {LABELS[treatment]} runs')
      continue
    grid = np.full((num_groups, len(all_steps)), np.nan)
    for n, series in by_n.items():
      for j, step in enumerate(all_steps):
        grid[n - 1, j] = 100 * series.get(step, np.nan)
      step, _ = ot.crossing(series)
      if step is not None:
        ax.plot(all_steps.index(step), n, 'o', color='black', ms=4)
    # Symmetric log colours: a 1-point gap stays visible beside a 40-point one.
    norm = SymLogNorm(linthresh=1.0, vmin=-limit, vmax=limit)
    image = ax.imshow(grid, cmap='RdBu', norm=norm, aspect='auto',
                      origin='lower', extent=(-0.5, len(all_steps) - 0.5, 0.5, num_groups + 0.5),
                      interpolation='nearest')
  ticks = list(range(0, len(all_steps), max(1, -(-len(all_steps) // 5))))
  for ax in axes:
    ax.set_xticks(ticks, [str(all_steps[t]) for t in ticks] if all_steps else [])
    ax.set_yticks(range(1, num_groups + 1))
  for ax in axes[2:]:
    ax.set_xlabel('Training step')
  for ax in axes[::2]:
    ax.set_ylabel('Layer n')
  if image is not None:
    levels = [t for t in (-30, -10, -3, -1, 0, 1, 3, 10, 30) if abs(t) <= limit]
    bar = fig.colorbar(image, ax=axes.tolist(), ticks=levels, label=(
        'Top-1 minus base (points, log scale beyond 1); dot: crosses its base for good'))
    bar.ax.set_yticklabels([f'{t:+d}' if t else '0' for t in levels])
  fig.suptitle(title)
  return fig


def to_bytes(fig: Figure, fmt: str) -> bytes:
  """The figure, rendered without timestamps or random ids (reproducible)."""
  metadata = {'Date': None} if fmt == 'svg' else {'Software': None}
  buffer = io.BytesIO()
  with matplotlib.rc_context(_SAVE_RC):
    fig.savefig(buffer, format=fmt, dpi=120, metadata=metadata)
  return buffer.getvalue()
