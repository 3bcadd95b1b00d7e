"""Class splits: which classes the A and B networks train on.

A split is named by a string that configs and results refer to:
  'random:<seed>'  the original's random halves (`random_halves`);
  'm_n'            the dataset's dissimilar split (man-made / natural and kin);
  'custom:<A>/<B>' explicit halves, e.g. 'custom:0-3,8/4-7,9'.
Every split is a pair (A, B) of sorted tuples of class indices.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from tfx_jax.errors import UserError

SPLIT_NAMES = ('random:<seed>', 'm_n', 'custom:<A>/<B>')

# The ImageNet variants share one class index: sorted ILSVRC2012 wnids (the
# input pipeline maps imagenet_resized's own label order onto it).
IMAGENET_DATASETS = ('imagenet2012', 'imagenet_resized_32', 'imagenet_resized_64')

# CIFAR-100 fine labels in TFDS / CIFAR order (alphabetical).
CIFAR100_LABELS = (
    'apple', 'aquarium_fish', 'baby', 'bear', 'beaver', 'bed', 'bee', 'beetle',
    'bicycle', 'bottle', 'bowl', 'boy', 'bridge', 'bus', 'butterfly', 'camel',
    'can', 'castle', 'caterpillar', 'cattle', 'chair', 'chimpanzee', 'clock',
    'cloud', 'cockroach', 'couch', 'crab', 'crocodile', 'cup', 'dinosaur',
    'dolphin', 'elephant', 'flatfish', 'forest', 'fox', 'girl', 'hamster',
    'house', 'kangaroo', 'keyboard', 'lamp', 'lawn_mower', 'leopard', 'lion',
    'lizard', 'lobster', 'man', 'maple_tree', 'motorcycle', 'mountain', 'mouse',
    'mushroom', 'oak_tree', 'orange', 'orchid', 'otter', 'palm_tree', 'pear',
    'pickup_truck', 'pine_tree', 'plain', 'plate', 'poppy', 'porcupine',
    'possum', 'rabbit', 'raccoon', 'ray', 'road', 'rocket', 'rose', 'sea',
    'seal', 'shark', 'shrew', 'skunk', 'skyscraper', 'snail', 'snake', 'spider',
    'squirrel', 'streetcar', 'sunflower', 'sweet_pepper', 'table', 'tank',
    'telephone', 'television', 'tiger', 'tractor', 'train', 'trout', 'tulip',
    'turtle', 'wardrobe', 'whale', 'willow_tree', 'wolf', 'woman', 'worm')

# The six man-made CIFAR-100 superclasses, by their fine classes. The other
# fourteen (animals, people, plants, fruit and vegetables, outdoor scenes) are
# natural, as fruit and vegetables are natural in the ImageNet m/n split.
CIFAR100_MAN_MADE_SUPERCLASSES = {
    'food_containers': ('bottle', 'bowl', 'can', 'cup', 'plate'),
    'household_electrical_devices': ('clock', 'keyboard', 'lamp', 'telephone',
                                     'television'),
    'household_furniture': ('bed', 'chair', 'couch', 'table', 'wardrobe'),
    'large_man-made_outdoor_things': ('bridge', 'castle', 'house', 'road',
                                      'skyscraper'),
    'vehicles_1': ('bicycle', 'bus', 'motorcycle', 'pickup_truck', 'train'),
    'vehicles_2': ('lawn_mower', 'rocket', 'streetcar', 'tank', 'tractor'),
}


def random_halves(num_classes: int, seed: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """The original's random halves: A = num_classes // 2 classes, B = the rest.

  Reproduces convnet_transfer exactly, including its seeding with a ONE-ELEMENT
  LIST (`numpy.random.seed([seed])`), which gives another stream than the int.
  For 1000 classes and seeds 0..3 these are the authors' four splits.
  """
  if num_classes < 2:
    raise UserError(f'A random split needs at least 2 classes, got {num_classes}.')
  if not 0 <= seed < 2**32:
    raise UserError(f'Split seed must be in [0, 2**32), got {seed}.')
  rng = np.random.RandomState([seed])  # The same stream as numpy.random.seed([seed]).
  a = sorted(int(c) for c in rng.choice(np.arange(num_classes), num_classes // 2,
                                        replace=False))
  b = sorted(set(range(num_classes)) - set(a))
  return tuple(a), tuple(b)


def _ranges(*spans: tuple[int, int]) -> tuple[int, ...]:
  """Inclusive ranges -> sorted class indices."""
  return tuple(sorted(c for lo, hi in spans for c in range(lo, hi + 1)))


def man_made_natural() -> tuple[tuple[int, ...], tuple[int, ...]]:
  """ILSVRC2012's man-made (551) / natural (449) split, sorted-wnid class index.

  Not the WordNet artifact subtree alone (522 classes): PAPER.md lists the
  extra food and sign classes the authors counted as man-made.
  """
  man_made = _ranges((398, 935), (959, 969), (971, 971), (999, 999))
  natural = _ranges((0, 397), (936, 958), (970, 970), (972, 998))
  return man_made, natural


def _complement(a: Iterable[int], num_classes: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
  a = tuple(sorted(a))
  return a, tuple(c for c in range(num_classes) if c not in set(a))


def cifar10_vehicles_animals() -> tuple[tuple[int, ...], tuple[int, ...]]:
  """CIFAR-10: vehicles (airplane, automobile, ship, truck) / the six animals."""
  return _complement((0, 1, 8, 9), 10)


def cifar100_man_made_natural() -> tuple[tuple[int, ...], tuple[int, ...]]:
  """CIFAR-100: the 30 classes of the six man-made superclasses / the other 70."""
  names = {n for fine in CIFAR100_MAN_MADE_SUPERCLASSES.values() for n in fine}
  return _complement((CIFAR100_LABELS.index(n) for n in names), 100)


def fashion_mnist_clothing_accessories() -> tuple[tuple[int, ...], tuple[int, ...]]:
  """Fashion-MNIST: clothing (T-shirt, trouser, pullover, dress, coat, shirt) /
  footwear and bags (sandal, sneaker, bag, ankle boot): worn on the body versus
  not, and the shapes (silhouettes of garments versus shoes and bags) differ
  most between these two groups."""
  return _complement((0, 1, 2, 3, 4, 6), 10)


# Dataset -> (its dissimilar split, the number of classes it is defined for).
DISSIMILAR = {
    **{name: (man_made_natural, 1000) for name in IMAGENET_DATASETS},
    'cifar10': (cifar10_vehicles_animals, 10),
    'cifar100': (cifar100_man_made_natural, 100),
    'fashion_mnist': (fashion_mnist_clothing_accessories, 10),
}


def check_classes(classes: Iterable[int], num_classes: int, what: str) -> None:
  """Raises UserError unless `classes` is non-empty, in range, without repeats."""
  classes = list(classes)
  if not classes:
    raise UserError(f'The classes of {what} are empty; give at least one class.')
  bad = [c for c in classes if not 0 <= c < num_classes]
  if bad:
    raise UserError(f'Class index {bad[0]} in {what} is out of range for '
                    f'{num_classes} classes (valid: 0..{num_classes - 1}).')
  if len(set(classes)) != len(classes):
    raise UserError(f'{what[0].upper()}{what[1:]} lists a class twice; list each once.')


def check_halves(a: Iterable[int], b: Iterable[int], num_classes: int) -> None:
  """Raises UserError unless A and B are non-empty, disjoint, in range, no repeats."""
  a, b = list(a), list(b)
  for name, half in (('A', a), ('B', b)):
    check_classes(half, num_classes, f'half {name} of the split')
  common = sorted(set(a) & set(b))
  if common:
    raise UserError(f'The halves overlap in classes {common[:10]}; a class belongs to '
                    'at most one half.')


def parse_classes(text: str) -> tuple[int, ...]:
  """'0-3,8' -> (0, 1, 2, 3, 8)."""
  classes = []
  for part in text.split(','):
    part = part.strip()
    if not part:
      continue
    lo, _, hi = part.partition('-')
    try:
      lo, hi = int(lo), int(hi or lo)
    except ValueError:
      raise UserError(f'Cannot read {part!r} as a class index or range like 4-7.') from None
    classes.extend(range(lo, hi + 1))
  return tuple(classes)


def resolve(split: str, dataset: str, num_classes: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """The halves (A, B) that the split name `split` gives on `dataset`."""
  kind, sep, arg = split.partition(':')
  if kind == 'random' and sep:
    try:
      seed = int(arg)
    except ValueError:
      raise UserError(f'Split {split!r}: the seed must be an integer, as in random:0.') from None
    return random_halves(num_classes, seed)
  if kind == 'm_n' and not sep:
    if dataset not in DISSIMILAR:
      raise UserError(f'Dataset {dataset!r} has no dissimilar (m_n) split; datasets '
                      f'with one: {", ".join(sorted(DISSIMILAR))}. Use random:<seed>.')
    make, expected = DISSIMILAR[dataset]
    if num_classes != expected:
      raise UserError(f'The m_n split of {dataset} is defined for {expected} classes, '
                      f'not {num_classes}.')
    return make()
  if kind == 'custom' and sep:
    a_text, slash, b_text = arg.partition('/')
    if not slash:
      raise UserError(f'Split {split!r}: write custom halves as custom:<A>/<B>, '
                      'e.g. custom:0-3,8/4-7,9.')
    a, b = parse_classes(a_text), parse_classes(b_text)
    check_halves(a, b, num_classes)
    return tuple(sorted(a)), tuple(sorted(b))
  raise UserError(f'Unknown split {split!r}; valid names: {", ".join(SPLIT_NAMES)}.')
