"""What the frozen-prefix feature cache saves (docs/benchmarks.md#the-feature-cache).

  python benchmarks/feature_cache.py [--steps=15360] [--json=PATH]

The offline default's net and data (`narrow`, Fashion-MNIST's random halves,
batch 64), each run trained by the real CLI for --steps (15,360: the demo's
base run, where it converges, docs/solver/): baseA, the baseline and the base
the others copy, trained once without the cache; then AnB at n = 1, 4, 7, the
linear probe and surgical at n = 7, once without the cache
(--config.feature_cache_mb=0) and once with it (its default), the second grid
reading the first's baseA as a pretrained base; in one invocation. Per run:
ms per step, the median of its log's segment rates after the first segment
(warm-up, and the cache's filling), and the whole run's time (results.csv's
wall_s: every step and evaluation, the WiSE evaluations and the cache's
filling included; compilation not). Ratios are against baseA's whole run,
measured in the same invocation.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import machine

BASE = 'random0-baseA-s0'
RUNS = ('random0-A1B-s0', 'random0-A4B-s0', 'random0-A7B-s0', 'random0-A7B_linear_probe-s0',
        'random0-A7B_surgical-s0')
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..'))


def _grid(workdir: str, steps: int, cache_mb: float, base_a: str = '') -> tuple[dict, dict]:
  """Runs the benchmark's runs in `workdir`: ({run id: results row},
  {run id: [steps/s of each logged segment]})."""
  every = max(steps // 10, 1)
  command = [sys.executable, '-m', 'tfx_jax.main', '--config=configs/default.py:split=random',
             f'--workdir={workdir}', '--config.only=transfer,linear_probe,surgical',
             '--config.layers=1,4,7', f'--config.sweep.runs={" ".join((BASE, *RUNS))}',
             f'--config.total_steps={steps}', f'--config.lr_step={steps * 2 // 3}',
             f'--config.eval_every={every}', f'--config.log_every={every}',
             f'--config.checkpoint_every={steps}', f'--config.feature_cache_mb={cache_mb}',
             f'--config.base_a={base_a}', '--config.report=false',
             '--config.analysis.run=false']
  out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
  if out.returncode:
    sys.exit(f'The grid failed:\n{out.stderr[-3000:]}')
  rates = {}
  for line in out.stdout.splitlines():
    match = re.match(r'\[\d+/\d+ (\S+)\] step \d+/\d+ .*\| ([\d.]+) steps/s', line)
    if match:
      rates.setdefault(match.group(1), []).append(float(match.group(2)))
  with open(os.path.join(workdir, 'results.csv')) as f:
    rows = {r['run_id']: r for r in csv.DictReader(f)}
  return rows, rates


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--steps', type=int, default=15360)
  parser.add_argument('--json', default='')
  args = parser.parse_args()
  load_before, busy_before, start = os.getloadavg(), machine.busy_cpu_seconds(), time.time()
  with tempfile.TemporaryDirectory() as tmp:
    uncached = _grid(os.path.join(tmp, 'uncached'), args.steps, 0.0)
    cached = _grid(os.path.join(tmp, 'cached'), args.steps, 2048.0,
                   base_a=os.path.join(tmp, 'uncached', 'runs', BASE))
  own = os.times()
  others = (None if busy_before is None else max(0.0, (
      machine.busy_cpu_seconds() - busy_before - own.children_user - own.children_system
      - own.user - own.system) / (time.time() - start)))
  machine.print_load(load_before[0], os.getloadavg()[0], others)
  base_s = float(uncached[0][BASE]['wall_s'])
  base_ms = 1e3 / statistics.median(uncached[1][BASE][1:] or uncached[1][BASE])
  print(f'{BASE} (nothing frozen, no cache): {base_ms:.1f} ms/step, {base_s:.1f} s, '
        f'best10 top-1 {float(uncached[0][BASE]["best10_top1"]):.4f}')
  table = {}
  for run_id in RUNS:
    entry = {}
    for name, (rows, rates) in (('cached', cached), ('uncached', uncached)):
      steady = rates.get(run_id, [])[1:] or rates.get(run_id, [])
      entry[f'{name}_ms_per_step'] = round(1e3 / statistics.median(steady), 3)
      entry[f'{name}_run_s'] = float(rows[run_id]['wall_s'])
      entry[f'{name}_of_base'] = round(float(rows[run_id]['wall_s']) / base_s, 4)
      entry[f'{name}_top1'] = float(rows[run_id]['best10_top1'])
    table[run_id] = entry
  print("| run | ms/step cached | uncached | run s cached | uncached | of baseA's run, cached "
        '| uncached | best10 top-1 cached | uncached |\n|---|---|---|---|---|---|---|---|---|')
  for run_id, e in table.items():
    print(f'| {run_id} | {e["cached_ms_per_step"]} | {e["uncached_ms_per_step"]} | '
          f'{e["cached_run_s"]} | {e["uncached_run_s"]} | {e["cached_of_base"]} | '
          f'{e["uncached_of_base"]} | {e["cached_top1"]:.4f} | {e["uncached_top1"]:.4f} |')
  if args.json:
    machine.write_json(args.json, {
        'steps': args.steps, 'baseline': {'run': BASE, 'ms_per_step': round(base_ms, 3),
                                          'run_s': base_s}, 'runs': table},
        load_before[0], os.getloadavg()[0], others)


if __name__ == '__main__':
  main()
