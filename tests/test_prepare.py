"""tfx_jax.prepare on a synthetic manual_dir in the original ILSVRC2012 tar layout.

Expected labels are read here independently: from the names of the inner tars
and from the validation_labels.txt that tensorflow-datasets ships.
"""

import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time

import cv2
import numpy as np
import PIL.Image
import pytest
import tensorflow_datasets as tfds

from tfx_jax.data.sources import ilsvrc, jpeg_shards, prepare
from tfx_jax.errors import UserError

from conftest import ROOT

TFDS_IMAGENET = os.path.join(os.path.dirname(tfds.__file__), 'datasets', 'imagenet2012')


def shipped(name):
  with open(os.path.join(TFDS_IMAGENET, name)) as f:
    return f.read().split()


def originals(manual_dir):
  """{split: [(name, label, original bytes)]} straight from the tars."""
  sorted_wnids = shipped('labels.txt')
  val_wnids = shipped('validation_labels.txt')
  out = {'train': [], 'validation': []}
  with tarfile.open(os.path.join(manual_dir, 'ILSVRC2012_img_train.tar')) as outer:
    for member in outer:
      wnid = member.name[:-len('.tar')]
      with tarfile.open(fileobj=outer.extractfile(member)) as inner:
        for image in inner:
          out['train'].append((f'{wnid}/{image.name}', sorted_wnids.index(wnid),
                               inner.extractfile(image).read()))
  with tarfile.open(os.path.join(manual_dir, 'ILSVRC2012_img_val.tar')) as tar:
    for image in tar:
      number = int(image.name[len('ILSVRC2012_val_'):-len('.JPEG')])
      out['validation'].append((image.name, sorted_wnids.index(val_wnids[number - 1]),
                                tar.extractfile(image).read()))
  out['train'].sort(key=lambda r: (r[1], r[0]))
  out['validation'].sort()
  return out


def warped(data):
  """The original decoded and warped to 256x256 RGB, before re-encoding."""
  bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
  return cv2.resize(bgr, (256, 256), interpolation=cv2.INTER_LINEAR)[..., ::-1]


def test_labels_and_images(imagenet_manual_dir, prepared_imagenet):
  manual_dir, _ = imagenet_manual_dir
  root = os.path.join(prepared_imagenet, 'imagenet2012_jpeg256')
  for split, rows in originals(manual_dir).items():
    source = jpeg_shards.JpegShardSource(root, split)
    assert len(rows) == len(source) == {'train': 24, 'validation': 8}[split]
    np.testing.assert_array_equal(source.labels, [label for _, label, _ in rows])
    assert set(source.labels) == {0, 1, 400, 401}
    images = source.images(range(len(source)))
    for i, ((name, _, data), image) in enumerate(zip(rows, images)):
      raw = PIL.Image.open(io.BytesIO(source.read([i])[0]))
      assert raw.format == 'JPEG' and raw.size == (256, 256) and raw.mode == 'RGB', name
      assert image.shape == (256, 256, 3) and image.dtype == np.uint8
      # The right image in the right place: close to its own warp (JPEG error
      # only), far from its neighbour's.
      error = np.abs(image.astype(float) - warped(data)).mean()
      other = np.abs(image.astype(float) - warped(rows[i - 1][2])).mean()
      assert error < 10 and other > 4 * error, (name, error, other)
  grey = [image for (name, _, data), image in zip(
      originals(manual_dir)['train'], jpeg_shards.JpegShardSource(root, 'train').images(
          range(24))) if PIL.Image.open(io.BytesIO(data)).mode == 'L']
  assert len(grey) == 1  # Stored as RGB with equal channels.
  assert np.abs(grey[0].astype(int) - grey[0][..., :1]).max() <= 2


def test_manifest_and_shards(prepared_imagenet):
  root = os.path.join(prepared_imagenet, 'imagenet2012_jpeg256')
  manifest = jpeg_shards.read_manifest(root)
  assert manifest['image_size'] == [256, 256] and manifest['quality'] >= 90
  assert {k: v['num_examples'] for k, v in manifest['splits'].items()} == {
      'train': 24, 'validation': 8}
  names = sorted(os.listdir(root))
  assert [n for n in names if n.endswith('.jpegs')] == [
      f'train-{k:05d}.jpegs' for k in range(5)] + [f'validation-{k:05d}.jpegs' for k in range(2)]
  assert not [n for n in names if n.endswith('.tmp')]


def prepare_cli(*args, **kwargs):
  return subprocess.Popen([sys.executable, '-m', 'tfx_jax.prepare', 'imagenet2012', *args],
                          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, **kwargs)


def tree(root):
  out = {}
  for name in sorted(os.listdir(root)):
    with open(os.path.join(root, name), 'rb') as f:
      out[name] = f.read()
  return out


