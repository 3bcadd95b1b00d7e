"""Arrays in memory as a dataset: `tfx_jax.data.arrays(train=(images, labels),
test=(images, labels), name=...)`, for a study run from Python (tfx_jax.Study).

The arrays are checked once (NHWC images, uint8 or float without NaN, integer
labels 0..C-1, every class with a train and a test image), stored as uint8,
and registered in this process under 'arrays:NAME', the dataset name the
config holds; `datasets.dataset_spec` and `reader.open_source` find them
there. Their sha256 goes into the workdir (tfx_jax.Study), so other arrays
under the same name are refused as a changed config is.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re

import numpy as np

from tfx_jax.errors import UserError

PREFIX = 'arrays:'
SPLITS = ('train', 'test')
_REGISTERED: dict[str, ArrayDataset] = {}


@dataclasses.dataclass(frozen=True, eq=False)
class ArrayDataset:
  """Images (uint8 [N, H, W, C]) and labels (int32 [N]) of two splits, by name."""
  name: str  # 'arrays:NAME', what config.dataset holds.
  images: dict  # split -> uint8 [N, H, W, C]
  labels: dict  # split -> int32 [N]
  num_classes: int
  sha256: str  # Of every array's shape, dtype and bytes, in a fixed order.
  mean: tuple[float, ...]  # Per channel, 0..255, of the train images.
  std: tuple[float, ...]

  def __str__(self) -> str:
    return self.name

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(int(d) for d in self.images['train'].shape[1:])


def arrays(train: tuple, test: tuple, name: str = 'arrays',
           num_classes: int | None = None) -> ArrayDataset:
  """A dataset of in-memory arrays: `train` and `test` are (images, labels),
  images NHWC uint8 (0..255) or float (0..1, or 0..255) and labels integers
  0..num_classes-1 (default: the largest label + 1). Usable as a Study's
  `data` or `source_data`, with the splits of any dataset (random:<seed>,
  custom:<A>/<B>). Bad arrays are a UserError of one line."""
  if not isinstance(name, str) or not re.fullmatch(r'[A-Za-z0-9_.-]+', name):
    raise UserError(f'arrays name={name!r}: use letters, digits, _, . and -, e.g. '
                    f'name="my_images".')
  images, labels = {}, {}
  for split, pair in zip(SPLITS, (train, test)):
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
      raise UserError(f'arrays {split}= must be a pair (images, labels), got '
                      f'{type(pair).__name__}.')
    images[split] = _images(pair[0], split)
    labels[split] = _labels(pair[1], split, len(images[split]))
  shapes = {images[s].shape[1:] for s in SPLITS}
  if len(shapes) > 1:
    raise UserError(f'arrays: train images are {_shape(images["train"].shape[1:])} and test '
                    f'images {_shape(images["test"].shape[1:])}; give both one shape.')
  largest = max(int(labels[s].max()) for s in SPLITS)
  if num_classes is None:
    num_classes = largest + 1
  if largest >= num_classes:
    raise UserError(f'arrays: label {largest} is out of range for {num_classes} classes '
                    f'(labels are 0..{num_classes - 1}).')
  if num_classes < 2:
    raise UserError(f'arrays: {num_classes} class; classification needs at least 2.')
  for split in SPLITS:
    missing = np.setdiff1d(np.arange(num_classes), labels[split])
    if missing.size:
      raise UserError(f'arrays: class {int(missing[0])} has no {split} image'
                      f'{f" ({missing.size} classes have none)" if missing.size > 1 else ""}; '
                      f'every class 0..{num_classes - 1} needs train and test images.')
  digest = hashlib.sha256(str(num_classes).encode())
  for split in SPLITS:
    for a in (images[split], labels[split]):
      digest.update(f'{split}{a.shape}{a.dtype}'.encode())
      digest.update(np.ascontiguousarray(a).tobytes())
  dataset = ArrayDataset(PREFIX + name, images, labels, num_classes, digest.hexdigest(),
                         *_mean_std(images['train']))
  return register(dataset)


def register(dataset: ArrayDataset) -> ArrayDataset:
  """Makes `dataset.name` resolve to `dataset` in this process."""
  _REGISTERED[dataset.name] = dataset
  return dataset


def _shape(shape) -> str:
  return 'x'.join(str(d) for d in shape)


def _images(images, split: str) -> np.ndarray:
  images = np.asarray(images)
  if images.ndim != 4:
    hint = ' (add a channel axis: images[..., None])' if images.ndim == 3 else ''
    raise UserError(f'arrays {split} images have shape {_shape(images.shape)}; they must be '
                    f'NHWC, 4 axes{hint}.')
  if not len(images):
    raise UserError(f'arrays {split} images are empty.')
  if images.shape[3] not in (1, 3):
    raise UserError(f'arrays {split} images have {images.shape[3]} channels; give 1 (grey) '
                    f'or 3 (RGB), NHWC.')
  if images.dtype == np.uint8:
    return images
  if images.dtype.kind in 'iu':
    if images.min() < 0 or images.max() > 255:
      raise UserError(f'arrays {split} images hold values outside 0..255; give uint8, or '
                      f'floats in 0..1.')
    return images.astype(np.uint8)
  if images.dtype.kind != 'f':
    raise UserError(f'arrays {split} images are {images.dtype}; give uint8 or floats.')
  bad = ~np.isfinite(images)
  if bad.any():
    index = int(np.argwhere(bad)[0][0])
    raise UserError(f'arrays {split} images hold NaN or inf (image {index} first).')
  low, high = float(images.min()), float(images.max())
  if low < 0 or high > 255:
    raise UserError(f'arrays {split} images range {low:g}..{high:g}; floats must be in '
                    f'0..1 (or 0..255).')
  scale = 255.0 if high <= 1.0 else 1.0
  return np.round(images * scale).astype(np.uint8)


def _labels(labels, split: str, count: int) -> np.ndarray:
  labels = np.asarray(labels)
  if labels.ndim == 2 and labels.shape[1] == 1:
    labels = labels[:, 0]
  if labels.ndim != 1 or len(labels) != count:
    raise UserError(f'arrays {split} labels have shape {_shape(labels.shape)}; give one '
                    f'integer per image ({count}).')
  if labels.dtype.kind not in 'iu':
    raise UserError(f'arrays {split} labels are {labels.dtype}; give integer class indices '
                    f'(not one-hot).')
  if labels.min() < 0:
    raise UserError(f'arrays {split} labels hold {int(labels.min())}; labels are 0 or more.')
  return labels.astype(np.int32)


def registered(name: str) -> ArrayDataset:
  """The arrays registered as `name` ('arrays:NAME') in this process."""
  if name not in _REGISTERED:
    raise UserError(f'Dataset {name!r} is arrays in memory that this process has not been '
                    f'given: pass tfx_jax.data.arrays(...) as the Study\'s data.')
  return _REGISTERED[name]


def load(name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
  """(images uint8 [N, H, W, C], labels int32 [N]) of split 'train' or 'test'."""
  dataset = registered(name)
  return dataset.images[split], dataset.labels[split]


def _mean_std(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """Per-channel mean and std (0..255, 3 decimals), a chunk of images at a time."""
  total, total_sq = np.zeros(images.shape[-1]), np.zeros(images.shape[-1])
  for start in range(0, len(images), 4096):
    chunk = images[start:start + 4096].reshape(-1, images.shape[-1]).astype(np.float64)
    total += chunk.sum(0)
    total_sq += (chunk * chunk).sum(0)
  count = images.size // images.shape[-1]
  mean = total / count
  std = np.sqrt(np.maximum(total_sq / count - mean * mean, 0.0))
  return (tuple(round(float(m), 3) for m in mean),
          tuple(round(max(float(s), 1e-3), 3) for s in std))
