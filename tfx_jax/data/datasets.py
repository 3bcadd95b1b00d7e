"""The datasets tfx_jax knows: how each is stored, cropped, normalised and loaded."""

from __future__ import annotations

import dataclasses
import functools
import os

from tfx_jax.data import images
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
  tfds_name: str | None = None  # TFDS builder (name or name/config) of loader 'tfds'.
  loader: str = 'tfds'  # 'tfds', 'fashion_mnist' (IDX files), 'digits', 'folder', 'arrays'.
  train_split: str = 'train'
  eval_split: str = 'test'
  stored_size: tuple[int, int] | None = None  # (H, W) as read; None: image_shape's.
  resize: bool = False  # Resize every image to stored_size on reading.
  pad: int = 0  # Zero padding around the image before the random train crop.
  mean: tuple[float, ...] = (0.0,)  # Subtracted per channel (0..255 scale) ...
  std: tuple[float, ...] = (1.0,)  # ... then divided by this (on the device).
  image_keys: tuple[str, str] = ('image', 'label')  # A TFDS dataset's feature keys.
  class_names: tuple[str, ...] = ()
  # Images as stored have this many channels; the loader converts them to
  # image_shape's (grey to RGB by copying, RGB to grey by luma). None: the same.
  stored_channels: int | None = None
  # TFDS label file when its class order is not imagenet2012's sorted wnids;
  # labels are mapped onto that order, so all ImageNet variants share splits.
  wnid_labels: str | None = None
  # Directory under data_dir of `tfx_jax.prepare`'s JPEG shards; used when present.
  jpeg_dir: str | None = None
  # Loading is bound by decoding large JPEGs: num_workers=-1 (auto) gives it
  # worker processes (see host_workers).
  decode_bound: bool = False
  # A shifts.Shift: the images and labels are read through it (shifts.shifted_spec).
  shift: object = None

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
    'fashion_mnist': DatasetSpec('fashion_mnist', 10, (28, 28, 1), False,
                                 loader='fashion_mnist', pad=2, mean=(72.94,), std=(90.02,)),
    # UCI's digits from scikit-learn, upsampled to Fashion-MNIST's 28x28 (digits.py).
    'digits': DatasetSpec('digits', 10, (28, 28, 1), False, loader='digits', pad=2,
                          mean=(77.83,), std=(82.83,)),
    'mnist': DatasetSpec('mnist', 10, (28, 28, 1), False, tfds_name='mnist', pad=2,
                         mean=(33.32,), std=(78.57,)),
}


TFDS, FOLDER = 'tfds:', 'folder:'  # Prefixes of any TFDS dataset and of image folders.
ARRAYS = 'arrays:'  # In-memory arrays given to tfx_jax.Study (sources/in_memory.py).
DEFAULT_SIDE = 64  # The side of tfds: images of varying size, unless image_size is set.


def dataset_spec(name: str | DatasetSpec, data_dir: str | None = None,
                 image_size: int | None = None, train_split: str | None = None,
                 eval_split: str | None = None) -> DatasetSpec:
  """The spec of a dataset: a preset (a DatasetSpec is passed through),
  'tfds:NAME[/CONFIG]' (a prepared TFDS builder) or 'folder:NAME' (an image
  folder prepared by `python -m tfx_jax.prepare folder`), whose metadata come
  from the files in `data_dir`. image_size, train_split and eval_split apply
  to those two; None: the defaults docs/own_data.md lists."""
  if isinstance(name, DatasetSpec):
    return name
  if name.startswith((TFDS, FOLDER)):
    return _own_spec(name, data_dir, image_size, train_split, eval_split)
  if name.startswith(ARRAYS):
    return _arrays_spec(name)
  if name not in DATASETS:
    raise UserError(f'Unknown dataset {name!r}; known datasets: {", ".join(DATASETS)}, '
                    f'or any prepared TFDS dataset as {TFDS}NAME, or an image folder as '
                    f'{FOLDER}NAME (docs/own_data.md).')
  return DATASETS[name]


