"""Wall time of a whole grid through the CLI: one process (the baseline) against
`--local_shards=N`, one process a core.

  python benchmarks/local_shards.py [--shards=0] [--rounds=3] [--steps=768]
      [--bases_only] [--json=PATH]

The grid is `configs/default.py:split=random` cut to n = 3 (baseA, baseB and
BnB, BnB+, AnB, AnB+: 6 runs of the offline default's `narrow` net at batch
64), or with --bases_only its two bases, --steps each. Each job starts from
an empty workdir and a compilation cache that a first, untimed round of each
has filled; rounds alternate the two, and a row is the median over rounds of the job's wall time, start-up,
compilation, training, evaluation and report included. Run it on a quiet
machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..'))


def job(workdir: str, cache: str, steps: int, shards: int, bases_only: bool) -> float:
  cmd = [sys.executable, '-m', 'tfx_jax.main', '--config=configs/default.py:split=random',
         '--config.layers=(3,)', f'--config.total_steps={steps}',
         *(['--config.only=(base,)', '--config.targets=A,B'] if bases_only else []),
         f'--config.lr_step={2 * steps // 3}', f'--config.eval_every={steps // 2}',
         f'--config.checkpoint_every={steps}', f'--config.log_every={steps}',
         f'--workdir={workdir}', f'--compilation_cache={cache}', f'--local_shards={shards}']
  start = time.perf_counter()
  result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
  seconds = time.perf_counter() - start
  if result.returncode:
    sys.exit(f'{" ".join(cmd)} failed:\n{result.stderr[-3000:]}')
  return seconds


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--shards', type=int, default=0, help='--local_shards (0: one per CPU)')
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--steps', type=int, default=768)
  parser.add_argument('--bases_only', action='store_true')
  parser.add_argument('--json', default=None)
  args = parser.parse_args()
  variants = {'one process': 1, f'--local_shards={args.shards}': args.shards}
  times = {name: [] for name in variants}
  with tempfile.TemporaryDirectory() as tmp:
    cache = os.path.join(tmp, 'xla')
    for rnd in range(args.rounds + 1):  # Round 0 fills the cache: not timed.
      for name, shards in variants.items():
        seconds = job(os.path.join(tmp, f'{rnd}-{shards}'), cache, args.steps, shards,
                      args.bases_only)
        if rnd:
          times[name].append(seconds)
        print(f'round {rnd}{" (warm-up)" if not rnd else ""}: {name} {seconds:.1f} s',
              file=sys.stderr, flush=True)
  base = statistics.median(times['one process'])
  rows = {name: {'median_s': statistics.median(t), 'all_s': t,
                 'speedup': base / statistics.median(t)} for name, t in times.items()}
  runs = 2 if args.bases_only else 6
  print(f'\n{runs} runs x {args.steps} steps, {os.cpu_count()} CPUs, median of {args.rounds} rounds\n')
  print('| job | wall (s) | speed-up |\n|---|---|---|')
  for name, row in rows.items():
    print(f'| {name} | {row["median_s"]:.1f} | {row["speedup"]:.2f}x |')
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({'rows': rows, 'runs': runs, 'steps': args.steps, 'rounds': args.rounds,
                 'cpus': os.cpu_count(), 'machine': platform.machine(),
                 'python': platform.python_version()}, f, indent=1)


if __name__ == '__main__':
  main()
