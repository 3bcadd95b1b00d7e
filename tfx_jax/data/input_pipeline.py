"""grain input pipelines: one task's classes of a dataset, as batches of uint8 images.

Sources (`sources/reader.py` opens the one a spec needs): JPEG shards
written by `python -m tfx_jax.prepare` (ImageNet, image folders), any TFDS
dataset prepared as array_record, Fashion-MNIST's IDX files and UCI's
digits. All give uint8 images by example index and a label index
(per-example labels, read once and cached), so a class subset is selected up
front, without decoding images. Images are cropped and flipped as uint8; the
cast to float and the mean subtraction happen on the device, inside the
jitted steps (`train.normalizer`), so batches cross to the device at a quarter
of float32's bytes.

Every process computes the same GLOBAL batches (shuffle and augmentation draws
depend only on the seed, the epoch and the batch number) and reads only its own
rows [p*b:(p+1)*b] of each, so the sequence of global batches does not depend on
the number of processes.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import sys
from collections.abc import Iterator, Sequence
from concurrent import futures
from typing import Any

import grain
import jax
import numpy as np
from absl import flags
from grain.multiprocessing import SharedMemoryArray

from tfx_jax.data import images as images_lib
from tfx_jax.data import subsets
from tfx_jax.data.datasets import DatasetSpec, dataset_spec, host_workers
from tfx_jax.data.sources import reader
from tfx_jax.errors import UserError

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
  mapped = np.where(labels >= 0, lut[labels], -1)  # -1: a skipped image (folders.py).
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
    self.positions, self._labels = positions, labels
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
      order = np.random.default_rng([self._seed, 0, epoch]).permutation(len(self.positions))
      self._epoch_order = (epoch, order)
    return order

  def _stream(self, i: int) -> np.ndarray:
    """Fewer examples than a global batch: batch i is positions i*G..(i+1)*G-1 of
    the epochs' permutations laid end to end, so every step is an optimizer
    step and each example comes up as often as any other."""
    n = len(self.positions)
    t = np.arange(i * self._global, (i + 1) * self._global)[self._rows]
    return np.concatenate([self._order(int(e))[t[t // n == e] % n]
                           for e in np.unique(t // n)])

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    if not self._batches_per_epoch:
      rows = self._stream(int(i))
    else:
      epoch, j = divmod(int(i), self._batches_per_epoch)
      rows = self._order(epoch)[j * self._global:(j + 1) * self._global][self._rows]
    plan = {'index': self.positions[rows], 'label': self._labels[rows]}
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


class LoadBatch:
  """Plan -> {'image': uint8 [n, H, W, C], 'label': int32 [n]}: crop and flip as uint8."""

  def __init__(self, source, spec: DatasetSpec, shared_memory: bool = False):
    self._source, self._spec = source, spec
    # In grain workers: build batches in shared memory, which grain then hands
    # to the training process without copying them.
    self._shared_memory = shared_memory

  def __call__(self, plan: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    batch = self.allocate(plan)
    self.fill(plan, batch['image'], 0, len(plan['index']))
    return batch

  def allocate(self, plan: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    shape = (len(plan['index']), *self._spec.image_shape)
    image = (SharedMemoryArray(shape, np.uint8) if self._shared_memory and shape[0]
             else np.empty(shape, np.uint8))
    return {'image': image, 'label': plan['label'].astype(np.int32)}

  def fill(self, plan: dict[str, np.ndarray], out: np.ndarray, lo: int, hi: int) -> None:
    """Writes the images of plan rows lo..hi-1 into out[lo:hi]."""
    spec = self._spec
    h, w, c = spec.image_shape
    index = plan['index'][lo:hi]
    n = len(index)
    if 'flip' in plan:
      y, x, flip = plan['y'][lo:hi], plan['x'][lo:hi], plan['flip'][lo:hi]
    else:  # Centre crop.
      y = np.full(n, (spec.source_size[0] - h) // 2)
      x = np.full(n, (spec.source_size[1] - w) // 2)
      flip = np.zeros(n, bool)
    if getattr(self._source, 'image_shape', None) == (*spec.source_size, c):
      self._source.crops(index, y, x, flip, out[lo:hi])  # Decodes into the batch.
      return
    images = self._source.images(index)
    if spec.resize or spec.stored_channels:
      images = [images_lib.fit(image, spec.source_size, c) for image in images]
    images = np.stack(images) if n else np.zeros((0, *spec.source_size, c), np.uint8)
    if images.shape[1:3] != spec.source_size or images.shape[3] != c:
      raise UserError(f'Dataset {spec.name} has images of shape {images.shape[1:]}, '
                      f'expected {(*spec.source_size, c)}.')
    if spec.pad and 'flip' in plan:
      p = spec.pad
      images = np.pad(images, ((0, 0), (p, p), (p, p), (0, 0)))
    cols = np.where(flip[:, None], np.arange(w - 1, -1, -1), np.arange(w))
    # One gather does crop and flip for the whole batch.
    out[lo:hi] = images[np.arange(n)[:, None, None], (y[:, None] + np.arange(h))[:, :, None],
                        (x[:, None] + cols)[:, None, :]]


SHARED_MEMORY = '/dev/shm'  # Where grain's workers build their batches (Linux).


def check_shared_memory(name: str | DatasetSpec, num_workers: int, batch_size: int,
                        image_shape: Sequence[int], path: str = SHARED_MEMORY,
                        ahead: int = 2) -> None:
  """Refuse, in one line, a job whose grain workers' batches cannot fit in the
  free shared memory: each worker holds its buffered batch and the one it
  builds (grain's per_worker_buffer_size 1), and the training process the
  `ahead` batches put on the devices (config.device_prefetch) and the one it
  trains on, `batch_size` uint8 images each. A container's default /dev/shm
  is 64 MB, and a worker's ImageNet batch 40."""
  workers = host_workers(name, num_workers)
  if workers == 0 or not os.path.isdir(path):
    return
  batch = batch_size * math.prod(image_shape)
  per_worker, held = 2 * batch, (ahead + 1) * batch
  free = shutil.disk_usage(path).free
  if workers * per_worker + held <= free:
    return
  fits = max(0, (free - held) // per_worker)
  mb = lambda n: f'{n / 2**20:,.0f} MB'
  raise UserError(
      f'{path} has {mb(free)} free, but {workers} data worker(s) and the {ahead + 1} batches '
      f'the training process holds need about {mb(workers * per_worker + held)} of shared '
      f'memory for batches of {batch_size} images '
      f'of {"x".join(map(str, image_shape))}: set --config.num_workers={fits} (0: load in '
      f'the training process), or give the container more (docker run --shm-size=...).')


def default_read_options() -> grain.ReadOptions:
  # On 2 cores grain's default 16 read threads are ~3x slower than none.
  return grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)


def _ignore_stop_signals(*unused_worker_index_and_count) -> None:
  """In each grain worker: SIGTERM and SIGINT, which a scheduler or Ctrl-C
  sends to the whole process group, are the training process's to handle (it
  saves, then closes the workers); a worker they killed would leave it waiting
  for a batch that never comes."""
  signal.signal(signal.SIGTERM, signal.SIG_IGN)
  signal.signal(signal.SIGINT, signal.SIG_IGN)


def _unlink_now(array: SharedMemoryArray) -> None:
  """Unlinks a worker's batch from /dev/shm as soon as this process has it
  mapped: its memory lives on until the array is freed, and no name is left
  behind if it is still referenced at exit (grain would unlink it on deletion,
  which fails while a device array on CPU still borrows its buffer, leaving
  the segment to Python's resource tracker and its warning at exit)."""
  array.shm.unlink()
  array._unlink_on_del = False  # pylint: disable=protected-access


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
      ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=self._num_workers),
                          worker_init_fn=_ignore_stop_signals)
    return iter(ds)

  def __next__(self) -> dict[str, np.ndarray]:
    if self._it is None:
      self._it = self._start()
    batch = next(self._it)
    self._next += 1
    for array in batch.values():
      if isinstance(array, SharedMemoryArray) and array.shm is not None:
        _unlink_now(array)
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


