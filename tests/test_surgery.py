import chex
import flax.linen as nn
import jax
import numpy as np
import pytest

from tfx_jax.models import convnet, registry, surgery


@pytest.fixture(scope='module')
def trees():
  model = registry.create('small', 5)
  a = registry.init_params(model, jax.random.PRNGKey(0), (28, 28, 1))
  b = registry.init_params(model, jax.random.PRNGKey(1), (28, 28, 1))
  return a, b


def _copy(tree):
  return jax.tree.map(np.array, tree)


def test_first_layers():
  assert surgery.first_layers(0) == ()
  assert surgery.first_layers(3) == ('conv1', 'conv2', 'conv3')
  assert surgery.first_layers(7) == convnet.LAYERS[:7]
  for bad in (-1, 8, 2.0, True, '3'):
    with pytest.raises(ValueError, match='0..7'):
      surgery.first_layers(bad)


def test_transplant_copies_named_layers_only(trees):
  target, source = trees
  target_before, source_before = _copy(target), _copy(source)
  layers = surgery.first_layers(3)
  out = surgery.transplant(target, source, layers)
  for layer in convnet.LAYERS:
    expected = source[layer] if layer in layers else target[layer]
    chex.assert_trees_all_equal(out[layer], expected)
  # Inputs untouched, and the output is a new tree.
  chex.assert_trees_all_equal(target, target_before)
  chex.assert_trees_all_equal(source, source_before)
  assert out is not target and out['fc8'] is not target['fc8']


def test_transplant_names_every_mismatched_path(trees):
  target, _ = trees
  other = registry.init_params(registry.create('small', 5), jax.random.PRNGKey(2),
                             (32, 32, 3))  # conv1 and fc6 shapes differ
  with pytest.raises(ValueError) as err:
    surgery.transplant(target, other, convnet.LAYERS[:7])
  message = str(err.value)
  assert 'conv1/kernel: source (3, 3, 3, 32)' in message
  assert 'target (3, 3, 1, 32)' in message
  assert 'fc6/kernel: source (1024, 256)' in message
  assert 'conv2' not in message


def test_transplant_missing_leaf_and_unknown_layer(trees):
  target, source = trees
  broken = dict(source, conv2={'kernel': source['conv2']['kernel']})
  with pytest.raises(ValueError, match='conv2/bias: missing in source'):
    surgery.transplant(target, broken, ['conv2'])
  with pytest.raises(ValueError, match="Unknown layer.*'conv9'"):
    surgery.transplant(target, source, ['conv1', 'conv9'])


def test_freeze_labels_cover_every_leaf_once(trees):
  params, _ = trees
  labels = surgery.freeze_labels(params, surgery.first_layers(3))
  chex.assert_trees_all_equal_structs(labels, params)
  flat = dict(zip(
      ['/'.join(k.key for k in path) for path, _ in
       jax.tree_util.tree_flatten_with_path(params)[0]],
      jax.tree.leaves(labels)))
  assert len(flat) == 16
  for path, label in flat.items():
    layer, leaf = path.split('/')
    if layer in ('conv1', 'conv2', 'conv3'):
      assert label == 'frozen', path
    else:
      assert label == ('biases' if leaf == 'bias' else 'weights'), path


def test_split_and_merge_roundtrip(trees):
  params, _ = trees
  trainable, frozen = surgery.split_trainable(params, ['conv1', 'fc7'])
  assert set(frozen) == {'conv1', 'fc7'}
  assert set(trainable) == set(convnet.LAYERS) - {'conv1', 'fc7'}
  chex.assert_trees_all_equal(surgery.merge(trainable, frozen), params)
  with pytest.raises(ValueError, match='sharing layers'):
    surgery.merge(trainable, params)


class _Block(nn.Module):
  features: int

  @nn.compact
  def __call__(self, x, train):
    x = nn.Conv(self.features, (3, 3), name='conv')(x)
    return nn.relu(nn.BatchNorm(use_running_average=not train, name='bn')(x))


