"""Test set-up: four fake CPU devices, so every sharded code path really shards,
helpers for tests that drive the real CLI, and a local GCS emulator."""

import csv
import logging
import os
import socket
import subprocess
import sys
import urllib.parse

# Must happen before the first `import jax` anywhere in the test process.
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=4').strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


# gs:// in this process and in every CLI it starts goes to the emulator that the
# `gcs` fixture runs on 127.0.0.1. Set before fsspec and gcsfs are imported:
# they read some of these at import time.
GCS_URL = f'http://127.0.0.1:{_free_port()}'
EMULATOR_ENV = {
    'STORAGE_EMULATOR_HOST': GCS_URL,  # gcsfs (etils.epath's gs://)
    'FSSPEC_GCS_TOKEN': 'anon',  # gcsfs: no credentials, no metadata server
    # gcsfs: no gRPC probe for zonal buckets, which the emulator cannot answer
    # (it would wait 60 s per bucket, then fall back to the JSON API).
    'GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT': 'false',
    'TENSORSTORE_GCS_HTTP_URL': GCS_URL,  # tensorstore (Orbax checkpoints)
    'GOOGLE_AUTH_TOKEN_FOR_TESTING': 'emulator',  # tensorstore: a fixed bearer token
    'no_proxy': ','.join(filter(None, [os.environ.get('no_proxy'), '127.0.0.1'])),
    'NO_PROXY': ','.join(filter(None, [os.environ.get('NO_PROXY'), '127.0.0.1'])),
}
os.environ.update(EMULATOR_ENV)
BUCKET = 'tfx'

import pytest  # pylint: disable=wrong-import-position

from tfx_jax import malloc  # pylint: disable=wrong-import-position

malloc.tune()  # As the CLI does: the in-process train steps run faster.

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..'))
RUNLOCAL = 'configs/m_n_split.py:dataset=fashion_mnist,runlocal'
NUMBERS = ('top1', 'top5', 'best10_top1', 'steps')


def cli_command(*args):
  return [sys.executable, '-m', 'tfx_jax.main', *args]


def cli(*args, **kwargs):
  """Run the main job's CLI to completion; returns the CompletedProcess."""
  return subprocess.run(cli_command(*args), cwd=ROOT, capture_output=True,
                        text=True, **kwargs)


def results(workdir):
  """results.csv as {run_id: row}."""
  with open(os.path.join(workdir, 'results.csv')) as f:
    return {r['run_id']: r for r in csv.DictReader(f)}


@pytest.fixture(scope='session')
def runlocal_grid(tmp_path_factory):
  """The whole runlocal grid, uninterrupted: the reference other tests compare to."""
  workdir = str(tmp_path_factory.mktemp('grid'))
  result = cli(f'--config={RUNLOCAL}', f'--workdir={workdir}')
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir, result


# A tiny ImageNet in the original tar layout: two natural classes (0, 1) and two
# man-made ones (400, 401), so both halves of the m/n split have images.
IMAGENET_CLASSES = (0, 1, 400, 401)


@pytest.fixture(scope='session')
def imagenet_manual_dir(tmp_path_factory):
  """(manual_dir, truth): 6 train and 2 validation images per class."""
  from tfx_jax import synthetic_imagenet  # pylint: disable=import-outside-toplevel
  path = str(tmp_path_factory.mktemp('manual'))
  truth = synthetic_imagenet.write_manual_dir(path, IMAGENET_CLASSES, 6, 2)
  return path, truth


@pytest.fixture(scope='session')
def prepared_imagenet(imagenet_manual_dir):
  """data_dir of the tiny ImageNet prepared in 5-image shards by 2 processes."""
  from tfx_jax import prepare  # pylint: disable=import-outside-toplevel
  data_dir = os.path.join(os.path.dirname(imagenet_manual_dir[0]), 'prepared')
  prepare.prepare(imagenet_manual_dir[0], data_dir, num_workers=2, images_per_shard=5,
                  log=lambda message: None)
  return data_dir


