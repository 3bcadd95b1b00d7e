"""The CPU formulations compute the same function as the plain Flax/lax ops."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tfx_jax import models


def _value_and_grads(f, *args):
  """f(*args) as computed for differentiation, and the gradients of a fixed
  random projection of it."""
  out, f_vjp = jax.vjp(f, *args)
  return out, f_vjp(jax.random.normal(jax.random.PRNGKey(9), out.shape))


@pytest.mark.parametrize('x_shape, k_shape, strides, padding', [
    ((2, 9, 9, 3), (3, 3, 3, 8), (1, 1), ((1, 1), (1, 1))),
    ((2, 9, 8, 2), (3, 2, 2, 3), (2, 1), ((0, 1), (2, 0))),
])
def test_im2col_conv_equals_lax_conv(x_shape, k_shape, strides, padding):
  x = jax.random.normal(jax.random.PRNGKey(0), x_shape)
  kernel = jax.random.normal(jax.random.PRNGKey(1), k_shape)
  native = lambda x, k: jax.lax.conv_general_dilated(
      x, k, strides, padding, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  fast = lambda x, k: models.im2col_conv(x, k, strides, padding)
  (y, (dx, dk)), (y0, (dx0, dk0)) = (
      jax.device_get(jax.jit(_value_and_grads, static_argnums=0)(f, x, kernel))
      for f in (fast, native))
  for a, b in [(y, y0), (dx, dx0), (dk, dk0)]:
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(b).max())
  # Undifferentiated, it is the native convolution itself.
  np.testing.assert_array_equal(jax.jit(fast)(x, kernel), jax.jit(native)(x, kernel))


# CaffeNet's layer types (11x11 stride 4, groups 2, LRN, 3x3/2 pools), narrow.
TINY_CAFFENET = dataclasses.replace(
    models.CAFFENET,
    convs=tuple(dataclasses.replace(s, features=8) for s in models.CAFFENET.convs),
    dense=tuple(dataclasses.replace(s, features=16) for s in models.CAFFENET.dense))


@pytest.mark.parametrize('preset, image_shape', [(models.SMALL, (28, 28, 1)),
                                                 (TINY_CAFFENET, (67, 67, 3))])
def test_convnet_cpu_ops_compute_the_same_function(preset, image_shape):
  plain = models.ConvNet(preset, 5, cpu_ops=False)
  fast = models.ConvNet(preset, 5, cpu_ops=True)
  params = jax.jit(models.init_params, static_argnums=(0, 2))(
      plain, jax.random.PRNGKey(0), image_shape)
  # The params tree (names, shapes, dtypes) does not depend on the ops.
  assert (jax.eval_shape(lambda: models.init_params(fast, jax.random.PRNGKey(0), image_shape))
          == jax.eval_shape(lambda: params))
  x = jax.random.normal(jax.random.PRNGKey(1), (3, *image_shape))
  labels = jnp.array([0, 3, 4])

  def loss_and_grads(params, x, use_fast):
    model = fast if use_fast else plain
    def loss(params, x):
      logits = model.apply({'params': params}, x, train=True,
                           rngs={'dropout': jax.random.PRNGKey(2)})
      return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(3), labels])
    return jax.value_and_grad(loss, argnums=(0, 1))(params, x)

  loss_and_grads = jax.jit(loss_and_grads, static_argnums=2)
  (l0, (g0, dx0)), (l1, (g1, dx1)) = (jax.device_get(loss_and_grads(params, x, f))
                                      for f in (False, True))
  np.testing.assert_allclose(l1, l0, rtol=1e-5)
  for name in models.LAYERS:
    for leaf in ('kernel', 'bias'):
      a, b = g1[name][leaf], g0[name][leaf]
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(b).max(),
                                 err_msg=f'{name}/{leaf}')
  np.testing.assert_allclose(dx1, dx0, rtol=1e-4, atol=1e-5 * np.abs(dx0).max())


def test_max_pool_gradient_goes_to_the_first_maximum_like_flax():
  # Integers in a small range: most windows hold tied maxima.
  x = jax.random.randint(jax.random.PRNGKey(0), (2, 8, 7, 3), 0, 3).astype(jnp.float32)
  flax_pool = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2), padding='VALID')
  (y, (dx,)), (y0, (dx0,)) = (_value_and_grads(f, x) for f in
                              (lambda x: models.max_pool(x, 2), flax_pool))
  np.testing.assert_array_equal(y, y0)
  np.testing.assert_array_equal(dx, dx0)


def test_cpu_ops_are_the_default_on_cpu_only():
  assert models.default_cpu_ops() == (jax.default_backend() == 'cpu')
  assert models.create('small', 5).cpu_ops is None
