"""Faster formulations compute the same function as plain Flax ops; XLA CPU options."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tfx_jax.models import convnet, optim, registry, surgery
from tfx_jax.training import steps


def _value_and_grads(f, *args):
  """f(*args) as computed for differentiation, and the gradients of a fixed
  random projection of it."""
  out, f_vjp = jax.vjp(f, *args)
  return out, f_vjp(jax.random.normal(jax.random.PRNGKey(9), out.shape))


# CaffeNet's layer types (11x11 stride 4, groups 2, LRN, 3x3/2 pools), narrow.
TINY_CAFFENET = dataclasses.replace(
    convnet.CAFFENET,
    convs=tuple(dataclasses.replace(s, features=8) for s in convnet.CAFFENET.convs),
    dense=tuple(dataclasses.replace(s, features=16) for s in convnet.CAFFENET.dense))


@pytest.mark.parametrize('preset, image_shape', [(convnet.SMALL, (28, 28, 1)),
                                                 (TINY_CAFFENET, (67, 67, 3))])
def test_convnet_equals_the_same_net_with_flax_pooling(preset, image_shape, monkeypatch):
  model = convnet.ConvNet(preset, 5)
  params = jax.jit(registry.init_params, static_argnums=(0, 2))(
      model, jax.random.PRNGKey(0), image_shape)
  x = jax.random.normal(jax.random.PRNGKey(1), (3, *image_shape))
  labels = jnp.array([0, 3, 4])
  fast_pool = convnet.max_pool

  def loss_and_grads(params, x, use_fast):
    monkeypatch.setattr(convnet, 'max_pool', fast_pool if use_fast else lambda x, w: (
        nn.max_pool(x, (w, w), strides=(2, 2), padding='VALID')))
    def loss(params, x):
      logits = model.apply({'params': params}, x, train=True,
                           rngs={'dropout': jax.random.PRNGKey(2)})
      return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(3), labels])
    return jax.value_and_grad(loss, argnums=(0, 1))(params, x)

  loss_and_grads = jax.jit(loss_and_grads, static_argnums=2)
  (l0, (g0, dx0)), (l1, (g1, dx1)) = (jax.device_get(loss_and_grads(params, x, f))
                                      for f in (False, True))
  np.testing.assert_allclose(l1, l0, rtol=1e-5)
  for name in convnet.LAYERS:
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
                              (lambda x: convnet.max_pool(x, 2), flax_pool))
  np.testing.assert_array_equal(y, y0)
  np.testing.assert_array_equal(dx, dx0)


def _compiled_train_step_hlo(model, mesh):
  params = registry.init_params(model, jax.random.PRNGKey(0), (28, 28, 1))
  optimizer = optim.make_optimizer(surgery.freeze_labels(params, ()),
                                   optim.make_schedule('constant', 0.01, 10))
  state = steps.create_state(params, optimizer, seed=0, mesh=mesh)
  batch = {'image': jax.ShapeDtypeStruct((8, 28, 28, 1), jnp.float32),
           'label': jax.ShapeDtypeStruct((8,), jnp.int32)}
  step = steps.make_train_step(model, optimizer, (), mesh)
  return step.lower(state, batch).compile().as_text()


def _entry_convolutions(hlo: str) -> int:
  """Convolutions XLA runs itself: those in the entry computation, not fused."""
  entry = hlo[hlo.index('\nENTRY '):]
  entry = entry[:entry.index('\n}')]
  return entry.count(' convolution(')


def test_cpu_steps_keep_convolutions_out_of_ynnpack(monkeypatch):
  mesh = steps.make_mesh(jax.devices()[:1])
  model = registry.create('small', 5)
  assert steps.compiler_options(mesh) is not None
  # Forward, input gradient and kernel gradient of conv1..conv5, less conv1's
  # input gradient: all XLA's own.
  assert _entry_convolutions(_compiled_train_step_hlo(model, mesh)) == 14
  # XLA's default hands them all to YNNPACK (the slow case this avoids).
  monkeypatch.setattr(steps, 'compiler_options', lambda mesh: None)
  assert _entry_convolutions(_compiled_train_step_hlo(model, mesh)) == 0


def test_unknown_compiler_options_fall_back_to_xla_defaults(monkeypatch):
  monkeypatch.setitem(steps._CPU_OPTIONS, 'xla_cpu_no_such_option', 'x')
  steps._cpu_options_supported.cache_clear()
  try:
    mesh = steps.make_mesh(jax.devices()[:1])
    assert steps.compiler_options(mesh) is None
    assert ' convolution(' in _compiled_train_step_hlo(registry.create('small', 5), mesh)
  finally:
    monkeypatch.undo()
    steps._cpu_options_supported.cache_clear()


def test_hand_written_pooling_backward_is_for_cpu_only(monkeypatch):
  x = jnp.zeros((2, 8, 8, 3))
  pooling = lambda: str(jax.make_jaxpr(jax.grad(lambda x: convnet.max_pool(x, 2).sum()))(x))
  assert 'custom_vjp' in pooling() and 'select_and_scatter' not in pooling()
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  assert 'custom_vjp' not in pooling() and 'select_and_scatter' in pooling()
