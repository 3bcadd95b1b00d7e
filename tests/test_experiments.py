import pytest

from tfx_jax.errors import UserError
from tfx_jax.grid import experiments

LAYERS = (1, 2, 3, 4, 5, 6, 7)
LAYERS7 = ('conv1', 'conv2', 'conv3', 'conv4', 'conv5', 'fc6', 'fc7')


def test_transfer_grid_has_every_treatment_and_bases_first():
  runs = experiments.grid('transfer', 'random:0', seeds=(0, 1), layers=LAYERS)
  assert len(runs) == 2 * (2 + 4 * 7 * 2)
  assert len({r.run_id for r in runs}) == len(runs)
  position = {r: i for i, r in enumerate(runs)}
  for run in runs:
    if run.base:
      assert position[run.base] < position[run], run.run_id
  notation = {(r.treatment, r.source, r.target) for r in runs if r.n == 3}
  assert notation == {('selffer', 'B', 'B'), ('selffer_ft', 'B', 'B'),
                      ('transfer', 'A', 'B'), ('transfer_ft', 'A', 'B'),
                      ('selffer', 'A', 'A'), ('selffer_ft', 'A', 'A'),
                      ('transfer', 'B', 'A'), ('transfer_ft', 'B', 'A')}


def test_run_ids_and_cut():
  anb = experiments.RunSpec('random:2', 'transfer_ft', 'A', 'B', 3, 1)
  assert anb.run_id == 'random2-A3B+-s1'
  assert anb.plan(7).frozen(LAYERS7) == () and anb.plan(7).copied(LAYERS7) == LAYERS7[:3]
  assert anb.base == experiments.RunSpec('random:2', 'base', 'A', 'A', 0, 1)
  bnb = experiments.RunSpec('m_n', 'selffer', 'B', 'B', 5, 0)
  assert bnb.run_id == 'm_n-B5B-s0' and bnb.plan(7).frozen(LAYERS7) == LAYERS7[:5]
  assert bnb.base.run_id == 'm_n-baseB-s0'
  assert anb.init_seed != anb.base.init_seed != bnb.init_seed
  # A custom split's '/' would nest folders: run ids are one path component.
  custom = experiments.RunSpec('custom:0-3,8/4-7,9', 'transfer', 'A', 'B', 2, 0)
  assert custom.run_id == 'custom0-3,8_4-7,9-A2B-s0'


def test_only_and_targets_keep_needed_bases():
  runs = experiments.grid('transfer', 'm_n', seeds=(0,), layers=(2, 5),
                          only=('transfer',), targets=('B',))
  assert [r.run_id for r in runs] == ['m_n-baseA-s0', 'm_n-A2B-s0', 'm_n-A5B-s0']


def test_flag_given_name_lists_are_split():
  assert experiments.names(['transfer,selffer_ft', '(base,)', "('B', 'A')"]) == (
      'transfer', 'selffer_ft', 'base', 'B', 'A')
  runs = experiments.grid('transfer', 'm_n', seeds=(0,), layers=(2,),
                          only=('(transfer,)',), targets=('B,A',))
  assert [r.run_id for r in runs] == ['m_n-baseB-s0', 'm_n-baseA-s0', 'm_n-A2B-s0',
                                      'm_n-B2A-s0']


def test_random_filters_grid():
  runs = experiments.grid('random_filters', 'all', seeds=(0,), layers=LAYERS)
  assert runs[0].run_id == 'all-baseall-s0'
  assert [r.n for r in runs[1:]] == list(LAYERS)
  assert all(r.treatment == 'random_frozen' and not r.base
             and r.plan(7).frozen(LAYERS7) == LAYERS7[:r.n] and not r.plan(7).copied(LAYERS7)
             for r in runs[1:])


def test_random_filters_on_a_split_train_on_its_targets_with_their_bases():
  runs = experiments.grid('random_filters', 'random:0', seeds=(0,), layers=(1, 7),
                          targets=('B',))
  assert [r.run_id for r in runs] == ['random0-baseB-s0', 'random0-random1B-s0',
                                      'random0-random7B-s0']
  with pytest.raises(UserError, match="Split 'all'.*random_filters"):
    experiments.grid('transfer', 'all', seeds=(0,), layers=LAYERS)


@pytest.mark.parametrize('kwargs, message', [
    (dict(layers=(0, 3)), 'n must be 1..7'),
    (dict(layers=(8,)), 'n must be 1..7'),
    (dict(only=('base', 'finetune')), "'finetune'"),
    (dict(seeds=()), 'seeds is empty'),
    (dict(targets=('C',)), 'targets'),
])
def test_bad_grid_settings(kwargs, message):
  args = dict(seeds=(0,), layers=LAYERS)
  args.update(kwargs)
  with pytest.raises(UserError, match=message):
    experiments.grid('transfer', 'm_n', **args)
