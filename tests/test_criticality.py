"""Layer criticality on the runlocal grid's trained baseB: resetting every
layer (and the head) gives the initial network's accuracy; one layer's reset
costs accuracy, and more for re-randomisation than for nothing."""

import os
import zlib

import jax
import numpy as np

from tfx_jax.analysis import criticality
from tfx_jax.data import datasets, input_pipeline
from tfx_jax.models import registry
from tfx_jax.training import checkpoints, steps

IMAGE_SHAPE = (28, 28, 1)


def test_a_reset_of_every_layer_gives_the_initial_networks_accuracy(runlocal_grid):
  workdir, _ = runlocal_grid
  model = registry.create('small', 4)
  mesh = steps.make_mesh()
  # baseB's own start: its init seed, as experiments.RunSpec.init_seed draws it.
  seed = zlib.crc32(b'm_n-baseB-s0') & 0x7FFFFFFF
  initial = registry.init_variables(model, jax.random.PRNGKey(seed), IMAGE_SHAPE)
  fresh = registry.init_variables(model, jax.random.PRNGKey(123), IMAGE_SHAPE)
  trained = checkpoints.load_variables(
      os.path.join(workdir, 'runs', 'm_n-baseB-s0', 'checkpoints'), 24, initial)
  classes = (5, 7, 8, 9)  # Fashion-MNIST's half B: footwear and bags.
  data = input_pipeline.EvalData('fashion_mnist', classes, batch_size=256, max_examples=512)
  spec = datasets.dataset_spec('fashion_mnist')
  eval_step = steps.make_eval_step(model, mesh, steps.normalizer(spec.mean, spec.std))

  def top1(variables):
    return steps.evaluate(eval_step, variables, data, 256, mesh)['top1']

  groups = registry.transferable_groups('small', IMAGE_SHAPE)
  everything = [*groups, 'fc8']
  assert top1(criticality.reset(trained, initial, everything)) == top1(initial)
  assert top1(initial) != top1(trained)
  scores = criticality.criticality(top1, trained, initial, fresh, groups)
  assert set(scores) == set(groups)
  for group, s in scores.items():
    assert s['trained'] == top1(trained)
    assert 0 <= s['rerandom'] <= 1 and 0 <= s['reinit'] <= 1
  # Re-randomising conv1 destroys what the layers above were trained to read.
  assert scores['conv1']['rerandom'] < scores['conv1']['trained']
  np.testing.assert_array_equal(
      jax.device_get(criticality.reset(trained, initial, ['conv2'])['params']['conv1']['kernel']),
      jax.device_get(trained['params']['conv1']['kernel']))
