"""A user's own linen module, defined here (not in tfx_jax): BatchNorm, nested
submodules, layer groups by path, through the CLI and the train step."""

import json
import os

import flax.linen as nn
import jax
import numpy as np

from tfx_jax.models import net, optim, registry, surgery
from tfx_jax.training import checkpoints, steps

import flax_resnet
import nnx_cnn
from conftest import RUNLOCAL, cli, results

GROUPS = ('stem', 'encoder/block_0+encoder/block_1')


class Block(nn.Module):
  features: int

  @nn.compact
  def __call__(self, x, train):
    x = nn.Conv(self.features, (3, 3), use_bias=False)(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    return nn.max_pool(nn.relu(x), (2, 2), (2, 2))


class Encoder(nn.Module):
  @nn.compact
  def __call__(self, x, train):
    x = Block(8, name='block_0')(x, train)
    return Block(8, name='block_1')(x, train)


class Net(nn.Module):
  num_classes: int

  @nn.compact
  def __call__(self, x, *, train):
    x = Block(4, name='stem')(x, train)
    x = Encoder(name='encoder')(x, train)
    return nn.Dense(self.num_classes, name='head')(x.reshape(x.shape[0], -1))


def factory(num_classes):
  return Net(num_classes)


def _flat(tree, prefix=''):
  return {prefix + '/'.join(str(k.key) for k in path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_frozen_groups_keep_params_and_batch_stats_bitwise():
  model, mesh = factory(3), steps.make_mesh()
  variables = registry.init_variables(model, jax.random.PRNGKey(0), (12, 12, 1))
  params = variables.pop('params')
  frozen = surgery.first_layers(1, GROUPS)  # The stem.
  opt = optim.make_optimizer(surgery.freeze_labels(params, frozen),
                             optim.make_schedule('constant', 0.1, 10))
  state = steps.create_state(params, opt, 0, mesh, model_state=variables)
  before = _flat(state.variables)
  step = steps.make_train_step(model, opt, frozen, mesh)
  rng = np.random.default_rng(0)
  for _ in range(3):
    batch = {'image': rng.normal(size=(8, 12, 12, 1)).astype(np.float32),
             'label': rng.integers(0, 3, 8).astype(np.int32)}
    state, _ = step(state, steps.global_batch(batch, mesh))
  after = _flat(state.variables)
  assert set(after) == set(before)
  changed = {path for path in before if not np.array_equal(before[path], after[path])}
  stem = {path for path in before if path.split('/')[1] == 'stem'}
  assert len(stem) == 5  # params: kernel, scale, bias; batch_stats: mean, var
  assert not stem & changed  # Frozen: bitwise, in every collection.
  # Everything else trains, BatchNorm statistics included.
  assert changed == set(before) - stem


def test_cli_grid_of_a_users_module_with_groups_by_path(tmp_path):
  workdir = str(tmp_path / 'own')
  env = {**os.environ, 'PYTHONPATH': os.path.dirname(__file__)}
  result = cli('--config=configs/m_n_split.py:dataset=fashion_mnist,runlocal',
               '--config.model=test_own_model:factory',
               f'--config.layer_groups={",".join(GROUPS)}', '--config.report=false',
               f'--workdir={workdir}', env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  rows = results(workdir)
  keys = {(r['treatment'], int(r['n'])) for r in rows.values()}
  assert keys == {('base', 0)} | {(t, n) for n in (1, 2) for t in (
      'selffer', 'selffer_ft', 'transfer', 'transfer_ft')}
  assert len(rows) == 2 + 8
  # AnB at n = 2: both groups copied from baseA, then frozen: at the end of
  # training they still equal baseA's final variables, params and batch_stats.
  steps = int(rows['m_n-A2B-s0']['steps'])

  def final(run_id, classes):
    shapes = registry.init_variables(factory(classes), jax.random.PRNGKey(0), (28, 28, 1))
    return _flat(checkpoints.load_variables(
        os.path.join(workdir, 'runs', run_id, 'checkpoints'), steps, shapes))

  # m/n halves of Fashion-MNIST: A is 6 clothing classes, B 4 footwear and bags.
  base_a, a2b = final('m_n-baseA-s0', 6), final('m_n-A2B-s0', 4)
  transferred = [p for p in a2b if p.split('/')[1] in ('stem', 'encoder')]
  assert len(transferred) == 3 * 5  # 3 blocks: kernel, scale, bias, mean, var
  for path in transferred:
    np.testing.assert_array_equal(a2b[path], base_a[path])
  # BnB+ at n = 2 fine-tuned the same groups: they moved away from baseB's.
  b2b_ft, base_b = final('m_n-B2B+-s0', 4), final('m_n-baseB-s0', 4)
  assert not np.array_equal(b2b_ft['params/stem/Conv_0/kernel'],
                            base_b['params/stem/Conv_0/kernel'])


def test_resnet_config_runlocal_transfers_the_stem_and_blocks(tmp_path):
  """configs/resnet.py's runlocal form: nine groups, n named by group."""
  workdir = str(tmp_path / 'resnet')
  result = cli('--config=configs/resnet.py:runlocal,split=m_n', '--config.layers=(9,)',
               f'--workdir={workdir}')
  assert result.returncode == 0, result.stderr[-3000:]
  assert set(results(workdir)) == {'m_n-baseA-s0', 'm_n-baseB-s0', 'm_n-A9B-s0'}
  with open(os.path.join(workdir, 'groups.json')) as f:
    groups = json.load(f)['groups']
  assert groups == ['conv_init+bn_init', *(f'ResNetBlock_{i}' for i in range(8))]
  with open(os.path.join(workdir, 'report', 'findings.json')) as f:
    rules = {f['id']: f['rule'] for f in json.load(f)['findings']}
  assert 'at n = 1-3, is below' in rules[1]  # The depth of 9 groups.


class NormNet(nn.Module):
  """BatchNorm with or without a collective axis name, else the same."""
  num_classes: int
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x, *, train):
    x = nn.Conv(4, (3, 3), name='conv')(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.5, axis_name=self.axis_name,
                     name='norm')(x)
    return nn.Dense(self.num_classes, name='head')(x.reshape(x.shape[0], -1))


def _one_step(module, mesh):
  model = net.Net(module, 3, axis_name='batch', origin='test')
  variables = registry.init_variables(model, jax.random.PRNGKey(0), (8, 8, 1))
  params = variables.pop('params')
  opt = optim.make_optimizer(surgery.freeze_labels(params, ()),
                             optim.make_schedule('constant', 0.1, 10))
  state = steps.create_state(params, opt, 0, mesh, model_state=variables)
  rng = np.random.default_rng(0)
  batch = {'image': rng.normal(2.0, 3.0, size=(8, 8, 8, 1)).astype(np.float32),
           'label': rng.integers(0, 3, 8).astype(np.int32)}
  state, _ = steps.make_train_step(model, opt, (), mesh)(state, steps.global_batch(batch, mesh))
  return _flat(jax.device_get(state.variables)), batch


def test_an_axis_name_means_the_global_batch_on_one_device_and_on_four():
  """BatchNorm(axis_name='batch') under the data-parallel step: the statistics
  of the whole global batch, as the same module without an axis name computes
  them, on 1 device and split over 4."""
  plain, batch = _one_step(NormNet(3), steps.make_mesh(jax.devices()[:1]))
  named_1, _ = _one_step(NormNet(3, 'batch'), steps.make_mesh(jax.devices()[:1]))
  named_4, _ = _one_step(NormNet(3, 'batch'), steps.make_mesh(jax.devices()[:4]))
  assert len(jax.devices()) == 4
  for path in plain:
    np.testing.assert_allclose(named_1[path], plain[path], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(named_4[path], plain[path], rtol=1e-5, atol=1e-6)
  # The running mean moved halfway (momentum 0.5) to the conv output's mean over
  # all 8 images, not over one device's 2.
  init = registry.init_variables(net.Net(NormNet(3, 'batch'), 3, 'batch', 'test'),
                                 jax.random.PRNGKey(0), (8, 8, 1))['params']['conv']
  conv = jax.lax.conv_general_dilated(
      batch['image'], np.asarray(init['kernel']), (1, 1), 'SAME',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC')) + np.asarray(init['bias'])
  np.testing.assert_allclose(named_4['batch_stats/norm/mean'],
                             0.5 * np.asarray(conv).mean(axis=(0, 1, 2)), rtol=1e-4)
  assert not np.allclose(named_4['params/conv/kernel'], init['kernel'])  # It trained.


def _final(workdir, run_id, factory_name, classes):
  with open(os.path.join(workdir, 'runs', run_id, 'result.json')) as f:
    step = json.load(f)['steps']
  like = registry.init_variables(registry.create(factory_name, classes),
                                 jax.random.PRNGKey(0), (28, 28, 1))
  return _flat(checkpoints.load_variables(
      os.path.join(workdir, 'runs', run_id, 'checkpoints'), step, like))


def _assert_frozen_groups_are_the_bases(workdir, factory_name, groups, n):
  """AnB at n: its n frozen groups equal baseA's final variables (params and
  batch_stats) bitwise; the rest was trained."""
  base_a = _final(workdir, 'm_n-baseA-s0', factory_name, 6)
  anb = _final(workdir, f'm_n-A{n}B-s0', factory_name, 4)
  frozen = surgery.first_layers(n, groups)
  under = lambda path: any(path.split('/', 1)[1] == p or path.split('/', 1)[1].startswith(
      p + '/') for p in frozen)
  moved = [p for p in anb if under(p)]
  assert any(p.startswith('batch_stats/') for p in moved)
  for path in moved:
    np.testing.assert_array_equal(anb[path], base_a[path], err_msg=path)
  # The groups above the cut were re-initialised and trained on B: none of
  # their parameters is baseA's (the head's shape differs, 6 against 4 classes).
  rest = [p for p in anb if not under(p) and p.startswith('params/')
          and base_a[p].shape == anb[p].shape]
  assert rest and not any(np.array_equal(anb[p], base_a[p]) for p in rest)


def test_a_resnet_written_as_flax_examples_runs_the_grid_with_its_axis_name(resnet_grid):
  """flax examples/imagenet's ResNet18 as a user copies it: BatchNorm with
  axis_name='batch' and a functools.partial factory; no extra flag. (The
  session's ResNet grid, which test_tune reads too.)"""
  rows = results(resnet_grid)
  assert {r for r in rows if rows[r]['treatment'] in ('base', 'transfer', 'transfer_ft')} == {
      'm_n-baseA-s0', 'm_n-A2B-s0', 'm_n-A2B+-s0'}
  _assert_frozen_groups_are_the_bases(resnet_grid, 'flax_resnet:ResNet18Narrow',
                                      flax_resnet.GROUPS, 2)


def test_an_nnx_module_runs_the_grid_by_the_same_group_paths(tmp_path):
  """An nnx.Module class as the factory: BatchNorm, Dropout, nested blocks in
  an nnx.List (paths blocks/0, blocks/1)."""
  workdir = str(tmp_path / 'nnx')
  result = cli(f'--config={RUNLOCAL}', '--config.model=nnx_cnn:CNN',
               f'--config.layer_groups={",".join(nnx_cnn.GROUPS)}', '--config.layers=(2,)',
               '--config.only=(transfer,transfer_ft)', '--config.targets=(B,)',
               '--config.report=false', f'--workdir={workdir}',
               env={**os.environ, 'PYTHONPATH': os.path.dirname(__file__)})
  assert result.returncode == 0, result.stderr[-3000:]
  rows = results(workdir)
  assert set(rows) == {'m_n-baseA-s0', 'm_n-A2B-s0', 'm_n-A2B+-s0'}
  assert all(float(r['top1']) > 0.3 for r in rows.values())
  _assert_frozen_groups_are_the_bases(workdir, 'nnx_cnn:CNN', nnx_cnn.GROUPS, 2)
  with open(os.path.join(workdir, 'groups.json')) as f:
    assert json.load(f)['groups'] == list(nnx_cnn.GROUPS)


def test_nnx_default_groups_follow_the_modules_attribute_order():
  assert registry.transferable_groups('nnx_cnn:make_cnn', (28, 28, 1)) == (
      'stem', 'blocks', 'fc')
  model = registry.create('nnx_cnn:CNN_RGB', 5)
  variables = registry.init_variables(model, jax.random.PRNGKey(0), (28, 28, 3))
  assert model.is_nnx and variables['params']['stem']['conv']['kernel'].shape == (3, 3, 3, 8)
  # Evaluation mode: Dropout off and BatchNorm on its running averages, so
  # two calls agree; training mode draws dropout from the step's key.
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 28, 28, 3))
  np.testing.assert_array_equal(model.apply(variables, x, train=False),
                                model.apply(variables, x, train=False))
  train = [model.apply(variables, x, train=True, rngs={'dropout': jax.random.PRNGKey(k)},
                       mutable=['batch_stats']) for k in (0, 1)]
  assert not np.allclose(train[0][0], train[1][0])
  assert not np.allclose(train[0][1]['batch_stats']['stem']['norm']['mean'],
                         variables['batch_stats']['stem']['norm']['mean'])
