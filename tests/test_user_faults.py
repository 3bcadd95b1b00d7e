"""What a new user still broke (issue 41), through the real CLIs: folders with
loops and links, a --data_dir inside the source, Ctrl-C, full and read-only
disks, gs:// without gcsfs, misspelt TFDS names. Each ends in one line (or
one warning) and, for bad input, exit 2 with nothing written."""

import contextlib
import os
import re
import signal
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest

import image_folder
from conftest import ROOT, RUNLOCAL, cli, copy_runs
from test_input_pipeline_tfds import TfxJaxTinyImages
from test_report import paper_like, report_cli, rows, write_results
from test_robustness import left_in_group
from tfx_jax.data import datasets
from tfx_jax.data.sources import folders, jpeg_shards
from tfx_jax.errors import UserError


def prepare_folder(source, data_dir, *flags, popen=False):
  command = [sys.executable, '-m', 'tfx_jax.prepare', 'folder', f'--source_dir={source}',
             f'--data_dir={data_dir}', '--name=pets', *flags]
  if popen:
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
  return subprocess.run(command, cwd=ROOT, capture_output=True, text=True)


def one_line(done, code=2):
  assert done.returncode == code, done.stderr[-3000:]
  assert len(done.stderr.strip().splitlines()) == 1 and 'Traceback' not in done.stderr, \
      done.stderr[-3000:]
  return done.stderr


def two_classes(source, per_class=6, noise=False):
  """DIR/a/ and DIR/b/ of JPEGs; noise: random pixels (large files)."""
  rng = np.random.default_rng(0)
  for label, c in enumerate('ab'):
    os.makedirs(os.path.join(source, c))
    for i in range(per_class):
      image = (rng.integers(0, 256, (128, 128, 3), np.uint8) if noise
               else image_folder.picture(label, i))
      with open(os.path.join(source, c, f'{i:02d}.jpg'), 'wb') as f:
        f.write(image_folder.jpeg(image))


def snapshot(root):
  return sorted((os.path.relpath(os.path.join(d, n), root), os.lstat(os.path.join(d, n)).st_size)
                for d, dirs, names in os.walk(root) for n in dirs + names)


# ---------------------------------------------------------------- loops and links


def test_a_loop_and_links_into_other_classes_are_skipped_each_image_once(tmp_path):
  source, data_dir = str(tmp_path / 'pets'), str(tmp_path / 'data')
  two_classes(source)
  os.symlink('..', os.path.join(source, 'a', 'up'))  # A loop.
  os.symlink('../b', os.path.join(source, 'a', 'other'))  # Class b's folder in a.
  os.symlink('../a/00.jpg', os.path.join(source, 'b', 'dup.jpg'))  # a's image in b.
  done = prepare_folder(source, data_dir, '--size=32', '--num_workers=1')
  assert done.returncode == 0, done.stderr
  warnings = done.stderr.strip().splitlines()
  for link in ('a/up', 'a/other', 'b/dup.jpg'):  # One warning line each, naming it.
    assert len([w for w in warnings if f'{source}/{link}' in w]) == 1, done.stderr
  assert 'a loop' in done.stderr and len(warnings) == 3, done.stderr
  root = jpeg_shards.dataset_dir(data_dir, folders.dirname('pets'))
  manifest = jpeg_shards.read_manifest(root)
  assert sum(s['num_examples'] for s in manifest['splits'].values()) == 12
  # Every stored image is one source image, under its own class, in one split.
  sources = {(label, i): np.asarray(PIL.Image.fromarray(image_folder.picture(label, i)).resize(
      (32, 32), PIL.Image.BILINEAR), float) for label in (0, 1) for i in range(6)}
  matched = []
  for split in manifest['splits']:
    stored = jpeg_shards.JpegShardSource(root, split)
    for image, label in zip(stored.images(range(len(stored))), stored.labels):
      key = min(sources, key=lambda k: np.abs(sources[k] - image).mean())
      assert np.abs(sources[key] - image).mean() < 8 and key[0] == label, (split, key)
      matched.append(key)
  assert sorted(matched) == sorted(sources)


