"""The original ILSVRC2012 tars, read without TensorFlow: listings and image bytes.

ILSVRC2012_img_train.tar holds one tar per class (n01440764.tar holding
n01440764_10026.JPEG, ...); ILSVRC2012_img_val.tar holds ILSVRC2012_val_00000001.JPEG
to ILSVRC2012_val_00050000.JPEG. The class index is the wnid's position in the
label list tensorflow-datasets ships (sorted wnids, the original's order), and
validation labels come from its validation_labels.txt (by file number). Listing
reads tar headers only; each image is then read with one pread.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import os
import re
import tarfile

import numpy as np

from tfx_jax import files
from tfx_jax.errors import UserError

TRAIN_TAR = 'ILSVRC2012_img_train.tar'
VALIDATION_TAR = 'ILSVRC2012_img_val.tar'
_VALIDATION_NAME = re.compile(r'ILSVRC2012_val_(\d{8})\.JPEG')
_END_OF_ARCHIVE = bytes(1024)  # A tar ends with two zero blocks.


def _tfds_file(name: str) -> str:
  """A file shipped inside the tensorflow_datasets package (not imported)."""
  spec = importlib.util.find_spec('tensorflow_datasets')
  return os.path.join(spec.submodule_search_locations[0], 'datasets', 'imagenet2012', name)


@functools.cache
def wnids() -> tuple[str, ...]:
  """The 1000 ILSVRC2012 wnids, sorted: position = class index."""
  with open(_tfds_file('labels.txt')) as f:
    return tuple(f.read().split())


@functools.cache
def validation_wnids() -> tuple[str, ...]:
  """The wnid of validation image k+1 (ILSVRC2012_val_%08d.JPEG), for k = 0..49999."""
  with open(_tfds_file('validation_labels.txt')) as f:
    return tuple(f.read().split())


@dataclasses.dataclass
class Listing:
  """A split's images in a tar, sorted by (label, name): where each one's bytes lie."""
  tar: str
  names: list[str]
  offsets: np.ndarray  # int64: byte offset of the image's data in `tar`.
  sizes: np.ndarray  # int64
  labels: np.ndarray  # int32 class index

  def __len__(self) -> int:
    return len(self.names)

  def fingerprint(self) -> str:
    """Changes when any name, size or label does (a different manual_dir)."""
    h = hashlib.sha256()
    for name, size, label in zip(self.names, self.sizes.tolist(), self.labels.tolist()):
      h.update(f'{name} {size} {label}\n'.encode())
    return h.hexdigest()


def corrupt(path: str, what: str) -> UserError:
  return UserError(f'{path} is corrupt or truncated ({what}); download it again.')


class _Window:
  """Bytes [start, start + size) of an open file, as a file for tarfile."""

  def __init__(self, f, start: int, size: int):
    self._f, self._start, self._size, self._pos = f, start, size, 0

  def seek(self, pos: int, whence: int = 0) -> int:
    self._pos = {0: 0, 1: self._pos, 2: self._size}[whence] + pos
    return self._pos

  def tell(self) -> int:
    return self._pos

  def read(self, n: int = -1) -> bytes:
    n = self._size - self._pos if n is None or n < 0 else min(n, self._size - self._pos)
    data = os.pread(self._f.fileno(), max(n, 0), self._start + self._pos)
    self._pos += len(data)
    return data


def _members(f, start: int, size: int, where: str) -> list[tuple[str, int, int]]:
  """(name, absolute data offset, size) of the files in the tar at [start, start+size)."""
  window = _Window(f, start, size)
  try:
    tar = tarfile.open(fileobj=window, mode='r:')
    members = [(m.name, start + m.offset_data, m.size) for m in tar if m.isfile()]
    end = tar.offset  # Where the next header would be: must be the end marker.
  except (tarfile.TarError, EOFError, UnicodeError) as e:
    raise corrupt(where, str(e)) from None
  for name, offset, n in members:
    if offset + n > start + size:
      raise corrupt(where, f'{name} ends past the end of the data')
  window.seek(end)
  if window.read(len(_END_OF_ARCHIVE)) != _END_OF_ARCHIVE:
    raise corrupt(where, f'no end-of-archive marker after {len(members)} files')
  return members


def _open_tar(manual_dir: str, name: str):
  if not files.is_local(manual_dir):
    raise UserError(f'--manual_dir must be a local directory, not {manual_dir!r}: the '
                    'tars are read at random offsets (copy them to a local disk).')
  path = os.path.join(manual_dir, name)
  if not os.path.isfile(path):
    raise UserError(f'{path} not found: --manual_dir must hold {TRAIN_TAR} and '
                    f'{VALIDATION_TAR}, as downloaded from image-net.org.')
  return path, open(path, 'rb')


def _listing(tar: str, rows: list[tuple[str, int, int, int]], by_label: bool) -> Listing:
  rows.sort(key=(lambda r: (r[3], r[0])) if by_label else (lambda r: r[0]))
  names, offsets, sizes, labels = zip(*rows) if rows else ((), (), (), ())
  return Listing(tar, list(names), np.array(offsets, np.int64), np.array(sizes, np.int64),
                 np.array(labels, np.int32))


def list_train(manual_dir: str) -> Listing:
  """Every training image, labelled by the wnid of its class tar."""
  path, f = _open_tar(manual_dir, TRAIN_TAR)
  index = {w: i for i, w in enumerate(wnids())}
  rows = []
  with f:
    for name, offset, size in _members(f, 0, os.fstat(f.fileno()).st_size, path):
      wnid, ext = os.path.splitext(os.path.basename(name))
      if ext != '.tar' or wnid not in index:
        raise UserError(f'{path} holds {name!r}, not a class tar named by an ILSVRC2012 '
                        'wnid (like n01440764.tar); is it the training tar?')
      for image, image_offset, image_size in _members(f, offset, size, f'{path}:{name}'):
        rows.append((f'{wnid}/{os.path.basename(image)}', image_offset, image_size,
                     index[wnid]))
  if not rows:
    raise UserError(f'{path} holds no images.')
  return _listing(path, rows, by_label=True)


def list_validation(manual_dir: str) -> Listing:
  """Every validation image, labelled from validation_labels.txt by its number."""
  path, f = _open_tar(manual_dir, VALIDATION_TAR)
  index = {w: i for i, w in enumerate(wnids())}
  labels = validation_wnids()
  rows = []
  with f:
    for name, offset, size in _members(f, 0, os.fstat(f.fileno()).st_size, path):
      match = _VALIDATION_NAME.fullmatch(os.path.basename(name))
      if not match or not 1 <= int(match.group(1)) <= len(labels):
        raise UserError(f'{path} holds {name!r}, not an ILSVRC2012_val_NNNNNNNN.JPEG '
                        f'with NNNNNNNN in 1..{len(labels)}; is it the validation tar?')
      number = int(match.group(1))
      rows.append((os.path.basename(name), offset, size, index[labels[number - 1]]))
  if not rows:
    raise UserError(f'{path} holds no images.')
  return _listing(path, rows, by_label=False)  # By file number, as TFDS orders it.


def read(fd: int, offset: int, size: int, tar: str, name: str) -> bytes:
  data = os.pread(fd, size, offset)
  if len(data) != size:
    raise corrupt(tar, f'{name} is cut short')
  return data