def open_subset(name: str | DatasetSpec, split: str, classes: Sequence[int], batch_size: int,
          data_dir: str | None, process_index: int | None, process_count: int | None,
          cache_dir: str | None):
  """What both pipelines start from: the spec, this process (p, n), the 'train'
  or 'eval' split's source, and the positions and labels of `classes` in it."""
  spec = dataset_spec(name)
  p, n = _processes(process_index, process_count)
  if batch_size < 1:
    raise UserError(f'batch_size must be >= 1, got {batch_size}.')
  source = reader.open_source(spec, spec.train_split if split == 'train' else spec.eval_split,
                              data_dir, cache_dir)
  positions, labels = _subset(source.labels, classes, spec.num_classes)
  return spec, p, n, source, positions, labels


def train_iterator(name: str | DatasetSpec, classes: Sequence[int], *, batch_size: int,
                   seed: int, data_dir: str | None = None, augment: bool | None = None,
                   process_index: int | None = None, process_count: int | None = None,
                   num_workers: int = 0, read_options: grain.ReadOptions | None = None,
                   cache_dir: str | None = None, examples_per_class: int = 0,
                   subset_seed: int = 0) -> TrainIterator:
  """Endless train batches of `classes` (label i = classes[i]) for this process.

  `batch_size` is this process's share of a global batch of
  batch_size * process_count. Each epoch is a fresh permutation drawn from
  `seed`; the last incomplete global batch of an epoch is dropped. The iterator's
  `get_state()` is a JSON-serialisable dict; `set_state` resumes on exactly the
  next batch. num_workers: grain worker processes, -1 for `host_workers`'s
  rule. `cache_dir` holds the label index when the data directory is not
  writable (default: next to the data, else ~/.cache/tfx_jax).
  `examples_per_class` > 0 trains on that many examples of each class (the
  first in `subset_seed`'s order: `subsets.per_class`). With fewer examples
  than a global batch, batches run on over epoch boundaries (`_TrainPlan._stream`).
  """
  spec, p, n, source, positions, labels = open_subset(
      name, 'train', classes, batch_size, data_dir, process_index, process_count, cache_dir)
  if examples_per_class:
    keep = subsets.per_class(labels, examples_per_class, subset_seed)
    positions, labels = positions[keep], labels[keep]
  if not len(positions):
    raise UserError(f'The chosen classes of {spec.name} have no training examples.')
  plan = _TrainPlan(positions, labels, seed=seed, batch_size=batch_size,
                    process_index=p, process_count=n, spec=spec,
                    augment=spec.augment if augment is None else augment)
  workers = host_workers(spec, num_workers)
  batches = grain.MapDataset.source(plan).map(LoadBatch(source, spec, workers > 0))
  iterator = TrainIterator(batches, read_options or default_read_options(), workers)
  # What training/feature_cache.py reads: batch i's rows, and their images.
  iterator.plan, iterator.load = plan, LoadBatch(source, spec)
  return iterator


