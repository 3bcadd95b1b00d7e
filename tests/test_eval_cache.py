"""Evaluation from memory: the same numbers as from the pipeline, nothing
decoded after the first pass, on the devices or on the host."""

import jax
import numpy as np
import pytest

from tfx_jax.data import input_pipeline
from tfx_jax.models import registry
from tfx_jax.training import eval_cache, steps

CLASSES = (0, 1, 2, 3, 4)


class Counted:
  """EvalData's batches, counting the images it loads; `stop_after` raises
  part-way through a pass, as an evaluation interrupted by an error."""

  def __init__(self, stop_after=None):
    self.data = input_pipeline.EvalData('fashion_mnist', CLASSES, batch_size=48,
                                        max_examples=200)
    self.num_examples, self.loaded, self.stop_after = self.data.num_examples, 0, stop_after

  def __len__(self):
    return len(self.data)

  def __iter__(self):
    for i, batch in enumerate(self.data):
      if i == self.stop_after:
        self.stop_after = None
        raise OSError('read error')
      self.loaded += len(batch['label'])
      yield batch


@pytest.fixture(scope='module')
def evaluate():
  model = registry.create('small', len(CLASSES))
  mesh = steps.make_mesh()
  variables = {'params': registry.init_params(model, jax.random.PRNGKey(0), (28, 28, 1))}
  step = steps.make_eval_step(model, mesh, steps.normalizer((72.9,), (90.0,)))
  return lambda batches: steps.evaluate(step, variables, batches, 48, mesh), mesh


@pytest.mark.parametrize('where', ['device', 'host', 'auto'])
def test_every_evaluation_after_the_first_decodes_nothing(evaluate, where):
  run, mesh = evaluate
  reference = run(Counted().data)  # Straight from the pipeline: 5 batches, the last of 8.
  source = Counted()
  cache = eval_cache.EvalCache(source, 48, mesh, where=where)
  assert [run(cache) for _ in range(3)] == [reference] * 3
  assert source.loaded == 200 == reference['count']
  assert cache.location == ('host' if where == 'host' else 'device')  # 'auto': 157 KB fits.
  if where == 'device':
    first = next(iter(cache))
    assert isinstance(first['image'], jax.Array) and first['image'].shape == (48, 28, 28, 1)
    assert first['image'] is next(iter(cache))['image']  # Kept, not put again.


def test_an_interrupted_first_pass_is_loaded_again(evaluate):
  run, mesh = evaluate
  source = Counted(stop_after=2)
  cache = eval_cache.EvalCache(source, 48, mesh)
  with pytest.raises(OSError):
    run(cache)
  assert run(cache)['count'] == 200 and source.loaded == 96 + 200


def test_the_rule_keeps_an_eighth_of_device_memory(evaluate):
  _, mesh = evaluate
  per_device = eval_cache.device_memory(jax.devices()[0])
  assert per_device > 2**20
  assert eval_cache.on_devices(4 * per_device // 8, mesh)  # 4 devices, an eighth each.
  assert not eval_cache.on_devices(4 * per_device // 8 + 4, mesh)


def test_a_full_batch_is_not_copied_by_padding():
  batch = {'image': np.zeros((4, 2, 2, 1), np.uint8), 'label': np.arange(4)}
  padded = steps.pad_batch(batch, 4)
  assert padded['image'] is batch['image'] and padded['mask'].all()
  partial = steps.pad_batch(batch, 6)
  assert partial['image'].shape[0] == 6 and partial['mask'].tolist() == [1] * 4 + [0] * 2