def test_sigkill_then_rerun_gives_byte_identical_output(imagenet_manual_dir, tmp_path):
  manual_dir, _ = imagenet_manual_dir
  reference = tmp_path / 'reference'
  prepare.prepare(manual_dir, str(reference), num_workers=1, images_per_shard=1,
                  log=lambda message: None)
  args = (f'--manual_dir={manual_dir}', '--images_per_shard=1', '--num_workers=1')
  for attempt in range(5):  # Until the kill lands mid-way (32 shards of one image).
    out = tmp_path / f'killed{attempt}'
    root = out / 'imagenet2012_jpeg256'
    proc = prepare_cli(*args, f'--data_dir={out}', start_new_session=True)
    while proc.poll() is None:
      done = [n for n in (os.listdir(root) if root.exists() else ())
              if n.endswith('.offsets.npy')]
      if len(done) >= 2:
        os.killpg(proc.pid, signal.SIGKILL)
        break
      time.sleep(0.001)
    proc.wait()
    if proc.returncode == -signal.SIGKILL and not (root / 'manifest.json').exists():
      break
  else:
    pytest.fail('prepare always finished before it could be killed')
  kept = {n: os.stat(root / n).st_ino for n in os.listdir(root) if n.endswith('.jpegs')
          and (root / n.replace('.jpegs', '.offsets.npy')).exists()}
  assert 2 <= len(kept) < 32
  proc = prepare_cli(*args, f'--data_dir={out}')
  stdout, stderr = proc.communicate(timeout=300)
  assert proc.returncode == 0, stderr
  assert f'{len(kept)} already done' in stdout
  assert tree(root) == tree(reference / 'imagenet2012_jpeg256')  # Temp files gone too.
  for name, inode in kept.items():  # Finished shards were kept, not redone.
    assert os.stat(root / name).st_ino == inode, name


def cut_in_an_image(path):
  """Cut the outer tar in the middle of its last inner tar's data."""
  with tarfile.open(path) as tar:
    last = tar.getmembers()[-1]
  os.truncate(path, last.offset_data + last.size // 2)


def cut_before_the_end_marker(path):
  """Every file whole, but the end-of-archive blocks cut."""
  with tarfile.open(path) as tar:
    tar.getmembers()
    end = tar.offset
  os.truncate(path, end + 100)


def garble_a_header(path):
  """Overwrite the second header of the first inner tar (tarfile would stop there quietly)."""
  with tarfile.open(path) as outer:
    first = outer.getmembers()[0]
    with tarfile.open(fileobj=outer.extractfile(first)) as inner:
      second = inner.getmembers()[1]
  with open(path, 'r+b') as f:
    f.seek(first.offset_data + second.offset)
    f.write(b'\x7f' * 512)


@pytest.mark.parametrize('tar, damage', [
    ('ILSVRC2012_img_train.tar', cut_in_an_image),
    ('ILSVRC2012_img_train.tar', cut_before_the_end_marker),
    ('ILSVRC2012_img_train.tar', garble_a_header),
    ('ILSVRC2012_img_val.tar', cut_in_an_image),
])
def test_corrupt_or_truncated_tar_gives_one_clear_error(imagenet_manual_dir, tmp_path, tar,
                                                         damage):
  manual_dir = tmp_path / 'manual'
  shutil.copytree(imagenet_manual_dir[0], manual_dir)
  path = manual_dir / tar
  damage(path)
  proc = prepare_cli(f'--manual_dir={manual_dir}', f'--data_dir={tmp_path / "out"}')
  _, stderr = proc.communicate(timeout=300)
  assert proc.returncode == 2
  assert stderr.startswith('error: ') and stderr.count('\n') == 1, stderr
  assert str(path) in stderr and 'corrupt or truncated' in stderr
  assert not (tmp_path / 'out' / 'imagenet2012_jpeg256' / 'manifest.json').exists()


def test_bad_command_lines_exit_2(tmp_path):
  for args, message in (((), 'Usage: python -m tfx_jax.prepare imagenet2012'),
                        (('--data_dir=x',), '--manual_dir is required'),
                        ((f'--manual_dir={tmp_path}',), 'ILSVRC2012_img_train.tar not found')):
    proc = subprocess.run([sys.executable, '-m', 'tfx_jax.prepare', 'imagenet2012', *args]
                          if args else [sys.executable, '-m', 'tfx_jax.prepare', 'mnist'],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith('error: '), proc.stderr
    assert message in proc.stderr


def test_other_tars_into_the_same_output_are_refused(imagenet_manual_dir, tmp_path):
  from tfx_jax.data.sources import synthetic_imagenet
  other = tmp_path / 'other'
  synthetic_imagenet.write_manual_dir(str(other), (3,), 2, 1, odd_modes=False)
  prepare.prepare(str(other), str(tmp_path / 'out'), num_workers=1, log=lambda m: None)
  with pytest.raises(UserError, match='other inputs'):
    prepare.prepare(imagenet_manual_dir[0], str(tmp_path / 'out'), num_workers=1,
                    log=lambda m: None)


def test_listing_reads_wnids_and_validation_numbers(imagenet_manual_dir):
  manual_dir, truth = imagenet_manual_dir
  train = ilsvrc.list_train(manual_dir)
  assert dict(zip(train.names, train.labels.tolist())) == truth['train']
  validation = ilsvrc.list_validation(manual_dir)
  assert dict(zip(validation.names, validation.labels.tolist())) == truth['validation']
  assert validation.names == sorted(validation.names)
