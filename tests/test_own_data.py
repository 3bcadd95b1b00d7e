"""Users' own data: any TFDS dataset, image folders, tasks across datasets,
target-set sizes, and UCI's digits."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
import tensorflow_datasets as tfds

from tfx_jax.data import datasets, images, input_pipeline, subsets
from tfx_jax.data.sources import digits, folders, jpeg_shards
from tfx_jax.errors import UserError
from tfx_jax.grid import experiments

import image_folder
from conftest import ROOT, cli, results
from test_input_pipeline_tfds import TfxJaxTinyImages


class TfxJaxFourClasses(TfxJaxTinyImages):
  """The tiny images in 4 classes: each random half has 2 (a half of one class
  is refused)."""

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        'image': tfds.features.Image(shape=(32, 32, 3)),
        'label': tfds.features.ClassLabel(num_classes=4)}))

  def _generate_examples(self, n, seed):
    for i, example in super()._generate_examples(n, seed):
      yield i, {**example, 'label': i % 4}

# ---------------------------------------------------------------- subsets


def test_target_subsets_are_stratified_nested_and_the_same_for_a_seed():
  labels = np.random.default_rng(0).integers(0, 4, 400)
  for k in (1, 5, 30):
    chosen = subsets.per_class(labels, k, seed=3)
    assert np.bincount(labels[chosen], minlength=4).tolist() == [k] * 4
    np.testing.assert_array_equal(chosen, subsets.per_class(labels, k, seed=3))
  small, large = subsets.per_class(labels, 5, 3), subsets.per_class(labels, 30, 3)
  assert set(small) < set(large)
  assert set(subsets.per_class(labels, 5, 4)) != set(small)  # Another seed, another set.
  # More than a class has: all of it.
  few = np.array([0, 0, 1])
  assert subsets.per_class(few, 5, 0).tolist() == [0, 1, 2]


def test_the_train_iterator_trains_on_the_subset_and_runs_over_epochs():
  # Class 3 of Fashion-MNIST, 5 images; batches of 16 over 2 processes: each
  # global batch spans 3.2 epochs, and 5 batches are 16 epochs exactly.
  def batches(process_index, process_count, batch_size):
    it = input_pipeline.train_iterator(
        'fashion_mnist', (3,), batch_size=batch_size, seed=1, augment=False,
        process_index=process_index, process_count=process_count, examples_per_class=5,
        subset_seed=7)
    return [next(it)['image'] for _ in range(5)]
  whole = np.concatenate(batches(0, 1, 16))
  distinct = {im.tobytes() for im in whole}
  assert len(distinct) == 5 and len(whole) == 80
  assert all(sum(im.tobytes() == d for im in whole) == 16 for d in distinct)
  halves = zip(batches(0, 2, 8), batches(1, 2, 8))
  np.testing.assert_array_equal(np.concatenate([np.concatenate(h) for h in halves]), whole)
  # The same 5 images for every run of that seed, whatever the batch.
  other = np.concatenate(batches(0, 1, 4))
  assert {im.tobytes() for im in other} == distinct


def test_holdout_is_stratified_and_fixed():
  labels = np.repeat(np.arange(3), [10, 5, 2])
  held = subsets.holdout(labels, 0.2)
  assert [int(held[labels == c].sum()) for c in range(3)] == [2, 1, 1]
  np.testing.assert_array_equal(held, subsets.holdout(labels, 0.2))
  with pytest.raises(UserError, match='eval fraction'):
    subsets.holdout(labels, 1.0)


# ---------------------------------------------------------------- digits, fitting


def test_digits_are_uci_digits_from_scikit_learn():
  from sklearn.datasets import load_digits  # The reference, read independently.
  raw = load_digits()
  train, test = digits.load('train'), digits.load('test')
  assert len(train[1]) + len(test[1]) == len(raw.target) == 1797
  assert train[0].shape[1:] == (28, 28, 1) and train[0].dtype == np.uint8
  assert np.bincount(test[1]).min() >= 35  # 20% of each class (174..183 images).
  # Each image, shrunk back to 8x8, is nearest to a source digit of its label
  # (0..16 scaled to 0..255), and clearly nearer than to other labels' digits.
  reference = raw.images.reshape(1797, 64) * 255 / 16
  for image, label in zip(test[0][:30], test[1][:30]):
    small = np.asarray(PIL.Image.fromarray(image[..., 0]).resize((8, 8), PIL.Image.BOX),
                       float).reshape(64)
    distance = np.abs(reference - small).mean(1)
    assert raw.target[np.argmin(distance)] == label
    assert distance.min() < 0.7 * distance[raw.target != label].min()


def test_fit_resizes_and_converts_channels():
  rgb = np.zeros((8, 10, 3), np.uint8)
  rgb[..., 1] = 200  # Green: luma 0.587 * 200.
  grey = images.fit(rgb, (4, 5), 1)
  assert grey.shape == (4, 5, 1) and abs(int(grey[0, 0, 0]) - 117) <= 1
  back = images.fit(grey, (6, 6), 3)
  assert back.shape == (6, 6, 3) and (back[..., 0] == back[..., 2]).all()
  assert images.fit(rgb, (8, 10), 3) is rgb


def test_a_target_is_fed_at_the_source_input():
  fed = datasets.fed_at(datasets.DATASETS['cifar10'], datasets.DATASETS['fashion_mnist'])
  assert fed.image_shape == (28, 28, 1) and fed.source_size == (28, 28) and fed.resize
  assert fed.mean == (pytest.approx(0.299 * 125.3 + 0.587 * 123.0 + 0.114 * 113.9),)
  fm = datasets.DATASETS['fashion_mnist']
  assert datasets.fed_at(fm, fm) is fm


def test_run_ids_and_bases_across_datasets_and_sizes():
  runs = experiments.grid('transfer', 'from:fashion_mnist', (0,), (1,), targets=('B',),
                          sizes=(5, 0))
  ids = [r.run_id for r in runs]
  assert ids[:3] == ['from_fashion_mnist-baseB-k5-s0', 'from_fashion_mnist-baseB-s0',
                     'from_fashion_mnist-baseA-s0']
  # Base A (the source) is one run for every size; B's runs copy from their size's.
  a1b = next(r for r in runs if r.run_id == 'from_fashion_mnist-A1B-k5-s0')
  b1b = next(r for r in runs if r.run_id == 'from_fashion_mnist-B1B-k5-s0')
  assert a1b.base.run_id == 'from_fashion_mnist-baseA-s0'
  assert b1b.base.run_id == 'from_fashion_mnist-baseB-k5-s0'
  assert len(runs) == 3 + 2 * 4
  with pytest.raises(UserError, match='targets=B'):
    experiments.grid('transfer', 'random:0', (0,), (1,), sizes=(5,))


# ---------------------------------------------------------------- image folders


@pytest.fixture(scope='module')
def pets(tmp_path_factory):
  """A user's folder with every odd input, prepared once: (source, data_dir, odd, log)."""
  root = tmp_path_factory.mktemp('pets')
  source, data_dir = str(root / 'my pets'), str(root / 'data')
  odd = image_folder.make(source)
  done = prepare_folder(source, data_dir, '--size=32')
  assert done.returncode == 0, done.stderr
  return source, data_dir, odd, done


