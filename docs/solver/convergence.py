"""The doubling test of issue 14: each base at the default length against itself
with every step count doubled, by seed and as the mean over seeds.

  python docs/solver/convergence.py STUDY_WORKDIR DOUBLED_WORKDIR [--json=PATH]

Prints a markdown table; a base converges when its mean best10_top1 over the
seeds present in both moves by less than 0.5 points (0.005) when doubled.
The JSON also holds every run's evaluation curve ([step, top-1]).
"""

import argparse
import json
import os
from collections import defaultdict

from tfx_jax.grid import results

THRESHOLD = 0.005


def bases(workdir: str) -> dict:
  """{(split, target, size, seed): (best10_top1, eval curve)} of the workdir's
  bases (size: the target-set size, 0 for all images)."""
  runs, _ = results.read_csv(os.path.join(workdir, 'results.csv'))
  return {(r.split, r.target, r.examples_per_class, r.seed): (r.best10_top1,
                                                               curve(workdir, r.run_id))
          for r in runs if r.treatment == 'base'}


def curve(workdir: str, run_id: str) -> list:
  path = os.path.join(workdir, 'runs', run_id, 'metrics.jsonl')
  with open(path) as f:
    lines = [json.loads(line) for line in f]
  return [[m['step'], m['top1']] for m in lines if m.get('kind') == 'eval']


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('study')
  parser.add_argument('doubled')
  parser.add_argument('--json')
  args = parser.parse_args()
  short, long = bases(args.study), bases(args.doubled)
  by_base = defaultdict(dict)
  for key in sorted(set(short) & set(long)):
    split, target, size, seed = key
    by_base[split, target, size][seed] = (short[key][0], long[key][0])
  lines = ['| base | seeds | best10_top1 | doubled | gain (points) | '
           'per seed | converged |', '|---|---|---|---|---|---|---|']
  out = []
  for (split, target, size), seeds in sorted(by_base.items()):
    mean_short = sum(s for s, _ in seeds.values()) / len(seeds)
    mean_long = sum(l for _, l in seeds.values()) / len(seeds)
    gain = mean_long - mean_short
    per_seed = ', '.join(f'{100 * (l - s):+.2f}' for s, l in seeds.values())
    name = f'{split} base{target}' + (f' ({size} per class)' if size else '')
    lines.append(f'| {name} | {",".join(map(str, seeds))} | '
                 f'{mean_short:.4f} | {mean_long:.4f} | {100 * gain:+.2f} | '
                 f'{per_seed} | {"yes" if gain < THRESHOLD else "no"} |')
    out.append({'split': split, 'target': target, 'examples_per_class': size,
                'seeds': {str(k): {'default': s, 'doubled': l,
                                   'curve_default': short[split, target, size, k][1],
                                   'curve_doubled': long[split, target, size, k][1]}
                          for k, (s, l) in seeds.items()},
                'mean_default': mean_short, 'mean_doubled': mean_long, 'gain': gain,
                'converged': gain < THRESHOLD})
  print('\n'.join(lines))
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({'threshold': THRESHOLD, 'bases': out}, f, indent=1)


if __name__ == '__main__':
  main()
