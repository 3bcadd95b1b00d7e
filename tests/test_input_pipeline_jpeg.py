"""The input pipeline on ImageNet prepared by tfx_jax.prepare (the tiny synthetic one).

Expected pixels come from the prepared JPEGs decoded here with Pillow.
"""

import io
import os
from unittest import mock

import jax
import numpy as np
import PIL.Image
import pytest

from tfx_jax.data import datasets, input_pipeline, splits
from tfx_jax.data.sources import jpeg_shards, reader
from tfx_jax.training import steps

NATURAL, MAN_MADE = (0, 1), (400, 401)


def decoded(data_dir, split):
  """(images uint8 [N, 256, 256, 3], labels) of a prepared split, decoded by Pillow."""
  source = jpeg_shards.JpegShardSource(os.path.join(data_dir, 'imagenet2012_jpeg256'), split)
  images = [np.asarray(PIL.Image.open(io.BytesIO(b)).convert('RGB'))
            for b in source.read(range(len(source)))]
  return np.stack(images), source.labels


def find_crop(crop, images):
  """(image index, y, x, flipped) of the 227x227 crop among 256x256 `images`."""
  found = []
  for flip in (False, True):
    target = crop[:, ::-1] if flip else crop
    for i, image in enumerate(images):
      for y in range(30):
        for x in range(30):
          # The first row rules out most candidates; the whole crop confirms.
          if np.array_equal(image[y, x:x + 227], target[0]) and \
              np.array_equal(image[y:y + 227, x:x + 227], target):
            found.append((i, y, x, flip))
  assert len(found) == 1, found
  return found[0]


def test_train_batches_are_uint8_random_crops_and_flips(prepared_imagenet):
  images, labels = decoded(prepared_imagenet, 'train')
  classes = NATURAL + MAN_MADE[:1]  # 18 images.
  it = input_pipeline.train_iterator('imagenet2012', classes, batch_size=6, seed=0,
                                     data_dir=prepared_imagenet, process_index=0,
                                     process_count=1)
  seen, offsets, flips = [], set(), 0
  for _ in range(3):  # One epoch.
    batch = next(it)
    assert batch['image'].shape == (6, 227, 227, 3) and batch['image'].dtype == np.uint8
    for crop, label in zip(batch['image'], batch['label']):
      i, y, x, flip = find_crop(crop, images)
      assert classes[label] == labels[i]
      seen.append(i)
      offsets.add((y, x))
      flips += flip
  assert sorted(seen) == [i for i, l in enumerate(labels) if l in classes]
  assert len(offsets) > 10 and 2 < flips < 16


@pytest.mark.parametrize('num_workers', [0, 2])
def test_eval_data_is_built_once_and_reiterated(prepared_imagenet, monkeypatch, num_workers):
  images, labels = decoded(prepared_imagenet, 'validation')
  half = splits.resolve('m_n', 'imagenet2012', 1000)[0]  # Man-made.
  data = input_pipeline.EvalData('imagenet2012', half, batch_size=3,
                                 data_dir=prepared_imagenet, num_workers=num_workers,
                                 process_index=0, process_count=1)
  assert data.num_threads == num_workers
  monkeypatch.setattr(reader, 'open_source', None)  # No source is opened again.
  first, again = list(data), list(data)
  assert [len(b['label']) for b in first] == [3, 1]
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])
  want = [i for i, l in enumerate(labels) if l in half]
  got = np.concatenate([b['image'] for b in first])
  assert got.dtype == np.uint8 and len(want) == 4
  np.testing.assert_array_equal(got, images[want][:, 14:241, 14:241])  # Centre crops.
  np.testing.assert_array_equal(np.concatenate([b['label'] for b in first]),
                                [half.index(labels[i]) for i in want])


