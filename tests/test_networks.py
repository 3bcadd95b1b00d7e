"""Networks as their authors write them: default groups from a container's
blocks, outputs as tuples or dicts, the analysis of any group of a linen or
NNX module, and groups refused with one line (tfx_jax/models/groups.py)."""

import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from flax import traverse_util

from tfx_jax.analysis import activations
from tfx_jax.errors import UserError
from tfx_jax.grid import pretrained
from tfx_jax.models import net, registry

from conftest import ROOT, RUNLOCAL, cli, results

TESTS = os.path.dirname(__file__)
ENV = {**os.environ, 'PYTHONPATH': TESTS}
SHAPE = (28, 28, 1)
LINEN_VIT = ('embedding+pos_embedding+cls', *(f'Transformer/encoderblock_{i}' for i in range(4)),
             'Transformer/encoder_norm')


@pytest.mark.parametrize('name, groups', [
    ('linen_vit:make', LINEN_VIT),
    ('nnx_vit:make', ('patch_embed+cls_token+pos_embed', 'blocks/0', 'blocks/1', 'blocks/2',
                      'norm')),
    ('nnx_vit:make_sequential', ('patch_embed+cls_token+pos_embed', 'blocks/layers/0',
                                 'blocks/layers/1', 'blocks/layers/2', 'norm')),
    # No container holds most parameters: the top-level layers but the head, as before.
    ('nnx_cnn:make_cnn', ('stem', 'blocks', 'fc')),
    ('flax_resnet:ResNet18Narrow', ('conv_init', 'bn_init',
                                    *(f'ResNetBlock_{i}' for i in range(8)))),
    ('test_own_model:factory', ('stem', 'encoder/block_0', 'encoder/block_1')),
    ('small', ('conv1', 'conv2', 'conv3', 'conv4', 'conv5', 'fc6', 'fc7')),
])
def test_default_groups_are_a_containers_blocks(name, groups):
  assert registry.transferable_groups(name, SHAPE) == groups


@pytest.mark.parametrize('name', ['linen_vit:make', 'nnx_vit:make'])
def test_every_groups_features_of_a_vit_are_its_tokens_mean(name):
  """Groups that start with a bare parameter, token sequences pooled over the
  tokens, an NNX module through the bridge: one feature per width unit."""
  groups = registry.transferable_groups(name, SHAPE)
  model = registry.create(name, 4)
  variables = registry.init_variables(model, jax.random.PRNGKey(0), SHAPE)
  images = jax.random.normal(jax.random.PRNGKey(1), (5, *SHAPE))
  feats = jax.jit(lambda v, x: activations.features(model, v, x, groups))(variables, images)
  assert set(feats) == set(groups)
  assert all(f.shape == (5, 32) for f in feats.values())
  # The last group's features are what the head reads: it gives the logits.
  head = variables['params']['head']
  logits = net.logits_of(model.apply(variables, images, train=False))
  np.testing.assert_allclose(feats[groups[-1]] @ head['kernel'] + head['bias'], logits,
                             rtol=1e-4, atol=1e-4)
  assert not np.allclose(feats[groups[0]], feats[groups[1]])


def test_the_token_pooling_rule():
  x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
  np.testing.assert_allclose(activations.pooled(x), x.mean(axis=1))


def test_logits_are_the_output_its_first_element_or_its_logits_entry():
  logits = np.zeros((2, 3), np.float32)
  for out in (logits, (logits, {'a': 1}), [logits], {'logits': logits, 'x': 1}):
    assert net.logits_of(out) is logits
  for out, said in (('text', 'a str'), ({'scores': logits}, "a dict with keys 'scores'"),
                    ((), 'an empty tuple'), (({'logits': logits},), 'a tuple of 1 (dict)')):
    with pytest.raises(UserError, match=re.escape(f'The model returned {said};')):
      net.logits_of(out)


def test_outputs_without_logits_are_refused_at_the_config_time_trace():
  with pytest.raises(UserError, match="returned a dict with keys 'scores'; a model returns"):
    registry.transferable_groups('linen_vit:DictOut', SHAPE)


def test_an_unknown_nested_group_suggests_the_closest_path():
  with pytest.raises(UserError) as e:
    registry.transferable_groups('linen_vit:make', SHAPE, ('Transformer/encoderblok_1',))
  message = str(e.value)
  assert "Did you mean 'Transformer/encoderblock_1'?" in message
  assert "under 'Transformer' are Transformer/encoderblock_0" in message
  assert 'Transformer/encoder_norm' in message and 'pos_embedding' not in message


