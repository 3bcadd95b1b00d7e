"""grain input pipelines: one half's classes of a dataset, as batches of numpy arrays.

Sources: any supported TFDS dataset prepared as array_record (read with
`tfds.data_source`), and Fashion-MNIST from its IDX files (`fashion_mnist.py`).
Both give uint8 images by example index and a label index (per-example labels,
read once and cached), so a class subset is selected up front, without decoding
images, and images are cropped, flipped and normalised a whole batch at a time.

Every process computes the same GLOBAL batches (shuffle and augmentation draws
depend only on the seed, the epoch and the batch number) and reads only its own
rows [p*b:(p+1)*b] of each, so the sequence of global batches does not depend on
the number of processes.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import grain
import jax
import numpy as np
from absl import flags

from tfx_jax import fashion_mnist, tfds_source
from tfx_jax.errors import UserError

_IMAGENET_MEAN = (123.68, 116.78, 103.94)  # Per-channel RGB mean, 0..255 scale.
_IMAGENET_STD = (58.393, 57.12, 57.375)


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """How to read and feed one dataset."""
  name: str
  num_classes: int
  image_shape: tuple[int, int, int]  # (H, W, C) fed to the model, after the crop.
  augment: bool  # Default train augmentation: random crop and horizontal flip.
  tfds_name: str | None = None  # None: Fashion-MNIST IDX files.
  train_split: str = 'train'
  eval_split: str = 'test'
  stored_size: tuple[int, int] | None = None  # (H, W) as read; None: image_shape's.
  resize: bool = False  # Resize every image to stored_size on reading.
  pad: int = 0  # Zero padding around the image before the random train crop.
  mean: tuple[float, ...] = (0.0,)  # Subtracted per channel (0..255 scale) ...
  std: tuple[float, ...] = (1.0,)  # ... then divided by this.
  # TFDS label file when its class order is not imagenet2012's sorted wnids;
  # labels are mapped onto that order, so all ImageNet variants share splits.
  wnid_labels: str | None = None

  @property
  def source_size(self) -> tuple[int, int]:
    return self.stored_size or self.image_shape[:2]


def _imagenet_resized(size: int, crop: int) -> DatasetSpec:
  return DatasetSpec(
      f'imagenet_resized_{size}', 1000, (crop, crop, 3), True,
      tfds_name=f'imagenet_resized/{size}x{size}', eval_split='validation',
      stored_size=(size, size), mean=_IMAGENET_MEAN, std=_IMAGENET_STD,
      wnid_labels='image_classification/imagenet_resized_labels.txt')


# Small images are cropped like the paper's 227 of 256 (about 7/8 of the side).
DATASETS: dict[str, DatasetSpec] = {
    # PAPER.md: resized to 256x256, random 227 crop; Caffe scale (mean only).
    'imagenet2012': DatasetSpec(
        'imagenet2012', 1000, (227, 227, 3), True, tfds_name='imagenet2012',
        eval_split='validation', stored_size=(256, 256), resize=True,
        mean=_IMAGENET_MEAN, std=(1.0, 1.0, 1.0)),
    'imagenet_resized_32': _imagenet_resized(32, 28),
    'imagenet_resized_64': _imagenet_resized(64, 56),
    'cifar10': DatasetSpec('cifar10', 10, (28, 28, 3), True, tfds_name='cifar10',
                           stored_size=(32, 32), mean=(125.3, 123.0, 113.9),
                           std=(63.0, 62.1, 66.7)),
    'cifar100': DatasetSpec('cifar100', 100, (28, 28, 3), True, tfds_name='cifar100',
                            stored_size=(32, 32), mean=(129.3, 124.1, 112.4),
                            std=(68.2, 65.4, 70.4)),
    # Grey-scale sets: no augmentation by default; if switched on, +-2 pixel
    # shifts (zero = background padding) and flips.
    'fashion_mnist': DatasetSpec('fashion_mnist', 10, (28, 28, 1), False, pad=2,
                                 mean=(72.94,), std=(90.02,)),
    'mnist': DatasetSpec('mnist', 10, (28, 28, 1), False, tfds_name='mnist', pad=2,
                         mean=(33.32,), std=(78.57,)),
}


def dataset_spec(name: str | DatasetSpec) -> DatasetSpec:
  """The spec of a known dataset (a DatasetSpec is passed through)."""
  if isinstance(name, DatasetSpec):
    return name
  if name not in DATASETS:
    raise UserError(f'Unknown dataset {name!r}; known datasets: {", ".join(DATASETS)}.')
  return DATASETS[name]


# ---------------------------------------------------------------- sources


class _ArraySource:
  """Images and labels held in memory (Fashion-MNIST from IDX files)."""

  def __init__(self, images: np.ndarray, labels: np.ndarray):
    self._images, self.labels = images, labels

  def __len__(self) -> int:
    return len(self.labels)

  def images(self, indices: np.ndarray) -> np.ndarray:
    return self._images[indices]


def _source(spec: DatasetSpec, split: str, data_dir: str | None, cache_dir: str | None):
  if spec.tfds_name is None:
    return _ArraySource(*fashion_mnist.load(split, data_dir))
  return tfds_source.TfdsSource(
      spec.tfds_name, split, data_dir, cache_dir=cache_dir,
      resize=spec.source_size if spec.resize else None, wnid_labels=spec.wnid_labels)


def check_prepared(name: str | DatasetSpec, data_dir: str | None = None) -> None:
  """Raises UserError saying what is missing and how to prepare it."""
  spec = dataset_spec(name)
  if spec.tfds_name is None:
    for split in (spec.train_split, spec.eval_split):  # Validates the files;
      fashion_mnist.load(split, data_dir)  # cached, so no cost later.
    return
  for split in (spec.train_split, spec.eval_split):
    tfds_source.open_split(spec.tfds_name, split, data_dir)


# ---------------------------------------------------------------- plans


def _subset(labels: np.ndarray, classes: Sequence[int], num_classes: int):
  """Positions of the examples of `classes`, and their labels 0..k-1 (i: classes[i])."""
  classes = list(classes)
  if not classes:
    raise UserError('The class subset is empty; give at least one class.')
  bad = [c for c in classes if not 0 <= int(c) < num_classes]
  if bad:
    raise UserError(f'Class index {bad[0]} is out of range for a dataset of '
                    f'{num_classes} classes (valid: 0..{num_classes - 1}).')
  if len(set(classes)) != len(classes):
    raise UserError('The class subset lists a class twice; list each class once.')
  lut = np.full(num_classes, -1, np.int32)
  lut[np.asarray(classes, int)] = np.arange(len(classes), dtype=np.int32)
  mapped = lut[labels]
  positions = np.flatnonzero(mapped >= 0)
  return positions, mapped[positions]


def _processes(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  p = jax.process_index() if process_index is None else process_index
  n = jax.process_count() if process_count is None else process_count
  if not 0 <= p < n:
    raise UserError(f'process_index {p} is not in [0, process_count={n}).')
  return p, n


class _TrainPlan:
  """Global batch i -> this process's rows: example positions, labels, crop and flip.

  Epoch e is a permutation drawn from (seed, e); augmentation draws come from
  (seed, i) for all rows of the global batch, of which this process keeps its own.
  """

  def __init__(self, positions, labels, *, seed: int, batch_size: int,
               process_index: int, process_count: int, spec: DatasetSpec,
               augment: bool):
    self._positions, self._labels = positions, labels
    self._seed, self._batch_size = seed, batch_size
    self._global = batch_size * process_count
    self._rows = slice(process_index * batch_size, (process_index + 1) * batch_size)
    self._batches_per_epoch = len(positions) // self._global
    self._augment = augment
    h, w = spec.source_size
    self._range_y = h + 2 * spec.pad - spec.image_shape[0] + 1
    self._range_x = w + 2 * spec.pad - spec.image_shape[1] + 1
    self._epoch_order = (-1, None)

  def __len__(self) -> int:
    return sys.maxsize

  def _order(self, epoch: int) -> np.ndarray:
    cached_epoch, order = self._epoch_order
    if cached_epoch != epoch:
      order = np.random.default_rng([self._seed, 0, epoch]).permutation(len(self._positions))
      self._epoch_order = (epoch, order)
    return order

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    epoch, j = divmod(int(i), self._batches_per_epoch)
    rows = self._order(epoch)[j * self._global:(j + 1) * self._global][self._rows]
    plan = {'index': self._positions[rows], 'label': self._labels[rows]}
    if self._augment:
      rng = np.random.default_rng([self._seed, 1, int(i)])
      n = self._global
      draws = {'y': rng.integers(0, self._range_y, n), 'x': rng.integers(0, self._range_x, n),
               'flip': rng.random(n) < 0.5}
      plan.update({k: v[self._rows] for k, v in draws.items()})
    return plan


class _EvalPlan:
  """Eval batch i -> this process's rows of global batch i, in dataset order."""

  def __init__(self, positions, labels, *, batch_size: int, process_index: int,
               process_count: int):
    self._positions, self._labels = positions, labels
    self._batch_size, self._global = batch_size, batch_size * process_count
    self._offset = process_index * batch_size

  def __len__(self) -> int:
    return -(-len(self._positions) // self._global)

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    start = int(i) * self._global + self._offset
    rows = slice(start, min(start + self._batch_size, len(self._positions)))
    return {'index': self._positions[rows], 'label': self._labels[rows]}


# ---------------------------------------------------------------- batches


class _LoadBatch:
  """Plan -> {'image': float32 [n, H, W, C], 'label': int32 [n]}, vectorised."""

  def __init__(self, source, spec: DatasetSpec):
    self._source, self._spec = source, spec
    self._mean = np.asarray(spec.mean, np.float32)
    self._scale = 1.0 / np.asarray(spec.std, np.float32)

  def __call__(self, plan: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    spec = self._spec
    h, w, c = spec.image_shape
    n = len(plan['index'])
    images = self._source.images(plan['index'])
    images = np.stack(images) if n else np.zeros((0, *spec.source_size, c), np.uint8)
    if images.shape[1:3] != spec.source_size or images.shape[3] != c:
      raise UserError(f'Dataset {spec.name} has images of shape {images.shape[1:]}, '
                      f'expected {(*spec.source_size, c)}.')
    if 'flip' in plan:
      if spec.pad:
        p = spec.pad
        images = np.pad(images, ((0, 0), (p, p), (p, p), (0, 0)))
      y, x = plan['y'], plan['x']
      cols = np.where(plan['flip'][:, None], np.arange(w - 1, -1, -1), np.arange(w))
    else:  # Centre crop.
      y = np.full(n, (images.shape[1] - h) // 2)
      x = np.full(n, (images.shape[2] - w) // 2)
      cols = np.broadcast_to(np.arange(w), (n, w))
    # One gather does crop and flip for the whole batch.
    images = images[np.arange(n)[:, None, None], (y[:, None] + np.arange(h))[:, :, None],
                    (x[:, None] + cols)[:, None, :]]
    images = (images.astype(np.float32) - self._mean) * self._scale
    return {'image': images, 'label': plan['label'].astype(np.int32)}


def default_read_options() -> grain.ReadOptions:
  # On 2 cores grain's default 16 read threads are ~3x slower than none.
  return grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)


class TrainIterator(Iterator[dict[str, np.ndarray]]):
  """Endless train batches; the state is the number of the next global batch.

  Batch k is a pure function of (seed, k), so `{'next_batch': k}` resumes
  exactly, whatever the worker or process count of the run that saved it.
  """

  def __init__(self, batches: grain.MapDataset, read_options: grain.ReadOptions,
               num_workers: int):
    self._batches, self._read_options = batches, read_options
    self._num_workers = num_workers
    self._next, self._it = 0, None

  def _start(self) -> Iterator[dict[str, np.ndarray]]:
    ds = self._batches[self._next:].to_iter_dataset(self._read_options)
    if self._num_workers > 0:
      if not flags.FLAGS.is_parsed():  # grain's workers read absl flags.
        flags.FLAGS.mark_as_parsed()
      ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=self._num_workers))
    return iter(ds)

  def __next__(self) -> dict[str, np.ndarray]:
    if self._it is None:
      self._it = self._start()
    batch = next(self._it)
    self._next += 1
    return batch

  def get_state(self) -> dict[str, int]:
    return {'next_batch': self._next}

  def set_state(self, state: dict[str, Any]) -> None:
    self.close()
    self._next = int(state['next_batch'])

  def close(self) -> None:
    if self._it is not None:
      self._it.close()
      self._it = None


def train_iterator(name: str | DatasetSpec, classes: Sequence[int], *, batch_size: int,
                   seed: int, data_dir: str | None = None, augment: bool | None = None,
                   process_index: int | None = None, process_count: int | None = None,
                   num_workers: int = 0, read_options: grain.ReadOptions | None = None,
                   cache_dir: str | None = None) -> TrainIterator:
  """Endless train batches of `classes` (label i = classes[i]) for this process.

  `batch_size` is this process's share of a global batch of
  batch_size * process_count. Each epoch is a fresh permutation drawn from
  `seed`; the last incomplete global batch of an epoch is dropped. The iterator's
  `get_state()` is a JSON-serialisable dict; `set_state` resumes on exactly the
  next batch. `cache_dir` holds the label index when the data directory is not
  writable (default: next to the data, else ~/.cache/tfx_jax).
  """
  spec = dataset_spec(name)
  p, n = _processes(process_index, process_count)
  if batch_size < 1:
    raise UserError(f'batch_size must be >= 1, got {batch_size}.')
  source = _source(spec, spec.train_split, data_dir, cache_dir)
  positions, labels = _subset(source.labels, classes, spec.num_classes)
  if len(positions) < batch_size * n:
    raise UserError(f'The {len(positions)} training examples of the chosen classes '
                    f'of {spec.name} do not fill one global batch of {batch_size * n}; '
                    'use a smaller batch_size.')
  plan = _TrainPlan(positions, labels, seed=seed, batch_size=batch_size,
                    process_index=p, process_count=n, spec=spec,
                    augment=spec.augment if augment is None else augment)
  batches = grain.MapDataset.source(plan).map(_LoadBatch(source, spec))
  return TrainIterator(batches, read_options or default_read_options(), num_workers)


def eval_batches(name: str | DatasetSpec, classes: Sequence[int], *, batch_size: int,
                 data_dir: str | None = None, max_examples: int | None = None,
                 process_index: int | None = None, process_count: int | None = None,
                 read_options: grain.ReadOptions | None = None,
                 cache_dir: str | None = None) -> Iterable[dict[str, np.ndarray]]:
  """The eval split restricted to `classes`, centre-cropped, in dataset order.

  Each example once over all processes: process p gets rows [p*b:(p+1)*b] of
  each global batch of b * process_count. Every process yields the same number
  of batches; the last ones are smaller, possibly empty (pad with
  train.pad_batch). Re-iterable.
  """
  spec = dataset_spec(name)
  p, n = _processes(process_index, process_count)
  if batch_size < 1:
    raise UserError(f'batch_size must be >= 1, got {batch_size}.')
  source = _source(spec, spec.eval_split, data_dir, cache_dir)
  positions, labels = _subset(source.labels, classes, spec.num_classes)
  if max_examples is not None:
    positions, labels = positions[:max_examples], labels[:max_examples]
  plan = _EvalPlan(positions, labels, batch_size=batch_size, process_index=p,
                   process_count=n)
  ds = grain.MapDataset.source(plan).map(_LoadBatch(source, spec))
  return ds.to_iter_dataset(read_options or default_read_options())
