"""What the frozen-prefix feature cache saves (docs/benchmarks.md#the-feature-cache).

  python benchmarks/feature_cache.py [--steps=3072] [--json=PATH]

The offline default's net and data (`narrow`, Fashion-MNIST's random halves,
batch 64), each run trained by the real CLI for --steps (3,072: 6.5 epochs of
a 30k-image half; the demo's runs are 15,360, over which the cache's first
epoch weighs 5x less): baseA (the baseline, and the base the others copy),
then AnB at n = 1, 4, 7, the linear probe and surgical at n = 7, once with
the cache (config.feature_cache_mb's default) and once without (0), in one
invocation. Per run: ms per step, the median of its log's segment rates after
the first segment (warm-up, and the cache's filling), and the whole run's
time (results.csv's wall_s: every step and evaluation, the cache's filling
included; compilation not). Ratios are against baseA's whole run, measured
in the same invocation.
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

RUNS = ('random0-baseA-s0', 'random0-A1B-s0', 'random0-A4B-s0', 'random0-A7B-s0',
        'random0-A7B_linear_probe-s0', 'random0-A7B_surgical-s0')
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..'))


def _grid(workdir: str, steps: int, cache_mb: float) -> tuple[dict, dict]:
  """Runs the benchmark's grid in `workdir`: ({run id: results row},
  {run id: [steps/s of each logged segment]})."""
  every = max(steps // 8, 1)
  command = [sys.executable, '-m', 'tfx_jax.main', '--config=configs/default.py:split=random',
             f'--workdir={workdir}', '--config.only=transfer,linear_probe,surgical',
             '--config.layers=1,4,7', f'--config.total_steps={steps}',
             f'--config.lr_step={steps * 2 // 3}', f'--config.eval_every={every}',
             f'--config.log_every={every}', f'--config.checkpoint_every={steps}',
             f'--config.feature_cache_mb={cache_mb}', '--config.report=false',
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
  parser.add_argument('--steps', type=int, default=3072)
  parser.add_argument('--json', default='')
  args = parser.parse_args()
  load_before, busy_before, start = os.getloadavg(), machine.busy_cpu_seconds(), time.time()
  measured = {}
  with tempfile.TemporaryDirectory() as tmp:
    for name, cache_mb in (('cached', 2048.0), ('uncached', 0.0)):
      measured[name] = _grid(os.path.join(tmp, name), args.steps, cache_mb)
  own = os.times()
  others = (None if busy_before is None else max(0.0, (
      machine.busy_cpu_seconds() - busy_before - own.children_user - own.children_system
      - own.user - own.system) / (time.time() - start)))
  machine.print_load(load_before[0], os.getloadavg()[0], others)
  base_rows = measured['uncached'][0]
  base_s = float(base_rows[RUNS[0]]['wall_s'])
  table = {}
  for run_id in RUNS:
    entry = {}
    for name, (rows, rates) in measured.items():
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
    machine.write_json(args.json, {'steps': args.steps, 'baseline': RUNS[0], 'runs': table},
                       load_before[0], os.getloadavg()[0], others)


if __name__ == '__main__':
  main()