def prepare_folder(source, data_dir, *flags, name='pets'):
  return subprocess.run([sys.executable, '-m', 'tfx_jax.prepare', 'folder',
                         f'--source_dir={source}', f'--data_dir={data_dir}', f'--name={name}',
                         *flags], cwd=ROOT, capture_output=True, text=True)


def stored(data_dir, name='pets'):
  """{relative path: (split, image, label)} of a prepared folder, read back."""
  root = jpeg_shards.dataset_dir(data_dir, folders.dirname(name))
  manifest = jpeg_shards.read_manifest(root)
  _, listings = folders.list_folder(manifest['source'], manifest['eval_fraction'])
  out = {}
  for split, listing in listings.items():
    source = jpeg_shards.JpegShardSource(root, split)
    for i, path in enumerate(listing.names):
      image = source.images([i])[0] if source.labels[i] >= 0 else None
      out[path] = (split, image, int(source.labels[i]))
  return manifest, out


def test_a_folder_with_odd_inputs_gets_each_its_documented_outcome(pets):
  source, data_dir, odd, done = pets
  manifest, got = stored(data_dir)
  assert manifest['class_names'] == [*image_folder.CLASSES, 'lonely']
  # Not images: skipped with a warning naming each, listed in the manifest.
  for what in ('truncated', 'not_image'):
    assert got[odd[what]][1] is None and got[odd[what]][2] == -1
    assert os.path.join(source, odd[what]) in done.stderr
  assert sorted(manifest['skipped']) == sorted([odd['truncated'], odd['not_image']])
  # Not an image by its extension: ignored, with a warning.
  assert odd['other_file'] not in got and 'notes.txt' in done.stderr
  # A class with one image: trained on, not evaluated, with a warning.
  assert got[odd['one_image']][0] == 'train' and "'lonely' has one image" in done.stderr
  want = np.asarray(PIL.Image.fromarray(image_folder.picture(1, 100)).resize(
      (32, 32), PIL.Image.BILINEAR), float)

  def close(what, reference=want, tol=12):
    return np.abs(got[odd[what]][1].astype(float) - reference).mean() < tol
  # CMYK, palette, 16-bit grey, non-ASCII names: decoded as the picture.
  assert close('cmyk', tol=20) and close('palette', tol=20) and close('unicode')
  grey = want @ [0.299, 0.587, 0.114]
  assert np.abs(got[odd['16bit']][1][..., 0] - grey).mean() < 12
  # EXIF orientation applied: the stored image is upright (the marker top left).
  assert close('exif')
  # Alpha composited on white: the transparent band is white.
  alpha = got[odd['alpha']][1]
  assert alpha[:6].min() > 240 and close('alpha', tol=40)
  # A link to another class's image: skipped, named; the image stays in its own class.
  assert odd['symlink'] not in got and got[f'{image_folder.CLASSES[0]}/img 00.jpg'][2] == 0
  assert f"{odd['symlink']} -> " in done.stderr
  # Labels are the sorted class folders; each class held out 20%.
  assert got[f'{image_folder.CLASSES[2]}/img 03.jpg'][2] == 2
  tests = [p for p, (split, _, _) in got.items() if split == 'test']
  assert len([p for p in tests if p.startswith('bird/')]) == 2  # 20% of 12, rounded.


