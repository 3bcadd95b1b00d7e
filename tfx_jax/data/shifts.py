"""Distribution shifts of a dataset, derived deterministically from it.

Three levels, as Lee et al. ("Surgical Fine-Tuning Improves Adaptation to
Distribution Shifts", ICLR 2023) sort them:
- input-level: the eleven image corruptions of `corruptions`, severities 1-5;
- feature-level: `subpopulation`, superclasses whose classes are split between
  source and target, labels the superclasses (BREEDS: Santurkar, Tsipras and
  Madry, ICLR 2021);
- output-level: `permute_labels` (a seeded derangement of the labels) and
  `flip_labels` (y -> C - 1 - y, CIFAR-Flip's rule in Lee et al.).

A shift is written NAME[:SEVERITY] (`parse`, `parse_list`: what
`--config.shifts` holds). The same shift, seed and example index give the same
bytes, whatever else is in the batch: each example's corruption draws from a
generator seeded by (seed, name, example index), the same at every severity,
so severities differ only in strength. `ShiftedSource` reads a dataset's
source through a shift, lazily; `shifted_spec` makes a DatasetSpec whose
source `reader.open_source` opens that way. docs/shifts.md lists each shift,
its source and its parameters.
"""

from __future__ import annotations

import dataclasses
import difflib
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

import numpy as np

from tfx_jax.data.corruptions import CORRUPTIONS, SEVERITIES
from tfx_jax.data.datasets import DatasetSpec, dataset_spec
from tfx_jax.errors import UserError

FEATURE_SHIFTS = ('subpopulation',)
LABEL_SHIFTS = ('permute_labels', 'flip_labels')
NAMES = (*CORRUPTIONS, *FEATURE_SHIFTS, *LABEL_SHIFTS)
DEFAULT_SEVERITY = 5  # A corruption named without one: CIFAR-10-C's strongest, as Lee et al. use.
SIDES = ('source', 'target')
MEMO_BYTES = 256 << 20  # Corrupted images a ShiftedSource keeps (Fashion-MNIST's train set: 47 MB).

# Superclass -> its classes. Within each, the classes alternate between source
# and target in the order listed (1st, 3rd, ... source; 2nd, 4th, ... target).
GROUPINGS: dict[str, dict[str, tuple[int, ...]]] = {
    'fashion_mnist': {
        'tops': (0, 2, 4, 6),  # T-shirt/top, pullover, coat, shirt
        'footwear': (5, 7, 9),  # sandal, sneaker, ankle boot
        'other': (1, 3, 8),  # trouser, dress, bag
    },
}


@dataclasses.dataclass(frozen=True)
class Shift:
  """One shift, fully determined: the same Shift gives the same dataset.

  severity: 1..5 for a corruption, 0 for the others. seed: of the corruptions'
  draws and of permute_labels's permutation. side and groups are
  subpopulation's: which half of each superclass's classes is seen ('source'
  or 'target'), and the grouping as ((superclass, classes), ...); () for the
  dataset's known one (GROUPINGS).
  """
  name: str
  severity: int = 0
  seed: int = 0
  side: str = 'target'
  groups: tuple[tuple[str, tuple[int, ...]], ...] = ()

  def __post_init__(self):
    if self.name not in NAMES:
      raise UserError(_closest(self.name))
    _check_seed(self.seed, self.name)
    if self.name in CORRUPTIONS and self.severity not in SEVERITIES:
      raise UserError(f'Severity {self.severity!r} of {self.name} is not one of 1-5; write '
                      f'e.g. {self.name}:3.')
    if self.name not in CORRUPTIONS and self.severity:
      raise UserError(f'Shift {self.name} takes no severity (got {self.severity}); write '
                      f'{self.name}.')
    if self.side not in SIDES:
      raise UserError(f'A shift\'s side is source or target, got {self.side!r}.')

  @property
  def level(self) -> str:
    """'input', 'feature' or 'output' (Lee et al.'s three kinds of shift)."""
    return ('input' if self.name in CORRUPTIONS else
            'feature' if self.name in FEATURE_SHIFTS else 'output')

  def __str__(self) -> str:
    return f'{self.name}:{self.severity}' if self.severity else self.name


def _closest(name: str) -> str:
  close = difflib.get_close_matches(name, NAMES, n=1, cutoff=0.5)
  hint = f' Did you mean {close[0]!r}?' if close else ''
  return f'Unknown shift {name!r}.{hint} The shifts: {", ".join(NAMES)} (docs/shifts.md).'


