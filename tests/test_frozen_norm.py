"""config.frozen_norm (tfx_jax/models/norm.py): under 'running' a frozen group's
BatchNorm normalises with its running averages in training, as in evaluation;
under 'batch' (the module as written) with the batch's statistics."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from tfx_jax.models import optim, registry, resnet, surgery
from tfx_jax.training import feature_cache, steps

SHAPE = (28, 28, 1)
STEM_AND_BLOCK_0 = ('conv_init', 'bn_init', 'ResNetBlock_0')  # The first two groups.


def _trained_looking(model):
  """Variables as a trained base's: running averages unlike any batch's
  statistics, and no BatchNorm scale at zero (as ResNet's last of a block starts)."""
  variables = registry.init_variables(model, jax.random.PRNGKey(0), SHAPE)

  def drawn(path, x):
    if path[0].key == 'params' and path[-1].key != 'scale':
      return x
    return jax.random.uniform(jax.random.PRNGKey(len(path) + x.size), x.shape,
                              minval=0.5, maxval=2.0)

  return jax.tree_util.tree_map_with_path(drawn, variables)


def _images(n=8):
  return jax.random.normal(jax.random.PRNGKey(2), (n, *SHAPE))


def _outputs(model, variables, path, train, frozen):
  """The output of the module at `path` in training or evaluation mode."""
  seen = []

  def capture(next_fun, args, kwargs):
    seen.append(next_fun(*args, **kwargs))
    return seen[-1]

  with nn.intercept_methods(steps.intercepting(path, capture)):
    model.apply(variables, _images(), train=train, frozen=frozen,
                mutable=['batch_stats'] if train else False)
  return np.asarray(seen[0])


@pytest.mark.parametrize('mode', ['running', 'batch'])
def test_a_frozen_resnet_group_trains_as_it_evaluates_only_under_running(mode):
  model = registry.create('resnet18_w16', 4, frozen_norm=mode)
  variables = _trained_looking(model)
  for path, frozen in (('ResNetBlock_0', True), ('ResNetBlock_1', False)):
    train = _outputs(model, variables, path, True, STEM_AND_BLOCK_0)
    evaluation = _outputs(model, variables, path, False, STEM_AND_BLOCK_0)
    same = np.allclose(train, evaluation, rtol=1e-5, atol=1e-5)
    assert same == (frozen and mode == 'running'), (path, mode)


@pytest.mark.parametrize('mode', ['running', 'batch'])
def test_the_train_step_of_a_frozen_resnet_computes_its_evaluation_only_under_running(mode):
  """Every group frozen (a linear probe): the train step's loss is the
  evaluation's on the same batch exactly when the frozen BatchNorm runs on its
  running averages."""
  model = registry.create('resnet18_w16', 4, frozen_norm=mode)
  variables = _trained_looking(model)
  frozen = tuple(p for g in resnet.GROUPS for p in g.split('+'))
  mesh = steps.make_mesh()
  params = variables.pop('params')
  opt = optim.make_optimizer(surgery.freeze_labels(params, frozen),
                             optim.make_schedule('constant', 0.01, 10))
  state = steps.create_state(params, opt, seed=0, mesh=mesh, model_state=variables)
  batch = {'image': np.asarray(_images()), 'label': np.arange(8, dtype=np.int32) % 4}
  sums = steps.make_eval_step(model, mesh)(
      state.variables, steps.global_batch({**batch, 'mask': np.ones(8, bool)}, mesh))
  before = jax.device_get(state.model_state)
  state, metrics = steps.make_train_step(model, opt, frozen, mesh)(
      state, steps.global_batch(batch, mesh))
  same = np.isclose(float(metrics['loss']), float(sums['loss'] / sums['count']), rtol=1e-5)
  assert same == (mode == 'running')
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.model_state), before)


@pytest.mark.parametrize('mode', ['running', 'batch'])
def test_an_nnx_modules_frozen_batchnorm_keeps_its_running_averages(mode):
  """NNX: BatchNorm on its running averages in training leaves them as they
  were; on the batch's statistics it moves them (the step keeps the frozen
  ones afterwards either way)."""
  model = registry.create('nnx_cnn:CNN', 4, frozen_norm=mode)
  variables = registry.init_variables(model, jax.random.PRNGKey(0), SHAPE)
  _, updated = model.apply(variables, _images(), train=True, frozen=('stem',),
                           rngs={'dropout': jax.random.PRNGKey(3)}, mutable=['batch_stats'])
  def moved(*path):
    new, old = updated['batch_stats'], variables['batch_stats']
    for name in path:
      new, old = new[name], old[name]
    return not np.allclose(new['norm']['mean'], old['norm']['mean'])

  assert (moved('stem'), moved('blocks', '0')) == (mode == 'batch', True)


class _Batches:
  """A train iterator as input_pipeline's: its state, and the plan and loader
  the feature cache reads (64 examples, 8 a batch)."""

  def __init__(self):
    self.state = {'next_batch': 0}
    self.plan = _Plan()

  def load(self, plan):
    return {'image': np.random.default_rng(plan['index']).integers(
        0, 255, (len(plan['index']), *SHAPE), np.uint8), 'label': plan['label']}

  def get_state(self):
    return self.state

  def set_state(self, state):
    self.state = state


class _Plan:
  positions = np.arange(64)

  def __getitem__(self, i):
    return {'index': self.positions[8 * (i % 8):8 * (i % 8 + 1)], 'label': np.zeros(8, np.int32)}


@pytest.mark.parametrize('mode', ['running', 'batch'])
def test_the_feature_cache_holds_a_frozen_resnet_prefix_only_under_running(mode):
  """Its prefix computes what the train step's frozen layers compute: under
  'running' the same for an example every time, so it is cached whole; under
  'batch' only the stem's conv, below its BatchNorm."""
  model = registry.create('resnet18_w16', 4, frozen_norm=mode)
  notes = []
  _, cut = feature_cache.setup(model, STEM_AND_BLOCK_0, _trained_looking(model), _Batches(),
                               lambda x: x / 255.0, steps.make_mesh(), batch_size=8,
                               budget_mb=64.0, augment=False, log=notes.append)
  assert cut[:2] == ('ResNetBlock_0' if mode == 'running' else 'conv_init', SHAPE), notes
