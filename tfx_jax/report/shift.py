"""Which group to tune for each shift (docs/shift/): the shift experiment's
heatmap (shift x tuned group: surgical fine-tuning's top-1 minus full_ft's,
the best per row marked), a table per target size with no_adapt, scratch,
full_ft, LP-FT and L2-SP beside the groups, and the verdicts of the criterion
that docs/shift/README.md fixed before the study ran (`verdicts`)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from scipy import stats

from tfx_jax.data.shifts import CORRUPTIONS, LABEL_SHIFTS
from tfx_jax.grid.experiments import LABELS
from tfx_jax.grid.results import METRIC, Result
from tfx_jax.report.findings import N_SE, TOLERANCE

BESIDE = ('no_adapt', 'scratch', 'full_ft', 'lp_ft', 'l2sp')
HOLDS, FAILS, UNSURE = 'holds', 'does not hold', 'cannot tell'
MISSING = 'not testable (runs missing)'


def runs_of(runs: Sequence[Result]) -> list[Result]:
  return [r for r in runs if r.family == 'shift' and r.treatment != 'base']


def sizes(runs: Sequence[Result]) -> list[int]:
  """The target sizes of the trained runs (no_adapt, size 0, shows in each)."""
  return sorted({r.examples_per_class for r in runs_of(runs) if r.treatment != 'no_adapt'})


def scores(runs: Sequence[Result], size: int) -> dict[str, dict[str, dict[int, float]]]:
  """{shift: {column: {seed: best10 top-1}}} at one target size; columns are
  the BESIDE treatments and 'g<n>' for surgical n (n = L + 1: the head)."""
  out = defaultdict(lambda: defaultdict(dict))
  for r in runs_of(runs):
    if r.examples_per_class == size or r.treatment == 'no_adapt':
      column = f'g{r.n}' if r.treatment == 'surgical' else r.treatment
      out[r.shift][column][r.seed] = r.accuracy
  return {s: dict(c) for s, c in out.items()}


def _groups(table: dict[str, dict[int, float]]) -> list[int]:
  return sorted(int(c[1:]) for c in table if c.startswith('g'))


def _mean(values: dict[int, float]) -> float:
  return float(np.mean(list(values.values())))


def _diffs(a: dict[int, float], b: dict[int, float]) -> list[float]:
  return [a[s] - b[s] for s in sorted(set(a) & set(b))]


def beyond(diffs: Sequence[float]) -> bool | None:
  """Whether a paired mean difference is beyond the seed spread: |mean| >
  t(0.975, k - 1) sd / sqrt(k) (a two-sided one-sample t-test at 5%); None
  with fewer than 2 seeds."""
  if len(diffs) < 2:
    return None
  sd = float(np.std(diffs, ddof=1))
  return abs(float(np.mean(diffs))) > stats.t.ppf(0.975, len(diffs) - 1) * sd / math.sqrt(
      len(diffs))


def matches(diffs: Sequence[float]) -> bool:
  """best - full_ft 'matches or beats': its mean is not below -tolerance,
  tolerance = max(1 point, 2 standard errors of the paired mean) (findings')."""
  se = float(np.std(diffs, ddof=1)) / math.sqrt(len(diffs)) if len(diffs) > 1 else 0.0
  return float(np.mean(diffs)) >= -max(TOLERANCE, N_SE * se)


def best_group(table: dict[str, dict[int, float]]) -> int:
  return max(_groups(table), key=lambda n: _mean(table[f'g{n}']))


def verdicts(table: dict[str, dict[str, dict[int, float]]], num_groups: int) -> list[dict]:
  """The criterion's parts at one size, one per shift it speaks of: input-level
  (the best single group is 1 or 2 and beats group L beyond the spread),
  output-level (the best is group L or the head) and every shift's best single
  group matching or beating full_ft. Each: {shift, claim, verdict, evidence};
  a part whose runs are not in the table is MISSING."""
  out = []
  for shift, t in sorted(table.items()):
    if not _groups(t):
      continue
    name, best = shift.split(':')[0], best_group(t)
    where = f'best single group {_name(best, num_groups)} ({100 * _mean(t[f"g{best}"]):.1f})'
    needed = [f'g{n}' for n in range(1, num_groups + 2)]
    if name in CORRUPTIONS and not all(g in t for g in needed):
      out.append({'shift': shift, 'claim': 'input-level: group 1 or 2 is best, beyond the '
                  'spread over the last group', 'verdict': MISSING,
                  'evidence': 'surgical needs every group (--config.layers empty)'})
    elif name in CORRUPTIONS:
      d = _diffs(t[f'g{best}'], t[f'g{num_groups}'])
      lead = beyond(d) if d else None
      verdict = FAILS if best > 2 else HOLDS if lead else UNSURE
      out.append({'shift': shift, 'claim': 'input-level: group 1 or 2 is best, beyond the '
                  'spread over the last group', 'verdict': verdict,
                  'evidence': f'{where}; lead over group {num_groups}: '
                  f'{100 * np.mean(d):+.1f} points, beyond spread: '
                  f'{ {True: "yes", False: "no", None: "one seed"}[lead]}'})
    elif name in LABEL_SHIFTS and not all(g in t for g in needed):
      out.append({'shift': shift, 'claim': 'output-level: the head or the last group is best',
                  'verdict': MISSING, 'evidence': 'surgical needs every group'})
    elif name in LABEL_SHIFTS:
      out.append({'shift': shift, 'claim': 'output-level: the head or the last group is best',
                  'verdict': HOLDS if best >= num_groups else FAILS, 'evidence': where})
    if 'full_ft' not in t:
      out.append({'shift': shift, 'claim': 'the best single group matches or beats full_ft',
                  'verdict': MISSING, 'evidence': 'no full_ft runs'})
    else:
      d = _diffs(t[f'g{best}'], t['full_ft'])
      out.append({'shift': shift, 'claim': 'the best single group matches or beats full_ft',
                  'verdict': HOLDS if d and matches(d) else FAILS,
                  'evidence': f'{where}; minus full_ft: {100 * np.mean(d):+.1f} points '
                  f'(tolerance max(1, 2 SE))'})
  return out


def overall(parts: Sequence[dict]) -> str:
  """Does not hold if a part does not; else not testable if a part's runs are
  missing (or there are no parts), cannot tell if a part cannot; else holds."""
  found = {p['verdict'] for p in parts}
  for verdict in (FAILS, MISSING, UNSURE):
    if verdict in found:
      return verdict
  return HOLDS if parts else MISSING


def overall_by_size(runs: Sequence[Result], num_groups: int) -> dict[int, str]:
  """The criterion's verdict at each target size (findings.json's 'shift')."""
  return {size: overall(verdicts(scores(runs, size), num_groups)) for size in sizes(runs)}


def _name(n: int, num_groups: int) -> str:
  return 'head' if n == num_groups + 1 else str(n)


def _cell(values: dict[int, float] | None) -> str:
  if not values:
    return ''
  v = 100 * np.array(list(values.values()))
  return f'{v.mean():.1f} ± {v.std(ddof=1):.1f}' if len(v) > 1 else f'{v.mean():.1f}'


def markdown(runs: Sequence[Result], groups: Sequence[str]) -> str:
  """shift.md: a table per target size, and the verdicts."""
  lines = ['# Which group to tune for each shift (docs/shift/)', '',
           f'{METRIC} in points, mean ± sd over seeds, on the shifted test set. Group n: '
           f'surgical fine-tuning of group n alone, every other group and the head as the '
           f'source base left them; "head": the head alone (linear probe). **Bold**: the '
           f'best single group of the row. no_adapt: the source base, untrained here.', '']
  for size in sizes(runs):
    table = scores(runs, size)
    columns = [*BESIDE, *(f'g{n}' for n in range(1, len(groups) + 2))]
    lines += [f'## {size or "all"} images per class', '',
              '| shift | ' + ' | '.join(LABELS.get(c) or _name(int(c[1:]), len(groups))
                                      for c in columns) + ' |',
              '|---' * (len(columns) + 1) + '|']
    for shift, t in sorted(table.items()):
      best = f'g{best_group(t)}' if _groups(t) else ''
      cells = [_cell(t.get(c)) for c in columns]
      cells = [f'**{v}**' if c == best and v else v for c, v in zip(columns, cells)]
      lines.append(f'| {shift} | ' + ' | '.join(cells) + ' |')
    lines += ['', *verdicts_markdown(table, len(groups)), '']
  return '\n'.join(lines) + '\n'


def verdicts_markdown(table: dict, num_groups: int) -> list[str]:
  parts = verdicts(table, num_groups)
  return [f'Criterion (docs/shift/README.md): **{overall(parts)}**.', '',
          '| shift | claim | verdict | evidence |', '|---|---|---|---|',
          *(f'| {p["shift"]} | {p["claim"]} | {p["verdict"]} | {p["evidence"]} |'
            for p in parts)]


def findings_section(runs: Sequence[Result], num_groups: int) -> str:
  """The criterion's verdict per target size, for findings.md."""
  lines = ['## The shift experiment: which group to tune (docs/shift/)', '']
  for size in sizes(runs):
    lines += [f'### {size or "all"} images per class', '',
              *verdicts_markdown(scores(runs, size), num_groups), '']
  lines.append('Tables: shift.md; heatmap: shift.png.')
  return '\n'.join(lines) + '\n'


def figure(runs: Sequence[Result], dataset: str | None, num_groups: int) -> Figure:
  """A heatmap per target size: rows shifts, columns the tuned group (1..L,
  head), colour surgical's top-1 minus full_ft's (points, mean over seeds),
  the best of each row boxed."""
  chosen = sizes(runs)
  fig = Figure(figsize=(1.1 * (num_groups + 1) + 2.5, 0.2 + 2.2 * max(len(chosen), 1)))
  for i, size in enumerate(chosen):
    table = scores(runs, size)
    shifts = sorted(s for s, t in table.items() if _groups(t) and 'full_ft' in t)
    grid = np.full((len(shifts), num_groups + 1), np.nan)
    for row, shift in enumerate(shifts):
      t = table[shift]
      for n in _groups(t):
        grid[row, n - 1] = 100 * np.mean(_diffs(t[f'g{n}'], t['full_ft']))
    ax = fig.add_subplot(len(chosen), 1, i + 1)
    if not shifts:
      ax.text(0.5, 0.5, f'{size or "all"} images per class: no full_ft to compare with',
              ha='center', va='center')
      ax.set_axis_off()
      continue
    limit = max(float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 1.0, 1.0)
    image = ax.imshow(grid, cmap='RdBu', vmin=-limit, vmax=limit, aspect='auto')
    for row, shift in enumerate(shifts):
      best = best_group(table[shift]) - 1
      ax.add_patch(Rectangle((best - 0.5, row - 0.5), 1, 1, fill=False, edgecolor='black',
                             lw=2))
      for col in range(num_groups + 1):
        if np.isfinite(grid[row, col]):
          dark = abs(grid[row, col]) > 0.6 * limit
          ax.text(col, row, f'{grid[row, col]:+.1f}', ha='center', va='center', fontsize=7,
                  color='white' if dark else 'black')
    ax.set_yticks(range(len(shifts)), shifts, fontsize=8)
    ax.set_xticks(range(num_groups + 1),
                  [_name(n, num_groups) for n in range(1, num_groups + 2)], fontsize=8)
    ax.set_title(f'{size or "all"} images per class', fontsize=9)
    ax.set_xlabel('tuned group', fontsize=8)
    fig.colorbar(image, ax=ax, label='minus full FT (points)')
  fig.suptitle(f'{dataset or "dataset unknown"}: surgical fine-tuning of one group '
               f'(boxed: best per shift)', fontsize=10)
  fig.tight_layout()
  return fig

