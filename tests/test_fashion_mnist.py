"""Finding, downloading and reading Fashion-MNIST's IDX files."""

import contextlib
import functools
import gzip
import http.server
import os
import threading

import numpy as np
import pytest

from tfx_jax.data.sources import fashion_mnist
from tfx_jax.errors import UserError

RAW_DIR = '/usr/share/datasets/fashion-mnist'
NAMES = ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz',
         't10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz')


def link_files(directory):
  os.makedirs(directory, exist_ok=True)
  for name in NAMES:
    os.symlink(os.path.join(RAW_DIR, name), os.path.join(directory, name))
  return str(directory)


@contextlib.contextmanager
def loopback_server(directory, monkeypatch):
  """An HTTP server on 127.0.0.1 serving `directory`; no proxy is used."""
  for var in ('http_proxy', 'HTTP_PROXY', 'https_proxy', 'HTTPS_PROXY', 'all_proxy',
              'ALL_PROXY'):
    monkeypatch.delenv(var, raising=False)
  monkeypatch.setenv('no_proxy', '*')
  handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
  handler.log_message = lambda *args: None
  server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  try:
    yield f'http://127.0.0.1:{server.server_address[1]}/'
  finally:
    server.shutdown()
    server.server_close()


def write_idx(path, data: bytes, compress=False):
  with open(path, 'wb') as f:
    f.write(gzip.compress(data) if compress else data)
  return str(path)


def test_read_idx_reads_header_and_data(tmp_path):
  data = b'\0\0\x08\x02' + (2).to_bytes(4, 'big') + (3).to_bytes(4, 'big') + bytes(range(6))
  for compress in (False, True):
    x = fashion_mnist.read_idx(write_idx(tmp_path / f'ok{compress}', data, compress))
    np.testing.assert_array_equal(x, [[0, 1, 2], [3, 4, 5]])


@pytest.mark.parametrize('data, message', [
    (b'\0\0\x0d\x01' + (3).to_bytes(4, 'big') + bytes(12), 'bad magic'),  # float32
    (b'PK\x03\x04rest', 'bad magic'),
    (b'\0\0\x08\x02' + (2).to_bytes(4, 'big'), 'truncated header'),
    (b'\0\0\x08\x01' + (10).to_bytes(4, 'big') + bytes(9), '17 bytes, but'),
])
def test_corrupted_idx_files_are_named(tmp_path, data, message):
  path = write_idx(tmp_path / 'bad-idx1-ubyte.gz', data, compress=True)
  with pytest.raises(UserError, match=message) as e:
    fashion_mnist.read_idx(path)
  assert path in str(e.value)


def test_bad_gzip_is_a_corrupted_file(tmp_path):
  path = write_idx(tmp_path / 'x.gz', gzip.compress(b'\0\0\x08\x01' + bytes(100))[:30])
  with pytest.raises(UserError, match='Corrupted IDX file .*gzip'):
    fashion_mnist.read_idx(path)


def test_wrong_shape_is_reported(tmp_path, monkeypatch):
  directory = link_files(tmp_path / 'data')
  os.remove(os.path.join(directory, 't10k-labels-idx1-ubyte.gz'))
  write_idx(os.path.join(directory, 't10k-labels-idx1-ubyte.gz'),
            b'\0\0\x08\x01' + (5).to_bytes(4, 'big') + bytes(5), compress=True)
  with pytest.raises(UserError, match=r'labels \(5,\)'):
    fashion_mnist.load('test', directory)


def test_configured_directory_is_the_only_place_looked_in(tmp_path):
  directory = link_files(tmp_path / 'mine' / 'fashion-mnist')
  assert fashion_mnist.locate(str(tmp_path / 'mine')) == directory
  assert fashion_mnist.locate(None) == fashion_mnist.DEBIAN_DIR
  # An empty data_dir does not fall back to Debian's copy: it downloads into
  # data_dir (here from a closed loopback port, so it fails and says where it looked).
  with pytest.raises(UserError, match='looked in .*empty, .*empty/fashion-mnist\\)'):
    fashion_mnist.locate(str(tmp_path / 'empty'), url='http://127.0.0.1:9/')


def test_download_fallback_from_upstream(tmp_path, monkeypatch):
  served = link_files(tmp_path / 'upstream')
  cache = tmp_path / 'cache'
  with loopback_server(served, monkeypatch) as url:
    got = fashion_mnist.locate(None, debian_dir=str(tmp_path / 'no-debian'),
                               cache_dir=str(cache), url=url)
  assert got == str(cache)
  assert sorted(os.listdir(cache)) == sorted(NAMES)  # No temp files left.
  for name in NAMES:
    with open(cache / name, 'rb') as a, open(os.path.join(RAW_DIR, name), 'rb') as b:
      assert a.read() == b.read()
  # Once downloaded, the cache is used without the server.
  assert fashion_mnist.locate(None, debian_dir=str(tmp_path / 'no-debian'),
                              cache_dir=str(cache), url='http://127.0.0.1:9/') == str(cache)


def test_corrupt_download_leaves_no_file(tmp_path, monkeypatch):
  served = tmp_path / 'upstream'
  served.mkdir()
  for name in NAMES:
    (served / name).write_bytes(b'<html>not found</html>')
  cache = tmp_path / 'cache'
  with loopback_server(served, monkeypatch) as url:
    with pytest.raises(UserError, match='not a valid IDX file'):
      fashion_mnist.locate(None, debian_dir=str(tmp_path / 'no-debian'),
                           cache_dir=str(cache), url=url)
  assert os.listdir(cache) == []


def test_unreachable_upstream_says_how_to_install(tmp_path, monkeypatch):
  with loopback_server(tmp_path, monkeypatch) as url:  # Serves nothing: 404.
    with pytest.raises(UserError, match='make data'):
      fashion_mnist.locate(None, debian_dir=str(tmp_path / 'no-debian'),
                           cache_dir=str(tmp_path / 'cache'), url=url)
