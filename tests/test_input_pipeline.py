"""The grain pipeline on the real Fashion-MNIST (Debian's dataset-fashion-mnist).

Expected values come from the raw IDX files, read here independently.
"""

import collections
import functools
import gzip
import json

import jax
import numpy as np
import pytest

from tfx_jax.data import datasets, input_pipeline
from tfx_jax.data.sources import fashion_mnist
from tfx_jax.errors import UserError
from tfx_jax.training import steps

RAW_DIR = '/usr/share/datasets/fashion-mnist'
SPEC = datasets.DATASETS['fashion_mnist']
CLOTHING = (0, 1, 2, 3, 4, 6)
FOOTWEAR_BAGS = (5, 7, 8, 9)


@functools.lru_cache(maxsize=2)
def raw(split):
  """(images uint8 [N, 28, 28], labels uint8 [N]) straight from the .gz files."""
  prefix = {'train': 'train', 'test': 't10k'}[split]
  with gzip.open(f'{RAW_DIR}/{prefix}-images-idx3-ubyte.gz') as f:
    images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
  with gzip.open(f'{RAW_DIR}/{prefix}-labels-idx1-ubyte.gz') as f:
    labels = np.frombuffer(f.read(), np.uint8, offset=8)
  return images, labels


def to_uint8(images):
  """Batches hold the stored uint8 pixels; normalisation happens on the device."""
  assert images.dtype == np.uint8
  return images


def take(it, n):
  return [next(it) for _ in range(n)]


def test_real_fashion_mnist_sizes_and_class_counts():
  for split, n, per_class in (('train', 60000, 6000), ('test', 10000, 1000)):
    images, labels = fashion_mnist.load(split)
    assert images.shape == (n, 28, 28, 1) and images.dtype == np.uint8
    assert np.bincount(labels, minlength=10).tolist() == [per_class] * 10
    np.testing.assert_array_equal(images[..., 0], raw(split)[0])
    np.testing.assert_array_equal(labels, raw(split)[1])


def test_train_epoch_visits_each_subset_example_once_with_remapped_labels():
  images, labels = raw('train')
  keep = np.isin(labels, CLOTHING)
  expected = collections.Counter(
      (im.tobytes(), CLOTHING.index(l)) for im, l in zip(images[keep], labels[keep]))
  assert sum(expected.values()) == 36000
  it = input_pipeline.train_iterator('fashion_mnist', CLOTHING, batch_size=400, seed=1,
                                     process_index=0, process_count=1)
  seen = collections.Counter()
  for batch in take(it, 90):  # 36000 / 400: exactly one epoch.
    assert batch['image'].shape == (400, 28, 28, 1) and batch['image'].dtype == np.uint8
    assert batch['label'].dtype == np.int32
    seen.update((im.tobytes(), int(l)) for im, l in zip(to_uint8(batch['image'])[..., 0],
                                                        batch['label']))
  assert seen == expected


def test_labels_follow_the_given_class_order():
  it = input_pipeline.train_iterator('fashion_mnist', (9, 0), batch_size=100, seed=0,
                                     process_index=0, process_count=1)
  images, labels = raw('train')
  by_image = {im.tobytes(): l for im, l in zip(images, labels)}
  batch = next(it)
  originals = [by_image[im.tobytes()] for im in to_uint8(batch['image'])[..., 0]]
  assert [(9, 0)[l] for l in batch['label']] == originals


def test_normalised_images_have_zero_mean_unit_std():
  it = input_pipeline.train_iterator('fashion_mnist', range(10), batch_size=6000, seed=0,
                                     process_index=0, process_count=1)
  x = np.concatenate([b['image'] for b in take(it, 10)])
  x = np.asarray(jax.jit(steps.normalizer(SPEC.mean, SPEC.std))(x))
  assert x.dtype == np.float32 and abs(x.mean()) < 0.01 and abs(x.std() - 1) < 0.01