def test_train_iterator_resumes_exactly_with_workers(prepared_imagenet):
  def make(num_workers):
    return input_pipeline.train_iterator(
        'imagenet2012', NATURAL + MAN_MADE, batch_size=4, seed=5, num_workers=num_workers,
        data_dir=prepared_imagenet, process_index=0, process_count=1)

  def take(it, n):
    return [next(it) for _ in range(n)]

  reference = take(make(0), 9)  # 24 images: 6 batches an epoch; crosses into epoch 1.
  first = make(2)
  head = take(first, 4)
  state = first.get_state()
  first.close()
  assert state == {'next_batch': 4}
  resumed = make(2)
  resumed.set_state(state)
  tail = take(resumed, 5)
  resumed.close()
  for want, got in zip(reference, head + tail):
    np.testing.assert_array_equal(want['image'], got['image'])
    np.testing.assert_array_equal(want['label'], got['label'])


def test_auto_workers_rule():
  cores = len(os.sched_getaffinity(0))
  assert datasets.host_workers('fashion_mnist', -1) == 0
  assert datasets.host_workers('cifar10', -1, threads=True) == 0
  # No fixed cap: all cores but the loop's and the device-prefetch thread's.
  assert datasets.host_workers('imagenet2012', -1) == max(1, cores - 2)
  assert datasets.host_workers('imagenet2012', -1, threads=True) == cores
  with mock.patch.object(os, 'sched_getaffinity', return_value=set(range(96))):
    assert datasets.host_workers('imagenet2012', -1) == 94
  with mock.patch.object(os, 'sched_getaffinity', return_value={0}):
    assert datasets.host_workers('imagenet2012', -1) == 1
  assert datasets.host_workers('fashion_mnist', 3) == 3


@pytest.mark.parametrize('dataset', ['imagenet2012', 'fashion_mnist'])
def test_device_normalisation_equals_the_old_host_normalisation(dataset, prepared_imagenet):
  spec = input_pipeline.dataset_spec(dataset)
  data_dir = prepared_imagenet if dataset == 'imagenet2012' else None
  batch = next(input_pipeline.train_iterator(dataset, range(spec.num_classes)
                                             if dataset != 'imagenet2012' else NATURAL,
                                             batch_size=8, seed=0, data_dir=data_dir,
                                             process_index=0, process_count=1))
  images = batch['image']
  assert images.dtype == np.uint8
  # What LoadBatch computed on the host before this change.
  old = (images.astype(np.float32) - np.asarray(spec.mean, np.float32)) * (
      1.0 / np.asarray(spec.std, np.float32))
  mesh = steps.make_mesh()
  on_device = jax.jit(steps.normalizer(spec.mean, spec.std))(
      steps.global_batch({'image': images}, mesh)['image'])
  assert on_device.dtype == np.float32
  np.testing.assert_allclose(np.asarray(on_device), old, rtol=1e-6, atol=1e-6)


def test_ranged_reads_through_fsspec_equal_local_preads(prepared_imagenet):
  """The gs:// branch (one concurrent cat_ranges per batch), on fsspec's file://."""
  root = os.path.join(prepared_imagenet, 'imagenet2012_jpeg256')
  local = jpeg_shards.JpegShardSource(root, 'train')
  remote = jpeg_shards.JpegShardSource(root, 'train')
  remote.root, remote._local = 'file://' + root, False  # pylint: disable=protected-access
  indices = [23, 0, 7, 7, 12]  # Across shards, repeated, out of order.
  assert remote.read(indices) == local.read(indices)
  assert len({len(b) for b in local.read(indices)}) > 1


def test_concurrent_reads_with_few_open_shards_read_the_right_bytes(prepared_imagenet,
                                                                    monkeypatch):
  """Eval threads share a source whose open-shard cache evicts while others read."""
  from concurrent import futures
  monkeypatch.setattr(jpeg_shards, '_MAX_OPEN_SHARDS', 2)
  root = os.path.join(prepared_imagenet, 'imagenet2012_jpeg256')
  want = jpeg_shards.JpegShardSource(root, 'train').read(range(24))
  shared = jpeg_shards.JpegShardSource(root, 'train')
  orders = [np.random.default_rng(i).integers(0, 24, 200) for i in range(8)]
  with futures.ThreadPoolExecutor(8) as pool:
    got = list(pool.map(shared.read, orders))
  for order, data in zip(orders, got):
    assert data == [want[i] for i in order]
  assert len(shared._fds) <= 2 and not shared._busy and not shared._retired  # pylint: disable=protected-access
