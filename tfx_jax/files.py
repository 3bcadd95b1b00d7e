"""Atomic file writes: a reader never sees a half-written result or report."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any


def atomic_write(path: str | os.PathLike, data: str | bytes) -> None:
  """Write `data` to a temp file beside `path`, then rename it over `path`."""
  path = os.fspath(path)
  directory = os.path.dirname(path) or '.'
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=f'.{os.path.basename(path)}.',
                             suffix='.tmp')
  try:
    os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are for everyone to read.
    with os.fdopen(fd, 'wb') as f:
      f.write(data.encode() if isinstance(data, str) else data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
  atomic_write(path, json.dumps(obj, indent=2, sort_keys=True) + '\n')
