"""Folders at their own size (issue 41, cases 9 and 13): `prepare folder`
keeps small images small, training uses the prepared size, and the end-of-grid
analysis of a 256 px folder stays within its documented memory bound."""

import json
import os
import subprocess
import sys

import numpy as np
import PIL.Image

import image_folder
from conftest import ROOT, cli_command
from test_user_faults import prepare_folder
from tfx_jax.data import datasets
from tfx_jax.data.sources import folders, jpeg_shards


def images(source, sizes, classes='abc'):
  """DIR/<class>/<i>.png, image i of each class at sizes[i % len(sizes)] (w, h)."""
  for label, c in enumerate(classes):
    os.makedirs(os.path.join(source, c))
    for i in range(len(sizes)):
      w, h = sizes[i % len(sizes)]
      picture = image_folder.picture(label, i, size=(h, w))
      with open(os.path.join(source, c, f'{i}.png'), 'wb') as f:
        f.write(image_folder.png(PIL.Image.fromarray(picture)))


def test_a_folder_of_32px_images_is_stored_and_trained_at_32px(tmp_path):
  source, data_dir = str(tmp_path / 'digits'), str(tmp_path / 'data')
  images(source, [(32, 32)] * 5)
  done = prepare_folder(source, data_dir, '--num_workers=1')  # No --size: the default.
  assert done.returncode == 0, done.stderr
  assert 'Storing the images at 32x32' in done.stdout, done.stdout
  root = jpeg_shards.dataset_dir(data_dir, folders.dirname('pets'))
  assert jpeg_shards.read_manifest(root)['image_size'] == [32, 32]
  assert jpeg_shards.JpegShardSource(root, 'train').images([0])[0].shape == (32, 32, 3)
  assert datasets.dataset_spec('folder:pets', data_dir).image_shape == (32, 32, 3)


def test_the_default_side_is_the_median_larger_side_up_to_256(tmp_path):
  cases = {'shared': ([(40, 24)] * 3, 40), 'mixed': ([(20, 20), (64, 48), (100, 30)], 64),
           'photos': ([(640, 480), (500, 375)], 256), 'tiny': ([(4, 4)], 8)}
  for name, (sizes, side) in cases.items():
    source = str(tmp_path / name)
    images(source, sizes, classes='ab')
    _, listings = folders.list_folder(source, 0.2)
    assert folders.auto_side(source, listings) == side, name


# Peak memory of a child: its own process's maximum resident set, in MB.
PEAK_RSS = ('import resource, subprocess, sys; done = subprocess.run(sys.argv[1:]); '
            'print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024, '
            'file=sys.stderr); sys.exit(done.returncode)')


def test_the_analysis_of_a_256px_folder_grid_is_bounded_by_its_config(tmp_path):
  source, data_dir, w = str(tmp_path / 'photos'), str(tmp_path / 'data'), tmp_path / 'w'
  rng = np.random.default_rng(0)
  for label in range(4):  # Four classes, so each random half has two.
    os.makedirs(os.path.join(source, str(label)))
    for i in range(12):
      image = rng.integers(0, 60, (256, 256, 3), np.uint8) + np.uint8(40 * label)
      PIL.Image.fromarray(image).save(os.path.join(source, str(label), f'{i}.png'))
  assert prepare_folder(source, data_dir, '--num_workers=1').returncode == 0
  # The folder's own 256 px; `small` then feeds conv5's 16 x 16 x 256 = 65,536
  # units to fc6: a 17 GB covariance unbounded, more than this machine holds.
  done = subprocess.run(
      [sys.executable, '-c', PEAK_RSS, *cli_command(
          '--config=configs/random_split.py:dataset=folder:pets,runlocal',
          f'--config.data_dir={data_dir}', f'--workdir={w}', '--config.layers=(5,)',
          '--config.only=(base,)', '--config.targets=(A,B)', '--config.total_steps=2',
          '--config.lr_step=1',
          '--config.eval_every=2', '--config.checkpoint_every=2', '--config.batch_size=4',
          '--config.eval_examples=8', '--config.analysis.train_examples=20',
          '--config.analysis.eval_examples=8', '--config.analysis.batch_size=8', analyse=True)],
      cwd=ROOT, capture_output=True, text=True)
  assert done.returncode == 0, done.stderr[-3000:]
  assert 'Analysis' in done.stdout, done.stdout[-3000:]
  analysis = json.loads((w / 'report' / 'analysis.json').read_text())
  bound = analysis['settings']['max_features']
  widths = analysis['splits']['random:0']['seeds']['0']['feature_widths']
  assert bound == 4096 and max(widths.values()) <= bound and widths['conv5'] == bound, widths
  peak_mb = int(done.stderr.strip().splitlines()[-1])
  assert peak_mb < 6000, peak_mb  # Features of 4,096 units and n x n matrices.
