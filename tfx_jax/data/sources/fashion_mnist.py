"""Fashion-MNIST from its IDX files: found locally or on gs://, or fetched once
from upstream.

Looked for, in order: the configured data directory (or its fashion-mnist/
subdirectory); Debian's dataset-fashion-mnist package; a cache directory, into
which the four files are downloaded from the dataset's public upstream. A
gs:// data directory without them (a bucket of TFDS data) is passed over.
"""

from __future__ import annotations

import functools
import gzip
import os
import urllib.error
import urllib.request

import numpy as np
from absl import logging
from etils import epath

from tfx_jax import files
from tfx_jax.errors import UserError

DEBIAN_DIR = '/usr/share/datasets/fashion-mnist'
UPSTREAM_URL = 'http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/'
FILES = {
    'train': ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz'),
    'test': ('t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz'),
}
NUM_EXAMPLES = {'train': 60000, 'test': 10000}
NUM_CLASSES = 10
_IDX_DTYPES = {0x08: np.uint8}  # Fashion-MNIST only uses unsigned bytes.


def default_cache_dir() -> str:
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(base, 'tfx_jax', 'fashion-mnist')


def _has_all(directory: str) -> bool:
  is_file = os.path.isfile if files.is_local(directory) else files.exists
  return all(is_file(os.path.join(directory, f)) for pair in FILES.values()
             for f in pair)


def _download(url: str, path: str) -> None:
  """Fetches `url` to `path`, checked, and written atomically."""
  with urllib.request.urlopen(url, timeout=60) as r:
    data = r.read()
  try:
    parse_idx(data, path)  # Reject a truncated or wrong file before it takes the name.
  except UserError as e:
    raise UserError(f'The download of {url} is not a valid IDX file: {e}') from None
  files.atomic_write(path, data)


def locate(data_dir: str | None = None, *, debian_dir: str = DEBIAN_DIR,
           cache_dir: str | None = None, url: str = UPSTREAM_URL) -> str:
  """The directory holding the four IDX files, downloading them if need be.

  A configured data_dir is the only place looked in (and downloaded to);
  otherwise Debian's directory, then the user's cache.
  """
  if data_dir and not files.is_local(data_dir):
    for directory in (data_dir, os.path.join(data_dir, 'fashion-mnist')):
      if _has_all(directory):
        return directory
    logging.info('No Fashion-MNIST IDX files in %s; looking on this machine.', data_dir)
    data_dir = None  # Never downloaded to a bucket: every host would race.
  candidates = ([data_dir, os.path.join(data_dir, 'fashion-mnist')] if data_dir
                else [debian_dir])
  for directory in candidates:
    if _has_all(directory):
      return directory
  cache_dir = cache_dir or (os.path.join(data_dir, 'fashion-mnist') if data_dir
                            else default_cache_dir())
  logging.info('Fashion-MNIST not found locally; downloading %s to %s.', url, cache_dir)
  try:
    os.makedirs(cache_dir, exist_ok=True)
    for pair in FILES.values():
      for name in pair:
        path = os.path.join(cache_dir, name)
        if not os.path.isfile(path):
          _download(url.rstrip('/') + '/' + name, path)
  except (OSError, urllib.error.URLError) as e:
    looked = ', '.join(candidates)
    raise UserError(
        f'Fashion-MNIST IDX files not found (looked in {looked}) and the download '
        f'from {url} failed ({e}). Install them with `make data` (Debian package '
        'dataset-fashion-mnist) or put the four .gz files in the data directory.') from e
  return cache_dir


def read_idx(path: str) -> np.ndarray:
  """An IDX file (gzipped or not) as an array; UserError if it is corrupted."""
  return parse_idx(files.read_bytes(path), path)


def parse_idx(raw: bytes, path: str) -> np.ndarray:
  """The bytes of IDX file `path` (gzipped or not) as an array."""
  if raw[:2] == b'\x1f\x8b':
    try:
      raw = gzip.decompress(raw)
    except (OSError, EOFError) as e:
      raise UserError(f'Corrupted IDX file {path}: bad gzip data ({e}); '
                      'delete it and fetch it again.') from e
  if len(raw) < 4 or raw[:2] != b'\0\0' or raw[2] not in _IDX_DTYPES:
    raise UserError(f'Corrupted IDX file {path}: bad magic {raw[:4].hex()} '
                    '(expected 000008 then the number of dimensions); '
                    'delete it and fetch it again.')
  ndim = raw[3]
  header = 4 + 4 * ndim
  if len(raw) < header:
    raise UserError(f'Corrupted IDX file {path}: truncated header; delete it and fetch it again.')
  shape = tuple(int(d) for d in np.frombuffer(raw, '>u4', ndim, offset=4))
  expected = header + int(np.prod(shape))
  if len(raw) != expected:
    raise UserError(f'Corrupted IDX file {path}: {len(raw)} bytes, but its header '
                    f'{shape} needs {expected}; delete it and fetch it again.')
  return np.frombuffer(raw, _IDX_DTYPES[raw[2]], offset=header).reshape(shape)


@functools.lru_cache(maxsize=4)
def _load(directory: str, split: str, stamp: tuple) -> tuple[np.ndarray, np.ndarray]:
  del stamp  # Part of the cache key only: a changed file is read again.
  image_file, label_file = (os.path.join(directory, f) for f in FILES[split])
  images, labels = read_idx(image_file), read_idx(label_file)
  n = NUM_EXAMPLES[split]
  if images.shape != (n, 28, 28) or labels.shape != (n,):
    raise UserError(f'Fashion-MNIST {split} files in {directory} hold images '
                    f'{images.shape} and labels {labels.shape}; expected ({n}, 28, 28) '
                    f'and ({n},). Replace them with the original files.')
  if labels.max() >= NUM_CLASSES:
    raise UserError(f'Corrupted label file {label_file}: label {labels.max()} >= {NUM_CLASSES}.')
  return images[..., None], labels.astype(np.int32)


def load(split: str, data_dir: str | None = None) -> tuple[np.ndarray, np.ndarray]:
  """(images uint8 [N, 28, 28, 1], labels int32 [N]) of 'train' or 'test'."""
  directory = locate(data_dir)
  return _load(directory, split, tuple(_stamp(os.path.join(directory, f))
                                       for f in FILES[split]))


def _stamp(path: str) -> tuple:
  if files.is_local(path):
    return (os.stat(path).st_mtime_ns,)
  stat = epath.Path(path).stat()  # gs:// gives whole seconds only.
  return (stat.length, stat.mtime)
