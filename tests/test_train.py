import jax
import numpy as np
import pytest

from tfx_jax.models import convnet, optim, registry, surgery
from tfx_jax.training import steps

IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = 5


@pytest.fixture(scope='module')
def model():
  return registry.create('small', NUM_CLASSES)


def _batch(seed, size=16):
  rng = np.random.default_rng(seed)
  return {'image': rng.normal(size=(size, *IMAGE_SHAPE)).astype(np.float32),
          'label': rng.integers(0, NUM_CLASSES, size).astype(np.int32)}


def _setup(model, n, mesh, lr=0.01):
  params = registry.init_params(model, jax.random.PRNGKey(0), IMAGE_SHAPE)
  frozen = surgery.first_layers(n)
  opt = optim.make_optimizer(surgery.freeze_labels(params, frozen),
                             optim.make_schedule('constant', lr, 100))
  state = steps.create_state(params, opt, seed=0, mesh=mesh)
  return state, steps.make_train_step(model, opt, frozen, mesh)


@pytest.mark.parametrize('n', [0, 3, 7])
def test_frozen_layers_bitwise_unchanged_trainable_changed(model, n):
  mesh = steps.make_mesh()
  state, step = _setup(model, n, mesh)
  before = jax.device_get(state.params)
  for i in range(20):
    state, metrics = step(state, steps.global_batch(_batch(i), mesh))
  after = jax.device_get(state.params)
  assert int(state.step) == 20 and np.isfinite(metrics['loss'])
  for layer in convnet.LAYERS:
    same = [np.array_equal(a, b) for a, b in
            zip(jax.tree.leaves(before[layer]), jax.tree.leaves(after[layer]))]
    if layer in surgery.first_layers(n):
      assert all(same), f'frozen {layer} changed'
    else:
      assert not any(same), f'trainable {layer} did not change'


def _rel_err(a, b):
  return float(np.linalg.norm(np.ravel(a - b)) / max(np.linalg.norm(np.ravel(b)), 1e-30))


def test_sharded_steps_equal_single_device_steps(model):
  assert jax.device_count() == 4
  runs = {}
  for name, devices in [('single', jax.devices()[:1]), ('sharded', jax.devices())]:
    mesh = steps.make_mesh(devices)
    state, step = _setup(model, 2, mesh)
    losses = []
    for i in range(5):
      batch = steps.global_batch(_batch(100 + i), mesh)
      if name == 'sharded':
        assert len(batch['image'].sharding.device_set) == 4
      state, metrics = step(state, batch)
      losses.append(float(metrics['loss']))
    runs[name] = (np.array(losses), jax.device_get(state.params))
  (loss1, params1), (loss4, params4) = runs['single'], runs['sharded']
  # Finite first: NaNs compare equal in assert_allclose, and NaN params make
  # every relative error NaN, which the max below would skip.
  assert np.isfinite(loss1).all() and all(np.isfinite(x).all() for x in jax.tree.leaves(params1))
  np.testing.assert_allclose(loss4, loss1, rtol=1e-5)
  assert loss1[-1] != loss1[0]  # the steps really trained
  errors = jax.tree.map(_rel_err, params4, params1)
  assert max(jax.tree.leaves(errors)) < 1e-5, errors


def test_eval_counts_every_example_exactly_once(model):
  mesh = steps.make_mesh()
  params = registry.init_params(model, jax.random.PRNGKey(3), IMAGE_SHAPE)
  data = _batch(7, size=23)
  batches = [{k: v[i:i + 8] for k, v in data.items()} for i in range(0, 23, 8)]
  assert [len(b['label']) for b in batches] == [8, 8, 7]
  result = steps.evaluate(steps.make_eval_step(model, mesh),
                          jax.device_put({'params': params}, steps.replicated(mesh)),
                          batches, batch_size=8, mesh=mesh)
  logits = np.asarray(model.apply({'params': params}, data['image'], train=False))
  top1 = np.mean(logits.argmax(-1) == data['label'])
  top5 = np.mean([l in np.argsort(-row)[:5] for row, l in zip(logits, data['label'])])
  logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1,
                         keepdims=True)) - logits.max(-1, keepdims=True)
  loss = -np.mean(logp[np.arange(23), data['label']])
  assert result['count'] == 23
  assert result['top1'] == pytest.approx(top1, abs=1e-6)
  assert result['top5'] == pytest.approx(top5, abs=1e-6)
  assert result['loss'] == pytest.approx(loss, rel=1e-4)


def test_pad_batch():
  padded = steps.pad_batch(_batch(0, size=3), 8)
  assert padded['image'].shape == (8, *IMAGE_SHAPE)
  np.testing.assert_array_equal(padded['mask'], [1, 1, 1, 0, 0, 0, 0, 0])
  with pytest.raises(ValueError, match='larger than batch_size'):
    steps.pad_batch(_batch(0, size=9), 8)


@pytest.mark.parametrize('on_mesh', [True, False])
def test_state_owns_its_buffers_so_shared_params_survive_donation(model, on_mesh):
  mesh = steps.make_mesh()
  shared = registry.init_params(model, jax.random.PRNGKey(0), IMAGE_SHAPE)
  if on_mesh:  # Else on one device, as a restored or freshly built tree is.
    shared = jax.device_put(shared, steps.replicated(mesh))
  frozen = surgery.first_layers(7)
  opt = optim.make_optimizer(surgery.freeze_labels(shared, frozen),
                             optim.make_schedule('constant', 0.01, 10))
  step = steps.make_train_step(model, opt, frozen, mesh)
  for _ in range(2):  # Two runs built from the same base params.
    state = steps.create_state(shared, opt, seed=0, mesh=mesh)
    state, _ = step(state, steps.global_batch(_batch(0), mesh))
  assert all(not leaf.is_deleted() for leaf in jax.tree.leaves(shared))


def test_uint8_batches_normalised_in_the_steps_match_host_normalised_floats(model):
  """The model sees the same inputs as when the host normalised (float rounding)."""
  mesh = steps.make_mesh()
  rng = np.random.default_rng(0)
  mean, std = (72.94,), (90.02,)
  uint8 = {'image': rng.integers(0, 256, (16, *IMAGE_SHAPE), np.uint8),
           'label': rng.integers(0, NUM_CLASSES, 16).astype(np.int32)}
  host = dict(uint8, image=(uint8['image'].astype(np.float32) - np.float32(mean[0])) *
              (1.0 / np.asarray(std, np.float32)))
  preprocess = steps.normalizer(mean, std)
  state, _ = _setup(model, 2, mesh)
  params = jax.device_get(state.params)
  sums = [steps.evaluate(steps.make_eval_step(model, mesh, prep), {'params': params},
                         [batch], 16, mesh)
          for prep, batch in ((preprocess, uint8), (None, host))]
  for k in ('loss', 'top1', 'top5'):
    np.testing.assert_allclose(sums[0][k], sums[1][k], rtol=1e-5)
  params_after = []
  for prep, batch in ((preprocess, uint8), (None, host)):
    state, _ = _setup(model, 2, mesh)
    opt = optim.make_optimizer(surgery.freeze_labels(params, surgery.first_layers(2)),
                               optim.make_schedule('constant', 0.01, 100))
    step = steps.make_train_step(model, opt, surgery.first_layers(2), mesh, prep)
    state, _ = step(state, steps.global_batch(batch, mesh))
    params_after.append(jax.device_get(state.params))
  for a, b in zip(jax.tree.leaves(params_after[0]), jax.tree.leaves(params_after[1])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
