import chex
import jax
import numpy as np
import pytest

from tfx_jax import models, surgery


@pytest.fixture(scope='module')
def trees():
  model = models.create('small', 5)
  a = models.init_params(model, jax.random.PRNGKey(0), (28, 28, 1))
  b = models.init_params(model, jax.random.PRNGKey(1), (28, 28, 1))
  return a, b


def _copy(tree):
  return jax.tree.map(np.array, tree)


def test_first_layers():
  assert surgery.first_layers(0) == ()
  assert surgery.first_layers(3) == ('conv1', 'conv2', 'conv3')
  assert surgery.first_layers(7) == models.LAYERS[:7]
  for bad in (-1, 8, 2.0, True, '3'):
    with pytest.raises(ValueError, match='0..7'):
      surgery.first_layers(bad)


def test_transplant_copies_named_layers_only(trees):
  target, source = trees
  target_before, source_before = _copy(target), _copy(source)
  layers = surgery.first_layers(3)
  out = surgery.transplant(target, source, layers)
  for layer in models.LAYERS:
    expected = source[layer] if layer in layers else target[layer]
    chex.assert_trees_all_equal(out[layer], expected)
  # Inputs untouched, and the output is a new tree.
  chex.assert_trees_all_equal(target, target_before)
  chex.assert_trees_all_equal(source, source_before)
  assert out is not target and out['fc8'] is not target['fc8']


def test_transplant_names_every_mismatched_path(trees):
  target, _ = trees
  other = models.init_params(models.create('small', 5), jax.random.PRNGKey(2),
                             (32, 32, 3))  # conv1 and fc6 shapes differ
  with pytest.raises(ValueError) as err:
    surgery.transplant(target, other, models.LAYERS[:7])
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
  assert set(trainable) == set(models.LAYERS) - {'conv1', 'fc7'}
  chex.assert_trees_all_equal(surgery.merge(trainable, frozen), params)
  with pytest.raises(ValueError, match='sharing layers'):
    surgery.merge(trainable, params)
