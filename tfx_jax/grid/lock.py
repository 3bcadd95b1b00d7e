"""One job per workdir and sweep shard: a second job started on a workdir that
a live job is training is refused, naming the job that holds it.

A lock is WORKDIR/locks/shard-K-of-N.json (the sweep shard's). Jobs that share
the workdir as the sweep shards of one sweep hold different locks; any other
pair of jobs conflicts: two jobs of the same shard, or of sweeps cut into
different numbers of shards. A job of some runs only (config.sweep.runs, a
SLURM task) holds runs-TAG-shard-K-of-N.json, TAG a checksum of its run ids:
it conflicts with jobs of the same runs by the same rule, and with every job
of the whole grid, but not with the tasks of other runs. On local disk a lock is an flock, which the
kernel releases when its process ends, SIGKILL included. On gs:// it is an
object whose owner rewrites it every BEAT_S seconds; one not rewritten for
STALE_S seconds, or left by a dead process of this host, is free.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
import uuid
import zlib

from etils import epath

from tfx_jax import files
from tfx_jax.errors import UserError

BEAT_S, STALE_S = 30.0, 120.0
SETTLE_S = 1.0  # gs://: how long a new lock object waits for a concurrent writer.


def _tag(runs: str) -> str:
  """'' for the whole grid; 'runs-XXXXXXXX' for the run ids in `runs`."""
  ids = sorted(set(runs.split()))
  return f'runs-{zlib.crc32(" ".join(ids).encode()):08x}' if ids else ''


def _name(shard: int, num_shards: int, runs: str = '') -> str:
  tag = _tag(runs)
  return f'{tag}-' * bool(tag) + f'shard-{shard}-of-{num_shards}.json'


def _conflicts(name: str, shard: int, num_shards: int, runs: str = '') -> bool:
  if name == _name(shard, num_shards, runs):
    return True
  theirs = name.split('-shard-')[0] if name.startswith('runs-') else ''
  if _tag(runs) and theirs and theirs != _tag(runs):
    return False  # Tasks of other runs.
  return theirs != _tag(runs) or not name.endswith(f'-of-{num_shards}.json')


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    pass  # Alive, under another user.
  return True


def _live_owner(path: str) -> dict | None:
  """Who holds the lock at `path`, or None if it is free."""
  if files.is_local(path):
    try:
      fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
      return None
    try:
      fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
      fcntl.flock(fd, fcntl.LOCK_UN)
      return None  # Nobody holds it: its process ended.
    except BlockingIOError:
      return _owner(path) or {}
    finally:
      os.close(fd)
  owner = _owner(path)
  if owner is None or time.time() - owner.get('beat', 0) > STALE_S:
    return None
  if owner.get('host') == socket.gethostname() and not _pid_alive(owner.get('pid', 0)):
    return None
  return owner


def _owner(path: str) -> dict | None:
  try:
    owner = json.loads(files.read_text(path))
  except (OSError, ValueError):
    return None
  return owner if isinstance(owner, dict) else None


def _describe(owner: dict) -> str:
  if not owner:
    return 'another job'
  started = time.strftime('%Y-%m-%d %H:%M', time.localtime(owner.get('started', 0)))
  return f'process {owner.get("pid")} on {owner.get("host")}, started {started}'


def _in_use(workdir: str, owner: dict, name: str) -> UserError:
  held = name[:-len('.json')].replace('-', ' ')
  return UserError(
      f'Workdir {workdir!r} is in use by {_describe(owner)} ({held}); wait for it '
      f'to finish, stop it, or give this job its own --workdir (several '
      f'machines share one workdir as --config.sweep shards).')


def check_free(workdir: str, shard: int, num_shards: int, runs: str = '') -> None:
  """UserError if a live job holds a lock that conflicts with this shard's."""
  directory = os.path.join(workdir, 'locks')
  for name in files.listdir(directory):
    if name.endswith('.json') and _conflicts(name, shard, num_shards, runs):
      owner = _live_owner(os.path.join(directory, name))
      if owner is not None:
        raise _in_use(workdir, owner, name)


@contextlib.contextmanager
def held(workdir: str, shard: int, num_shards: int, runs: str = ''):
  """Holds this shard's lock for the block; UserError if a live job conflicts.
  Checked again here: another job may have started since the job's checks."""
  check_free(workdir, shard, num_shards, runs)
  directory = os.path.join(workdir, 'locks')
  name = _name(shard, num_shards, runs)
  owner = {'host': socket.gethostname(), 'pid': os.getpid(), 'started': time.time(),
           'token': uuid.uuid4().hex}
  files.makedirs(directory)
  take = _flock if files.is_local(directory) else _object_lock
  try:
    with take(os.path.join(directory, name), owner):
      yield
  except _Taken as taken:
    raise _in_use(workdir, taken.owner, name) from None


class _Taken(Exception):
  """Another job took the lock between check_free and now."""

  def __init__(self, owner: dict):
    super().__init__()
    self.owner = owner


@contextlib.contextmanager
def _flock(path: str, owner: dict):
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise _Taken(_owner(path) or {}) from None
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(owner).encode())
    yield
  finally:
    os.close(fd)  # Releases the flock.


@contextlib.contextmanager
def _object_lock(path: str, owner: dict):
  def write():
    files.atomic_write(path, json.dumps({**owner, 'beat': time.time()}))

  write()
  time.sleep(SETTLE_S)  # A job that wrote just after this one wins: it is last.
  holder = _owner(path) or {}
  if holder.get('token') != owner['token']:
    raise _Taken(holder)
  stop = threading.Event()

  def beat():
    while not stop.wait(BEAT_S):
      write()

  thread = threading.Thread(target=beat, name='workdir-lock', daemon=True)
  thread.start()
  try:
    yield
  finally:
    stop.set()
    thread.join()
    if (_owner(path) or {}).get('token') == owner['token']:
      epath.Path(path).unlink(missing_ok=True)
