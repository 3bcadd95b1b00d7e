"""Random access to a TFDS dataset prepared as array_record, without TensorFlow.

Gives images by example index, and the split's label index (every example's
label, in index order): read once without decoding images, by many threads,
then cached as .npy next to the data (gs:// included) or else in the caller's
cache directory, so no host and no later start scans again.
"""

from __future__ import annotations

import difflib
import io
import json
import os
from concurrent import futures

import numpy as np
import PIL.Image
import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from tfx_jax import errors, files
from tfx_jax.data import images as images_lib
from tfx_jax.data.sources import jpeg_shards
from tfx_jax.errors import UserError


def prepare_hint(tfds_name: str, data_dir: str | None) -> str:
  where = f' --data_dir={data_dir}' if data_dir else ''
  if tfds_name == 'imagenet2012':
    return (f'Prepare it once, without TensorFlow, with `python -m tfx_jax.prepare '
            f'imagenet2012 --manual_dir=DIR{where}` (DIR holding ILSVRC2012_img_train.tar '
            f'and ILSVRC2012_img_val.tar; docs/data.md), or with TensorFlow '
            f'with `tfds build {tfds_name} --file_format=array_record{where}`.')
  return (f'Prepare it once, on a machine with TensorFlow, with `tfds build '
          f'{tfds_name} --file_format=array_record{where}` (docs/data.md).')


def not_found(tfds_name: str, data_dir: str | None) -> str:
  """For a name no TFDS builder has: the closest name, from TFDS's own list of
  builders (offline, no TensorFlow) and the datasets prepared in data_dir."""
  name = tfds_name.split('/')[0].split(':')[0]
  where = data_dir or jpeg_shards.default_data_dir()
  known = set(tfds.list_builders(with_community_datasets=False))
  if files.is_local(where) and os.path.isdir(where):
    known |= {d for d in os.listdir(where) if os.path.isdir(os.path.join(where, d))}
  close = difflib.get_close_matches(name.lower(), sorted(known - {name}), n=1, cutoff=0.6)
  if close:
    return f'TFDS has no dataset {name!r}; did you mean tfds:{close[0]}{tfds_name[len(name):]}?'
  return (f'TFDS has no dataset {name!r}, and none by that name is prepared in {where}: '
          f'check the name (tfds.list_builders() lists them), or prepare your own '
          f'builder there (docs/own_data.md).')


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


def label_cache_paths(tfds_name: str, split: str, info, cache_dir: str | None) -> list[str]:
  """Where the label index may be, in order: next to the prepared data (local
  or gs://) if that directory exists, then cache_dir (default ~/.cache/tfx_jax)."""
  name = f'tfx_jax-labels-{split}.npy'
  paths = []
  data_dir = os.fspath(info.data_dir)
  if files.exists(data_dir):
    paths.append(os.path.join(data_dir, name))
  if not cache_dir:
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    cache_dir = os.path.join(base, 'tfx_jax', 'labels')
  paths.append(os.path.join(cache_dir, tfds_name.replace('/', '_'), str(info.version), name))
  return paths


def scan_labels(tfds_name: str, split: str, data_dir: str | None, source,
                num_threads: int = 32, keys: tuple[str, str] = ('image', 'label')) -> np.ndarray:
  """Every example's label, in index order, decoding no images if possible.

  Threads overlap the record reads (local disk or gs://); each reads a
  contiguous range of records.
  """
  try:
    fast = open_split(tfds_name, split, data_dir,
                      decoders={keys[0]: tfds.decode.SkipDecoding()})
    fast[0]
  except ImportError:  # Some TFDS paths (mock data) need TensorFlow to skip decoding.
    fast, num_threads = source, 1  # Mock sources are patched, not thread-safe.
  n = len(source)
  bounds = np.linspace(0, n, max(1, min(num_threads, n)) + 1).astype(int)

  def scan(lo_hi):
    return [int(fast[i][keys[1]]) for i in range(*lo_hi)]

  with futures.ThreadPoolExecutor(len(bounds) - 1) as pool:
    parts = pool.map(scan, zip(bounds[:-1], bounds[1:]))
    return np.array([label for part in parts for label in part], np.int64)


def _load_cached(paths: list[str], n: int) -> np.ndarray | None:
  for path in paths:
    try:
      labels = np.load(io.BytesIO(epath.Path(path).read_bytes()), allow_pickle=False)
    except (OSError, ValueError):
      continue
    if len(labels) == n:
      return labels
  return None


