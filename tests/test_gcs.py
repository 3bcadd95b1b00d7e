"""Everything the project reads and writes works on gs://, tested against a
local GCS emulator (the `gcs` fixture, conftest.py): data, Orbax checkpoints,
results, logs, TensorBoard events and the report, with few object writes."""

import csv
import io
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections import namedtuple
from unittest import mock

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator

from tfx_jax import files
from tfx_jax.data.sources import fashion_mnist
from tfx_jax.errors import UserError
from tfx_jax.grid import lock, workdir
from tfx_jax.training import tensorboard

from conftest import BUCKET, GCS_URL, ROOT, RUNLOCAL, cli, cli_command, results

DEBIAN_DIR = '/usr/share/datasets/fashion-mnist'
COMPARED = ('run_id', 'split', 'treatment', 'source', 'target', 'n', 'seed',
            'top1', 'top5', 'best10_top1', 'steps')  # All of results.csv but wall_s.


def upload_raw(name: str, data: bytes) -> None:
  """Writes an object as another process would: straight to the emulator's API."""
  query = urllib.parse.urlencode({'uploadType': 'media', 'name': name})
  request = urllib.request.Request(f'{GCS_URL}/upload/storage/v1/b/{BUCKET}/o?{query}',
                                   data=data, method='POST')
  with urllib.request.urlopen(request) as response:
    assert response.status == 200


def download_dir(prefix: str, local) -> list[str]:
  """Copies the objects directly under gs:// `prefix` into `local`; their names."""
  os.makedirs(local, exist_ok=True)
  names = files.listdir(prefix)
  for name in names:
    with open(os.path.join(local, name), 'wb') as f:
      f.write(files.read_bytes(f'{prefix}/{name}'))
  return names


def csv_rows(text: str) -> list[dict]:
  return list(csv.DictReader(io.StringIO(text)))


def metrics_lines(text: str) -> list[dict]:
  return [json.loads(line) for line in text.splitlines()]


@pytest.fixture(scope='session')
def gcs_data(gcs):
  """gs:// data_dir holding the Fashion-MNIST IDX files in fashion-mnist/."""
  data_dir = f'gs://{BUCKET}/data'
  for name in os.listdir(DEBIAN_DIR):
    with open(os.path.join(DEBIAN_DIR, name), 'rb') as f:
      files.atomic_write(f'{data_dir}/fashion-mnist/{name}', f.read())
  return data_dir


def test_log_writes_one_whole_object_per_flush(gcs):
  path = f'gs://{BUCKET}/log/metrics.jsonl'
  log = files.Log(path)
  before = len(gcs.requests)
  for step in (1, 2, 3):
    log.write(json.dumps({'step': step}).encode() + b'\n')
  assert not gcs.writes(before) and not files.exists(path)  # Nothing sent per line.
  log.flush()
  log.flush()  # Nothing new: no write.
  assert len(gcs.writes(before, 'log/metrics.jsonl')) == 1
  assert files.read_text(path) == '{"step": 1}\n{"step": 2}\n{"step": 3}\n'
  # Reopened as a run resumed at step 2 does; a torn line is dropped too.
  upload_raw('log/metrics.jsonl', files.read_bytes(path) + b'{"step": 4')
  log = files.Log(path, keep=lambda line: json.loads(line)['step'] <= 2)
  log.write(b'{"step": 3}\n')
  log.close()
  assert files.read_text(path) == '{"step": 1}\n{"step": 2}\n{"step": 3}\n'


def test_tensorboard_events_on_gcs_read_back(gcs, tmp_path):
  logdir = f'gs://{BUCKET}/tb'
  before = len(gcs.requests)
  writer = tensorboard.SummaryWriter(logdir)
  for step in (10, 20):
    writer.scalar('train/loss', 1.0 / step, step)
  writer.close()
  assert len(gcs.writes(before, 'tb/events.out.tfevents.')) == 1
  assert len(download_dir(logdir, tmp_path)) == 1
  acc = event_accumulator.EventAccumulator(str(tmp_path))
  acc.Reload()
  assert [(e.step, e.value) for e in acc.Scalars('train/loss')] == [
      (10, pytest.approx(0.1)), (20, pytest.approx(0.05))]


