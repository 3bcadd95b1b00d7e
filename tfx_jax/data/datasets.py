"""The datasets tfx_jax knows: how each is stored, cropped, normalised and loaded."""

from __future__ import annotations

import dataclasses
import os

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
  std: tuple[float, ...] = (1.0,)  # ... then divided by this (on the device).
  # TFDS label file when its class order is not imagenet2012's sorted wnids;
  # labels are mapped onto that order, so all ImageNet variants share splits.
  wnid_labels: str | None = None
  # Directory under data_dir of `tfx_jax.prepare`'s JPEG shards; used when present.
  jpeg_dir: str | None = None
  # Loading is bound by decoding large JPEGs: num_workers=-1 (auto) gives it
  # worker processes (see host_workers).
  decode_bound: bool = False

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
        mean=_IMAGENET_MEAN, std=(1.0, 1.0, 1.0), jpeg_dir='imagenet2012_jpeg256',
        decode_bound=True),
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


def host_workers(name: str | DatasetSpec, num_workers: int, *, threads: bool = False) -> int:
  """num_workers, or for -1 (auto) the rule: datasets whose loading is bound by
  JPEG decoding (imagenet2012) get one train worker process per host core but
  one (left to the training loop), at most 32, and one eval thread per core;
  the others (Fashion-MNIST, MNIST, CIFAR, resized ImageNet) load in the
  training process, where their small images cost less than a worker's
  hand-over."""
  if num_workers >= 0:
    return num_workers
  if num_workers != -1:
    raise UserError(f'num_workers must be >= 0, or -1 for auto; got {num_workers}.')
  if not dataset_spec(name).decode_bound:
    return 0
  cores = len(os.sched_getaffinity(0))
  return min(32, cores if threads else max(1, cores - 1))
