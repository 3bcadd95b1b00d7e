"""File access for data, results, logs and reports: local paths and gs:// alike.

Local writes are atomic (temp file + rename), so a reader never sees a
half-written result or report. Cloud objects are written whole, which is
atomic already, and never appended to: a `Log` keeps a cloud object's
content in memory and writes it whole at `flush()` (at checkpoints).

gs:// goes through etils.epath and gcsfs here, and through tensorstore in
Orbax. Pointing both at an emulator is five environment variables; see
`EMULATOR_ENV` in tests/conftest.py.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from typing import Any

import fsspec
from etils import epath

from tfx_jax import errors

# Several processes (sweep shards, pod hosts) share a workdir. gcsfs caches
# directory listings for the life of the process by default, and answers
# exists() from them, so another process's new result.json would stay invisible.
fsspec.config.conf.setdefault('gcs', {}).setdefault('use_listings_cache', False)


def is_local(path: str | os.PathLike) -> bool:
  return '://' not in os.fspath(path)


def check_path(path: str, flag: str) -> None:
  """A UserError naming `flag` unless `path` is a local path or gs://BUCKET/...
  (with gcsfs installed): caught at start-up, not at the first checkpoint hours
  later."""
  try:
    path.encode('utf-8')
  except UnicodeEncodeError:
    raise errors.UserError(f'{flag}={path.encode("utf-8", "surrogateescape")!r} is not '
                           f'valid UTF-8; use a path whose name is.') from None
  scheme, sep, rest = path.partition('://')
  if sep:
    if scheme != 'gs':
      raise errors.UserError(f'{flag}={path}: {scheme}:// is not supported; use a local '
                             f'path or gs://BUCKET/PATH.')
    if not rest.split('/')[0]:
      raise errors.UserError(f'{flag}={path} names no bucket; use gs://BUCKET/PATH.')
    try:
      import gcsfs  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    except ImportError:  # fsspec would say so at the first read, in a long traceback.
      raise errors.UserError(f'{flag}={path}: gs:// needs gcsfs, which is not installed; '
                             f"pip install 'tfx-jax[gcs]' (or pip install gcsfs).") from None
  elif re.match(r'(gs|gcs|s3|https?|file|hdfs|az|abfss?):/', path):
    scheme, rest = path.split(':', 1)
    raise errors.UserError(f'{flag}={path} is not a URL (one slash after {scheme}:); did '
                           f'you mean {scheme}://{rest.lstrip("/")}?')


def exists(path: str | os.PathLike) -> bool:
  return os.path.exists(path) if is_local(path) else epath.Path(path).exists()


def read_text(path: str | os.PathLike) -> str:
  return epath.Path(path).read_text()


def read_bytes(path: str | os.PathLike) -> bytes:
  return epath.Path(path).read_bytes()


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
  try:
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f'.{os.path.basename(path)}.',
                               suffix='.tmp')
  except OSError as e:  # Named as the file it was for, not the temp file.
    raise OSError(e.errno, e.strerror, path) from e
  try:
    os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are for everyone to read.
    with os.fdopen(fd, 'wb') as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException as e:
    if os.path.exists(tmp):
      os.unlink(tmp)
    # write() names no file (a full disk), replace() the temp file: name `path`.
    if isinstance(e, OSError) and e.filename in (None, tmp):
      raise OSError(e.errno, e.strerror, path) from e
    raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
  atomic_write(path, json.dumps(obj, indent=2, sort_keys=True) + '\n')


def write_settled(path: str | os.PathLike, render: Callable[[], str | bytes],
                  *, attempts: int = 10) -> None:
  """Write `render()` to `path`, and again until a render made after the
  write matches what was written.

  For a file rebuilt whole from inputs that only accumulate (results.csv from
  result.json files) by several writers (sweep shards), with no lock, on any
  storage: whoever writes last checks after its write, so the file ends up
  holding every input present at that check, and an input added later is
  followed by its writer's own call.
  """
  data = render()
  for _ in range(attempts):
    atomic_write(path, data)
    again = render()
    if again == data:
      return
    data = again
  errors.warn(f'{path} kept changing while being written ({attempts} attempts); the '
              f'next write brings it up to date.')


def move(source: str, destination: str) -> None:
  """Rename a file or directory, replacing `destination` if it exists.

  A cloud "directory" is objects sharing a prefix: they are copied, then the
  originals deleted (gcsfs's rename tries a move API first that buckets
  without hierarchical namespace, and the emulator, refuse).
  """
  src, dst = epath.Path(source), epath.Path(destination)
  if dst.exists():
    dst.rmtree() if dst.is_dir() else dst.unlink()
  if is_local(source):
    src.rename(dst)
    return
  if not src.is_dir():
    src.copy(dst)
    src.unlink()
    return
  walked = os.fspath(src).split('://', 1)[1]  # walk() names roots without gs://.
  for root, _, names in src.walk():
    for name in names:
      relative = os.path.normpath(os.path.join(os.path.relpath(root, walked), name))
      (src / relative).copy(dst / relative)
  src.rmtree()


class Log:
  """An append-only log file, written as it grows on disk and whole on gs://.

  Local: `write` appends at once. Cloud: the object's content is kept in
  memory and `flush` (call it at checkpoints, before the save) writes it
  whole, so a log costs one object write per checkpoint, not one per line.
  `keep(line) -> bool`, if given, filters the complete lines already there
  when the log is opened (a resumed run drops those past its checkpoint).
  """

  def __init__(self, path: str | os.PathLike, *,
               keep: Callable[[bytes], bool] | None = None):
    self.path = os.fspath(path)
    self._local = is_local(self.path)
    self._content = bytearray()  # Cloud: everything the object will hold.
    self._dirty = False
    if not exists(self.path):
      return
    old = read_bytes(self.path)
    new = old
    if keep is not None:  # A torn last line (no newline) is dropped too.
      new = b''.join(line for line in old.splitlines(keepends=True)
                     if line.endswith(b'\n') and keep(line))
    if self._local:
      if new != old:
        atomic_write(self.path, new)
    else:
      self._content += new
      self._dirty = new != old

  def write(self, data: bytes) -> None:
    if self._local:
      with open(self.path, 'ab') as f:
        f.write(data)
    else:
      self._content += data
      self._dirty = True

  def flush(self) -> None:
    if self._dirty:
      atomic_write(self.path, bytes(self._content))
      self._dirty = False

  def close(self) -> None:
    self.flush()