def test_a_class_folder_that_is_another_class_is_refused(tmp_path):
  source = str(tmp_path / 'pets')
  two_classes(source)
  os.symlink('a', os.path.join(source, 'c'))
  stderr = one_line(prepare_folder(source, str(tmp_path / 'data')))
  assert f'{source}/c is a link to {source}/a' in stderr and 'remove the link' in stderr
  assert not (tmp_path / 'data').exists()


def test_a_data_dir_inside_the_source_dir_is_refused_before_writing(tmp_path):
  source = str(tmp_path / 'pets')
  two_classes(source)
  before = snapshot(source)
  stderr = one_line(prepare_folder(source, os.path.join(source, 'prepared')))
  assert f'--data_dir {source}/prepared is inside --source_dir {source}' in stderr
  assert snapshot(source) == before


# ---------------------------------------------------------------- Ctrl-C


def test_ctrl_c_with_workers_is_one_line_and_exit_130_then_a_rerun_resumes(tmp_path):
  source, data_dir = str(tmp_path / 'pets'), str(tmp_path / 'data')
  two_classes(source, per_class=200)
  flags = ('--size=512', '--num_workers=2', '--images_per_shard=1')
  proc = prepare_folder(source, data_dir, *flags, popen=True)
  for line in proc.stdout:  # The first progress line: a shard is done, workers busy.
    if 'images/s' in line:
      break
  os.killpg(proc.pid, signal.SIGINT)  # As a terminal's Ctrl-C: the whole group.
  _, stderr = proc.communicate(timeout=120)
  assert proc.returncode == 130, stderr[-3000:]
  assert stderr.startswith('Interrupted (Ctrl-C)') and len(stderr.strip().splitlines()) == 1, \
      stderr[-3000:]
  assert not left_in_group(proc.pid)
  again = prepare_folder(source, data_dir, *flags)
  assert again.returncode == 0, again.stderr[-3000:]
  assert re.search(r'[1-9][\d,]* already done', again.stdout), again.stdout


# ---------------------------------------------------------------- full and read-only disks


@contextlib.contextmanager
def tmpfs(path, options):
  """A real tmpfs at `path` (the tests run as root), unmounted at the end."""
  os.makedirs(path)
  done = subprocess.run(['mount', '-t', 'tmpfs', '-o', options, 'tmpfs', path],
                        capture_output=True, text=True, check=False)
  # The tests and CI run as root (the Makefile installs as root too): a refusal
  # to mount is a broken machine, not a reason to pass over the full-disk cases.
  assert done.returncode == 0, f'cannot mount a tmpfs at {path}: {done.stderr.strip()}'
  try:
    yield path
  finally:
    subprocess.run(['umount', path], check=False)


def test_a_full_disk_is_one_line_naming_the_path_and_a_rerun_resumes(tmp_path):
  source, disk = str(tmp_path / 'pets'), str(tmp_path / 'disk')
  two_classes(source, per_class=20, noise=True)  # About 5 MB at 256 px.
  flags = ('--size=256', '--num_workers=2', '--images_per_shard=4')
  with tmpfs(disk, 'size=1m'):
    stderr = one_line(prepare_folder(source, disk, *flags))
    assert f'Cannot write {disk}/folders/pets/' in stderr and 'the disk is full' in stderr
    assert 'free space there, or pass another --data_dir' in stderr
    root = jpeg_shards.dataset_dir(disk, folders.dirname('pets'))
    assert not os.path.exists(os.path.join(root, jpeg_shards.MANIFEST))
    subprocess.run(['mount', '-o', 'remount,size=64m', disk], check=True)
    again = prepare_folder(source, disk, *flags)
    assert again.returncode == 0, again.stderr[-3000:]
    assert re.search(r'[1-9][\d,]* already done', again.stdout), again.stdout


def test_a_read_only_data_dir_is_one_line_naming_the_path(tmp_path):
  source, disk = str(tmp_path / 'pets'), str(tmp_path / 'disk')
  two_classes(source)
  with tmpfs(disk, 'ro,size=1m'):
    stderr = one_line(prepare_folder(source, os.path.join(disk, 'data')))
    assert f'Cannot write {disk}/data' in stderr and 'read-only' in stderr
    assert 'pass a --data_dir you can write to' in stderr