def parse(text: str, *, seed: int = 0) -> Shift:
  """'gaussian_noise:3' -> Shift('gaussian_noise', 3). A corruption without a
  severity gets DEFAULT_SEVERITY; the other shifts take none."""
  name, _, severity = str(text).strip().partition(':')
  name = name.strip()
  if not name:
    raise UserError(f'Empty shift name in {text!r}; write NAME[:SEVERITY], e.g. '
                    f'gaussian_noise:3.')
  if name not in NAMES:
    raise UserError(_closest(name))
  seed = _check_seed(seed, name)
  if name not in CORRUPTIONS:
    if severity:
      raise UserError(f'Shift {name} takes no severity (got {text!r}); write {name}.')
    return Shift(name, 0, seed)
  if not severity:
    return Shift(name, DEFAULT_SEVERITY, seed)
  if not severity.strip().isdigit() or int(severity) not in SEVERITIES:
    raise UserError(f'Severity {severity!r} of {name} is not one of 1-5; write e.g. '
                    f'{name}:3.')
  return Shift(name, int(severity), seed)


def _check_seed(seed, name: str) -> int:
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
    raise UserError(f'The seed of shift {name} must be an integer >= 0, got {seed!r}.')
  return int(seed)


def parse_list(text: str | Iterable[str], *, seed: int = 0) -> tuple[Shift, ...]:
  """'gaussian_noise:3,fog,permute_labels' (or a sequence of such strings) ->
  Shifts, in order; empty items are skipped, a shift given twice refused."""
  items = text.split(',') if isinstance(text, str) else [i for t in text for i in t.split(',')]
  shifts = tuple(parse(item, seed=seed) for item in items if item.strip())
  if not shifts:
    raise UserError(f'No shift in {text!r}; list NAME[:SEVERITY] items separated by commas, '
                    f'e.g. gaussian_noise:3,permute_labels.')
  seen = set()
  for shift in shifts:
    if str(shift) in seen:
      raise UserError(f'Shift {shift} is listed twice; list each shift once.')
    seen.add(str(shift))
  return shifts


def _as_shift(shift: Shift | str) -> Shift:
  return shift if isinstance(shift, Shift) else parse(shift)


# ---------------------------------------------------------------- input level


def example_rng(shift: Shift, index: int) -> np.random.Generator:
  """The generator of one example's corruption: from (seed, name, index) only,
  so an example's draws do not depend on its batch, nor on the severity."""
  return np.random.default_rng([shift.seed, zlib.crc32(shift.name.encode()), int(index)])


def corrupt_image(image: np.ndarray, shift: Shift | str, index: int) -> np.ndarray:
  """One uint8 image [H, W, C] (or [H, W]) corrupted as example `index`."""
  shift = _as_shift(shift)
  if shift.name not in CORRUPTIONS:
    raise UserError(f'Shift {shift.name} does not change images; corrupt with one of '
                    f'{", ".join(CORRUPTIONS)}.')
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim not in (2, 3):
    raise UserError(f'Corruptions take uint8 images [H, W, C]; got {image.dtype} '
                    f'{image.shape}. Convert them with np.uint8 first.')
  x = image.reshape(*image.shape[:2], -1).astype(np.float32) / 255
  out = CORRUPTIONS[shift.name](x, shift.severity, example_rng(shift, index))
  return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8).reshape(image.shape)


def corrupt(images: np.ndarray, shift: Shift | str, indices: Sequence[int]) -> np.ndarray:
  """uint8 images [N, H, W, C], example i corrupted as example indices[i]."""
  images = np.asarray(images)
  if images.ndim != 4 or len(images) != len(indices):
    raise UserError(f'corrupt takes images [N, H, W, C] and N example indices; got '
                    f'images {images.shape} and {len(indices)} indices.')
  out = [corrupt_image(image, shift, i) for image, i in zip(images, indices)]
  return np.stack(out) if out else images.copy()


# ---------------------------------------------------------------- feature level


class Subpopulation(NamedTuple):
  """BREEDS-style split: each superclass's classes divided between source and
  target; superclass_of[c] is class c's superclass label (-1: in none)."""
  source_classes: tuple[int, ...]
  target_classes: tuple[int, ...]
  superclass_of: np.ndarray
  superclass_names: tuple[str, ...]


def subpopulation(dataset: str, num_classes: int,
                  groups: Mapping[str, Sequence[int]] | Sequence | None = None) -> Subpopulation:
  """The subpopulation shift of `dataset`: `groups` (superclass -> its classes,
  two or more each, no class twice), else the dataset's known grouping."""
  if not groups:
    if dataset not in GROUPINGS:
      raise UserError(f'subpopulation needs a grouping of the classes of {dataset!r} into '
                      f'superclasses and none is known (known: {", ".join(GROUPINGS)}); '
                      f'give one: superclass -> its classes, two or more each.')
    groups = GROUPINGS[dataset]
  groups = dict(groups)
  superclass_of = np.full(num_classes, -1, np.int32)
  source, target = [], []
  for label, (name, classes) in enumerate(groups.items()):
    classes = [int(c) for c in classes]
    if len(classes) < 2:
      raise UserError(f'Superclass {name!r} has {len(classes)} class; it needs two or more '
                      f'to split between source and target.')
    for c in classes:
      if not 0 <= c < num_classes:
        raise UserError(f'Class {c} of superclass {name!r} is out of range for '
                        f'{num_classes} classes (valid: 0..{num_classes - 1}).')
      if superclass_of[c] >= 0:
        raise UserError(f'Class {c} is in two superclasses; put each class in one.')
      superclass_of[c] = label
    source += classes[0::2]
    target += classes[1::2]
  return Subpopulation(tuple(sorted(source)), tuple(sorted(target)), superclass_of,
                       tuple(groups))