def test_each_epoch_is_a_new_deterministic_shuffle():
  kwargs = dict(batch_size=1500, process_index=0, process_count=1)
  a = take(input_pipeline.train_iterator('fashion_mnist', FOOTWEAR_BAGS, seed=0, **kwargs), 32)
  b = take(input_pipeline.train_iterator('fashion_mnist', FOOTWEAR_BAGS, seed=0, **kwargs), 32)
  c = next(input_pipeline.train_iterator('fashion_mnist', FOOTWEAR_BAGS, seed=1, **kwargs))
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x['image'], y['image'])
  assert not np.array_equal(a[0]['image'], c['image'])
  # 24000 examples / 1500 = 16 batches an epoch: batch 16 starts epoch 1.
  assert not np.array_equal(a[0]['label'], a[16]['label'])
  epoch0 = collections.Counter(np.concatenate([x['label'] for x in a[:16]]).tolist())
  epoch1 = collections.Counter(np.concatenate([x['label'] for x in a[16:]]).tolist())
  assert epoch0 == epoch1 == {0: 6000, 1: 6000, 2: 6000, 3: 6000}


def test_last_incomplete_batch_of_an_epoch_is_dropped():
  # 6000 examples of class 5, batches of 2500: two batches an epoch, 1000 dropped.
  it = input_pipeline.train_iterator('fashion_mnist', (5,), batch_size=2500, seed=0,
                                     process_index=0, process_count=1)
  batches = take(it, 4)
  epoch0 = {im.tobytes() for b in batches[:2] for im in to_uint8(b['image'])}
  epoch1 = {im.tobytes() for b in batches[2:] for im in to_uint8(b['image'])}
  assert sum(len(b['label']) for b in batches) == 10000
  # Each epoch drops 1000 examples, and not the same ones.
  assert len(epoch0) <= 5000 and len(epoch1) <= 5000 and len(epoch0 | epoch1) > 5500


@pytest.mark.parametrize('augment', [False, True])
def test_global_batches_do_not_depend_on_the_process_count(augment):
  def global_batches(count):
    its = [input_pipeline.train_iterator('fashion_mnist', CLOTHING, batch_size=96 // count,
                                         seed=3, augment=augment, process_index=p,
                                         process_count=count) for p in range(count)]
    return [{k: np.concatenate([b[k] for b in parts]) for k in ('image', 'label')}
            for parts in zip(*(take(it, 3) for it in its))]

  one = global_batches(1)
  for count in (2, 4):
    for x, y in zip(one, global_batches(count)):
      np.testing.assert_array_equal(x['image'], y['image'])
      np.testing.assert_array_equal(x['label'], y['label'])


def test_augmentation_flips_and_shifts_within_the_padding():
  it = input_pipeline.train_iterator('fashion_mnist', CLOTHING, batch_size=64, seed=0,
                                     augment=True, process_index=0, process_count=1)
  plain = input_pipeline.train_iterator('fashion_mnist', CLOTHING, batch_size=64, seed=0,
                                        augment=False, process_index=0, process_count=1)
  aug, ref = next(it), next(plain)  # Same shuffle; only the augmentation differs.
  np.testing.assert_array_equal(aug['label'], ref['label'])
  flipped = shifted = 0
  for a, r in zip(to_uint8(aug['image'])[..., 0], to_uint8(ref['image'])[..., 0]):
    padded = np.pad(r, 2)
    matches = [(dy, dx, f) for dy in range(5) for dx in range(5) for f in (False, True)
               if np.array_equal(a, (padded[dy:dy + 28, dx:dx + 28][:, ::-1] if f
                                     else padded[dy:dy + 28, dx:dx + 28]))]
    assert matches, 'an augmented image is no flipped shift of its original'
    flipped += all(f for _, _, f in matches)
    shifted += all((dy, dx) != (2, 2) for dy, dx, _ in matches)
  assert 10 < flipped < 54 and shifted > 32


def test_resume_from_saved_state_gives_the_same_next_batches():
  def make():
    return input_pipeline.train_iterator('fashion_mnist', (5,), batch_size=2500, seed=7,
                                         augment=True, process_index=0, process_count=1)
  uninterrupted = take(make(), 6)
  first = make()
  take(first, 3)  # Epoch 1 starts at batch 2: the resumed run crosses no boundary
  state = json.loads(json.dumps(first.get_state()))  # ... but starts in epoch 1.
  assert state == {'next_batch': 3}
  resumed = make()
  resumed.set_state(state)
  for x, y in zip(uninterrupted[3:], take(resumed, 3)):
    np.testing.assert_array_equal(x['image'], y['image'])
    np.testing.assert_array_equal(x['label'], y['label'])
  first.set_state({'next_batch': 0})  # Rewinding works on a started iterator too.
  np.testing.assert_array_equal(next(first)['image'], uninterrupted[0]['image'])


