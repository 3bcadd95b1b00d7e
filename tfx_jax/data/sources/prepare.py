"""Prepares ImageNet (ILSVRC2012) for training, without TensorFlow: the
library behind `python -m tfx_jax.prepare imagenet2012 --manual_dir=DIR
--data_dir=OUT`.

Reads ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from DIR and writes
OUT/imagenet2012_jpeg256/ (format: jpeg_shards.py), local or gs://. Every image
is warped to 256x256 as the paper's Caffe `convert_imageset` did (OpenCV
decode, bilinear resize ignoring the aspect ratio; greyscale and CMYK become
RGB) and re-encoded as JPEG quality 90. Shards are spread over every core and
written atomically; a killed run keeps its finished shards on the next start,
and the output is byte-identical to an uninterrupted run's.
"""

from __future__ import annotations

import json
import multiprocessing
import multiprocessing.pool
import os
import signal
import threading
import time
from concurrent import futures

import cv2
import numpy as np
import simplejpeg
from etils import epath

from tfx_jax import files
from tfx_jax.data.sources import ilsvrc, jpeg_shards
from tfx_jax.errors import UserError
from tfx_jax.progress import fmt_time

DIRNAME = 'imagenet2012_jpeg256'
SIZE = 256  # PAPER.md: images resized to 256x256, then cropped to 227.
QUALITY = 90  # 4:2:0, as most of the original JPEGs are (docs/data.md).


