import json
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


def test_log_append_resume_move_and_paths(tmp_path):
  log_path = str(tmp_path / 'metrics.jsonl')
  log = files.Log(log_path)
  log.write(b'{"step": 1}\n')
  assert files.read_text(log_path) == '{"step": 1}\n'  # On disk: at once.
  log.write(b'{"step": 2}\n')
  log.close()
  with open(log_path, 'ab') as f:
    f.write(b'{"step": 3}\n{"ste')  # Killed mid-line.
  log = files.Log(log_path, keep=lambda line: json.loads(line)['step'] <= 2)
  assert files.read_text(log_path) == '{"step": 1}\n{"step": 2}\n'
  log.write(b'{"step": 3}\n')
  assert files.read_text(log_path) == '{"step": 1}\n{"step": 2}\n{"step": 3}\n'
  (tmp_path / 'dst').mkdir()
  (tmp_path / 'dst' / 'stale').write_text('x')
  files.move(log_path, str(tmp_path / 'dst'))
  assert files.read_text(tmp_path / 'dst').startswith('{"step": 1}')
  assert not files.exists(log_path)
  assert files.is_local('/tmp/x') and files.is_local('runs/x')
  assert not files.is_local('gs://bucket/runs')
