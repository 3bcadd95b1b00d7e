"""Random access to a TFDS dataset prepared as array_record, without TensorFlow.

Gives images by example index, and the split's label index (every example's
label, in index order): read once without decoding images, then cached as .npy
next to the data, so selecting a class subset needs no scan on later starts.
"""

from __future__ import annotations

import io
import os

import numpy as np
import PIL.Image
import tensorflow_datasets as tfds
from absl import logging

from tfx_jax import files
from tfx_jax.errors import UserError


def prepare_hint(tfds_name: str, data_dir: str | None) -> str:
  where = f' --data_dir={data_dir}' if data_dir else ''
  manual = (' with ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in --manual_dir'
            if tfds_name == 'imagenet2012' else '')
  return (f'Prepare it once, on a machine with TensorFlow, with `tfds build '
          f'{tfds_name} --file_format=array_record{where}`{manual} (README, Data).')


def open_split(tfds_name: str, split: str, data_dir: str | None, decoders=None):
  """tfds.data_source, with a UserError saying how to prepare what is missing."""
  try:
    return tfds.data_source(tfds_name, split=split, data_dir=data_dir,
                            download=False, decoders=decoders)
  except Exception as e:  # pylint: disable=broad-except
    try:
      builder = tfds.builder(tfds_name, data_dir=data_dir)
    except Exception:  # pylint: disable=broad-except
      raise e from None
    hint = prepare_hint(tfds_name, data_dir)
    if not builder.is_prepared():
      raise UserError(f'Dataset {tfds_name} is not prepared in {builder.data_dir}. '
                      f'{hint}') from e
    fmt = builder.info.file_format
    if fmt is not None and fmt.value != 'array_record':
      raise UserError(f'Dataset {tfds_name} in {builder.data_dir} is prepared as '
                      f'{fmt.value}, but random access needs array_record. {hint}') from e
    if split not in builder.info.splits:
      raise UserError(f'Dataset {tfds_name} in {builder.data_dir} has no split {split!r} '
                      f'(it has {", ".join(builder.info.splits)}). {hint}') from e
    raise


def label_cache_path(tfds_name: str, split: str, info, cache_dir: str | None) -> str:
  """cache_dir if given, else next to the prepared data if writable, else ~/.cache."""
  name = f'tfx_jax-labels-{split}.npy'
  sub = os.path.join(tfds_name.replace('/', '_'), str(info.version))
  if cache_dir:
    return os.path.join(cache_dir, sub, name)
  data_dir = str(info.data_dir)
  if os.path.isdir(data_dir) and os.access(data_dir, os.W_OK):
    return os.path.join(data_dir, name)
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(base, 'tfx_jax', 'labels', sub, name)


def scan_labels(tfds_name: str, split: str, data_dir: str | None, source) -> np.ndarray:
  """Every example's label, in index order, decoding no images if possible."""
  try:
    fast = open_split(tfds_name, split, data_dir,
                      decoders={'image': tfds.decode.SkipDecoding()})
    fast[0]
  except ImportError:  # Some TFDS paths (mock data) need TensorFlow to skip decoding.
    fast = source
  return np.array([int(fast[i]['label']) for i in range(len(source))], np.int64)


def wnid_relabel(labels_file: str) -> np.ndarray:
  """Label in TFDS label file `labels_file`'s order -> imagenet2012 sorted-wnid index."""
  root = os.path.dirname(tfds.__file__)
  with open(os.path.join(root, 'datasets/imagenet2012/labels.txt')) as f:
    sorted_wnids = {w: i for i, w in enumerate(f.read().split())}
  with open(os.path.join(root, labels_file)) as f:
    return np.array([sorted_wnids[w] for w in f.read().split()], np.int32)


class TfdsSource:
  """One split: `labels` (int32 [N]) and `images(indices)` (uint8 H x W x C each).

  resize: (H, W) every image is resized to (bilinear; Caffe's warp to 256x256).
  wnid_labels: the split's TFDS label file, to map labels to sorted wnids.
  """

  def __init__(self, tfds_name: str, split: str, data_dir: str | None, *,
               cache_dir: str | None = None, resize: tuple[int, int] | None = None,
               wnid_labels: str | None = None):
    self._ds = open_split(tfds_name, split, data_dir)
    self._resize = resize
    path = label_cache_path(tfds_name, split, self._ds.dataset_info, cache_dir)
    labels = np.load(path) if os.path.isfile(path) else None
    if labels is None or len(labels) != len(self._ds):
      logging.info('Reading the labels of %s %s once (cached in %s).', tfds_name, split, path)
      labels = scan_labels(tfds_name, split, data_dir, self._ds)
      try:
        buf = io.BytesIO()
        np.save(buf, labels)
        files.atomic_write(path, buf.getvalue())
      except OSError as e:
        logging.warning('Could not cache the label index in %s: %s', path, e)
    if wnid_labels:
      labels = wnid_relabel(wnid_labels)[labels]
    self.labels = labels.astype(np.int32)

  def __len__(self) -> int:
    return len(self._ds)

  def images(self, indices: np.ndarray) -> list[np.ndarray]:
    # One read per example: as fast as __getitems__ on local disk, and TFDS's
    # mock data sources support only this.
    images = [np.asarray(self._ds[int(i)]['image']) for i in indices]
    if self._resize:
      images = [self._resized(im) for im in images]
    return images

  def _resized(self, image: np.ndarray) -> np.ndarray:
    h, w = self._resize
    if image.shape[:2] == (h, w):
      return image
    pil = PIL.Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    return np.asarray(pil.resize((w, h), PIL.Image.BILINEAR)).reshape(h, w, image.shape[-1])
