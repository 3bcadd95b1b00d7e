"""Configs whose results would mean nothing (issue 41), refused through the real
CLI before anything is written: a half of one class, a target size above the
smallest class, base A and base B the same network, analysis probe sets too
small, the head inside a group, one logit."""

import os
import shutil

import jax
import numpy as np
import pytest
from flax import traverse_util

from conftest import RUNLOCAL, cli
from test_user_faults import one_line, prepare_folder, two_classes
from tfx_jax.models import registry

# One base run of the runlocal grid: the command each case changes.
BASE = (f'--config={RUNLOCAL}', '--config.layers=(1,)', '--config.only=(base,)',
        '--config.report=false')


def refused(tmp_path, *args, **kwargs):
  """The one line of a refusal, checking that no workdir was made."""
  w = tmp_path / 'w'
  stderr = one_line(cli(*args, f'--workdir={w}', **kwargs))
  assert not w.exists(), sorted(os.listdir(w))
  return stderr


@pytest.fixture(scope='module')
def two_class_folder(tmp_path_factory):
  """data_dir of folder:pets, prepared from two classes (a and b)."""
  root = tmp_path_factory.mktemp('pets')
  two_classes(str(root / 'source'))
  done = prepare_folder(str(root / 'source'), str(root / 'data'), '--size=32',
                        '--num_workers=1')
  assert done.returncode == 0, done.stderr
  return str(root / 'data')


# ---------------------------------------------------------------- a half of one class


def test_a_random_split_of_two_classes_is_refused(tmp_path, two_class_folder):
  stderr = refused(tmp_path, '--config=configs/random_split.py:dataset=folder:pets,runlocal',
                   f'--config.data_dir={two_class_folder}')
  assert ("Split 'random:0' of folder:pets (2 classes): half A has 1 class" in stderr
          and 'learns nothing' in stderr), stderr
  assert 'a random split needs 4 or more classes' in stderr


@pytest.mark.parametrize('flag, says', [
    ('--config.split=custom:0/1-9', "Split 'custom:0/1-9': half A has 1 class"),
    ('--config.split=custom:0-8/9', "Split 'custom:0-8/9': half B has 1 class"),
    ('--config.source_dataset=digits:3', "Split 'from:digits:3': task A has 1 class")])
def test_a_half_of_one_class_is_refused(tmp_path, flag, says):
  stderr = refused(tmp_path, *BASE, flag)
  assert says in stderr and 'give each at least 2 classes' in stderr, stderr


# ---------------------------------------------------------------- target sizes


def test_a_target_size_above_the_smallest_class_is_refused(tmp_path):
  stderr = refused(tmp_path, *BASE, '--config.target_examples_per_class=7000,0',
                   '--config.targets=B')
  assert ('config.target_examples_per_class has 7000, but class' in stderr
          and 'holds 6000 train images, the fewest: give sizes up to 6000' in stderr), stderr


# ---------------------------------------------------------------- one network as both bases


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
  """An .npz of the runlocal model's params (half A's 6 classes), and a copy."""
  out = tmp_path_factory.mktemp('base')
  params = registry.init_params(registry.create('small', 6), jax.random.PRNGKey(0),
                                (28, 28, 1))
  np.savez(out / 'a.npz', **traverse_util.flatten_dict(jax.device_get(params), sep='/'))
  shutil.copy(out / 'a.npz', out / 'copy.npz')
  return str(out / 'a.npz'), str(out / 'copy.npz')


@pytest.mark.parametrize('same', ['path', 'content'])
def test_base_a_and_base_b_of_one_network_are_refused(tmp_path, checkpoint, same):
  a, copy = checkpoint
  b = a if same == 'path' else copy
  stderr = refused(tmp_path, *BASE, '--config.only=()', f'--config.base_a={a}',
                   f'--config.base_b={b}')
  assert f"--config.base_a '{a}' and --config.base_b '{b}' are the same network" in stderr
  assert 'Give base B its own checkpoint, or unset base_b' in stderr


# ---------------------------------------------------------------- analysis sizes


def test_analysis_probe_sets_below_the_floor_are_refused(tmp_path):
  stderr = refused(tmp_path, *BASE, '--config.report=true',
                   '--config.analysis.train_examples=2')
  assert ('config.analysis.train_examples=2 gives 1 image(s) per class of target B '
          '(4 classes, split m_n)' in stderr), stderr
  assert '--config.analysis.train_examples=40, or --config.analysis.run=false' in stderr
  # Without the analysis at the end, the probe sets do not matter.
  done = cli(*BASE, '--config.analysis.train_examples=2', '--config.analysis.run=false',
             f'--workdir={tmp_path / "w2"}', '--config.total_steps=1')
  assert done.returncode == 0, done.stderr[-3000:]


# ---------------------------------------------------------------- the head and the logits


def test_the_head_inside_the_groups_is_refused_before_any_run(tmp_path):
  stderr = refused(tmp_path, f'--config={RUNLOCAL}', '--config.layer_groups=conv1,conv2,fc8',
                   '--config.layers=3')
  assert "config.layer_groups puts the head 'fc8'" in stderr, stderr


def test_a_model_of_one_logit_is_refused(tmp_path):
  stderr = refused(tmp_path, *BASE, '--config.model=tests.broken_models:OneLogit')
  assert ('returned logits float32[2, 1]' in stderr
          and 'give the head num_classes outputs' in stderr), stderr


def test_a_target_size_list_without_0_runs(tmp_path):
  """Case 7: one size, as docs/own_data.md allows (and any list without 0),
  crashed on ordering the bases; base A (all its images) now comes after
  base B's sizes."""
  workdir = tmp_path / 'w'
  result = cli(f'--config={RUNLOCAL}', '--config.target_examples_per_class=10',
               '--config.layers=(1,)', '--config.only=(transfer,)', '--config.report=false',
               f'--workdir={workdir}')
  assert result.returncode == 0, result.stderr[-3000:]
  with open(workdir / 'results.csv') as f:
    rows = f.read().splitlines()
  assert rows[1].startswith('m_n-baseA-s0,') and rows[2].startswith('m_n-A1B-k10-s0,'), rows