def test_listing_sees_other_writers_and_move_copies_a_tree(gcs):
  root = f'gs://{BUCKET}/tree'
  files.atomic_write(f'{root}/a/x', 'x')
  assert files.listdir(root) == ['a'] and not files.exists(f'{root}/b/result.json')
  upload_raw('tree/b/result.json', b'{}')  # Another shard, another process.
  assert files.listdir(root) == ['a', 'b'] and files.exists(f'{root}/b/result.json')
  files.atomic_write(f'{root}/a/sub/y', 'y')
  files.move(f'{root}/a', f'{root}/corrupt-a')
  assert files.listdir(root) == ['b', 'corrupt-a']
  assert files.read_text(f'{root}/corrupt-a/sub/y') == 'y'
  assert files.read_text(f'{root}/corrupt-a/x') == 'x'


def test_write_settled_rewrites_until_nothing_changed(tmp_path, monkeypatch):
  """A row that another writer adds while this one writes is not lost."""
  path = tmp_path / 'results.csv'
  rows, writes = ['a\n'], []

  def render():
    text = ''.join(rows)
    if len(rows) == 1:
      rows.append('b\n')  # Another shard's result.json appears just after.
    return text

  write = files.atomic_write
  monkeypatch.setattr(files, 'atomic_write',
                      lambda p, data: (writes.append(data), write(p, data)))
  files.write_settled(path, render)
  assert writes == ['a\n', 'a\nb\n'] and path.read_text() == 'a\nb\n'


def test_finished_runs_are_remembered_not_rechecked(tmp_path, monkeypatch):
  w = workdir.Workdir(str(tmp_path))
  checks, exists = [], files.exists
  monkeypatch.setattr(files, 'exists', lambda path: checks.append(path) or exists(path))
  assert not w.finished('base') and not w.finished('base')
  assert len(checks) == 2  # A no is asked again: another shard may finish it.
  files.atomic_write_json(os.path.join(w.run_dir('base'), 'result.json'), {
      'run_id': 'base', 'split': 'm_n', 'treatment': 'base', 'source': 'B', 'target': 'B',
      'n': 0, 'seed': 0, 'top1': 0.5, 'top5': 0.9, 'best10_top1': 0.5, 'steps': 10,
      'wall_s': 1.0})
  assert w.finished('base') and w.finished('base') and len(checks) == 3


def test_fashion_mnist_reads_a_gs_data_dir(gcs, gcs_data):
  before = len(gcs.requests)
  images, labels = fashion_mnist.load('test', gcs_data)
  assert [r for r in gcs.requests[before:] if r.startswith('GET') and 't10k-images' in r]
  local_images, local_labels = fashion_mnist.load('test', DEBIAN_DIR)
  np.testing.assert_array_equal(images, local_images)
  np.testing.assert_array_equal(labels, local_labels)
  # A bucket without IDX files (TFDS data) is passed over for this machine's.
  assert fashion_mnist.locate(f'gs://{BUCKET}/tensorflow_datasets') == DEBIAN_DIR


