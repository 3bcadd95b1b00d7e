"""A dataset spec's source, opened: which reader its loader and what is
prepared select, and the check that it is prepared."""

from __future__ import annotations

import numpy as np

from tfx_jax.data.datasets import DatasetSpec, dataset_spec
from tfx_jax.data.sources import digits, fashion_mnist, in_memory, jpeg_shards, tfds_source
from tfx_jax.errors import UserError


class ArraySource:
  """Images and labels held in memory (Fashion-MNIST from IDX files, arrays)."""

  def __init__(self, images: np.ndarray, labels: np.ndarray):
    self._images, self.labels = images, labels

  def __len__(self) -> int:
    return len(self.labels)

  def images(self, indices: np.ndarray) -> np.ndarray:
    return self._images[indices]


def jpeg_root(spec: DatasetSpec, data_dir: str | None) -> str | None:
  """The dataset's JPEG-shard directory, if tfx_jax.prepare has completed one."""
  if spec.jpeg_dir is None:
    return None
  root = jpeg_shards.dataset_dir(data_dir, spec.jpeg_dir)
  return root if jpeg_shards.read_manifest(root) is not None else None


def open_source(spec: DatasetSpec, split: str, data_dir: str | None,
                cache_dir: str | None = None):
  """One split of `spec`'s data: `labels`, `images(indices)`, and for JPEG
  shards `crops(...)` and `image_shape`; read through spec.shift if set."""
  source = _open(spec, split, data_dir, cache_dir)
  if spec.shift is None:
    return source
  from tfx_jax.data import shifts  # pylint: disable=import-outside-toplevel  # Loads OpenCV.
  return shifts.ShiftedSource(source, spec.shift, spec.num_classes, spec.name)


def _open(spec: DatasetSpec, split: str, data_dir: str | None, cache_dir: str | None):
  if spec.loader == 'fashion_mnist':
    return ArraySource(*fashion_mnist.load(split, data_dir))
  if spec.loader == 'digits':
    return ArraySource(*digits.load(split))
  if spec.loader == 'arrays':
    return ArraySource(*in_memory.load(spec.name, split))
  root = jpeg_root(spec, data_dir)
  if spec.loader == 'folder' and not root:
    raise UserError(f'{jpeg_shards.dataset_dir(data_dir, spec.jpeg_dir)} holds no '
                    f'prepared image folder: run `python -m tfx_jax.prepare folder` '
                    f'(docs/own_data.md).')
  if root:
    source = jpeg_shards.JpegShardSource(root, split)
    if source.image_shape[:2] != spec.source_size and not spec.resize:
      raise UserError(f'{root} holds {source.image_shape[:2]} images; {spec.name} '
                      f'needs {spec.source_size}.')
    return source
  return tfds_source.TfdsSource(
      spec.tfds_name, split, data_dir, cache_dir=cache_dir,
      resize=spec.source_size if spec.resize else None, wnid_labels=spec.wnid_labels,
      keys=spec.image_keys)


def check_prepared(name: str | DatasetSpec, data_dir: str | None = None) -> None:
  """Raises UserError saying what is missing and how to prepare it."""
  spec = dataset_spec(name)
  if spec.loader == 'digits':
    return
  if spec.loader == 'arrays':
    in_memory.registered(spec.name)
    return
  if spec.loader == 'fashion_mnist':
    for split in (spec.train_split, spec.eval_split):  # Validates the files;
      fashion_mnist.load(split, data_dir)  # cached, so no cost later.
    return
  root = jpeg_root(spec, data_dir)
  for split in (spec.train_split, spec.eval_split):
    if root or spec.loader == 'folder':
      open_source(spec, split, data_dir)
    else:
      tfds_source.open_split(spec.tfds_name, split, data_dir)
