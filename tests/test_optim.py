import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tfx_jax.models import optim, surgery


def _params():
  rng = np.random.default_rng(0)
  return {name: {'kernel': jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
                 'bias': jnp.asarray(rng.normal(size=(4,)), jnp.float32)}
          for name in ('conv1', 'conv2', 'fc8')}


def test_step_schedule_is_caffes():
  schedule = optim.make_schedule('step', 0.01, 450_000, step_size=100_000, gamma=0.1)
  for step, lr in [(0, 0.01), (99_999, 0.01), (100_000, 0.001), (250_000, 1e-4),
                   (449_999, 1e-6)]:
    assert float(schedule(step)) == pytest.approx(lr, rel=1e-5)


def test_cosine_constant_and_warmup():
  cosine = optim.make_schedule('cosine', 0.1, 1000)
  assert float(cosine(0)) == pytest.approx(0.1)
  assert float(cosine(500)) == pytest.approx(0.05, rel=1e-4)
  assert float(cosine(1000)) == pytest.approx(0.0, abs=1e-7)
  assert float(optim.make_schedule('constant', 0.3, 10)(7)) == pytest.approx(0.3)
  warm = optim.make_schedule('constant', 0.2, 100, warmup_steps=10)
  assert float(warm(0)) == 0.0
  assert float(warm(5)) == pytest.approx(0.1)
  assert float(warm(10)) == pytest.approx(0.2)
  with pytest.raises(ValueError, match="Unknown schedule 'linear'"):
    optim.make_schedule('linear', 0.1, 10)


def test_optimizer_is_caffe_sgd_with_bias_rules():
  """Against a hand-written Caffe update: v = m v - lr (g + wd w); w += v."""
  params = _params()
  labels = surgery.freeze_labels(params, ['conv1'])
  lr, m, wd = 0.1, 0.9, 5e-4
  schedule = optim.make_schedule('step', lr, 10, step_size=2, gamma=0.5)
  opt = optim.make_optimizer(labels, schedule, momentum=m, weight_decay=wd,
                             bias_lr_mult=2.0)
  state = opt.init(params)
  ref = jax.tree.map(np.array, params)
  vel = jax.tree.map(np.zeros_like, ref)
  rng = np.random.default_rng(1)
  for step in range(5):
    grads = jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32), ref)
    updates, state = opt.update(jax.tree.map(jnp.asarray, grads), state, params)
    params = optax.apply_updates(params, updates)
    lr_t = lr * 0.5 ** (step // 2)
    for layer in ('conv2', 'fc8'):
      v, w, g = vel[layer], ref[layer], grads[layer]
      v['kernel'] = m * v['kernel'] - lr_t * (g['kernel'] + wd * w['kernel'])
      v['bias'] = m * v['bias'] - 2 * lr_t * g['bias']
      w['kernel'] = w['kernel'] + v['kernel']
      w['bias'] = w['bias'] + v['bias']
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               params, ref)  # conv1 frozen: still its initial value in `ref`.


def test_partition_keeps_no_state_for_frozen_leaves():
  params = _params()
  frozen = ['conv1', 'conv2']
  opt = optim.make_optimizer(surgery.freeze_labels(params, frozen),
                             optim.make_schedule('constant', 0.1, 10))
  state = opt.init(params)
  assert state.inner_states['frozen'].inner_state == optax.EmptyState()
  array_elements = sum(x.size for x in jax.tree.leaves(state) if np.ndim(x) > 0)
  trainable_elements = sum(x.size for x in jax.tree.leaves(params['fc8']))
  assert array_elements == trainable_elements  # one momentum buffer per trainable leaf
  updates, _ = opt.update(jax.tree.map(jnp.ones_like, params), state, params)
  for layer in frozen:
    for leaf in jax.tree.leaves(updates[layer]):
      np.testing.assert_array_equal(leaf, 0.0)