@functools.lru_cache(maxsize=32)
def _own_spec(name: str, data_dir: str | None, image_size: int | None,
              train_split: str | None, eval_split: str | None) -> DatasetSpec:
  # Imported here: TFDS is slow to import, and the presets do not need it.
  from tfx_jax.data.sources import folders, tfds_source  # pylint: disable=g-import-not-at-top
  info = (tfds_source.describe(name[len(TFDS):], data_dir) if name.startswith(TFDS)
          else folders.describe(name[len(FOLDER):], data_dir))
  native = info['shape']
  splits = info['splits']
  train = train_split or 'train'
  evals = eval_split or next((s for s in ('test', 'validation') if s in splits), None)
  if evals is None:
    other = next((s for s in splits if s != train), None)
    fix = (f'set --config.eval_split={other} (or another of them)' if other else
           f'prepare it with a held-out split, or set --config.eval_split={train} '
           f'to evaluate on the training images')
    raise UserError(f'Dataset {name} has no test or validation split to evaluate on; its '
                    f'splits: {", ".join(splits)}. Choose one: {fix}.')
  for field, split in (('train_split', train), ('eval_split', evals)):
    if split not in splits:
      raise UserError(f'Dataset {name} has no split {split!r} (config.{field}); its '
                      f'splits: {", ".join(splits)}. Set --config.{field}=one of them.')
  if info['num_classes'] < 2:
    raise UserError(f'Dataset {name} has {info["num_classes"]} class; classification '
                    'needs at least 2.')
  channels = native[2] if native[2] in (1, 3) else 3  # Alpha (4) is dropped.
  if image_size is not None:
    side = (image_size, image_size)
  elif None not in native[:2]:
    side = tuple(native[:2])
  else:
    side = (DEFAULT_SIDE, DEFAULT_SIDE)
  resize = tuple(native[:2]) != side
  if name.startswith(TFDS):
    tfds_name = name[len(TFDS):]
    stats_name = f'{side[0]}x{side[1]}x{channels}'
    mean, std = tfds_source.channel_stats(
        tfds_name, train, data_dir, lambda im: images.fit(im, side, channels),
        keys=info['keys'], cache_dir=None, name=stats_name)
    return DatasetSpec(name, info['num_classes'], (*side, channels), False,
                       tfds_name=tfds_name, train_split=train, eval_split=evals,
                       stored_size=side, resize=resize, mean=mean, std=std,
                       image_keys=info['keys'], class_names=info['class_names'],
                       stored_channels=native[2] if native[2] != channels else None)
  return DatasetSpec(name, info['num_classes'], (*side, channels), False, loader='folder',
                     train_split=train, eval_split=evals, stored_size=side, resize=resize,
                     mean=info['mean'], std=info['std'], jpeg_dir=info['dirname'],
                     class_names=info['class_names'])


def _arrays_spec(name: str) -> DatasetSpec:
  from tfx_jax.data.sources import in_memory  # pylint: disable=g-import-not-at-top
  arrays = in_memory.registered(name)
  h, w, c = arrays.image_shape
  return DatasetSpec(name, arrays.num_classes, (h, w, c), False, loader='arrays',
                     pad=max(1, round(h / 14)), mean=arrays.mean, std=arrays.std)


def fed_at(spec: DatasetSpec, model_input: DatasetSpec) -> DatasetSpec:
  """`spec`'s images fed as `model_input`'s are: resized to its stored size,
  padded and cropped as it is, with its channels (a target task fed to the
  network of a source task). Unchanged when the two already agree."""
  if (spec.image_shape, spec.source_size, spec.pad) == (
      model_input.image_shape, model_input.source_size, model_input.pad):
    return spec
  c, stored_c = model_input.image_shape[2], spec.image_shape[2]
  mean, std = spec.mean, spec.std
  if c != stored_c:  # Grey copied to RGB; RGB to grey by its luma's weights.
    mean = (mean * c)[:c] if stored_c == 1 else (_luma(mean),)
    std = (std * c)[:c] if stored_c == 1 else (_luma(std),)
  return dataclasses.replace(
      spec, image_shape=model_input.image_shape, stored_size=model_input.source_size,
      resize=True, pad=model_input.pad, mean=mean, std=std,
      stored_channels=spec.stored_channels or stored_c)


def _luma(rgb: tuple[float, ...]) -> float:
  return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]  # ITU-R 601, as PIL's 'L'.


# The training process's own threads that need a core while workers load: the
# loop, which dispatches steps, and the thread that puts batches on the devices.
LOOP_THREADS = 2


def host_workers(name: str | DatasetSpec, num_workers: int, *, threads: bool = False) -> int:
  """num_workers, or for -1 (auto) the rule: datasets whose loading is bound by
  JPEG decoding (imagenet2012) get one train worker process per core this
  process may use but LOOP_THREADS (at least one worker), and one eval thread
  per core; the others (Fashion-MNIST, MNIST, CIFAR, resized ImageNet) load in
  the training process, where their small images cost less than a worker's
  hand-over."""
  if num_workers >= 0:
    return num_workers
  if num_workers != -1:
    raise UserError(f'num_workers must be >= 0, or -1 for auto; got {num_workers}.')
  if not dataset_spec(name).decode_bound:
    return 0
  cores = len(os.sched_getaffinity(0))
  return cores if threads else max(1, cores - LOOP_THREADS)
