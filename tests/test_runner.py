"""The grid in process: what runs share is built once, not per run or evaluation."""

import importlib.util
import os
import re
import shutil

import pytest

from tfx_jax.data import input_pipeline
from tfx_jax.grid import experiments, results, runner

CONFIGS = os.path.join(os.path.dirname(__file__), '..', 'configs')


def runlocal_config():
  spec = importlib.util.spec_from_file_location(
      'm_n_split', os.path.join(CONFIGS, 'm_n_split.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config('dataset=fashion_mnist,runlocal')
  c.layers, c.only, c.targets = (1,), ('base', 'transfer'), ('B', 'A')
  return c


@pytest.fixture(scope='module')
def counted_grid(tmp_path_factory):
  """runlocal_config()'s grid run in process, once for this module, counting
  the evaluation sets built and the images decoded: (workdir, built, decoded)."""
  built, decoded = [], []
  original = input_pipeline.EvalData

  def counting(*args, **kwargs):
    built.append(tuple(args[1]))
    data = original(*args, **kwargs)
    fill = data._load.fill
    def counting_fill(plan, out, lo, hi):
      decoded.append(hi - lo)
      return fill(plan, out, lo, hi)
    data._load.fill = counting_fill
    return data
  workdir = str(tmp_path_factory.mktemp('grid'))
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(input_pipeline, 'EvalData', counting)
    assert runner.run(runlocal_config(), workdir)
  return workdir, built, decoded


def test_eval_data_is_decoded_once_per_half_for_the_whole_grid(counted_grid):
  workdir, built, decoded = counted_grid
  runs, _ = results.read_csv(os.path.join(workdir, 'results.csv'))
  # baseB, baseA, A1B, B1A: 4 runs of 3 evaluations each, on two halves.
  assert sorted(r.run_id for r in runs) == ['m_n-A1B-s0', 'm_n-B1A-s0', 'm_n-baseA-s0',
                                            'm_n-baseB-s0']
  assert len(built) == 2 and len(set(built)) == 2
  # 12 evaluations of 256 images each, but each half's 256 decoded once.
  assert sum(decoded) == 2 * runlocal_config().eval_examples


def test_sweep_shards_split_frozen_and_fine_tuned_runs_evenly():
  assert [experiments.shard_of(i, 2) for i in range(8)] == [0, 1, 1, 0, 0, 1, 1, 0]
  assert [experiments.shard_of(i, 3) for i in range(7)] == [0, 1, 2, 2, 1, 0, 0]
  spec = importlib.util.spec_from_file_location('default', os.path.join(CONFIGS, 'default.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  specs = experiments.study(module.get_config(), 7)
  shards = [experiments.shard_of(i, 2) for i in range(len(specs))]
  # Training every layer costs up to twice a frozen run: each shard gets half
  # of them. A plain round robin gave shard 1 all 14 fine-tuned runs.
  trained = [shards[i] for i, s in enumerate(specs) if s.treatment.endswith('_ft')]
  assert sorted(trained) == [0] * 7 + [1] * 7
  assert sorted(shards) == [0] * 23 + [1] * 23


def test_a_copy_without_checkpoints_trains_again_only_the_bases_it_needs(counted_grid, tmp_path,
                                                                       capsys):
  # A published workdir (docs/publish.sh) keeps results, not
  # checkpoints: resuming it must retrain a base an unfinished run copies from.
  config = runlocal_config()
  reference, copy = counted_grid[0], str(tmp_path / 'copy')
  shutil.copytree(reference, copy, ignore=shutil.ignore_patterns('checkpoints', 'tb'))
  shutil.rmtree(os.path.join(copy, 'runs', 'm_n-A1B-s0'))
  capsys.readouterr()
  assert runner.run(config, copy)
  log = capsys.readouterr().out
  assert 'm_n-baseA-s0] finished, but its final checkpoint is missing' in log
  start = re.search(r'(\d+) runs in .*?, (\d+) finished \(1 to train again', log)
  total, done = map(int, start.groups())
  assert done == total - 1  # only the deleted run is unfinished
  assert 'm_n-baseB-s0] finished' not in log
  runs_dir = os.path.join(copy, 'runs')
  assert os.path.isdir(os.path.join(runs_dir, 'm_n-baseA-s0', 'checkpoints'))
  assert not os.path.exists(os.path.join(runs_dir, 'm_n-baseB-s0', 'checkpoints'))
  want, got = (results.read_csv(os.path.join(w, 'results.csv'))[0] for w in (reference, copy))
  numbers = lambda r: (r.run_id, r.top1, r.top5, r.best10_top1, r.steps)
  assert [numbers(r) for r in got] == [numbers(r) for r in want]


def test_costly_bases_go_to_different_sweep_shards():
  # A cross-dataset sweep: base A (the source) costs 40 times a target base.
  specs = experiments.grid('transfer', 'from:fashion_mnist', (0, 1, 2), (1,), targets=('B',),
                           sizes=(5, 20, 0))
  costs = [40 if s.treatment == 'base' and s.target == 'A' else 1 for s in specs]
  shards = experiments.assign(specs, costs, 2)
  source_bases = [shards[i] for i, s in enumerate(specs) if s.target == 'A']
  assert sorted(source_bases) == [0, 0, 1]  # Snake order gave shard 0 all three.
  assert [experiments.shard_of(i, 2) for i, s in enumerate(specs) if s.target == 'A'] == [0, 0, 0]
  base_load = [sum(c for c, k, s in zip(costs, shards, specs)
                   if k == shard and s.treatment == 'base') for shard in (0, 1)]
  # Greedy by cost: two source bases on shard 0; one and all 9 target bases on 1.
  assert base_load == [80, 49]
  # The other runs keep the snake order.
  assert all(k == experiments.shard_of(i, 2) for i, (s, k) in enumerate(zip(specs, shards))
             if s.treatment != 'base')
