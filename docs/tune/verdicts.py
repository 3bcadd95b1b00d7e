"""The criterion of docs/tune/README.md, applied to a workdir's results.csv.

  python docs/tune/verdicts.py docs/tune/workdir/results.csv

Prints one row per claim: the paired per-seed differences (best10_top1, or
top-1 at the last step for WiSE), their mean and sd in points, the bar
t(0.975, k - 1) sd / sqrt(k), and the verdict as the README fixed it before
the study ran.
"""

from __future__ import annotations

import csv
import math
import sys

import numpy as np
from scipy import stats

NS = (1, 3, 5, 7)
TUNED = ('transfer_ft', 'surgical', 'lp_ft', 'l2sp', 'llrd')


def _scores(rows, treatment, n=None, key='best10_top1'):
  """{seed: score} of the target-B runs of `treatment` (at n when given)."""
  return {int(r['seed']): float(r[key]) for r in rows
          if r['treatment'] == treatment and r['target'] == 'B' and r[key]
          and (n is None or int(r['n']) == n)}


def _mean(scores):
  return float(np.mean(list(scores.values())))


def _best(candidates):
  """The (label, scores) with the highest mean."""
  return max(candidates, key=lambda c: _mean(c[1]))


def _verdict(diffs, lenient=False):
  """'holds', 'does not hold' or 'cannot tell' for the claim `mean > 0`;
  `lenient` (claim 2, "matches"): holds unless below 0 beyond the spread."""
  mean, sd = float(np.mean(diffs)), float(np.std(diffs, ddof=1))
  bar = stats.t.ppf(0.975, len(diffs) - 1) * sd / math.sqrt(len(diffs))
  beyond = abs(mean) > bar
  if lenient:
    verdict = 'does not hold' if beyond and mean < 0 else 'holds'
  else:
    verdict = ('holds' if beyond and mean > 0 else 'does not hold' if beyond
               else 'cannot tell')
  return mean, sd, bar, verdict


def claims(rows):
  """[(number, what, label of the pair, paired diffs, lenient)]."""
  base_b = _scores(rows, 'base')
  ft = {n: _scores(rows, 'transfer_ft', n) for n in NS}
  n_ft, best_ft = _best([(n, ft[n]) for n in NS])
  n_s, best_s = _best([(n, _scores(rows, 'surgical', n)) for n in NS])
  at7 = {t: _scores(rows, t, 7) for t in TUNED}
  probe = _scores(rows, 'linear_probe', 7)
  low, lowest = min(at7.items(), key=lambda item: _mean(item[1]))
  wise = {a: _scores(rows, 'transfer_ft', 7, f'wise_top1_{a}') for a in ('0.25', '0.5', '0.75')}
  a_best, wise_best = _best(list(wise.items()))
  end = _scores(rows, 'transfer_ft', 7, 'wise_top1_1')

  def diff(a, b):
    return [a[s] - b[s] for s in sorted(set(a) & set(b))]

  return [
      (1, 'transfer helps with 100 target images', f'AnB+ n = {n_ft} - base B',
       diff(best_ft, base_b), False),
      (2, 'one tuned group matches full fine-tuning', f'surgical n = {n_s} - AnB+ n = 7',
       diff(best_s, ft[7]), True),
      (3, 'LP-FT beats fine-tuning', 'LP-FT - AnB+, n = 7', diff(at7['lp_ft'], ft[7]), False),
      (4, 'L2-SP beats weight decay toward 0', 'L2-SP - AnB+, n = 7',
       diff(at7['l2sp'], ft[7]), False),
      (5, 'LLRD beats one rate', 'LLRD - AnB+, n = 7', diff(at7['llrd'], ft[7]), False),
      (6, 'the linear probe is the worst at n = 7', f'{low} - linear probe',
       diff(lowest, probe), False),
      (7, 'WiSE between the ends beats the fine-tuned run', f'AnB+ n = 7, a = {a_best} - a = 1',
       diff(wise_best, end), False),
  ]


def main(path: str) -> None:
  with open(path) as f:
    rows = list(csv.DictReader(f))
  print('| # | claim | difference | per seed (points) | mean ± sd | bar | verdict |\n'
        '|---|---|---|---|---|---|---|')
  for number, what, label, diffs, lenient in claims(rows):
    mean, sd, bar, verdict = _verdict(diffs, lenient)
    seeds = ', '.join(f'{100 * d:+.1f}' for d in diffs)
    print(f'| {number} | {what} | {label} | {seeds} | {100 * mean:+.1f} ± {100 * sd:.1f} '
          f'| {100 * bar:.1f} | **{verdict}** |')


if __name__ == '__main__':
  main(sys.argv[1])
