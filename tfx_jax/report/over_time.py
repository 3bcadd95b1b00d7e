"""The findings over training time, from every run's metrics.jsonl.

At each evaluation step, every run's top-1 at that step stands in for its
best10_top1, so the same comparisons and the same six rules apply: each
treatment minus its base by n and step, where each curve crosses its base,
and the first step at which each finding holds.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence

from tfx_jax import files
from tfx_jax.grid.experiments import LABELS
from tfx_jax.grid.results import Result
from tfx_jax.report import comparisons
from tfx_jax.report import findings as fnd
from tfx_jax.report.comparisons import FAMILY_NAMES

TREATMENTS = ('transfer', 'selffer', 'transfer_ft', 'selffer_ft')  # The heatmaps.
Curves = Mapping[str, Mapping[int, float]]  # run id -> {eval step: top-1}


def read_curves(workdir: str, runs: Sequence[Result]) -> tuple[dict, list[str]]:
  """Each run's eval top-1 by step from WORKDIR/runs/<id>/metrics.jsonl, and
  notes on runs whose metrics are missing or unreadable (left out)."""
  curves, missing = {}, []
  for run in runs:
    path = os.path.join(workdir, 'runs', run.run_id, 'metrics.jsonl')
    try:
      lines = files.read_text(path).splitlines() if files.exists(path) else []
      records = [json.loads(line) for line in lines if line.strip()]
    except (OSError, ValueError):
      records = []
    curve = {int(r['step']): float(r['top1']) for r in records
             if isinstance(r, dict) and r.get('kind') == 'eval' and 'top1' in r}
    if curve:
      curves[run.run_id] = curve
    else:
      missing.append(run.run_id)
  notes = [f'Over time: no eval metrics for {len(missing)} runs (left out): '
           f'{", ".join(missing[:5])}{" ..." if len(missing) > 5 else ""}.'] if missing else []
  return curves, notes


def steps(curves: Curves) -> list[int]:
  """Every evaluation step of any run, in order."""
  return sorted({step for curve in curves.values() for step in curve})


def at_step(runs: Sequence[Result], curves: Curves, step: int) -> list[Result]:
  """The runs evaluated at `step`, with their top-1 there as the accuracy."""
  return [dataclasses.replace(r, best10_top1=curves[r.run_id][step]) for r in runs
          if step in curves.get(r.run_id, {})]


def gaps(runs: Sequence[Result], curves: Curves, family: str) -> dict:
  """{treatment: {n: {step: mean (treatment - base)}}} in one split family."""
  out = {t: {} for t in TREATMENTS}
  for step in steps(curves):
    now = at_step(runs, curves, step)
    for treatment in TREATMENTS:
      for n, gap in comparisons.compare(now, treatment, family).items():
        out[treatment].setdefault(n, {})[step] = gap.mean
  return {t: by_n for t, by_n in out.items() if by_n}


def crossing(series: Mapping[int, float]) -> tuple[int | None, str]:
  """(step, side): the first step from which the difference stays on the side
  of 0 it ends on ('below' or 'above'), when it was on the other side before;
  step None when it never changes side."""
  ordered = sorted(series)
  below = [series[s] < 0 for s in ordered]
  side = 'below' if below[-1] else 'above'
  first = len(below)
  while first > 0 and below[first - 1] == below[-1]:
    first -= 1
  return (ordered[first] if first else None), side


def finding_steps(runs: Sequence[Result], curves: Curves,
                  num_groups: int = 7) -> dict[int, tuple]:
  """{finding id: (first step it holds, step from which it holds to the end)};
  None for a step when it never does. Findings testable at no step are left
  out."""
  verdicts, testable = {}, set()
  for step in steps(curves):
    for f in fnd.evaluate(at_step(runs, curves, step), num_groups):
      verdicts.setdefault(f.id, []).append((step, f.holds is True))
      if f.holds is not None:
        testable.add(f.id)
  verdicts = {fid: series for fid, series in verdicts.items() if fid in testable}
  out = {}
  for fid, series in verdicts.items():
    first = next((s for s, holds in series if holds), None)
    since = None
    for s, holds in reversed(series):
      if not holds:
        break
      since = s
    out[fid] = (first, since)
  return out


def finding_step_text(first: int | None, since: int | None) -> str:
  if first is None:
    return 'never holds at any evaluation'
  text = f'first holds at step {first}'
  if since is None:
    return text + ', not at the last evaluation'
  return text + (', and from then on' if since == first else f', from step {since} on')


def markdown(when: Mapping[int, tuple], table: Mapping, family: str | None,
             notes: Sequence[str]) -> str:
  """over_time.md: when each finding holds (`finding_steps`), and the gap tables
  by n and step (`gaps` in split family `family`)."""
  lines = ['# Over training time: each treatment minus its base at every evaluation', '',
           'Each run\'s top-1 at an evaluation step stands in for its best10_top1; '
           'differences are in points, paired as in the findings and averaged '
           'over seeds. A curve crosses its base at the first step from which it '
           'stays on the side of 0 it ends on. Figure: over_time.png.', '',
           '## When each finding holds', '', '| id | finding | over time |',
           '|---|---|---|']
  lines += [f'| {fid} | {fnd.CLAIMS[fid]} | '
            f'{finding_step_text(*when[fid]) if fid in when else "not testable"} |'
            for fid in sorted(fnd.CLAIMS)]
  for treatment, by_n in table.items():
    all_steps = sorted({s for series in by_n.values() for s in series})
    lines += ['', f'## {LABELS[treatment]} - base ({FAMILY_NAMES[family]})', '',
              '| n | ' + ' | '.join(map(str, all_steps)) + ' | crosses base |',
              '|---|' + '---|' * (len(all_steps) + 1)]
    for n, series in sorted(by_n.items()):
      step, side = crossing(series)
      cells = [f'{100 * series[s]:+.1f}' if s in series else '' for s in all_steps]
      cross = f'{side} from step {step}' if step else f'never (always {side})'
      lines.append(f'| {n} | ' + ' | '.join(cells) + f' | {cross} |')
  if not table:
    lines += ['', 'No transfer runs with a base on a random or m/n split.']
  lines += ['', *[f'- {note}' for note in notes], '']
  return '\n'.join(lines)