class EvalData:
  """The eval split restricted to `classes`: built once, iterated at every evaluation.

  Each iteration yields this process's batches, centre-cropped, in dataset
  order; each example once over all processes: process p gets rows
  [p*b:(p+1)*b] of each global batch of b * process_count. Every process
  yields the same number of batches; the last ones are smaller, possibly empty
  (pad with train.pad_batch). With threads, each batch is split over them (the
  JPEG decoder and file reads release the GIL) and the next batch loads while
  the caller uses the current one; no process is started per evaluation.
  """

  def __init__(self, name: str | DatasetSpec, classes: Sequence[int], *, batch_size: int,
               data_dir: str | None = None, max_examples: int | None = None,
               process_index: int | None = None, process_count: int | None = None,
               num_workers: int = 0, cache_dir: str | None = None):
    spec, p, n, source, positions, labels = open_subset(
        name, 'eval', classes, batch_size, data_dir, process_index, process_count,
        cache_dir)
    if max_examples is not None:
      positions, labels = positions[:max_examples], labels[:max_examples]
    self.num_examples = len(positions)
    self._plan = _EvalPlan(positions, labels, batch_size=batch_size, process_index=p,
                           process_count=n)
    self._load = LoadBatch(source, spec)
    self.num_threads = host_workers(spec, num_workers, threads=True)

  def __len__(self) -> int:
    return len(self._plan)

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    if not self.num_threads:
      for i in range(len(self._plan)):
        yield self._load(self._plan[i])
      return
    with futures.ThreadPoolExecutor(self.num_threads) as pool:
      pending = self._submit(pool, 0) if len(self._plan) else None
      for i in range(len(self._plan)):
        batch, loads = pending
        pending = self._submit(pool, i + 1) if i + 1 < len(self._plan) else None
        for load in loads:
          load.result()
        yield batch

  def _submit(self, pool, i: int):
    plan = self._plan[i]
    batch = self._load.allocate(plan)
    n = len(plan['index'])
    bounds = np.linspace(0, n, min(self.num_threads, max(n, 1)) + 1).astype(int)
    return batch, [pool.submit(self._load.fill, plan, batch['image'], lo, hi)
                   for lo, hi in zip(bounds[:-1], bounds[1:])]