def test_a_rerun_is_byte_identical_and_a_changed_folder_is_refused(pets, tmp_path):
  source, data_dir, _, _ = pets
  again = str(tmp_path / 'again')
  assert prepare_folder(source, again, '--size=32', '--num_workers=1').returncode == 0
  root = lambda d: jpeg_shards.dataset_dir(d, folders.dirname('pets'))  # noqa: E731
  for name in sorted(os.listdir(root(data_dir))):
    if name != 'prepare.json':
      with open(os.path.join(root(data_dir), name), 'rb') as a, \
           open(os.path.join(root(again), name), 'rb') as b:
        assert a.read() == b.read(), name
  # Resume after a kill: a shard's marker gone, the shard rewritten, same bytes.
  os.unlink(jpeg_shards.offsets_path(root(again), 'train', 0))
  os.unlink(os.path.join(root(again), jpeg_shards.MANIFEST))
  resumed = prepare_folder(source, again, '--size=32')
  tests = len(folders.list_folder(source, 0.2)[1]['test'])
  assert resumed.returncode == 0 and f', {tests} already done' in resumed.stdout
  with open(jpeg_shards.shard_path(root(again), 'train', 0), 'rb') as f:
    assert f.read() == open(jpeg_shards.shard_path(root(data_dir), 'train', 0), 'rb').read()
  # Other settings into the same place: refused before writing.
  other = prepare_folder(source, again, '--size=48')
  assert other.returncode == 2 and 'other' in other.stderr


@pytest.mark.parametrize('how, message', [
    ('empty_class', 'holds no images'), ('one_class', 'at least 2'),
    ('missing', 'is not a directory'), ('bad_name', '--name='),
    ('bad_fraction', '--eval_fraction=1.0')])
def test_a_folder_that_cannot_be_used_is_refused_naming_it(tmp_path, how, message):
  source = tmp_path / 'src'
  os.makedirs(source / 'a')
  (source / 'a' / 'x.jpg').write_bytes(image_folder.jpeg(image_folder.picture(0, 0)))
  name = 'ok'
  if how == 'empty_class':
    os.makedirs(source / 'b')
  elif how == 'missing':
    source = tmp_path / 'nowhere'
  elif how == 'bad_name':
    name = 'no/slash'
  flags = ['--eval_fraction=1.0'] if how == 'bad_fraction' else []
  if how == 'bad_fraction':
    os.makedirs(source / 'b')
    (source / 'b' / 'y.jpg').write_bytes(image_folder.jpeg(image_folder.picture(1, 0)))
  result = prepare_folder(str(source), str(tmp_path / 'out'), *flags, name=name)
  assert result.returncode == 2, result.stderr
  assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
  assert not (tmp_path / 'out').exists()


def test_train_and_test_folders_are_used_as_given(tmp_path):
  for split, n in (('train', 4), ('test', 2)):
    for label, c in enumerate(('x', 'y')):
      os.makedirs(tmp_path / 'src' / split / c)
      for i in range(n):
        (tmp_path / 'src' / split / c / f'{i}.png').write_bytes(
            image_folder.png(PIL.Image.fromarray(image_folder.picture(label, i))))
  names, listings = folders.list_folder(str(tmp_path / 'src'), 0.2)
  assert names == ['x', 'y'] and len(listings['train']) == 8 and len(listings['test']) == 4
  assert listings['test'].names[0] == os.path.join('test', 'x', '0.png')


# ---------------------------------------------------------------- grids through the CLI