def test_runlocal_grid_on_gcs_ends_as_on_local_disk(gcs, gcs_data, runlocal_grid):
  """Workdir and data on gs://; every 8 steps a checkpoint; a log line every step.
  Two of the grid's runs, to stay quick: base B, and B2B, which reads base B's
  params back from its gs:// checkpoint."""
  workdir = f'gs://{BUCKET}/grid'
  before = len(gcs.requests)
  result = cli(f'--config={RUNLOCAL}', f'--workdir={workdir}', '--config.layers=(2,)',
               '--config.only=(selffer,)', f'--config.data_dir={gcs_data}',
               '--config.log_every=1')
  assert result.returncode == 0, result.stderr[-3000:]
  assert [r for r in gcs.requests[before:] if r.startswith('GET') and 'train-images' in r]
  rows = {r['run_id']: r for r in csv_rows(files.read_text(f'{workdir}/results.csv'))}
  assert set(rows) == {'m_n-baseB-s0', 'm_n-B2B-s0'}
  reference = results(runlocal_grid[0])
  for run_id, row in rows.items():
    assert [row[k] for k in COMPARED] == [reference[run_id][k] for k in COMPARED], run_id
  for run_id in rows:  # 24 log lines each, in 3 whole writes: one per checkpoint.
    log = f'{workdir}/runs/{run_id}/metrics.jsonl'
    assert len(metrics_lines(files.read_text(log))) == 24 + 3
    assert len(gcs.writes(before, f'grid/runs/{run_id}/metrics.jsonl')) == 3
    assert len(gcs.writes(before, f'grid/runs/{run_id}/tb/events')) == 3
  assert files.exists(f'{workdir}/report/findings.json')


def test_sigterm_then_resume_on_gcs_loses_nothing(gcs, runlocal_grid, tmp_path):
  workdir = f'gs://{BUCKET}/preempted'
  subset = ('--config.layers=(2,)', '--config.only=(transfer,)')  # baseA, then A2B.
  stderr_path = tmp_path / 'stderr'
  before = len(gcs.requests)
  with open(stderr_path, 'w') as stderr:
    proc = subprocess.Popen(cli_command(f'--config={RUNLOCAL}', f'--workdir={workdir}',
                                        '--config.report=false', *subset),
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr)
  deadline = time.time() + 240
  marker = 'preempted/runs/m_n-A2B-s0/checkpoints/8/commit_success.txt'
  while not [r for r in gcs.requests[before:]  # The upload's last request, answered.
             if marker in r and 'upload_id=' in r]:
    assert proc.poll() is None, stderr_path.read_text()[-2000:]
    assert time.time() < deadline, 'checkpoint 8 of m_n-A2B-s0 never appeared'
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  proc.wait(timeout=120)
  stderr = stderr_path.read_text()
  assert proc.returncode == 143, stderr[-2000:]
  match = re.search(r'Preempted \(SIGTERM\) in run (m_n-A2B-s0) at step (\d+)', stderr)
  assert match, stderr[-2000:]
  run, step = f'{workdir}/runs/{match.group(1)}', int(match.group(2))
  assert files.exists(f'{run}/checkpoints/{step}/commit_success.txt')
  assert not files.exists(f'{run}/result.json')
  # The logs reached storage with the checkpoint, and hold nothing past it.
  steps = [line['step'] for line in metrics_lines(files.read_text(f'{run}/metrics.jsonl'))]
  assert steps and max(steps) <= step and 8 in steps

  result = cli(f'--config={RUNLOCAL}', f'--workdir={workdir}', *subset)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f'resuming m_n-A2B-s0 from step {step}' in result.stdout
  rows = {r['run_id']: r for r in csv_rows(files.read_text(f'{workdir}/results.csv'))}
  reference = results(runlocal_grid[0])
  assert set(rows) == {'m_n-baseA-s0', 'm_n-A2B-s0'}
  for run_id, row in rows.items():
    assert [row[k] for k in COMPARED] == [reference[run_id][k] for k in COMPARED], run_id
  # Every log line once, as in the uninterrupted local run.
  with open(os.path.join(runlocal_grid[0], 'runs', 'm_n-A2B-s0', 'metrics.jsonl')) as f:
    assert metrics_lines(files.read_text(f'{run}/metrics.jsonl')) == metrics_lines(f.read())
  names = download_dir(f'{run}/tb', tmp_path / 'tb')
  assert len(names) == 2  # One events file per session.
  acc = event_accumulator.EventAccumulator(str(tmp_path / 'tb'))
  acc.Reload()
  assert [e.step for e in acc.Scalars('eval/top1')] == [8, 16, 24]


