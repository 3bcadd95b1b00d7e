"""Each group's features are what the layers above it read: the head applied
to the last group's features gives the logits, for the presets and for a
ResNet written as flax's examples write one."""

import jax
import numpy as np
import pytest

from tfx_jax.analysis import activations
from tfx_jax.models import registry

import flax_resnet


def _logits_from_last_group(name, image_shape, groups):
  model = registry.create(name, 5)
  variables = registry.init_variables(model, jax.random.PRNGKey(0), image_shape)
  images = jax.random.normal(jax.random.PRNGKey(1), (6, *image_shape))
  feats = jax.jit(lambda v, x: activations.features(model, v, x, groups))(variables, images)
  head = variables['params'][activations.head_of(variables['params'], groups)]
  logits = model.apply(variables, images, train=False)
  return feats, feats[groups[-1]] @ head['kernel'] + head['bias'], logits


def test_the_head_of_the_last_groups_features_gives_the_logits():
  groups = registry.transferable_groups('small', (28, 28, 1))
  feats, from_features, logits = _logits_from_last_group('small', (28, 28, 1), groups)
  np.testing.assert_allclose(from_features, logits, rtol=1e-5, atol=1e-5)
  assert set(feats) == set(groups) == {'conv1', 'conv2', 'conv3', 'conv4', 'conv5',
                                      'fc6', 'fc7'}
  # conv1 -> ReLU -> 2x2 pool: 14 x 14 x 32, pooled to 4 x 4 cells; fc7: 256 units.
  assert feats['conv1'].shape == (6, 4 * 4 * 32) and feats['fc7'].shape == (6, 256)
  assert float(feats['conv1'].min()) >= 0  # After conv1's ReLU, as conv2 reads it.


def test_a_users_resnet_gives_its_blocks_features_by_path():
  name = 'flax_resnet:ResNet18Narrow'
  groups = registry.transferable_groups(name, (32, 32, 3), flax_resnet.GROUPS)
  feats, from_features, logits = _logits_from_last_group(name, (32, 32, 3), groups)
  np.testing.assert_allclose(from_features, logits, rtol=1e-4, atol=1e-4)
  assert set(feats) == set(groups) and len(groups) == 9
  assert all(f.ndim == 2 and f.shape[0] == 6 for f in feats.values())


def test_the_pooling_rule():
  x = np.arange(2 * 9 * 9 * 1, dtype=np.float32).reshape(2, 9, 9, 1)
  out = np.asarray(activations.pooled(x))
  assert out.shape == (2, 16)  # 4 x 4 cells of 2 x 2, the 9th row and column dropped.
  np.testing.assert_allclose(out[0, 0], np.mean(x[0, :2, :2, 0]))
  assert activations.pooled(np.zeros((3, 7))).shape == (3, 7)
  with pytest.raises(ValueError, match='no head'):
    activations.head_of({'a': {}, 'b': {}}, ('a', 'b'))


def test_a_layer_wider_than_max_features_is_count_sketched_to_it():
  x = np.random.default_rng(0).normal(size=(6, 5000)).astype(np.float32)
  out = np.asarray(activations.sketched(x, 512))
  assert out.shape == (6, 512)  # 10 units a bin; 120 zero units pad 5,000 to 5,120.
  np.testing.assert_array_equal(out, np.asarray(activations.sketched(x, 512)))  # Fixed.
  # Each unit lands in one bin with a sign: a unit vector stays one, sums stay sums.
  one = np.zeros((1, 5000), np.float32)
  one[0, 1234] = 1
  assert sorted(np.abs(np.asarray(activations.sketched(one, 512)))[0])[-2:] == [0, 1]
  assert activations.sketched(x[:, :512], 512).shape == (6, 512)  # Not wider: as it is.
