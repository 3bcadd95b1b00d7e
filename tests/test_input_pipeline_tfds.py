"""The TFDS path: mock imagenet2012 / cifar10 (no TensorFlow) and a real array_record."""

import io
import os

import numpy as np
import PIL.Image
import pytest
import tensorflow_datasets as tfds

from tfx_jax.data import datasets, input_pipeline, splits
from tfx_jax.data.sources import reader, tfds_source
from tfx_jax.errors import UserError


@pytest.fixture
def mock_data():
  def mock(num_examples):
    return tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE,
                                  num_examples=num_examples)
  return mock


def raw_split(name, split):
  """All (image, label) of a TFDS split, read without the code under test."""
  ds = tfds.data_source(name, split=split)
  return [np.asarray(ds[i]['image']) for i in range(len(ds))], [int(ds[i]['label'])
                                                               for i in range(len(ds))]


def unnormalise(images, spec):
  """Batches hold the stored uint8 pixels; normalisation happens on the device."""
  del spec
  assert images.dtype == np.uint8
  return images


def test_cifar10_train_epoch_and_eval(mock_data, tmp_path):
  spec = datasets.DATASETS['cifar10']
  classes = splits.resolve('m_n', 'cifar10', 10)[1]  # The animals.
  with mock_data(60):
    images, labels = raw_split('cifar10', 'train')
    subset = [i for i, l in enumerate(labels) if l in classes]
    crops = {im[2:30, 2:30].tobytes(): i for i, im in enumerate(images)}
    assert len(crops) == 60 and len(subset) >= 8
    it = input_pipeline.train_iterator('cifar10', classes, batch_size=len(subset) // 2,
                                       seed=0, augment=False, cache_dir=str(tmp_path))
    seen = []
    for batch in (next(it), next(it)):  # One epoch.
      assert batch['image'].shape == (len(subset) // 2, 28, 28, 3)
      for im, l in zip(unnormalise(batch['image'], spec), batch['label']):
        i = crops[im.tobytes()]
        seen.append(i)
        assert classes[l] == labels[i]
    assert set(seen) <= set(subset)
    assert len(set(seen)) == len(seen) == len(subset) // 2 * 2

    test_images, test_labels = raw_split('cifar10', 'test')
    batches = list(input_pipeline.EvalData('cifar10', classes, batch_size=5,
                                               cache_dir=str(tmp_path)))
    got = np.concatenate([b['image'] for b in batches])
    want = [i for i, l in enumerate(test_labels) if l in classes]
    np.testing.assert_array_equal(unnormalise(got, spec),
                                  [test_images[i][2:30, 2:30] for i in want])
    np.testing.assert_array_equal(np.concatenate([b['label'] for b in batches]),
                                  [classes.index(test_labels[i]) for i in want])


def test_cifar10_augmentation_is_a_random_crop_and_flip(mock_data, tmp_path):
  spec = datasets.DATASETS['cifar10']
  with mock_data(40):
    images, _ = raw_split('cifar10', 'train')
    it = input_pipeline.train_iterator('cifar10', range(10), batch_size=20, seed=0,
                                       cache_dir=str(tmp_path))
    offsets, flips = set(), 0
    for batch in (next(it), next(it), next(it)):
      for im in unnormalise(batch['image'], spec):
        found = [(y, x, f) for i in range(40) for y in range(5) for x in range(5)
                 for f in (False, True)
                 if np.array_equal(im, (images[i][y:y + 28, x:x + 28][:, ::-1] if f
                                        else images[i][y:y + 28, x:x + 28]))]
        assert len(found) == 1
        offsets.add(found[0][:2])
        flips += found[0][2]
  assert len(offsets) > 10 and 10 < flips < 50


def test_imagenet2012_resize_centre_crop_and_labels(mock_data, tmp_path):
  spec = datasets.DATASETS['imagenet2012']
  a, _ = splits.random_halves(1000, 0)
  with mock_data(30):
    images, labels = raw_split('imagenet2012', 'validation')
    want = [i for i, l in enumerate(labels) if l in a]
    assert want
    batches = list(input_pipeline.EvalData('imagenet2012', a, batch_size=4,
                                               cache_dir=str(tmp_path)))
    got = np.concatenate([b['image'] for b in batches])
    assert got.shape == (len(want), 227, 227, 3)
    # Caffe: the whole image resized to 256x256, then the centre 227x227.
    expected = [np.asarray(PIL.Image.fromarray(images[i]).resize((256, 256),
                                                                 PIL.Image.BILINEAR))
                [14:241, 14:241] for i in want]
    np.testing.assert_array_equal(unnormalise(got, spec), expected)
    np.testing.assert_array_equal(np.concatenate([b['label'] for b in batches]),
                                  [a.index(labels[i]) for i in want])

    batch = next(input_pipeline.train_iterator('imagenet2012', a, batch_size=3, seed=0,
                                               cache_dir=str(tmp_path)))
    assert batch['image'].shape == (3, 227, 227, 3)
    assert set(batch['label'].tolist()) <= {a.index(l) for l in labels if l in a}


def test_imagenet_resized_labels_are_mapped_to_sorted_wnids(mock_data, tmp_path):
  root = os.path.dirname(tfds.__file__)
  with open(os.path.join(root, 'datasets/imagenet2012/labels.txt')) as f:
    sorted_wnids = f.read().split()
  with open(os.path.join(root, 'image_classification/imagenet_resized_labels.txt')) as f:
    resized_wnids = f.read().split()
  man_made, _ = splits.resolve('m_n', 'imagenet_resized_32', 1000)
  with mock_data(60):
    _, labels = raw_split('imagenet_resized/32x32', 'validation')
    classes = [sorted_wnids.index(resized_wnids[l]) for l in labels]
    want = [c for c in classes if c in man_made]
    assert want
    batches = list(input_pipeline.EvalData('imagenet_resized_32', man_made,
                                               batch_size=8, cache_dir=str(tmp_path)))
    assert batches[0]['image'].shape[1:] == (28, 28, 3)
    got = np.concatenate([b['label'] for b in batches])
    np.testing.assert_array_equal(got, [man_made.index(c) for c in want])


def test_label_index_is_cached_and_written_atomically(mock_data, tmp_path, monkeypatch):
  with mock_data(20):
    cache = tmp_path / 'cache'
    monkeypatch.setattr(os, 'replace', _interrupted)
    with pytest.raises(RuntimeError, match='interrupted'):
      input_pipeline.EvalData('cifar10', (0, 1), batch_size=4, cache_dir=str(cache))
    assert [f for _, _, files in os.walk(cache) for f in files] == []  # Nothing half-written.
    monkeypatch.undo()

    first = list(input_pipeline.EvalData('cifar10', (0, 1), batch_size=4,
                                             cache_dir=str(cache)))
    files = [f for _, _, files in os.walk(cache) for f in files]
    assert files == ['tfx_jax-labels-test.npy']
    assert not os.path.exists('/tmp/non-existing')  # Mock data's dir: not created.

    def no_scan(*args):
      raise AssertionError('labels scanned again')
    monkeypatch.setattr(tfds_source, 'scan_labels', no_scan)
    again = list(input_pipeline.EvalData('cifar10', (0, 1), batch_size=4,
                                             cache_dir=str(cache)))
    np.testing.assert_array_equal(np.concatenate([b['label'] for b in first]),
                                  np.concatenate([b['label'] for b in again]))


def _interrupted(src, dst):
  assert os.path.getsize(src) > 0  # The cache is complete in its temp file ...
  raise RuntimeError('interrupted')  # ... when the run is cut short.


class TfxJaxTinyImages(tfds.core.GeneratorBasedBuilder):
  """30 random 32x32x3 images, 3 classes: a real array_record dataset."""
  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        'image': tfds.features.Image(shape=(32, 32, 3)),
        'label': tfds.features.ClassLabel(num_classes=3)}))

  def _split_generators(self, dl_manager):
    return {'train': self._generate_examples(30, 0), 'test': self._generate_examples(12, 1)}

  def _generate_examples(self, n, seed):
    for i in range(n):
      buf = io.BytesIO()
      PIL.Image.fromarray(tiny_image(seed, i)).save(buf, 'PNG')
      yield i, {'image': buf.getvalue(), 'label': i % 3}


