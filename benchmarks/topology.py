"""How far top-1 moves with the topology: the same grid as 1 process x 4 CPU
devices (the baseline) and as 2 processes x 2 devices, through the CLI.

  python benchmarks/topology.py [--json=PATH]

The grid is tests/test_scale_out.py's: `configs/default.py:runlocal,split=random`
at n = 3 (baseA and AnB, target B), 200 steps, evaluated on 2,000 examples.
The sequence of batches is the same on both topologies; only float rounding
(the order of the all-reduce, XLA CPU's thread pool per process) differs, and
training amplifies it by an amount that depends on the CPU.
"""

from __future__ import annotations

import argparse
import csv
import importlib.metadata
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..'))
GRID = ('--config=configs/default.py:runlocal,split=random', '--config.layers=(3,)',
        '--config.only=(transfer,)', '--config.report=false', '--config.total_steps=200',
        '--config.lr_step=120', '--config.eval_every=50', '--config.checkpoint_every=50',
        '--config.eval_examples=2000', '--config.eval_batch_size=500')


def cpu_model() -> str:
  """'AMD EPYC (family 26, model 2), 2 CPUs': VMs often hide the rest of the name."""
  with open('/proc/cpuinfo') as f:
    info = dict(line.split(':', 1) for line in f.read().split('\n\n')[0].splitlines()
                if ':' in line)
  info = {k.strip(): v.strip() for k, v in info.items()}
  return (f'{info.get("model name", platform.processor())} (family {info.get("cpu family")}, '
          f'model {info.get("model")}), {os.cpu_count()} CPUs')


def top1(workdir: str, devices: int, processes: int) -> dict[str, float]:
  """results.csv's top1 by run id, after the grid ran on the given topology."""
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  multi = lambda i: ((f'--coordinator_address=127.0.0.1:{port}', f'--num_processes={processes}',
                      f'--process_id={i}') if processes > 1 else ())
  procs = [subprocess.Popen([sys.executable, '-m', 'tfx_jax.main', *GRID, *multi(i),
                             f'--workdir={workdir}'], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
           for i in range(processes)]
  for proc in procs:
    _, err = proc.communicate()
    if proc.returncode:
      sys.exit(f'the {processes} x {devices} grid failed:\n{err[-3000:]}')
  with open(os.path.join(workdir, 'results.csv')) as f:
    return {row['run_id']: float(row['top1']) for row in csv.DictReader(f)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--json', default=None)
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    one = top1(os.path.join(tmp, 'one'), devices=4, processes=1)
    two = top1(os.path.join(tmp, 'two'), devices=2, processes=2)
  rows = {run: {'1x4': one[run], '2x2': two[run], 'abs_diff': abs(one[run] - two[run])}
          for run in sorted(one)}
  print(f'\n{cpu_model()}\n\n| run | top1, 1 x 4 | top1, 2 x 2 | abs diff |\n|---|---|---|---|')
  for run, row in rows.items():
    print(f'| {run} | {row["1x4"]:.4f} | {row["2x2"]:.4f} | {row["abs_diff"]:.4f} |')
  largest = max(row['abs_diff'] for row in rows.values())
  print(f'\nlargest |diff|: {largest:.4f} (tests/test_scale_out.py allows 0.05)')
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({'rows': rows, 'largest_abs_diff': largest, 'machine': cpu_model(),
                 'python': platform.python_version(),
                 'jax': importlib.metadata.version('jax')}, f, indent=1)


if __name__ == '__main__':
  main()
