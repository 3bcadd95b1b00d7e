"""Folders at their own size (issue 41, cases 9 and 13): `prepare folder`
keeps small images small, training uses the prepared size, and the end-of-grid
analysis of a 256 px folder stays within its documented memory bound."""

import os

import numpy as np
import PIL.Image

import image_folder
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
