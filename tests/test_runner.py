"""The grid in process: what runs share is built once, not per run or evaluation."""

import importlib.util
import os

from tfx_jax import input_pipeline, results, runner

CONFIGS = os.path.join(os.path.dirname(__file__), '..', 'configs')


def runlocal_config():
  spec = importlib.util.spec_from_file_location(
      'm_n_split', os.path.join(CONFIGS, 'm_n_split.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config('dataset=fashion_mnist,runlocal')
  c.layers, c.only, c.targets = (1,), ('base', 'transfer'), ('B', 'A')
  return c


def test_eval_data_is_built_once_per_half_for_the_whole_grid(tmp_path, monkeypatch):
  built = []
  original = input_pipeline.EvalData

  def counting(*args, **kwargs):
    built.append(tuple(args[1]))
    return original(*args, **kwargs)
  monkeypatch.setattr(input_pipeline, 'EvalData', counting)
  config = runlocal_config()
  assert runner.run(config, str(tmp_path))
  runs, _ = results.read_csv(os.path.join(tmp_path, 'results.csv'))
  # baseB, baseA, A1B, B1A: 4 runs of 3 evaluations each, on two halves.
  assert sorted(r.run_id for r in runs) == ['m_n-A1B-s0', 'm_n-B1A-s0', 'm_n-baseA-s0',
                                            'm_n-baseB-s0']
  assert len(built) == 2 and len(set(built)) == 2