def test_a_checkpoints_keys_are_named_as_its_file_has_them(tmp_path):
  """big_vision's .npz: params alone, '/'-joined keys, no 'params/' prefix."""
  model = registry.create('linen_vit:make', 4)
  fresh = registry.init_variables(model, jax.random.PRNGKey(0), SHAPE)
  flat = traverse_util.flatten_dict(jax.device_get(fresh['params']), sep='/')
  key = 'Transformer/encoderblock_1/LayerNorm_0/scale'
  flat[key] = np.ones(7, np.float32)
  np.savez(tmp_path / 'vit.npz', **flat)
  loaded = pretrained.load(str(tmp_path / 'vit.npz'), '--config.base_a')
  with pytest.raises(UserError) as e:
    pretrained.fit(fresh, loaded, LINEN_VIT, '--config.base_a', 'linen_vit:make')
  assert f'mis-shaped 1: {key} (7,) (the model: (32,))' in str(e.value)
  assert 'params/' not in str(e.value)
  assert loaded.in_file('params/cls') == 'cls'


@pytest.mark.parametrize('args, said', [
    (['--config.layer_groups=conv1,conv1,conv2'], "config.layer_groups repeats group 'conv1'"),
    (['--config.layer_groups=conv1,conv2+fc8'], "puts the head 'fc8' (the model's last layer) "
                                                "in group 'conv2+fc8'"),
    (['--config.model=linen_vit:WrongShape'], 'returned logits float32[3, 2] for 2 images '
                                              'and 3 classes'),
])
def test_bad_groups_and_outputs_are_one_line_before_anything_is_written(args, said, tmp_path):
  workdir = tmp_path / 'w'
  result = cli(f'--config={RUNLOCAL}', *args, f'--workdir={workdir}', env=ENV)
  assert result.returncode == 2, result.stderr[-2000:]
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and said in lines[0], result.stderr[-2000:]
  assert not workdir.exists()


def _grid(tmp_path, model, *args):
  workdir = str(tmp_path / 'grid')
  result = cli(f'--config={RUNLOCAL}', f'--config.model={model}', '--config.layers=1,2',
               *args, f'--workdir={workdir}', env=ENV, analyse=True)
  return workdir, result


# The linen ViT runs every treatment; the others, for the suite's time, the
# transfers and selffers at n = 2 (the analysis needs both bases).
SHORT = ('--config.layers=2', '--config.only=transfer,selffer')


@pytest.mark.parametrize('model, groups, args, runs', [
    ('linen_vit:make', LINEN_VIT, (), 2 + 8),  # Returns (logits, out), as big_vision's ViT.
    ('nnx_vit:make', ('patch_embed+cls_token+pos_embed', 'blocks/0', 'blocks/1', 'blocks/2',
                      'norm'), SHORT, 4),
    ('nnx_cnn:CNN', ('stem', 'blocks', 'fc'), SHORT, 4),
])
def test_a_users_network_runs_the_grid_and_its_analysis_with_the_defaults(
    model, groups, args, runs, tmp_path):
  workdir, result = _grid(tmp_path, model, *args)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'Layer groups, n = 1..' in result.stdout and groups[1] in result.stdout
  with open(os.path.join(workdir, 'groups.json')) as f:
    assert json.load(f)['groups'] == list(groups)
  assert len(results(workdir)) == runs
  with open(os.path.join(workdir, 'report', 'analysis.json')) as f:
    analysis = json.load(f)
  assert analysis['groups'] == list(groups)
  layers = analysis['splits']['m_n']['seeds']['0']['layers']
  assert set(layers) == set(groups) and all(
      layers[g]['probe_top1'] is not None for g in groups)
  assert os.path.exists(os.path.join(workdir, 'report', 'analysis_m_n_cka.png'))


def test_an_analysis_that_fails_leaves_the_grid_and_its_exit_code(tmp_path):
  workdir, result = _grid(tmp_path, 'broken_models:TrainOnlyBranch', '--config.layers=1',
                          '--config.only=transfer,selffer')
  assert result.returncode == 0, result.stderr[-3000:]
  assert set(results(workdir)) == {'m_n-baseA-s0', 'm_n-baseB-s0', 'm_n-A1B-s0', 'm_n-B1B-s0'}
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and 'the analysis of' in lines[0], result.stderr[-3000:]
  assert 'branch' in lines[0] and 'Traceback' not in result.stderr
  assert not os.path.exists(os.path.join(workdir, 'report', 'analysis.json'))
  assert os.path.exists(os.path.join(workdir, 'report', 'findings.md'))
  again = subprocess.run([sys.executable, '-m', 'tfx_jax.report', f'--workdir={workdir}',
                          '--analyse'], cwd=ROOT, env=ENV, capture_output=True, text=True)
  assert again.returncode == 1, again.stderr[-3000:]
  lines = again.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: the analysis of'), again.stderr