class _Nested(nn.Module):
  """Nested submodules with BatchNorm: stem, encoder/block_0..1, head."""

  @nn.compact
  def __call__(self, x, train=False):
    x = _Block(4, name='stem')(x, train)
    x = _Encoder(name='encoder')(x, train)
    return nn.Dense(3, name='head')(x.mean((1, 2)))


class _Encoder(nn.Module):
  @nn.compact
  def __call__(self, x, train):
    for i in range(2):
      x = _Block(4, name=f'block_{i}')(x, train)
    return x


def _variables(seed, train_steps=0):
  """Variables of _Nested, with batch_stats moved away from init by a few
  forward passes in training mode (so two seeds differ in every collection)."""
  model = _Nested()
  x = jax.random.normal(jax.random.PRNGKey(seed + 100), (2, 6, 6, 1))
  variables = model.init(jax.random.PRNGKey(seed), x)
  for _ in range(train_steps):
    _, updates = model.apply(variables, x, train=True, mutable=['batch_stats'])
    variables = {**variables, **updates}
  return variables


def _flat(tree):
  return {'/'.join(str(k.key) for k in path): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_first_layers_of_any_ordered_groups():
  groups = ('stem', 'encoder/block_0+encoder/block_1', 'x')
  assert surgery.first_layers(2, groups) == ('stem', 'encoder/block_0', 'encoder/block_1')
  with pytest.raises(ValueError, match=r'0..3 \(layers stem..x'):
    surgery.first_layers(4, groups)


def test_a_nested_path_transplants_exactly_that_subtree():
  target, source = _variables(0)['params'], _variables(1)['params']
  out = surgery.transplant(target, source, ['encoder/block_1'])
  for path, leaf in _flat(out).items():
    expected = source if path.startswith('encoder/block_1/') else target
    np.testing.assert_array_equal(leaf, _flat(expected)[path])
  assert any(p.startswith('encoder/block_1/') for p in _flat(out))
  with pytest.raises(ValueError, match=r"Unknown layer.*'encoder/block_7'"):
    surgery.transplant(target, source, ['encoder/block_7'])


def test_transplant_variables_copies_every_collection():
  target = _variables(0, train_steps=2)
  source = jax.tree.map(lambda x: x + 1.0, _variables(1, train_steps=3))
  layers = surgery.first_layers(2, ('stem', 'encoder/block_0', 'encoder/block_1', 'head'))
  out = surgery.transplant_variables(target, source, layers)
  assert set(out) == {'params', 'batch_stats'}
  copied = 0
  for name in out:
    for path, leaf in _flat(out[name]).items():
      taken = path.startswith(('stem/', 'encoder/block_0/'))
      expected = _flat((source if taken else target)[name])[path]
      np.testing.assert_array_equal(leaf, expected)
      # Every leaf differs between the two inputs, so equality shows the source.
      assert not np.array_equal(_flat(source[name])[path], _flat(target[name])[path])
      copied += taken
  assert copied == 4 + 4 + 2 + 2  # params: conv kernel, bias, bn scale, bias x2; stats: mean, var x2
  with pytest.raises(ValueError, match="Unknown layer.*'neck'"):
    surgery.transplant_variables(target, source, ['neck'])


def test_normalisation_scales_get_no_decay_and_nested_freezing():
  params = _variables(0)['params']
  labels = _flat(surgery.freeze_labels(params, ['encoder/block_0']))
  assert labels['encoder/block_0/conv/kernel'] == 'frozen'
  assert labels['encoder/block_0/bn/scale'] == 'frozen'
  assert labels['encoder/block_1/bn/scale'] == 'no_decay'
  assert labels['encoder/block_1/bn/bias'] == 'biases'
  assert labels['encoder/block_1/conv/kernel'] == 'weights'
  assert labels['head/kernel'] == 'weights'
  trainable, frozen = surgery.split_trainable(params, ['encoder/block_0'])
  assert set(_flat(frozen)) == {p for p in _flat(params) if p.startswith('encoder/block_0/')}
  chex.assert_trees_all_equal(surgery.merge(trainable, frozen), surgery._as_dict(params))