class Emulator:
  """gcp-storage-emulator, in memory, serving gs://tfx/ on GCS_URL, with the
  request lines it logs (e.g. 'POST /upload/storage/v1/b/tfx/o?...')."""

  def __init__(self):
    from gcp_storage_emulator.server import create_server  # pylint: disable=g-import-not-at-top
    _add_generations_to_emulator()
    self.requests = []
    self._server = create_server('127.0.0.1', int(GCS_URL.rsplit(':', 1)[1]),
                                 in_memory=True, default_bucket=BUCKET)
    self._logger = logging.getLogger('gcp_storage_emulator.server')
    self._handler = _RequestLog(self.requests)
    self._logger.addHandler(self._handler)
    self._logger.setLevel(logging.INFO)
    self._logger.propagate = False
    self._server.start()
    httpd = getattr(getattr(self._server, '_api', None), '_httpd', None)
    if httpd:  # gcsfs drops the slower of two probes it sends at once: no traceback.
      default = httpd.handle_error
      httpd.handle_error = lambda *args: (
          None if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError))
          else default(*args))

  def writes(self, since: int = 0, containing: str = '') -> list[str]:
    """Requests from index `since` that write or delete an object: one per
    object written (a resumable upload's later requests, with upload_id=,
    carry the same object) and one per delete."""
    return [r for r in self.requests[since:]
            if r.split(' ', 1)[0] in ('POST', 'PUT', 'PATCH', 'DELETE')
            and 'upload_id=' not in r and containing in r]

  def stop(self):
    self._server.stop()
    self._logger.removeHandler(self._handler)


def _add_generations_to_emulator():
  """Teach gcp-storage-emulator two GCS behaviours that it lacks and that
  tensorstore (Orbax's gs:// writer) relies on, as GCS documents them and
  tensorstore's own GCS mock implements them:
  - the preconditions ifGenerationMatch / ifGenerationNotMatch on object
    reads (412 / 304 Not Modified) and uploads (412), and
  - the x-goog-generation header of a media download.
  Without them, tensorstore's conditional re-read of an OCDBT manifest gets
  the body with no generation, and the next write of that checkpoint fails
  with 'Malformed StorageGeneration' (at random, as caching decides).
  """
  from http import HTTPStatus  # pylint: disable=g-import-not-at-top
  from gcp_storage_emulator import server  # pylint: disable=g-import-not-at-top
  from gcp_storage_emulator.exceptions import NotFound  # pylint: disable=g-import-not-at-top
  from gcp_storage_emulator.handlers import objects  # pylint: disable=g-import-not-at-top
  if getattr(objects, 'with_generations', False):
    return

  def generation(request, storage, name):
    try:
      return int(storage.get_file_obj(request.params['bucket_name'], name)['generation'])
    except NotFound:
      return None

  def failed(request, storage, name, *, read):
    """The status of a failed precondition, else None."""
    live = generation(request, storage, name)
    match = request.query.get('ifGenerationMatch')
    if match and int(match[0]) != (live or 0):  # 0: "no live object".
      return HTTPStatus.PRECONDITION_FAILED
    not_match = request.query.get('ifGenerationNotMatch')
    if not_match and live is not None and int(not_match[0]) == live:
      return HTTPStatus.NOT_MODIFIED if read else HTTPStatus.PRECONDITION_FAILED
    return None

  def wrap_read(handler):
    def read(request, response, storage, *args, **kwargs):
      name = request.params['object_id']
      status = failed(request, storage, name, read=True)
      if status:
        response.status = status
        return None
      out = handler(request, response, storage, *args, **kwargs)
      live = generation(request, storage, name)
      if live is not None and response.status in (HTTPStatus.OK, HTTPStatus.PARTIAL_CONTENT):
        response['x-goog-generation'] = str(live)
      return out
    return read

  def wrap_insert(handler):
    def insert(request, response, storage, *args, **kwargs):
      name = request.query.get('name')
      status = name and failed(request, storage, name[0], read=False)
      if status:
        response.status = status
        return None
      return handler(request, response, storage, *args, **kwargs)
    return insert

  wrapped = {objects.get: wrap_read(objects.get), objects.download: wrap_read(objects.download),
             objects.insert: wrap_insert(objects.insert)}
  for _, methods in server.HANDLERS:
    for method, handler in methods.items():
      methods[method] = wrapped.get(handler, handler)
  objects.download = wrapped[objects.download]  # get() calls it for alt=media.
  objects.insert = wrapped[objects.insert]  # The router's fallback for uploads.
  objects.with_generations = True


class _RequestLog(logging.Handler):
  def __init__(self, requests):
    super().__init__()
    self._requests = requests

  def emit(self, record):
    message = record.getMessage()  # '"POST /path?query HTTP/1.1" 200 -'
    if message.startswith('"'):
      self._requests.append(urllib.parse.unquote(message[1:].split(' HTTP/', 1)[0]))


@pytest.fixture(scope='session')
def gcs():
  """The GCS emulator, for the session; tests use prefixes of their own."""
  emulator = Emulator()
  yield emulator
  emulator.stop()