def files_of(root):
  return {os.path.relpath(os.path.join(d, n), root): open(os.path.join(d, n), 'rb').read()
          for d, _, names in os.walk(root) for n in names}


def test_a_report_on_a_full_or_read_only_disk_is_one_line_and_the_old_report_stays(tmp_path):
  w = str(tmp_path / 'disk')
  with tmpfs(w, 'size=8m'):
    write_results(w, rows(paper_like))
    assert report_cli(f'--workdir={w}').returncode == 0
    (tmp_path / 'disk' / 'report' / 'analysis.md').write_text('kept\n')  # Not the report's.
    before = files_of(f'{w}/report')
    write_results(w, rows(paper_like, seeds=(0, 1)))  # Fewer runs: a new report.
    with open(f'{w}/filler', 'wb', buffering=0) as f:  # The disk full, but for 16 KB.
      with pytest.raises(OSError):
        while True:
          f.write(b'\0' * 65536)
    os.truncate(f'{w}/filler', os.path.getsize(f'{w}/filler') - 16384)
    stderr = one_line(report_cli(f'--workdir={w}'))
    assert f'Cannot write the report in {w}/report: the disk is full' in stderr, stderr
    assert 'free space there' in stderr and 'the previous report is left as it was' in stderr
    assert files_of(f'{w}/report') == before  # Whole, not half old and half new.
    assert not [n for n in os.listdir(w) if n.startswith('.')]  # No temporary directory left.
    os.remove(f'{w}/filler')
    subprocess.run(['mount', '-o', 'remount,ro', w], check=True)
    stderr = one_line(report_cli(f'--workdir={w}'))
    assert f'Cannot write the report in {w}/report: the filesystem is read-only' in stderr
    assert files_of(f'{w}/report') == before
    subprocess.run(['mount', '-o', 'remount,rw', w], check=True)
    assert report_cli(f'--workdir={w}').returncode == 0  # Space again: the new report.
    after = files_of(f'{w}/report')
    assert after['analysis.md'] == b'kept\n' and after['findings.md'] != before['findings.md']
    assert set(after) == set(before)


def test_a_full_disk_while_checkpointing_is_one_line_and_a_rerun_resumes(tmp_path):
  w = str(tmp_path / 'disk')
  base = (f'--config={RUNLOCAL}', '--config.layers=(1,)', '--config.only=(base,)',
          '--config.report=false', f'--workdir={w}/w')
  with tmpfs(w, 'size=4m'):  # Step 8's checkpoint fits, step 16's does not.
    stderr = one_line(cli(*base))
    assert (f'Cannot write {w}/w/runs/m_n-baseB-s0/checkpoints: the disk is full; free space '
            'there, or pass another --workdir; a rerun keeps the finished runs' in stderr), stderr
    subprocess.run(['mount', '-o', 'remount,size=64m', w], check=True)
    again = cli(*base)
    assert again.returncode == 0, again.stderr[-3000:]
    assert 'resuming m_n-baseB-s0 from step 8' in again.stdout, again.stdout


def test_analysis_files_on_a_full_disk_are_one_line_naming_the_path(tmp_path):
  from tfx_jax.report import analysis  # pylint: disable=import-outside-toplevel
  computed = {'groups': ['conv1'], 'predictors': {}, 'splits': {}, 'notes': [],
              'settings': {'train_examples': 20, 'eval_examples': 8, 'batch_size': 8},
              'cost': {'analysis_s': 1.0, 'training_s': 10.0, 'ratio': 0.1, 'devices': 'cpu'}}
  w = str(tmp_path / 'disk')
  with tmpfs(w, 'size=64k'):
    with open(f'{w}/filler', 'wb', buffering=0) as f:
      with pytest.raises(OSError):
        while True:
          f.write(b'\0' * 4096)
    with pytest.raises(UserError) as refused:
      analysis.write(w, computed, 'folder:pets')
  message = str(refused.value)
  assert f'Cannot write {w}/report' in message and 'the disk is full' in message, message
  assert f'python -m tfx_jax.report --analyse --workdir={w} writes the analysis' in message
  assert '\n' not in message


