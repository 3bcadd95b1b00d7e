"""Distribution shifts (tfx_jax.data.shifts): the corruptions change images,
deterministically and by example, more at a higher severity; the label shifts
permute; subpopulation's source and target share no class; names parse."""

import dataclasses

import numpy as np
import pytest

import tfx_jax
from tfx_jax.data import corruptions, input_pipeline, shifts
from tfx_jax.data.sources import fashion_mnist, reader
from tfx_jax.errors import UserError

CORRUPTIONS = list(corruptions.CORRUPTIONS)


@pytest.fixture(scope='module')
def clean():
  """Eight Fashion-MNIST test images (uint8 [8, 28, 28, 1]) and their indices."""
  images, _ = fashion_mnist.load('test')
  indices = np.arange(100, 108)
  return images[indices], indices


@pytest.mark.parametrize('name', CORRUPTIONS)
def test_a_corruption_changes_the_images_and_repeats_them_byte_for_byte(clean, name):
  images, indices = clean
  shift = shifts.parse(f'{name}:3', seed=7)
  once = shifts.corrupt(images, shift, indices)
  assert once.dtype == np.uint8 and once.shape == images.shape
  assert all(not np.array_equal(a, b) for a, b in zip(once, images))
  assert np.array_equal(once, shifts.corrupt(images, shift, indices))
  # Whatever the order or company of an example in its batch, the same bytes.
  order = np.array([5, 2, 7, 0, 3, 1, 6, 4])
  assert np.array_equal(shifts.corrupt(images[order], shift, indices[order]), once[order])
  assert np.array_equal(shifts.corrupt(images[3:4], shift, indices[3:4]), once[3:4])


@pytest.mark.parametrize('name', CORRUPTIONS)
def test_a_higher_severity_moves_the_images_further(clean, name):
  images, indices = clean
  moved = [np.abs(shifts.corrupt(images, shifts.Shift(name, s), indices).astype(int)
                  - images).mean() for s in corruptions.SEVERITIES]
  assert all(np.diff(moved) > 0), dict(zip(corruptions.SEVERITIES, moved))


def test_random_corruptions_depend_on_the_seed_and_the_example_index(clean):
  images, indices = clean
  twins = np.repeat(images[:1], 2, axis=0)  # One image as two examples.
  noisy = shifts.corrupt(twins, 'gaussian_noise:5', [0, 1])
  assert not np.array_equal(noisy[0], noisy[1])
  other_seed = shifts.corrupt(images, shifts.parse('gaussian_noise:5', seed=1), indices)
  assert not np.array_equal(other_seed, shifts.corrupt(images, 'gaussian_noise:5', indices))


@pytest.mark.parametrize('name', ['gaussian_blur', 'rotate', 'elastic', 'fog', 'brightness'])
def test_corruptions_take_any_size_and_channels(name):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (2, 20, 36, 3), dtype=np.uint8)
  out = shifts.corrupt(images, f'{name}:4', [0, 1])
  assert out.shape == images.shape and out.dtype == np.uint8
  assert not np.array_equal(out, images)


def test_brightness_keeps_a_colour_hue():
  red = np.zeros((1, 4, 4, 3), np.uint8)
  red[..., 0] = 100
  out = shifts.corrupt(red, 'brightness:5', [0]).astype(int)  # Value + 0.3: 100 -> 176.5.
  assert np.all(np.abs(out[..., 0] - 176.5) <= 0.5) and np.all(out[..., 1:] == 0)


@pytest.mark.parametrize('seed', range(6))
@pytest.mark.parametrize('num_classes', [2, 3, 10])
def test_permute_labels_is_a_permutation_and_never_the_identity(seed, num_classes):
  permutation = shifts.label_map(shifts.parse('permute_labels', seed=seed), num_classes)
  assert sorted(permutation) == list(range(num_classes))
  assert np.all(permutation != np.arange(num_classes))


def test_permute_labels_depends_on_the_seed():
  maps = {tuple(shifts.permute_labels(10, seed)) for seed in range(5)}
  assert len(maps) > 1


def test_flip_labels_is_cifar_flip():
  assert list(shifts.label_map('flip_labels', 4)) == [3, 2, 1, 0]


def test_subpopulation_source_and_target_share_no_class():
  split = shifts.subpopulation('fashion_mnist', 10)
  assert not set(split.source_classes) & set(split.target_classes)
  assert sorted(split.source_classes + split.target_classes) == list(range(10))
  for label in range(len(split.superclass_names)):  # Each side sees every superclass.
    assert label in split.superclass_of[list(split.source_classes)]
    assert label in split.superclass_of[list(split.target_classes)]
  assert split.superclass_names == ('tops', 'footwear', 'other')


def test_subpopulation_takes_a_given_grouping_and_refuses_none_known():
  split = shifts.subpopulation('cifar10', 10, {'vehicles': [0, 1, 8, 9], 'pets': [3, 5]})
  assert split.source_classes == (0, 3, 8) and split.target_classes == (1, 5, 9)
  assert split.superclass_of[4] == -1
  with pytest.raises(UserError, match='none is known.*fashion_mnist'):
    shifts.subpopulation('cifar10', 10)
  with pytest.raises(UserError, match='two superclasses'):
    shifts.subpopulation('cifar10', 10, {'a': [0, 1], 'b': [1, 2]})
  with pytest.raises(UserError, match='two or more'):
    shifts.subpopulation('cifar10', 10, {'a': [0, 1], 'b': [2]})


