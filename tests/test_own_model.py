"""A user's own linen module, defined here (not in tfx_jax): BatchNorm, nested
submodules, layer groups by path, through the CLI and the train step."""

import json
import os

import flax.linen as nn
import jax
import numpy as np

from tfx_jax.models import optim, registry, surgery
from tfx_jax.training import checkpoints, steps

from conftest import cli, results

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
