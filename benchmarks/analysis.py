"""What the analysis costs against the grid's training (docs/benchmarks.md).

  python benchmarks/analysis.py --workdir=W [--repeats=3] [--json=PATH]

W: a finished grid with its checkpoints (runs/study, the offline default's
study with the checkpoints it needs: docs/report.md#what-is-transferred).
The analysis (`tfx_jax.grid.analyse.analyse`, everything report/analysis.json
holds) runs --repeats times in this process: the first is what a job pays
(every function compiled), the median of the others is warm. The baseline,
measured in the same run: baseB's train step (its grid's model, batch and
data), the median of 5 blocks of 50 steps after 20 of warm-up. Against it
the grid's recorded training time (results.csv's wall_s, summed over the
runs) is scaled to this machine now: recorded x (baseB's step now / baseB's
recorded wall_s per step). The ratio is the cold analysis over that.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time

import jax

from tfx_jax.data import input_pipeline
from tfx_jax.grid import analyse, results, runner
from tfx_jax.models import registry
from tfx_jax.training import malloc, steps

import machine


def _step_seconds(workdir: str) -> tuple[str, float]:
  """(baseB's run id, its train step's median seconds now)."""
  config = analyse.config_of(workdir)
  grid = runner.Grid(config, workdir, analyse.groups_of(workdir))
  spec = next(s for s in grid.specs if s.treatment == 'base' and s.target == 'B')
  c, task = grid.run_config(spec), grid.task(spec)
  model = registry.create(c.model, len(task.classes), c.axis_name)
  variables = grid.init_variables(spec, model)
  params = variables.pop('params')
  optimizer = grid.optimizer(params, spec.plan(len(grid.groups)), c)
  state = steps.create_state(params, optimizer, spec.init_seed, grid.mesh,
                             model_state=variables)
  step = grid.train_step(model, optimizer, state, (), task, c.batch_size)
  data = input_pipeline.train_iterator(task.data, task.classes, batch_size=c.batch_size,
                                       seed=spec.init_seed, data_dir=task.data_dir,
                                       augment=c.augment, num_workers=c.num_workers)
  try:
    batches = [steps.global_batch(next(data), grid.mesh) for _ in range(50)]
  finally:
    data.close()
  for batch in batches[:20]:
    state, _ = step(state, batch)
  blocks = []
  for _ in range(5):
    jax.block_until_ready(state)
    start = time.perf_counter()
    for batch in batches:
      state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    blocks.append((time.perf_counter() - start) / len(batches))
  grid.preemption.close()
  return spec.run_id, statistics.median(blocks)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--json', default='')
  args = parser.parse_args()
  malloc.tune()
  load_before = os.getloadavg()
  busy_before, start = machine.busy_cpu_seconds(), time.time()
  runs = {r.run_id: r for r in results.read_csv(os.path.join(args.workdir, 'results.csv'))[0]}
  base, step_now = _step_seconds(args.workdir)
  recorded = runs[base].wall_s / runs[base].steps
  training = sum(r.wall_s for r in runs.values()) * step_now / recorded
  times, analysed = [], None
  for _ in range(args.repeats):
    t = time.perf_counter()
    analysed = analyse.analyse(args.workdir, log=lambda line: None)
    times.append(time.perf_counter() - t)
  cold, warm = times[0], statistics.median(times[1:]) if len(times) > 1 else None
  seeds = sum(len(s['seeds']) for s in analysed['splits'].values())
  fine_tuned = sum(len(v) for s in analysed['splits'].values() for seed in s['seeds'].values()
                   for v in seed['cka_b_vs'].values())
  load_after = os.getloadavg()
  own = resource.getrusage(resource.RUSAGE_SELF)
  others = (None if busy_before is None else max(0.0, (
      machine.busy_cpu_seconds() - busy_before - own.ru_utime - own.ru_stime)
      / (time.time() - start)))
  machine.print_load(load_before[0], load_after[0], others)
  rows = {'analysed': f'{seeds} (split, seed) pairs, {fine_tuned} BnB+/AnB+ runs',
          'analysis_cold_s': round(cold, 2),
          'analysis_warm_s': None if warm is None else round(warm, 2),
          'baseB_step_now_ms': round(1e3 * step_now, 3),
          'baseB_step_recorded_ms': round(1e3 * recorded, 3),
          'training_recorded_s': round(sum(r.wall_s for r in runs.values()), 1),
          'training_now_s': round(training, 1),
          'ratio_cold': round(cold / training, 5)}
  print('| quantity | value |\n|---|---|')
  for key, value in rows.items():
    print(f'| {key} | {value} |')
  if args.json:
    machine.write_json(args.json, {'workdir': args.workdir, 'runs': len(runs), **rows},
                       load_before[0], load_after[0], others)


if __name__ == '__main__':
  main()