@pytest.fixture
def immutable(tmp_path):
  """chattr +i on paths (even root cannot replace them), undone at the end."""
  held = []

  def hold(path):
    done = subprocess.run(['chattr', '+i', path], capture_output=True, text=True, check=False)
    assert done.returncode == 0, f'chattr +i {path} failed: {done.stderr.strip()}'
    held.append(path)

  yield hold
  for path in held:
    subprocess.run(['chattr', '-i', path], check=False)


def test_an_unwritable_results_csv_is_one_line_and_a_rerun_writes_it(runlocal_grid, tmp_path,
                                                                      immutable):
  w = str(tmp_path / 'w')
  copy_runs(runlocal_grid[0], w, 'm_n-baseB-s0')  # Base B finished: nothing to train.
  base = (f'--config={RUNLOCAL}', '--config.layers=(1,)', '--config.only=(base,)',
          '--config.report=false', f'--workdir={w}')
  assert cli(*base).returncode == 0
  immutable(f'{w}/results.csv')
  stderr = one_line(cli(*base))
  assert f'Cannot write {w}/results.csv: permission denied' in stderr, stderr
  assert 'the finished runs are kept, and a rerun writes' in stderr
  assert not [n for n in os.listdir(w) if n.endswith('.tmp')]
  subprocess.run(['chattr', '-i', f'{w}/results.csv'], check=True)
  again = cli(*base)
  assert again.returncode == 0 and '1 finished' in again.stdout, again.stderr[-3000:]


# ---------------------------------------------------------------- gs:// without gcsfs


@pytest.mark.parametrize('flag', ['--config.base_a=gs://tfx/base', '--workdir=gs://tfx/w'])
def test_a_gs_path_without_gcsfs_names_the_extra(tmp_path, flag):
  fake = tmp_path / 'site' / 'gcsfs'
  os.makedirs(fake)
  (fake / '__init__.py').write_text('raise ImportError("No module named \'gcsfs\' (test)")\n')
  env = {**os.environ, 'PYTHONPATH': os.pathsep.join(
      filter(None, [str(tmp_path / 'site'), os.environ.get('PYTHONPATH')]))}
  w = tmp_path / 'w'
  args = [f'--config={RUNLOCAL}', flag] + ([f'--workdir={w}'] if 'workdir' not in flag else [])
  stderr = one_line(cli(*args, env=env))
  assert f'{flag}: gs:// needs gcsfs' in stderr and "pip install 'tfx-jax[gcs]'" in stderr
  assert not w.exists()


# ---------------------------------------------------------------- TFDS names and splits


class TfxJaxNoTestSplit(TfxJaxTinyImages):
  """The tiny images with a train and a `holdout` split: no test, no validation."""

  def _split_generators(self, dl_manager):
    return {'train': self._generate_examples(30, 0), 'holdout': self._generate_examples(9, 1)}


def test_a_misspelt_tfds_name_gets_the_closest_builder(tmp_path):
  stderr = one_line(cli('--config=configs/random_split.py:dataset=tfds:oxford_flower102',
                        f'--config.data_dir={tmp_path}', f'--workdir={tmp_path / "w"}'))
  assert "no dataset 'oxford_flower102'; did you mean tfds:oxford_flowers102?" in stderr
  assert 'tfds build oxford_flower102' not in stderr
  assert not (tmp_path / 'w').exists()


def test_a_tfds_dataset_without_an_eval_split_names_its_splits(tmp_path):
  data = str(tmp_path / 'tfds')
  TfxJaxNoTestSplit(data_dir=data, file_format='array_record').download_and_prepare()
  stderr = one_line(cli('--config=configs/random_split.py:dataset=tfds:tfx_jax_no_test_split',
                        f'--config.data_dir={data}', f'--workdir={tmp_path / "w"}'))
  assert 'no test or validation split' in stderr and 'None' not in stderr
  assert 'splits: train, holdout' in stderr and '--config.eval_split=holdout' in stderr
  assert not (tmp_path / 'w').exists()
  spec = datasets.dataset_spec('tfds:tfx_jax_no_test_split', data, eval_split='holdout')
  assert spec.eval_split == 'holdout'  # The fix it names works.
