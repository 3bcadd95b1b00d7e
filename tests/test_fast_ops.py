"""Faster formulations compute the same function as plain Flax ops; XLA CPU options."""

import dataclasses
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tfx_jax.models import convnet, optim, registry, surgery
from tfx_jax.training import steps

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


def _flax_max_pool(x, window, stride=2):
  return nn.max_pool(x, (window, window), strides=(stride, stride), padding='VALID')


# CaffeNet's 3x3/2 (overlapping windows) and the small presets' 2x2/2, on even
# and odd sizes (the last row and column of an odd size are in no 2x2 window).
POOLS = [(3, (2, 13, 13, 4)), (3, (2, 14, 11, 4)), (2, (2, 8, 8, 4)), (2, (2, 7, 9, 4))]


def _pool_and_grad(pool, window, x, dy):
  """pool(x, window) and the gradient of <pool(x, window), dy>, compiled at once."""
  y, pool_vjp = jax.vjp(lambda x: pool(x, window), x)
  return y, pool_vjp(dy)[0]


_pool_and_grad = jax.jit(_pool_and_grad, static_argnums=(0, 1))


def _pooled_shape(window, shape):
  n, h, w, c = shape
  return n, (h - window) // 2 + 1, (w - window) // 2 + 1, c


@pytest.mark.parametrize('window, shape', POOLS)
def test_max_pool_equals_flax_max_pool(window, shape):
  rng = np.random.default_rng(0)
  x = rng.normal(size=shape).astype(np.float32)
  dy = rng.normal(size=_pooled_shape(window, shape)).astype(np.float32)
  (y, dx), (y0, dx0) = (_pool_and_grad(pool, window, x, dy)
                        for pool in (convnet.max_pool, _flax_max_pool))
  np.testing.assert_array_equal(y, y0)
  # Overlapping windows add their shares in some order: equal up to rounding.
  np.testing.assert_allclose(dx, dx0, rtol=1e-6, atol=1e-6 * np.abs(dx0).max())


@pytest.mark.parametrize('window, shape', POOLS)
def test_max_pool_gradient_goes_to_the_first_maximum_like_flax(window, shape):
  # Integers in a small range and a constant block: most windows hold tied
  # maxima. Integer cotangents make every sum exact, so a share given to any
  # other maximum than nn.max_pool's first one shows.
  rng = np.random.default_rng(0)
  x = rng.integers(0, 3, size=shape).astype(np.float32)
  x[:, :5, :5] = 2.0
  dy = rng.integers(-4, 5, size=_pooled_shape(window, shape)).astype(np.float32)
  (y, dx), (y0, dx0) = (_pool_and_grad(pool, window, x, dy)
                        for pool in (convnet.max_pool, _flax_max_pool))
  np.testing.assert_array_equal(y, y0)
  np.testing.assert_array_equal(dx, dx0)


def _lowered_train_step(model, mesh, image_shape=(28, 28, 1)):
  """The train step lowered for a state's shapes (computing none of it)."""
  params = jax.eval_shape(lambda rng: registry.init_params(model, rng, image_shape),
                          jax.random.PRNGKey(0))
  optimizer = optim.make_optimizer(surgery.freeze_labels(params, ()),
                                   optim.make_schedule('constant', 0.01, 10))
  state = jax.eval_shape(lambda p: steps.create_state(p, optimizer, seed=0, mesh=mesh), params)
  batch = {'image': jax.ShapeDtypeStruct((8, *image_shape), jnp.float32),
           'label': jax.ShapeDtypeStruct((8,), jnp.int32)}
  step = steps.make_train_step(model, optimizer, (), mesh)
  return step.lower(state, batch)


def _compiled_train_step_hlo(model, mesh):
  return _lowered_train_step(model, mesh).compile().as_text()


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


def _select_and_scatters(hlo: str) -> int:
  """select-and-scatter instructions, and the ops that JAX's select_and_scatter
  primitives became (XLA CPU rewrites them as scatters), by their metadata: the
  file and function names in the text do not count."""
  return (len(re.findall(r'= \S+ select-and-scatter\(', hlo)) +
          len(re.findall(r'op_name="[^"]*select_and_scatter', hlo)))


def test_caffenet_train_step_has_no_select_and_scatter(monkeypatch):
  # XLA GPU has no deterministic select-and-scatter (flax issue 4233), so the
  # pooling backward must not need one, on any backend: the StableHLO that
  # every backend gets holds none, and neither does what XLA CPU compiles.
  mesh = steps.make_mesh(jax.devices()[:1])
  model = convnet.ConvNet(TINY_CAFFENET, 5)
  lowered = _lowered_train_step(model, mesh, (67, 67, 3))
  assert 'select_and_scatter' not in lowered.as_text()
  assert _select_and_scatters(lowered.compile().as_text()) == 0
  monkeypatch.setattr(convnet, 'max_pool', _flax_max_pool)
  lowered = _lowered_train_step(model, mesh, (67, 67, 3))
  assert lowered.as_text().count('stablehlo.select_and_scatter') == 3  # Three pools.
  assert _select_and_scatters(lowered.compile().as_text()) >= 3
