"""Wall time of the runlocal random-split grid on a folder of 32x32 images
(scikit-learn's digits written as PNGs, `prepare folder` with its defaults)
against the same grid on Fashion-MNIST (issue 41: a folder was stored and
trained at 256 px, 13 minutes against about one).

  python benchmarks/folder_grid.py [--rounds=1] [--json=PATH]

Both grids are `configs/random_split.py:dataset=...,runlocal`, analysis
included, each from an empty workdir and an empty compilation cache (what a
new user meets); rounds alternate the two, and a row is the median over
rounds of the job's wall time. The ratio is of the same invocation, so it
holds where another job shares the CPU.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import PIL.Image

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..'))
SIDE = 32


def digits_folder(source: str) -> int:
  """scikit-learn's 1,797 digits as SIDE x SIDE grey PNGs, DIR/<digit>/<i>.png."""
  from sklearn import datasets  # pylint: disable=g-import-not-at-top  # Slow to import.
  digits = datasets.load_digits()
  for i, (image, label) in enumerate(zip(digits.images, digits.target)):
    os.makedirs(os.path.join(source, str(label)), exist_ok=True)
    grey = PIL.Image.fromarray(np.round(image * (255 / 16)).astype(np.uint8))
    grey.resize((SIDE, SIDE), PIL.Image.BILINEAR).save(os.path.join(source, str(label),
                                                                     f'{i}.png'))
  return len(digits.target)


def timed(cmd: list[str]) -> tuple[float, str]:
  start = time.perf_counter()
  done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
  if done.returncode:
    sys.exit(f'{" ".join(cmd)} failed:\n{done.stderr[-3000:]}')
  return time.perf_counter() - start, done.stdout


def grid(dataset: str, workdir: str, cache: str, data_dir: str | None) -> dict:
  seconds, _ = timed([sys.executable, '-m', 'tfx_jax.main',
                      f'--config=configs/random_split.py:dataset={dataset},runlocal',
                      *([f'--config.data_dir={data_dir}'] if data_dir else []),
                      f'--workdir={workdir}', f'--compilation_cache={cache}'])
  with open(os.path.join(workdir, 'results.csv')) as f:
    runs = list(csv.DictReader(f))
  with open(os.path.join(workdir, 'config.json')) as f:
    shape = json.load(f).get('image_size')
  return {'wall_s': seconds, 'runs': len(runs), 'train_s': sum(float(r['wall_s']) for r in runs),
          'analysis': os.path.exists(os.path.join(workdir, 'report', 'analysis.json')),
          'image_size': shape}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--rounds', type=int, default=1)
  parser.add_argument('--json', default=None)
  args = parser.parse_args()
  load = os.getloadavg()[0]
  with tempfile.TemporaryDirectory() as tmp:
    count = digits_folder(os.path.join(tmp, 'digits'))
    prepare_s, out = timed([sys.executable, '-m', 'tfx_jax.prepare', 'folder',
                            f'--source_dir={tmp}/digits', f'--data_dir={tmp}/data',
                            '--name=digits32'])
    stored = json.load(open(f'{tmp}/data/folders/digits32/manifest.json'))['image_size']
    print(f'prepare folder: {count} images stored at {stored} in {prepare_s:.1f} s',
          file=sys.stderr, flush=True)
    variants = {'Fashion-MNIST (28x28)': ('fashion_mnist', None),
                'digits folder (32x32 PNGs)': ('folder:digits32', f'{tmp}/data')}
    rows = {name: [] for name in variants}
    for rnd in range(args.rounds):
      for name, (dataset, data_dir) in variants.items():
        row = grid(dataset, f'{tmp}/w{rnd}-{len(rows[name])}-{dataset[-5:]}',
                   f'{tmp}/xla-{rnd}-{dataset[-5:]}', data_dir)
        rows[name].append(row)
        print(f'round {rnd}: {name} {row["wall_s"]:.1f} s', file=sys.stderr, flush=True)
  table = {name: {'median_wall_s': statistics.median(r['wall_s'] for r in got),
                  'median_train_s': statistics.median(r['train_s'] for r in got),
                  'runs': got[0]['runs'], 'analysis': all(r['analysis'] for r in got),
                  'all': got} for name, got in rows.items()}
  fashion, folder = (table[name]['median_wall_s'] for name in variants)
  print(f'\nrunlocal random-split grid, {os.cpu_count()} CPUs, median of {args.rounds} '
        f'round(s), load average {load:.2f} at the start\n')
  print('| grid | runs | wall (s) | runs\' training (s) | analysis |\n|---|---|---|---|---|')
  for name, row in table.items():
    print(f'| {name} | {row["runs"]} | {row["median_wall_s"]:.1f} | '
          f'{row["median_train_s"]:.1f} | {"yes" if row["analysis"] else "no"} |')
  print(f'\nfolder / Fashion-MNIST: {folder / fashion:.2f}x (goal: within 2x); prepare '
        f'folder {prepare_s:.1f} s, stored at {stored[0]}x{stored[1]}')
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({'rows': table, 'ratio': folder / fashion, 'prepare_s': prepare_s,
                 'stored_size': stored, 'rounds': args.rounds, 'load_average_start': load,
                 'cpus': os.cpu_count(), 'machine': platform.machine(),
                 'processor': platform.processor(), 'python': platform.python_version()},
                f, indent=1)


if __name__ == '__main__':
  main()