def test_object_writes_per_100_train_steps(gcs):
  """100 steps, a log line every step, an eval every 10, a checkpoint every 50:
  the logs cost one object write each per checkpoint, nothing per line."""
  workdir = f'gs://{BUCKET}/writes'
  before, started = len(gcs.requests), time.time()
  result = cli(f'--config={RUNLOCAL}', f'--workdir={workdir}', '--config.only=(base,)',
               '--config.total_steps=100', '--config.checkpoint_every=50',
               '--config.eval_every=10', '--config.log_every=1', '--config.report=false')
  seconds = time.time() - started
  assert result.returncode == 0, result.stderr[-3000:]
  run = f'{workdir}/runs/m_n-baseB-s0'
  assert len(metrics_lines(files.read_text(f'{run}/metrics.jsonl'))) == 100 + 10
  writes = gcs.writes(before)  # Every object the run writes or deletes.
  by_kind = {kind: [w for w in writes if kind in w]
             for kind in ('/checkpoints/', '/metrics.jsonl', '/tb/events', '/locks/')}
  assert len(by_kind['/metrics.jsonl']) == 2 and len(by_kind['/tb/events']) == 2
  # Orbax: about 30 object writes and 6 deletes (stale markers) per checkpoint.
  assert len(by_kind['/checkpoints/']) <= 2 * 40
  # The workdir lock: written, rewritten every lock.BEAT_S seconds, deleted.
  assert 2 <= len(by_kind['/locks/']) <= 2 + seconds // lock.BEAT_S, by_kind['/locks/']
  others = [w for w in writes if not any(w in ws for ws in by_kind.values())]
  # config.json, groups.json, a write probe and its delete, result.json,
  # results.csv twice.
  assert len(others) <= 7, others
  assert len(writes) <= 90  # Per 100 train steps at checkpoint_every=50.


def test_a_second_job_on_a_gcs_workdir_in_use_is_refused(gcs, tmp_path):
  workdir = f'gs://{BUCKET}/in-use'
  args = (f'--config={RUNLOCAL}', f'--workdir={workdir}', '--config.only=(base,)',
          '--config.total_steps=5000', '--config.lr_step=4000', '--config.report=false')
  with open(tmp_path / 'stderr', 'w') as stderr:
    first = subprocess.Popen(cli_command(*args), cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=stderr)
  lock_object = f'{workdir}/locks/shard-0-of-1.json'
  deadline = time.time() + 240
  while not files.exists(f'{workdir}/runs/m_n-baseB-s0/checkpoints/8/commit_success.txt'):
    assert first.poll() is None, (tmp_path / 'stderr').read_text()[-2000:]
    assert time.time() < deadline, 'the first job never reached its checkpoint 8'
    time.sleep(0.2)
  assert files.exists(lock_object)
  second = cli(*args)
  assert first.poll() is None, 'the first job ended before the second one was checked'
  assert second.returncode == 2, second.stderr[-2000:]
  lines = second.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(
      f"error: Workdir '{workdir}' is in use by process {first.pid} on "
      f"{socket.gethostname()}, started "), lines
  first.send_signal(signal.SIGTERM)
  assert first.wait(timeout=120) == 143, (tmp_path / 'stderr').read_text()[-2000:]
  assert not files.exists(lock_object)  # Let go when the job stops.


shutil_usage = namedtuple('usage', 'total used free')


def reads(gcs, since, containing):
  """GET requests (object reads and listings) from index `since` naming `containing`."""
  return [r for r in gcs.requests[since:] if r.startswith('GET ') and containing in r]