def encode(data: bytes) -> bytes | None:
  """Original image bytes -> 256x256 JPEG bytes; None if undecodable.

  cv2 reads what ImageNet holds (CMYK and greyscale JPEGs, one PNG) as Caffe's
  cv::imread did; EXIF orientation is ignored, as there. INTER_LINEAR is
  cv::resize's default, which convert_imageset used.
  """
  image = cv2.imdecode(np.frombuffer(data, np.uint8),
                       cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
  if image is None:
    return None
  image = cv2.resize(image, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
  return simplejpeg.encode_jpeg(image, QUALITY, 'BGR', '420')


def settings(listings: dict[str, ilsvrc.Listing], per_shard: int) -> dict:
  """What fixes the output bytes; a resumed run must match it."""
  return {'format': jpeg_shards.FORMAT, 'version': jpeg_shards.VERSION,
          'dataset': 'imagenet2012', 'image_size': [SIZE, SIZE], 'quality': QUALITY,
          'images_per_shard': per_shard, 'num_classes': len(ilsvrc.wnids()),
          'encoder': f'opencv {cv2.__version__} INTER_LINEAR, simplejpeg '
                     f'{simplejpeg.__version__} 4:2:0',
          'splits': {split: {'num_examples': len(l), 'num_shards': _num_shards(l.names, per_shard),
                             'source': os.path.basename(l.tar),
                             'fingerprint': l.fingerprint()}
                     for split, l in listings.items()}}


def _num_shards(names, per_shard: int) -> int:
  return -(-len(names) // per_shard)


_open_tars: dict[str, int] = {}  # Per worker process.


def write_shard(task) -> tuple[str, int, int]:
  """Encodes one shard's images and writes the shard, then its offsets (the marker)."""
  root, split, shard, tar, names, offsets, sizes = task
  if tar not in _open_tars:
    cv2.setNumThreads(1)  # One core per worker process.
    _open_tars[tar] = os.open(tar, os.O_RDONLY)
  chunks = []
  for name, offset, size in zip(names, offsets.tolist(), sizes.tolist()):
    jpeg = encode(ilsvrc.read(_open_tars[tar], offset, size, tar, name))
    if jpeg is None:
      raise ilsvrc.corrupt(tar, f'{name} is not a decodable image')
    chunks.append(jpeg)
  write_chunks(root, split, shard, chunks)
  return split, shard, len(names)


def write_chunks(root: str, split: str, shard: int, chunks: list[bytes]) -> None:
  """One shard's encoded images, then its offsets: the shard's done marker."""
  ends = np.cumsum([0, *map(len, chunks)], dtype=np.int64)
  files.atomic_write(jpeg_shards.shard_path(root, split, shard), b''.join(chunks))
  files.atomic_write(jpeg_shards.offsets_path(root, split, shard), jpeg_shards.npy_bytes(ends))


class Progress:
  """`done/total images, rate, ETA` on one line, at most every `every` seconds."""

  def __init__(self, total: int, done: int, log=print, every: float = 2.0):
    self.total, self.done, self._log, self._every = total, done, log, every
    self._start, self._new, self._last = time.perf_counter(), 0, 0.0

  def add(self, n: int, final: bool = False) -> None:
    self.done += n
    self._new += n
    now = time.perf_counter()
    if final or now - self._last >= self._every:
      self._last = now
      rate = self._new / max(now - self._start, 1e-9)
      eta = fmt_time((self.total - self.done) / rate) if rate else '?'
      self._log(f'{self.done:,}/{self.total:,} images, {rate:,.0f} images/s, ETA {eta}')

  @property
  def rate(self) -> float:
    return self._new / max(time.perf_counter() - self._start, 1e-9)


def _start(root: str, plan: dict) -> None:
  """Checks a resumed run's settings, or records them for the next one."""
  path = os.path.join(root, 'prepare.json')
  if files.exists(path):
    if json.loads(files.read_text(path)) != plan:
      raise UserError(f'{root} holds a preparation from other inputs, settings or library '
                      f'versions; use another --data_dir, or delete {root} to start over.')
    return
  files.makedirs(root)
  files.atomic_write_json(path, plan)


def prepare(manual_dir: str, data_dir: str | None = None, *, num_workers: int = 0,
            images_per_shard: int = 1024, log=print) -> dict:
  """Writes (or completes) DATA_DIR/imagenet2012_jpeg256; returns its manifest."""
  if images_per_shard < 1:
    raise UserError(f'--images_per_shard must be >= 1, got {images_per_shard}.')
  root = jpeg_shards.dataset_dir(data_dir, DIRNAME)
  log(f'Listing the tars in {manual_dir} ...')
  listings = {'train': ilsvrc.list_train(manual_dir),
              'validation': ilsvrc.list_validation(manual_dir)}
  plan = settings(listings, images_per_shard)

  def task(split, k, rows):
    listing = listings[split]
    return (root, split, k, listing.tar, listing.names[rows], listing.offsets[rows],
            listing.sizes[rows])

  rate = write_all(root, listings, plan, task, write_shard, images_per_shard, num_workers,
                   log)
  _finish(root, listings, plan, images_per_shard)
  log(f'Done: {root}. Train with --config.data_dir={data_dir or jpeg_shards.default_data_dir()}')
  return {**plan, 'images_per_s': rate}


def write_all(root: str, listings: dict, plan: dict, task, worker, images_per_shard: int,
              num_workers: int, log) -> float:
  """Writes every shard not yet done (`worker(task(split, k, rows))` each, on
  every core), with a progress line; returns the images/s of this run.
  A listing has `names` and `labels`, sorted as the shards hold them."""
  _start(root, plan)
  present = set(files.listdir(root))
  if files.is_local(root):  # Temp files of a killed run.
    for name in present:
      if name.startswith('.') and name.endswith('.tmp'):
        os.unlink(os.path.join(root, name))
  tasks, done = [], 0
  for split, listing in listings.items():
    files.atomic_write(jpeg_shards.labels_path(root, split),
                       jpeg_shards.npy_bytes(np.asarray(listing.labels, np.int32)))
    for k in range(_num_shards(listing.names, images_per_shard)):
      rows = slice(k * images_per_shard, (k + 1) * images_per_shard)
      if os.path.basename(jpeg_shards.offsets_path(root, split, k)) in present:
        done += len(listing.names[rows])
        continue
      tasks.append(task(split, k, rows))
  total = sum(len(l.names) for l in listings.values())
  workers = min(num_workers or len(os.sched_getaffinity(0)), max(len(tasks), 1))
  log(f'Writing {root}: {total:,} images in '
      f'{sum(_num_shards(l.names, images_per_shard) for l in listings.values())} shards, '
      f'{done:,} already done; {workers} processes.')
  progress = Progress(total, done, log)
  if workers == 1:
    for t in tasks:
      progress.add(worker(t)[2])
  else:
    with _pool(workers) as pool:
      for _, _, n in pool.imap_unordered(worker, tasks):
        progress.add(n)
  progress.add(0, final=True)
  return progress.rate


def _pool(workers: int) -> multiprocessing.pool.Pool:
  """Worker processes that ignore SIGINT from their start: Ctrl-C reaches the
  terminal's whole process group, and only this process answers it (the pool's
  exit then terminates them). A spawned child inherits an ignored SIGINT
  through exec, and Python keeps it ignored; a Ctrl-C in the milliseconds the
  pool takes to start is not seen."""
  if threading.current_thread() is not threading.main_thread():
    return multiprocessing.get_context('spawn').Pool(workers)
  handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
  try:
    return multiprocessing.get_context('spawn').Pool(workers)
  finally:
    signal.signal(signal.SIGINT, handler)


def _finish(root: str, listings, plan: dict, per_shard: int) -> None:
  finish(root, listings, per_shard)
  files.atomic_write_json(os.path.join(root, jpeg_shards.MANIFEST), plan)


def finish(root: str, listings, per_shard: int) -> dict[str, np.ndarray]:
  """Each split's index from its shards' offsets (returned by split); the
  caller writes the manifest last."""
  indices = {}
  for split, listing in listings.items():
    n = _num_shards(listing.names, per_shard)
    with futures.ThreadPoolExecutor(16) as pool:  # Many small reads on gs://.
      raw = list(pool.map(
          lambda k: epath.Path(jpeg_shards.offsets_path(root, split, k)).read_bytes(),
          range(n)))
    # Parsed in this thread: np.load parses the header with ast, which threads
    # corrupt on CPython 3.11.7 ("AST constructor recursion depth mismatch").
    ends = [jpeg_shards.npy_array(b) for b in raw]
    for k, e in enumerate(ends):
      if len(e) - 1 != len(listing.names[k * per_shard:(k + 1) * per_shard]):
        raise UserError(f'{jpeg_shards.offsets_path(root, split, k)} does not match its '
                        f'shard; delete it and run again.')
    index = np.concatenate([np.stack([e[:-1], np.diff(e)], 1) for e in ends]
                           ) if ends else np.zeros((0, 2), np.int64)
    files.atomic_write(jpeg_shards.index_path(root, split),
                       jpeg_shards.npy_bytes(index.astype(np.int64)))
    indices[split] = index
  return indices