def tiny_image(seed, i):
  return np.random.default_rng([seed, i]).integers(0, 256, (32, 32, 3), np.uint8)


def test_a_real_array_record_dataset(tmp_path):
  TfxJaxTinyImages(data_dir=str(tmp_path), file_format='array_record').download_and_prepare()
  spec = datasets.DatasetSpec('tiny', 3, (28, 28, 3), True,
                                    tfds_name='tfx_jax_tiny_images', stored_size=(32, 32),
                                    mean=(127.5,) * 3, std=(64.0,) * 3)
  reader.check_prepared(spec, str(tmp_path))
  batches = list(input_pipeline.EvalData(spec, (2, 0), batch_size=3,
                                             data_dir=str(tmp_path)))
  got = np.concatenate([b['image'] for b in batches])
  # TFDS shuffles records when preparing: compare as sets of (image, label).
  want = {(tiny_image(1, i)[2:30, 2:30].tobytes(), (2, 0).index(i % 3))
          for i in range(12) if i % 3 != 1}
  labels = np.concatenate([b['label'] for b in batches])
  assert {(im.tobytes(), int(l)) for im, l in zip(unnormalise(got, spec), labels)} == want
  assert len(got) == 8
  # The label index lies next to the prepared data.
  assert os.path.isfile(tmp_path / 'tfx_jax_tiny_images' / '1.0.0' /
                        'tfx_jax-labels-test.npy')
  batch = next(input_pipeline.train_iterator(spec, (0, 1, 2), batch_size=6, seed=0,
                                             data_dir=str(tmp_path)))
  assert batch['image'].shape == (6, 28, 28, 3)


