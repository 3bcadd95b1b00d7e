import os
import stat

import pytest

from tfx_jax import files


def test_atomic_write_replaces_whole_and_leaves_no_temp(tmp_path):
  path = tmp_path / 'sub' / 'results.csv'
  files.atomic_write(path, 'old\n')
  files.atomic_write(path, b'new\n')
  assert path.read_text() == 'new\n'
  assert os.listdir(tmp_path / 'sub') == ['results.csv']
  assert stat.S_IMODE(os.stat(path).st_mode) == 0o644


def test_failed_write_keeps_the_old_file(tmp_path):
  path = tmp_path / 'result.json'
  files.atomic_write_json(path, {'top1': 0.5})
  with pytest.raises(TypeError):
    files.atomic_write_json(path, {'top1': object()})
  assert files.read_text(path) == '{\n  "top1": 0.5\n}\n'
  assert os.listdir(tmp_path) == ['result.json']


def test_append_move_and_paths(tmp_path):
  log = str(tmp_path / 'metrics.jsonl')
  files.append(log, b'a\n')
  files.append(log, b'b\n')
  assert files.read_text(log) == 'a\nb\n'
  (tmp_path / 'dst').mkdir()
  (tmp_path / 'dst' / 'stale').write_text('x')
  files.move(log, str(tmp_path / 'dst'))
  assert files.read_text(tmp_path / 'dst') == 'a\nb\n' and not files.exists(log)
  assert files.is_local('/tmp/x') and files.is_local('runs/x')
  assert not files.is_local('gs://bucket/runs')
