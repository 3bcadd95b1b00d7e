import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tfx_jax.errors import UserError
from tfx_jax.models import convnet, registry


def _shapes(preset, num_classes, image_shape):
  model = registry.create(preset, num_classes)
  params = jax.eval_shape(
      lambda: registry.init_params(model, jax.random.PRNGKey(0), image_shape))
  return jax.tree.map(lambda x: x.shape, params)


def test_layers_are_the_papers_eight():
  assert convnet.LAYERS == ('conv1', 'conv2', 'conv3', 'conv4', 'conv5',
                           'fc6', 'fc7', 'fc8')


def test_caffenet_has_the_reference_parameter_count():
  shapes = _shapes('caffenet', 1000, (227, 227, 3))
  assert tuple(shapes) == convnet.LAYERS
  assert sum(int(np.prod(s)) for s in jax.tree.leaves(
      shapes, is_leaf=lambda x: isinstance(x, tuple))) == 60_965_224
  # Groups 2 halve the input depth of conv2, conv4, conv5 kernels.
  assert shapes['conv1']['kernel'] == (11, 11, 3, 96)
  assert shapes['conv2']['kernel'] == (5, 5, 48, 256)
  assert shapes['conv4']['kernel'] == (3, 3, 192, 384)
  assert shapes['fc6']['kernel'] == (6 * 6 * 256, 4096)


@pytest.mark.parametrize('image_shape, flat', [((28, 28, 1), 3 * 3 * 64),
                                               ((32, 32, 3), 4 * 4 * 64)])
def test_small_preset_shapes(image_shape, flat):
  shapes = _shapes('small', 5, image_shape)
  assert shapes == {
      'conv1': {'kernel': (3, 3, image_shape[2], 32), 'bias': (32,)},
      'conv2': {'kernel': (3, 3, 32, 64), 'bias': (64,)},
      'conv3': {'kernel': (3, 3, 64, 96), 'bias': (96,)},
      'conv4': {'kernel': (3, 3, 96, 96), 'bias': (96,)},
      'conv5': {'kernel': (3, 3, 96, 64), 'bias': (64,)},
      'fc6': {'kernel': (flat, 256), 'bias': (256,)},
      'fc7': {'kernel': (256, 256), 'bias': (256,)},
      'fc8': {'kernel': (256, 5), 'bias': (5,)},
  }


def test_caffe_initialisation():
  model = registry.create('caffenet', 10)
  params = registry.init_params(model, jax.random.PRNGKey(0), (227, 227, 3))
  for layer, bias in [('conv1', 0), ('conv2', 1), ('conv3', 0), ('conv4', 1),
                      ('conv5', 1), ('fc6', 1), ('fc7', 1), ('fc8', 0)]:
    np.testing.assert_array_equal(params[layer]['bias'], bias)
  for layer, std in [('conv2', 0.01), ('conv3', 0.01), ('fc6', 0.005),
                     ('fc7', 0.005)]:
    assert abs(float(jnp.std(params[layer]['kernel'])) - std) < 0.05 * std
    assert abs(float(jnp.mean(params[layer]['kernel']))) < 0.05 * std


def test_forward_shapes_and_dropout_only_in_training():
  model = registry.create('small', 7)
  params = registry.init_params(model, jax.random.PRNGKey(0), (28, 28, 1))
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 28, 28, 1))
  eval1 = model.apply({'params': params}, x, train=False)
  eval2 = model.apply({'params': params}, x, train=False)
  assert eval1.shape == (4, 7)
  np.testing.assert_array_equal(eval1, eval2)
  train1 = model.apply({'params': params}, x, train=True,
                       rngs={'dropout': jax.random.PRNGKey(2)})
  assert not np.allclose(train1, eval1)


def test_reshape_max_pool_equals_flax_max_pool():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 7, 6, 3))
  expected = nn.max_pool(x, (2, 2), strides=(2, 2), padding='VALID')
  np.testing.assert_array_equal(convnet.max_pool(x, 2), expected)
  grad = jax.grad(lambda x: convnet.max_pool(x, 2).sum())(x)
  expected_grad = jax.grad(
      lambda x: nn.max_pool(x, (2, 2), strides=(2, 2), padding='VALID').sum())(x)
  np.testing.assert_array_equal(grad, expected_grad)


def test_local_response_norm_matches_caffe_formula():
  x = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (1, 2, 2, 7))) * 30
  expected = np.empty_like(x)
  for c in range(7):
    window = x[..., max(0, c - 2):c + 3]
    expected[..., c] = x[..., c] / (1 + 1e-4 / 5 * (window ** 2).sum(-1)) ** 0.75
  np.testing.assert_allclose(convnet.local_response_norm(jnp.asarray(x)), expected,
                             rtol=1e-5)


def test_unknown_model_is_a_clear_error():
  with pytest.raises(UserError, match="Unknown model 'vgg'; known: caffenet, narrow, "
                     "resnet18, resnet18_w16, small, or your own as package.module:factory"):
    registry.create('vgg', 10)


def test_resnet18_groups_are_the_stem_then_eight_blocks():
  model = registry.create('resnet18_w16', 10)
  variables = registry.init_variables(model, jax.random.PRNGKey(0), (28, 28, 1))
  assert set(variables) == {'params', 'batch_stats'}
  assert list(variables['params'])[-1] == 'Dense_0'
  groups = registry.groups('resnet18_w16', variables['params'])
  assert groups == ('conv_init+bn_init', *(f'ResNetBlock_{i}' for i in range(8)))
  # Widths 16, 32, 64, 128 by stage; the head sees the last stage.
  assert variables['params']['ResNetBlock_7']['Conv_1']['kernel'].shape == (3, 3, 128, 128)
  assert variables['params']['Dense_0']['kernel'].shape == (128, 10)
  # Without registry groups: the top-level keys in order but the head.
  assert registry.groups('pkg.mod:f', variables['params']) == tuple(
      k for k in variables['params'] if k != 'Dense_0')
  assert registry.transferable_groups('resnet18_w16', (28, 28, 1), ('bn_init',)) == ('bn_init',)