def test_jpeg_shards_on_gcs_are_copied_once_then_read_locally(gcs, prepared_imagenet,
                                                              tmp_path):
  """ImageNet's shards on a bucket: read directly, every image is a GET; with
  config.data_cache_dir, one GET per file once, then none per 100 steps."""
  from tfx_jax.data import datasets, input_pipeline  # pylint: disable=import-outside-toplevel
  from tfx_jax.data.sources import jpeg_shards, local_copy  # pylint: disable=import-outside-toplevel
  from tfx_jax.grid import runner  # pylint: disable=import-outside-toplevel
  data_dir = f'gs://{BUCKET}/bulk'
  local_root = os.path.join(prepared_imagenet, 'imagenet2012_jpeg256')
  names = sorted(os.listdir(local_root))
  for name in names:
    with open(os.path.join(local_root, name), 'rb') as f:
      files.atomic_write(f'{data_dir}/imagenet2012_jpeg256/{name}', f.read())
  spec, prefix = datasets.dataset_spec('imagenet2012'), 'bulk/imagenet2012_jpeg256'

  def hundred_steps(data_dir):
    it = input_pipeline.train_iterator(spec, (0, 1), batch_size=4, seed=0, data_dir=data_dir)
    batches = [next(it)['label'] for _ in range(100)]
    it.close()
    return batches

  before = len(gcs.requests)
  direct = hundred_steps(data_dir)
  assert len(reads(gcs, before, prefix)) >= 400  # One ranged GET per image at least.

  cache = str(tmp_path / 'cache')
  lines, before = [], len(gcs.requests)
  local = local_copy.cached(spec, data_dir, cache, log=lines.append)
  copy_reads = len(reads(gcs, before, prefix))
  assert local == os.path.join(cache, BUCKET, 'bulk') and 'once per host' in lines[0]
  # gcsfs: a stat, a listing and the download per file; the 100 steps read 120 images.
  assert copy_reads <= 3 * len(names) + 5, copy_reads
  # Every file but prepare.json (the plan of an unfinished prepare).
  assert sorted(os.listdir(os.path.join(local, 'imagenet2012_jpeg256'))) == [
      n for n in names if n != 'prepare.json']
  before = len(gcs.requests)
  copied = hundred_steps(local)
  assert reads(gcs, before, prefix) == []  # Nothing from the bucket per 100 steps.
  assert all(np.array_equal(a, b) for a, b in zip(direct, copied))

  # Done once: a second job (or local shard) reads the manifest only.
  before = len(gcs.requests)
  assert local_copy.cached(spec, data_dir, cache, log=lines.append) == local
  assert len(reads(gcs, before, prefix)) <= 5  # Its existence and its text.
  # A damaged copy is found by the index's sizes, and only that file copied again.
  shard = jpeg_shards.shard_path(os.path.join(local, 'imagenet2012_jpeg256'), 'train', 0)
  os.truncate(shard, 100)
  lines.clear()
  assert local_copy.cached(spec, data_dir, cache, log=lines.append) == local
  assert '1 of ' in lines[0]
  assert os.path.getsize(shard) == os.path.getsize(
      jpeg_shards.shard_path(local_root, 'train', 0))

  # Not enough room for the shards: refused before copying, naming the sizes.
  with mock.patch.object(local_copy.shutil, 'disk_usage',
                         return_value=shutil_usage(total=10**9, used=10**9 - 10, free=10)):
    with pytest.raises(UserError, match='needs .* GB, but .* has 0.0 GB free'):
      local_copy.cached(spec, data_dir, str(tmp_path / 'small_disk'), log=lines.append)

  # The job uses the copy: the grid's tasks read from it.
  config = runner.config_lib.base_config()
  config.update({'data_dir': data_dir, 'data_cache_dir': cache, 'split': 'm_n'})
  grid = runner.Grid(config, str(tmp_path / 'workdir'), ('conv1',))
  assert {t.data_dir for t in grid.tasks.values()} == {local}
