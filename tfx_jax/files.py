"""File access for results, logs and reports: local paths and gs:// alike.

Local writes are atomic (temp file + rename), so a reader never sees a
half-written result or report. Cloud objects are written whole, which is
atomic already; appends to them rewrite the object (fine for small logs).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from typing import Any

from etils import epath


def is_local(path: str | os.PathLike) -> bool:
  return '://' not in os.fspath(path)


def exists(path: str | os.PathLike) -> bool:
  return os.path.exists(path) if is_local(path) else epath.Path(path).exists()


def read_text(path: str | os.PathLike) -> str:
  return epath.Path(path).read_text()


def listdir(path: str | os.PathLike) -> list[str]:
  """Names in directory `path`, sorted; [] if it does not exist."""
  path = epath.Path(path)
  return sorted(p.name for p in path.iterdir()) if path.exists() else []


def makedirs(path: str | os.PathLike) -> None:
  epath.Path(path).mkdir(parents=True, exist_ok=True)


def atomic_write(path: str | os.PathLike, data: str | bytes) -> None:
  """Write `data` to `path` so that readers see the old or the new file, whole."""
  data = data.encode() if isinstance(data, str) else data
  if not is_local(path):
    epath.Path(path).write_bytes(data)
    return
  path = os.fspath(path)
  directory = os.path.dirname(path) or '.'
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=f'.{os.path.basename(path)}.',
                             suffix='.tmp')
  try:
    os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are for everyone to read.
    with os.fdopen(fd, 'wb') as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
  atomic_write(path, json.dumps(obj, indent=2, sort_keys=True) + '\n')


def append(path: str | os.PathLike, data: bytes) -> None:
  """Append to a log file (a cloud object is rewritten whole)."""
  if is_local(path):
    with open(path, 'ab') as f:
      f.write(data)
    return
  p = epath.Path(path)
  p.write_bytes((p.read_bytes() if p.exists() else b'') + data)


def move(source: str, destination: str) -> None:
  """Rename a file or directory, replacing `destination` if it exists."""
  dst = epath.Path(destination)
  if dst.exists():
    dst.rmtree()
  epath.Path(source).rename(dst)


@contextlib.contextmanager
def lock(path: str):
  """An exclusive lock on a local file; a no-op for cloud paths, whose
  writers (sweep shards) may then race, and a later run repairs the file."""
  if not is_local(path):
    yield
    return
  with open(path, 'w') as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    yield