def _save_cache(paths: list[str], labels: np.ndarray) -> None:
  """The first place that takes it: next to the data, else the cache directory."""
  buf = io.BytesIO()
  np.save(buf, labels)
  for path in paths:
    try:
      files.atomic_write(path, buf.getvalue())
      logging.info('Cached the label index in %s.', path)
      return
    except OSError as e:
      logging.info('Could not cache the label index in %s: %s', path, e)
  errors.warn(f'Could not cache the label index in any of {paths}.')


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
               wnid_labels: str | None = None, keys: tuple[str, str] = ('image', 'label')):
    self._ds = open_split(tfds_name, split, data_dir)
    self._resize, self._image_key = resize, keys[0]
    paths = label_cache_paths(tfds_name, split, self._ds.dataset_info, cache_dir)
    labels = _load_cached(paths, len(self._ds))
    if labels is None:
      logging.info('Reading the labels of %s %s once.', tfds_name, split)
      labels = scan_labels(tfds_name, split, data_dir, self._ds, keys=keys)
      _save_cache(paths, labels)
    if wnid_labels:
      labels = wnid_relabel(wnid_labels)[labels]
    self.labels = labels.astype(np.int32)

  def __len__(self) -> int:
    return len(self._ds)

  def images(self, indices: np.ndarray) -> list[np.ndarray]:
    # One read per example: as fast as __getitems__ on local disk, and TFDS's
    # mock data sources support only this.
    images = [np.asarray(self._ds[int(i)][self._image_key]) for i in indices]
    if self._resize:
      images = [self._resized(im) for im in images]
    return images

  def _resized(self, image: np.ndarray) -> np.ndarray:
    h, w = self._resize
    if image.shape[:2] == (h, w):
      return image
    pil = PIL.Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    return np.asarray(pil.resize((w, h), PIL.Image.BILINEAR)).reshape(h, w, image.shape[-1])


def describe(tfds_name: str, data_dir: str | None) -> dict:
  """A prepared builder's metadata, read from its files (no dataset code
  needed): image and label feature keys, image shape (None where it varies),
  number of classes, class names, splits."""
  try:
    builder = tfds.builder(tfds_name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise UserError(not_found(tfds_name, data_dir)) from None
  except Exception as e:  # pylint: disable=broad-except  # TFDS raises many kinds.
    raise UserError(f'TFDS dataset {tfds_name!r} is not prepared in '
                    f'{data_dir or "the TFDS data directory"} ({type(e).__name__}: '
                    f'{str(e).splitlines()[0][:120]}). {prepare_hint(tfds_name, data_dir)}'
                    ) from None
  if not builder.is_prepared():
    raise UserError(f'Dataset {tfds_name} is not prepared in {builder.data_dir}. '
                    f'{prepare_hint(tfds_name, data_dir)}')
  features = builder.info.features
  found = {kind: [k for k, f in features.items() if isinstance(f, cls)]
           for kind, cls in (('image', tfds.features.Image),
                             ('label', tfds.features.ClassLabel))}
  keys = {}
  for kind, keys_of_kind in found.items():
    if not keys_of_kind:
      raise UserError(f'TFDS dataset {tfds_name} has no {kind} feature '
                      f'({"Image" if kind == "image" else "ClassLabel"}) to classify by; '
                      f'its features are {", ".join(features)}.')
    keys[kind] = kind if kind in keys_of_kind else keys_of_kind[0]
  image, label = features[keys['image']], features[keys['label']]
  return {'keys': (keys['image'], keys['label']), 'shape': tuple(image.shape),
          'num_classes': label.num_classes, 'class_names': tuple(label.names),
          'splits': tuple(builder.info.splits), 'data_dir': os.fspath(builder.data_dir)}


def channel_stats(tfds_name: str, split: str, data_dir: str | None, fit, *,
                  keys: tuple[str, str], cache_dir: str | None,
                  name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """Per-channel mean and std (0..255) of up to images_lib.STATS_SAMPLE evenly
  spaced images of `split`, each as fed (`fit(image)`); cached next to the label
  index under `name` (which says how the images were fitted)."""
  ds = open_split(tfds_name, split, data_dir)
  paths = [os.path.join(os.path.dirname(p), f'tfx_jax-stats-{split}-{name}.json')
           for p in label_cache_paths(tfds_name, split, ds.dataset_info, cache_dir)]
  for path in paths:
    try:
      cached = json.loads(files.read_text(path))
      return tuple(cached['mean']), tuple(cached['std'])
    except (OSError, ValueError, KeyError):
      continue
  picks = images_lib.stats_sample(len(ds))
  logging.info('Computing the mean and std of %s %s from %d images once.', tfds_name,
               split, len(picks))
  mean, std = images_lib.channel_stats(fit(np.asarray(ds[int(i)][keys[0]])) for i in picks)
  stats = {'mean': mean, 'std': std, 'images': len(picks)}
  for path in paths:
    try:
      files.atomic_write_json(path, stats)
      break
    except OSError:
      continue
  return tuple(stats['mean']), tuple(stats['std'])