# ---------------------------------------------------------------- output level


def permute_labels(num_classes: int, seed: int) -> np.ndarray:
  """A seeded derangement (no label keeps its class): int32 [C], new label of
  each class. Never the identity."""
  if num_classes < 2:
    raise UserError(f'permute_labels needs two or more classes, got {num_classes}.')
  rng = np.random.default_rng([seed, zlib.crc32(b'permute_labels'), num_classes])
  while True:  # About 1 in e draws is a derangement.
    permutation = rng.permutation(num_classes)
    if np.all(permutation != np.arange(num_classes)):
      return permutation.astype(np.int32)


def flip_labels(num_classes: int) -> np.ndarray:
  """y -> C - 1 - y (CIFAR-Flip, Lee et al. 2023): int32 [C]."""
  return np.arange(num_classes - 1, -1, -1, dtype=np.int32)


def label_map(shift: Shift | str, num_classes: int, dataset: str = '') -> np.ndarray:
  """int32 [C]: the label each class gets under `shift`; -1 drops the class
  (subpopulation: those of the other side or of no superclass)."""
  shift = _as_shift(shift)
  if shift.name == 'permute_labels':
    return permute_labels(num_classes, shift.seed)
  if shift.name == 'flip_labels':
    return flip_labels(num_classes)
  if shift.name == 'subpopulation':
    split = subpopulation(dataset, num_classes, shift.groups)
    seen = split.source_classes if shift.side == 'source' else split.target_classes
    out = np.full(num_classes, -1, np.int32)
    out[list(seen)] = split.superclass_of[list(seen)]
    return out
  return np.arange(num_classes, dtype=np.int32)


# ---------------------------------------------------------------- sources


class ShiftedSource:
  """A source (`labels`, `images(indices)`) read through a shift: labels mapped
  once (label_map), images corrupted lazily, each by its example index, and
  kept (up to `memo_bytes`) for the next epoch or evaluation. It has no
  `crops`, so input_pipeline.LoadBatch reads whole images through it."""

  def __init__(self, source, shift: Shift | str, num_classes: int, dataset: str = '',
               memo_bytes: int = MEMO_BYTES):
    self._source, self.shift = source, _as_shift(shift)
    labels = np.asarray(source.labels)
    lut = label_map(self.shift, num_classes, dataset)
    self.labels = np.where(labels >= 0, lut[np.maximum(labels, 0)], -1).astype(np.int32)
    self._memo, self._memo_left = {}, memo_bytes

  def __len__(self) -> int:
    return len(self.labels)

  def images(self, indices):
    indices = [int(i) for i in indices]
    if self.shift.name not in CORRUPTIONS or not indices:
      return self._source.images(np.asarray(indices, np.int64))
    todo = [i for i in dict.fromkeys(indices) if i not in self._memo]
    fresh = {}
    if todo:
      for image, i in zip(self._source.images(np.asarray(todo, np.int64)), todo):
        fresh[i] = corrupt_image(image, self.shift, i)
    for i, image in fresh.items():  # Threads may race here: both store the same bytes.
      if self._memo_left >= image.nbytes:
        self._memo[i], self._memo_left = image, self._memo_left - image.nbytes
    out = [fresh[i] if i in fresh else self._memo[i] for i in indices]
    return np.stack(out) if len({image.shape for image in out}) == 1 else out


def shifted_spec(spec: str | DatasetSpec, shift: Shift | str, *, seed: int | None = None,
                 side: str | None = None,
                 groups: Mapping[str, Sequence[int]] | None = None) -> DatasetSpec:
  """`spec` whose train and eval sources are read through `shift` (and the
  seed, side and grouping given, replacing the shift's): what train_iterator
  and EvalData take to feed a shifted dataset. Its classes stay the dataset's
  for input and output shifts; for subpopulation they are the superclass
  labels 0..S-1."""
  spec, shift = dataset_spec(spec), _as_shift(shift)
  changes = {'seed': None if seed is None else _check_seed(seed, shift.name), 'side': side,
             'groups': tuple((k, tuple(v)) for k, v in dict(groups).items()) if groups else None}
  shift = dataclasses.replace(shift, **{k: v for k, v in changes.items() if v is not None})
  if shift.name == 'subpopulation':
    label_map(shift, spec.num_classes, spec.name)  # Refuses a bad grouping or side now.
  return dataclasses.replace(spec, shift=shift)