def test_a_cross_dataset_grid_onto_a_folder_runs_and_its_workdir_refuses_changes(pets,
                                                                               tmp_path):
  _, data_dir, _, _ = pets
  w = str(tmp_path / 'w')
  args = ('--config=configs/cross_dataset.py:target=folder:pets,sizes=0,runlocal',
          f'--config.data_dir={data_dir}', f'--workdir={w}')
  done = cli(*args)
  assert done.returncode == 0, done.stderr[-3000:]
  rows = results(w)
  treatments = {(r['treatment'], int(r['n'])) for r in rows.values()}
  assert treatments == ({('base', 0)} | {(t, n) for t in experiments.TRANSFER_TREATMENTS
                                         for n in range(1, 8)})
  assert {r['split'] for r in rows.values()} == {'from:fashion_mnist'}
  # Base A is Fashion-MNIST's 10 classes at its own solver; B the folder's 4.
  assert int(rows['from_fashion_mnist-baseA-s0']['steps']) == 24
  with open(os.path.join(w, 'runs', 'from_fashion_mnist-baseA-s0', 'metrics.jsonl')) as f:
    evals = [json.loads(line) for line in f if '"eval"' in line]
  assert evals[-1]['count'] == 256
  report = open(os.path.join(w, 'report', 'findings.md')).read()
  assert '[cross-dataset task]' in report and 'two datasets' in report
  for change in ('--config.source_dataset=digits', '--config.dataset=digits'):
    refused = cli(*args, change)
    assert refused.returncode == 2
    assert ('differs in ' + change.split('.')[1].split('=')[0]) in refused.stderr


def test_any_tfds_dataset_runs_the_runlocal_grid(tmp_path):
  data = str(tmp_path / 'tfds')
  TfxJaxFourClasses(data_dir=data, file_format='array_record').download_and_prepare()
  spec = datasets.dataset_spec('tfds:tfx_jax_four_classes', data)
  assert (spec.num_classes, spec.image_shape, spec.eval_split) == (4, (32, 32, 3), 'test')
  stats = json.load(open(os.path.join(data, 'tfx_jax_four_classes', '1.0.0',
                                      'tfx_jax-stats-train-32x32x3.json')))
  assert abs(stats['mean'][0] - 127.5) < 8 and abs(stats['std'][0] - 73.9) < 4  # Uniform.
  w = str(tmp_path / 'w')
  done = cli('--config=configs/random_split.py:dataset=tfds:tfx_jax_four_classes,runlocal',
             f'--config.data_dir={data}', '--config.layers=1', '--config.image_size=24',
             f'--workdir={w}')
  assert done.returncode == 0, done.stderr[-3000:]
  rows = results(w)
  assert len(rows) == 6 and {r['split'] for r in rows.values()} == {'random:0'}
  m_n = cli('--config=configs/m_n_split.py:dataset=tfds:tfx_jax_four_classes',
            f'--config.data_dir={data}', f'--workdir={tmp_path / "w2"}')
  assert m_n.returncode == 2 and 'has no dissimilar (m_n) split' in m_n.stderr


def test_a_target_size_report_says_where_scratch_catches_up(tmp_path):
  rows = []
  for size, base, anb in ((5, 0.60, 0.75), (20, 0.80, 0.85), (0, 0.95, 0.95)):
    for seed in (0, 1):
      for treatment, n, value in (('base', 0, base), ('transfer', 2, anb),
                                  ('transfer_ft', 2, anb - 0.01)):
        source = 'A' if treatment != 'base' else 'B'
        rows.append({'run_id': f'r{size}{treatment}{seed}', 'split': 'from:x',
                     'treatment': treatment, 'source': source, 'target': 'B', 'n': n,
                     'seed': seed, 'top1': value, 'top5': 1.0, 'best10_top1': value + seed / 100,
                     'steps': 8, 'wall_s': 1.0, 'examples_per_class': size})
  with open(tmp_path / 'results.csv', 'w', newline='') as f:
    writer = csv.DictWriter(f, rows[0])
    writer.writeheader()
    writer.writerows(rows)
  done = subprocess.run([sys.executable, '-m', 'tfx_jax.report', f'--workdir={tmp_path}'],
                        cwd=ROOT, capture_output=True, text=True)
  assert done.returncode == 0, done.stderr
  text = (tmp_path / 'report' / 'target_size.md').read_text()
  # 5 per class: AnB 75.5 against base 60.5 on both seeds (+15 points, sd 0).
  assert '| 5 | 60.50 ± 0.71 | 75.50 ± 0.71 (n = 2) |' in text
  assert 'AnB +15.00 ± 0.00 over 2 seeds | helps | 2 |' in text
  assert 'AnB +0.00 ± 0.00 over 2 seeds | cannot tell | 2 |' in text  # All: equal.
  assert 'catches up with transfer from all images per class' in text
  assert (tmp_path / 'report' / 'target_size.png').stat().st_size > 10_000
  assert 'those of all images per class' in (tmp_path / 'report' / 'findings.md').read_text()