def test_parse_reads_name_and_severity():
  assert shifts.parse('gaussian_noise:3') == shifts.Shift('gaussian_noise', 3)
  assert shifts.parse(' fog ').severity == shifts.DEFAULT_SEVERITY
  assert shifts.parse('permute_labels').level == 'output'
  assert shifts.parse('subpopulation').level == 'feature'
  assert [str(s) for s in shifts.parse_list('contrast:2, flip_labels,')] == [
      'contrast:2', 'flip_labels']


@pytest.mark.parametrize('text, message', [
    ('gausian_noise:3', "Unknown shift 'gausian_noise'. Did you mean 'gaussian_noise'?"),
    ('permute_label', "Did you mean 'permute_labels'?"),
    ('fog:6', 'not one of 1-5'),
    ('fog:x', 'not one of 1-5'),
    ('flip_labels:2', 'takes no severity'),
    (':3', 'Empty shift name'),
])
def test_a_bad_shift_is_one_line_naming_the_fix(text, message):
  with pytest.raises(UserError, match=message) as e:
    shifts.parse_list(text)
  assert '\n' not in str(e.value)


def test_a_shift_listed_twice_is_refused():
  with pytest.raises(UserError, match='listed twice'):
    shifts.parse_list('fog:2,rotate,fog:2')


def test_the_pipeline_reads_a_shifted_spec_through_the_shift(clean):
  images, indices = clean
  spec = shifts.shifted_spec('fashion_mnist', 'rotate:2', seed=3)
  source = reader.open_source(spec, 'test', None)
  assert np.array_equal(source.images(indices), shifts.corrupt(images, spec.shift, indices))
  batch = next(iter(input_pipeline.EvalData(spec, range(10), batch_size=4, max_examples=4)))
  assert np.array_equal(batch['image'], shifts.corrupt(
      fashion_mnist.load('test')[0][:4], spec.shift, range(4)))


def test_a_shifted_source_maps_the_labels():
  labels = fashion_mnist.load('test')[1]
  flipped = reader.open_source(shifts.shifted_spec('fashion_mnist', 'flip_labels'), 'test', None)
  assert np.array_equal(flipped.labels, 9 - labels)
  spec = shifts.shifted_spec('fashion_mnist', 'subpopulation', side='source')
  seen = reader.open_source(spec, 'test', None).labels
  split = shifts.subpopulation('fashion_mnist', 10)
  kept = np.isin(labels, split.source_classes)
  assert np.array_equal(seen[kept], split.superclass_of[labels[kept]])
  assert np.all(seen[~kept] == -1)
  superclasses = input_pipeline.EvalData(spec, [0, 1, 2], batch_size=8)
  assert superclasses.num_examples == kept.sum()
  target = dataclasses.replace(spec.shift, side='target')
  assert np.all(shifts.label_map(target, 10, 'fashion_mnist')[list(split.source_classes)] == -1)


@pytest.mark.parametrize('memo_bytes', [0, 3 * 784, shifts.MEMO_BYTES])
def test_a_shifted_source_gives_the_same_bytes_whatever_it_keeps(clean, memo_bytes):
  images, indices = clean
  source = shifts.ShiftedSource(reader.ArraySource(images, np.zeros(8, np.int32)), 'fog:4', 10,
                                memo_bytes=memo_bytes)
  expected = shifts.corrupt(images, 'fog:4', np.arange(8))
  for order in ([0, 1, 2, 3], [3, 2, 5, 5, 7], [7, 6, 5, 4, 3, 2, 1, 0]):
    assert np.array_equal(source.images(np.array(order)), expected[order])


@pytest.mark.parametrize('fields, message', [
    (('fog', 0), 'not one of 1-5'), (('flip_labels', 2), 'takes no severity'),
    (('fgo', 2), "Did you mean 'fog'"), (('fog', 2, -1), 'integer >= 0'),
    (('subpopulation', 0, 0, 'middle'), 'source or target')])
def test_a_shift_made_directly_is_checked_too(fields, message):
  with pytest.raises(UserError, match=message):
    shifts.Shift(*fields)


def test_arrays_serve_as_a_shifts_base_data():
  """tfx_jax.data.arrays read through a shift: the corruption of the arrays'
  own images, their labels kept (issue 42's arrays as a shift's base data)."""
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (12, 16, 16, 1), np.uint8)
  labels = np.arange(12) % 3
  data = tfx_jax.data.arrays(train=(images, labels), test=(images[:6], labels[:6]),
                             name='shift_base')
  spec = shifts.shifted_spec(data.name, 'gaussian_noise:4', seed=1)
  source = reader.open_source(spec, 'train', None)
  assert np.array_equal(source.labels, labels)
  shifted = source.images(np.arange(12))
  assert np.array_equal(shifted, shifts.corrupt(images, spec.shift, np.arange(12)))
  assert not np.array_equal(shifted, images)
