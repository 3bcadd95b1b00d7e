"""How long a process takes to start: importing ml_dtypes, JAX and the CLI,
and the CLI refusing a bad value before and after JAX is needed.

  python benchmarks/startup.py [--python=PY ...] [--repeats=7] [--json=PATH]

Each --python (default: this interpreter) is an environment to compare, e.g.
one with ml-dtypes 0.7.0 against one with 0.6.0 (docs/benchmarks.md); they
take turns, so a load that comes and goes weighs on each alike. A number is
the median wall time of `--repeats` fresh processes after one warm-up.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import machine  # benchmarks/machine.py

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..'))
CLI = ['-m', 'tfx_jax.main', '--config=configs/m_n_split.py:dataset=fashion_mnist,runlocal',
       '--workdir=/nonexistent/startup-benchmark']
CASES = {  # name: (arguments of the interpreter, the exit code expected)
    'python': (['-c', 'pass'], 0),
    'import ml_dtypes': (['-c', 'import ml_dtypes'], 0),
    'import jax': (['-c', 'import jax'], 0),
    'import tfx_jax.main': (['-c', 'import tfx_jax.main'], 0),
    'CLI refuses --config.lr=0 (before JAX)': ([*CLI, '--config.lr=0'], 2),
    'CLI refuses --config.layers=9 (model traced)': ([*CLI, '--config.layers=9'], 2),
}
VERSIONS = ('import sys; from importlib import metadata; '
            'print(sys.version.split()[0], *(metadata.version(p) for p in '
            '("ml-dtypes", "jax", "numpy")))')


def timed(cmd: list[str], expect: int) -> float:
  start = time.perf_counter()
  done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
  seconds = time.perf_counter() - start
  if done.returncode != expect:
    sys.exit(f'{" ".join(cmd)} exited {done.returncode}, not {expect}:\n{done.stderr[-2000:]}')
  return seconds


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--python', action='append', default=None)
  parser.add_argument('--repeats', type=int, default=7)
  parser.add_argument('--json', default=None)
  args = parser.parse_args()
  pythons = args.python or [sys.executable]
  names = {}
  for py in pythons:
    version = subprocess.run([py, '-c', VERSIONS], capture_output=True, text=True, check=True)
    python, ml_dtypes, jax, numpy = version.stdout.split()
    names[py] = f'ml-dtypes {ml_dtypes}'
    print(f'{py}: Python {python}, ml-dtypes {ml_dtypes}, jax {jax}, numpy {numpy}',
          file=sys.stderr)
  load_before, busy_before, start = os.getloadavg(), machine.busy_cpu_seconds(), time.time()
  times = {(py, case): [] for py in pythons for case in CASES}
  for round_ in range(args.repeats + 1):  # Round 0 is the warm-up.
    for py in pythons:
      for case, (argv, expect) in CASES.items():
        seconds = timed([py, *argv], expect)
        if round_:
          times[py, case].append(seconds)
    print(f'round {round_} of {args.repeats} done', file=sys.stderr, flush=True)
  own = os.times()
  others = (None if busy_before is None else max(0.0, (
      machine.busy_cpu_seconds() - busy_before - own.children_user - own.children_system
      - own.user - own.system) / (time.time() - start)))
  machine.print_load(load_before[0], os.getloadavg()[0], others)
  median = {key: statistics.median(values) for key, values in times.items()}
  print(f'\nmedian wall time (s) of {args.repeats} fresh processes\n')
  print('| process | ' + ' | '.join(names[py] for py in pythons) + ' |')
  print('|---|' + '---|' * len(pythons))
  for case in CASES:
    print(f'| {case} | ' + ' | '.join(f'{median[py, case]:.2f}' for py in pythons) + ' |')
  if args.json:
    rows = {case: {names[py]: {'median_s': median[py, case], 'all_s': times[py, case]}
                   for py in pythons} for case in CASES}
    machine.write_json(args.json, {'rows': rows, 'pythons': {names[p]: p for p in pythons},
                                   'repeats': args.repeats},
                       load_before[0], os.getloadavg()[0], others)


if __name__ == '__main__':
  main()