def test_eval_gives_each_example_once_over_processes_in_order():
  images, labels = raw('test')
  keep = np.isin(labels, FOOTWEAR_BAGS)
  count = 3
  per_process = [list(input_pipeline.EvalData(
      'fashion_mnist', FOOTWEAR_BAGS, batch_size=300, process_index=p,
      process_count=count)) for p in range(count)]
  assert [len(b) for b in per_process] == [5, 5, 5]  # ceil(4000 / 900).
  # The last global batch holds 4000 - 3600 = 400 rows: 300, 100 and 0.
  assert [[len(b['label']) for b in batches] for batches in per_process] == [
      [300] * 5, [300] * 4 + [100], [300] * 4 + [0]]
  assert per_process[2][-1]['image'].shape == (0, 28, 28, 1)
  got_images = np.concatenate([b['image'] for parts in zip(*per_process) for b in parts])
  got_labels = np.concatenate([b['label'] for parts in zip(*per_process) for b in parts])
  np.testing.assert_array_equal(to_uint8(got_images)[..., 0], images[keep])
  np.testing.assert_array_equal(got_labels,
                                [FOOTWEAR_BAGS.index(l) for l in labels[keep]])


def test_eval_max_examples_and_reiteration():
  batches = input_pipeline.EvalData('fashion_mnist', CLOTHING, batch_size=128,
                                        max_examples=1000, process_index=0, process_count=1)
  first = np.concatenate([b['image'] for b in batches])
  again = np.concatenate([b['image'] for b in batches])
  assert first.shape == (1000, 28, 28, 1)
  np.testing.assert_array_equal(first, again)
  images, labels = raw('test')
  np.testing.assert_array_equal(to_uint8(first)[..., 0],
                                images[np.isin(labels, CLOTHING)][:1000])


def test_process_batches_become_global_arrays():
  mesh = steps.make_mesh()
  batch = next(input_pipeline.train_iterator('fashion_mnist', CLOTHING, batch_size=8, seed=0))
  arrays = steps.global_batch(batch, mesh)
  assert arrays['image'].shape == (8, 28, 28, 1)
  assert len(arrays['image'].sharding.device_set) == jax.device_count() == 4
  np.testing.assert_array_equal(np.asarray(arrays['label']), batch['label'])


@pytest.mark.parametrize('classes, message', [
    ((0, 10), 'out of range'), ((), 'empty'), ((1, 1), 'twice')])
def test_bad_class_subsets(classes, message):
  with pytest.raises(UserError, match=message):
    input_pipeline.train_iterator('fashion_mnist', classes, batch_size=8, seed=0)
  with pytest.raises(UserError, match=message):
    input_pipeline.EvalData('fashion_mnist', classes, batch_size=8)


def test_bad_process_index():
  # A batch larger than the subset runs on over epochs: test_own_data.py.
  with pytest.raises(UserError, match='process_index 2'):
    input_pipeline.train_iterator('fashion_mnist', (3,), batch_size=8, seed=0,
                                  process_index=2, process_count=2)


def test_too_little_shared_memory_for_the_workers_is_one_clear_error(monkeypatch):
  """A container's default 64 MB /dev/shm against 31 workers' ImageNet batches."""
  free = 64 * 2**20
  monkeypatch.setattr(input_pipeline.shutil, 'disk_usage',
                      lambda path: collections.namedtuple('usage', 'total used free')(
                          free, 0, free))
  monkeypatch.setattr(input_pipeline.os.path, 'isdir', lambda path: True)
  with pytest.raises(UserError) as e:
    input_pipeline.check_shared_memory('imagenet2012', 31, 256, (227, 227, 3))
  message = str(e.value)
  # 2 batches a worker of 256 x 227 x 227 x 3 bytes (75.5 MB), and 3 held by the
  # training process (2 put ahead, 1 training: 113 MB): 64 MB fit none.
  assert '64 MB free' in message and '31 data worker(s) and the 3 batches' in message
  assert 'need about 2,453 MB' in message
  assert '--config.num_workers=0' in message and '--shm-size' in message
  # 2.36 MB a worker, 3.5 MB held: 25 fit.
  with pytest.raises(UserError, match='num_workers=25'):
    input_pipeline.check_shared_memory('imagenet2012', 31, 8, (227, 227, 3))
  input_pipeline.check_shared_memory('imagenet2012', 4, 8, (227, 227, 3))  # 12.9 MB: fits.
  input_pipeline.check_shared_memory('imagenet2012', 0, 256, (227, 227, 3))  # No workers.