def test_label_scan_in_threads_equals_a_serial_read(tmp_path):
  TfxJaxTinyImages(data_dir=str(tmp_path), file_format='array_record').download_and_prepare()
  source = tfds_source.open_split('tfx_jax_tiny_images', 'train', str(tmp_path))
  serial = [int(source[i]['label']) for i in range(len(source))]
  for threads in (1, 4, 64):
    labels = tfds_source.scan_labels('tfx_jax_tiny_images', 'train', str(tmp_path), source,
                                     num_threads=threads)
    np.testing.assert_array_equal(labels, serial)
  assert len(serial) == 30 and set(serial) == {0, 1, 2}


def test_unknown_dataset_lists_the_known_ones():
  with pytest.raises(UserError) as e:
    input_pipeline.dataset_spec('imagenet')
  for name in ('imagenet2012', 'imagenet_resized_32', 'imagenet_resized_64', 'cifar10',
               'cifar100', 'fashion_mnist', 'mnist'):
    assert name in str(e.value)


@pytest.mark.parametrize('name, tfds_name', [('cifar10', 'cifar10'),
                                             ('imagenet2012', 'imagenet2012'),
                                             ('imagenet_resized_64', 'imagenet_resized/64x64')])
def test_unprepared_dataset_says_how_to_prepare(tmp_path, name, tfds_name):
  with pytest.raises(UserError, match='not prepared') as e:
    reader.check_prepared(name, str(tmp_path))
  assert f'tfds build {tfds_name} --file_format=array_record' in str(e.value)
  with pytest.raises(UserError, match='not prepared'):
    input_pipeline.train_iterator(name, (0,), batch_size=1, seed=0, data_dir=str(tmp_path))


def test_dataset_specs():
  specs = datasets.DATASETS
  assert specs['imagenet2012'].image_shape == (227, 227, 3)
  assert specs['fashion_mnist'].image_shape == (28, 28, 1)
  assert not specs['fashion_mnist'].augment and not specs['mnist'].augment
  assert specs['cifar10'].augment and specs['imagenet2012'].augment
  assert {n: s.num_classes for n, s in specs.items()} == {
      'imagenet2012': 1000, 'imagenet_resized_32': 1000, 'imagenet_resized_64': 1000,
      'cifar10': 10, 'cifar100': 100, 'fashion_mnist': 10, 'mnist': 10, 'digits': 10}
