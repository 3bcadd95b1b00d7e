"""Class splits: the original's random halves, m/n, and the other datasets' splits."""

import hashlib
import os

import numpy
import pytest
import tensorflow_datasets as tfds

from tfx_jax.data import splits
from tfx_jax.errors import UserError

# sha256 of ','.join(A) for the seed-0 A half, computed once with the snippet
# in test_seed0_halves_equal_the_original.
SEED0_A_SHA256 = 'c1aede24b4a895040775605bb38d201599cacb5420f93772d288cbedeb07c408'


def test_seed0_halves_equal_the_original():
  # The original's procedure, verbatim (global state, one-element-list seed).
  numpy.random.seed([0])
  a = sorted(numpy.random.choice(numpy.arange(1000), 500, replace=False))
  reference = tuple(int(c) for c in a)
  got_a, got_b = splits.random_halves(1000, 0)
  assert got_a == reference
  assert got_b == tuple(c for c in range(1000) if c not in set(reference))
  assert hashlib.sha256(','.join(map(str, got_a)).encode()).hexdigest() == SEED0_A_SHA256


@pytest.mark.parametrize('seed', [0, 1, 2, 3])
def test_random_halves_are_disjoint_sorted_500_500(seed):
  a, b = splits.random_halves(1000, seed)
  assert len(a) == len(b) == 500
  assert list(a) == sorted(a) and list(b) == sorted(b)
  assert not set(a) & set(b)
  assert set(a) | set(b) == set(range(1000))
  numpy.random.seed([seed])
  assert a == tuple(sorted(int(c) for c in numpy.random.choice(numpy.arange(1000), 500,
                                                                replace=False)))


def test_the_four_seeds_differ_and_list_seed_is_not_int_seed():
  halves = {splits.random_halves(1000, s)[0] for s in range(4)}
  assert len(halves) == 4
  numpy.random.seed(0)  # An int seed: another stream than the original's [0].
  int_seeded = tuple(sorted(int(c) for c in numpy.random.choice(numpy.arange(1000), 500,
                                                                 replace=False)))
  assert splits.random_halves(1000, 0)[0] != int_seeded


def test_random_halves_odd_number_of_classes():
  a, b = splits.random_halves(11, 5)
  assert (len(a), len(b)) == (5, 6)
  assert set(a) | set(b) == set(range(11))


def test_man_made_natural_is_exactly_the_paper_ranges():
  man_made, natural = splits.man_made_natural()
  expected_natural = (list(range(0, 398)) + list(range(936, 959)) + [970] +
                      list(range(972, 999)))
  expected_man_made = list(range(398, 936)) + list(range(959, 970)) + [971, 999]
  assert list(natural) == expected_natural
  assert list(man_made) == expected_man_made
  assert (len(man_made), len(natural)) == (551, 449)


def test_imagenet_wnid_landmarks_of_the_m_n_split():
  # Sorted-wnid index of a few classes, from TFDS's ILSVRC2012 label list.
  with open(os.path.join(os.path.dirname(tfds.__file__),
                         'datasets/imagenet2012/labels.txt')) as f:
    wnids = f.read().split()
  man_made, natural = splits.man_made_natural()
  assert wnids.index('n07802026') in natural  # hay
  assert wnids.index('n06794110') in man_made  # street sign
  assert wnids.index('n09229709') in man_made  # bubble
  assert wnids.index('n01440764') in natural  # tench


def test_cifar10_vehicles_vs_animals():
  assert splits.resolve('m_n', 'cifar10', 10) == ((0, 1, 8, 9), (2, 3, 4, 5, 6, 7))


def test_cifar100_man_made_vs_natural_superclasses():
  a, b = splits.resolve('m_n', 'cifar100', 100)
  # Fine-label indices of bottle, bowl, can, cup, plate; clock, keyboard, lamp,
  # telephone, television; bed, chair, couch, table, wardrobe; bridge, castle,
  # house, road, skyscraper; bicycle, bus, motorcycle, pickup_truck, train;
  # lawn_mower, rocket, streetcar, tank, tractor (CIFAR-100's alphabetical order).
  expected = sorted([9, 10, 16, 28, 61, 22, 39, 40, 86, 87, 5, 20, 25, 84, 94,
                     12, 17, 37, 68, 76, 8, 13, 48, 58, 90, 41, 69, 81, 85, 89])
  assert list(a) == expected
  assert b == tuple(c for c in range(100) if c not in set(expected))
  # The same from CIFAR-100's fine -> coarse label map (man-made superclasses:
  # food containers 3, electrical devices 5, furniture 6, man-made outdoor
  # things 9, vehicles 18 and 19).
  fine_to_coarse = [
      4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11, 6, 11, 5,
      10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5, 5, 19, 8, 8, 15,
      13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17, 10, 3, 2, 12, 12, 16,
      12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13, 16, 19, 2, 4, 6, 19, 5, 5,
      8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13]
  assert list(a) == [i for i, c in enumerate(fine_to_coarse) if c in {3, 5, 6, 9, 18, 19}]


def test_fashion_mnist_clothing_vs_footwear_and_bags():
  assert splits.resolve('m_n', 'fashion_mnist', 10) == ((0, 1, 2, 3, 4, 6), (5, 7, 8, 9))


@pytest.mark.parametrize('dataset', ['imagenet2012', 'imagenet_resized_32',
                                     'imagenet_resized_64'])
def test_resolve_imagenet_variants_share_the_splits(dataset):
  assert splits.resolve('m_n', dataset, 1000) == splits.man_made_natural()
  assert splits.resolve('random:2', dataset, 1000) == splits.random_halves(1000, 2)


def test_resolve_custom_halves():
  assert splits.resolve('custom:0-2,9/5,3', 'cifar10', 10) == ((0, 1, 2, 9), (3, 5))


@pytest.mark.parametrize('split, dataset, num_classes, message', [
    ('halves', 'cifar10', 10, 'Unknown split'),
    ('random', 'cifar10', 10, 'random:<seed>'),
    ('random:x', 'cifar10', 10, 'integer'),
    ('random:-1', 'cifar10', 10, 'seed'),
    ('m_n', 'mnist', 10, 'no dissimilar'),
    ('m_n', 'cifar10', 100, 'defined for 10 classes'),
    ('custom:0-2/2-4', 'cifar10', 10, 'overlap'),
    ('custom:/0-4', 'cifar10', 10, 'empty'),
    ('custom:0-4/5-10', 'cifar10', 10, 'out of range'),
    ('custom:0,0/1', 'cifar10', 10, 'twice'),
    ('custom:0-4', 'cifar10', 10, 'custom:<A>/<B>'),
    ('custom:a/b', 'cifar10', 10, 'class index'),
])
def test_resolve_errors_name_the_problem(split, dataset, num_classes, message):
  with pytest.raises(UserError, match=message):
    splits.resolve(split, dataset, num_classes)


def test_unknown_split_lists_valid_names():
  with pytest.raises(UserError) as e:
    splits.resolve('mn', 'imagenet2012', 1000)
  assert 'random:<seed>' in str(e.value) and 'm_n' in str(e.value)
