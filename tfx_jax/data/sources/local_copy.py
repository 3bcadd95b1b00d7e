"""JPEG shards on gs://, copied to local disk once per host before training.

Read from a bucket, every image is one ranged GET: a bucket starts near 5,000
reads/s (about 20 steps/s at batch 256) and a run costs some 10^8 operations.
With `config.data_cache_dir`, the job instead copies the prepared directory
(one GET per file), checks the copy against the manifest and the index, and
reads local files from then on. The copy is made once per host: processes of
one host (local shards) take turns on a lock, and a later job finds it done.
An interrupted copy resumes: complete files are kept, the manifest is written
last.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
from collections.abc import Callable, Iterator

from tfx_jax import files
from tfx_jax.data.datasets import DatasetSpec
from tfx_jax.data.sources import jpeg_shards
from tfx_jax.errors import UserError


def local_data_dir(data_dir: str, cache_dir: str) -> str:
  """Where the copy of `data_dir` goes: gs://bucket/path -> CACHE/bucket/path."""
  return os.path.join(os.path.abspath(os.path.expanduser(cache_dir)),
                      data_dir.split('://', 1)[-1].strip('/'))


def _expected(root: str, manifest: dict) -> dict[str, int | None]:
  """Every file of the prepared directory but the manifest: name -> its size
  in bytes where the index gives it (the shards), else None."""
  out = {}
  for split in manifest['splits']:
    out[os.path.basename(jpeg_shards.labels_path(root, split))] = None
    out[os.path.basename(jpeg_shards.index_path(root, split))] = None
  return out


def _shard_sizes(root: str, split: str, per_shard: int) -> dict[str, int]:
  """name -> size of each shard of `split`, from its index (offset, size per image)."""
  index = jpeg_shards.load_npy(jpeg_shards.index_path(root, split))
  ends = index[:, 0] + index[:, 1]
  sizes = {}
  for k in range(-(-len(index) // per_shard)):
    sizes[os.path.basename(jpeg_shards.shard_path(root, split, k))] = int(
        ends[k * per_shard:(k + 1) * per_shard].max())
    sizes[os.path.basename(jpeg_shards.offsets_path(root, split, k))] = None
  return sizes


def problems(root: str, manifest: dict) -> list[str]:
  """What is missing or of the wrong size in a local copy, in words."""
  wrong = []
  for name in _expected(root, manifest):
    if not os.path.isfile(os.path.join(root, name)):
      wrong.append(f'{name} missing')
  if wrong:
    return wrong
  for split in manifest['splits']:
    for name, size in _shard_sizes(root, split, manifest['images_per_shard']).items():
      path = os.path.join(root, name)
      if not os.path.isfile(path):
        wrong.append(f'{name} missing')
      elif size is not None and os.path.getsize(path) != size:
        wrong.append(f'{name} has {os.path.getsize(path)} bytes, the index says {size}')
  return wrong


@contextlib.contextmanager
def _host_lock(path: str) -> Iterator[None]:
  with open(path, 'w') as f:
    fcntl.flock(f, fcntl.LOCK_EX)  # The other processes of this host wait here.
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def _copy(remote: str, local: str) -> int:
  data = files.read_bytes(remote)  # One GET.
  tmp = f'{local}.{os.getpid()}.tmp'
  with open(tmp, 'wb') as f:
    f.write(data)
  os.replace(tmp, local)
  return len(data)


def cached(spec: DatasetSpec, data_dir: str | None, cache_dir: str | None,
           log: Callable[[str], None] = print) -> str | None:
  """The data_dir to read `spec` from: a local copy of its prepared JPEG shards
  when they are on gs:// and `cache_dir` is set, else `data_dir` as it is."""
  if not cache_dir or not data_dir or files.is_local(data_dir) or spec.jpeg_dir is None:
    return data_dir
  remote = jpeg_shards.dataset_dir(data_dir, spec.jpeg_dir)
  manifest = jpeg_shards.read_manifest(remote)
  if manifest is None:
    return data_dir  # Not prepared there: the job's data check says so.
  out = local_data_dir(data_dir, cache_dir)
  root = jpeg_shards.dataset_dir(out, spec.jpeg_dir)
  try:
    os.makedirs(root, exist_ok=True)
  except OSError as e:
    raise UserError(f'config.data_cache_dir: cannot create {root} ({e.strerror}); give a '
                    f'writable local directory.') from None
  with _host_lock(f'{root}.lock'):
    manifest_path = os.path.join(root, jpeg_shards.MANIFEST)
    if (os.path.exists(manifest_path) and jpeg_shards.read_manifest(root) == manifest
        and not problems(root, manifest)):
      return out
    started, copied = time.time(), 0
    names = list(_expected(root, manifest))
    for name in names:  # Labels and indices first: they size the shards.
      copied += _copy(os.path.join(remote, name), os.path.join(root, name))
    shards = {}
    for split in manifest['splits']:
      shards.update(_shard_sizes(root, split, manifest['images_per_shard']))
    todo = [n for n, size in shards.items()
            if not (os.path.isfile(os.path.join(root, n))
                    and (size is None or os.path.getsize(os.path.join(root, n)) == size))]
    need, free = sum(shards[n] or 0 for n in todo), shutil.disk_usage(root).free
    if need > free:
      raise UserError(f'config.data_cache_dir: copying {remote} needs {need / 2**30:,.1f} GB, '
                      f'but {root} has {free / 2**30:,.1f} GB free; give a directory on a '
                      f'larger disk, or unset data_cache_dir to read the bucket.')
    log(f'Copying {remote} to {root}, once per host: {len(todo)} of {len(shards)} '
        f'shard files to go.')
    for i, name in enumerate(todo):
      copied += _copy(os.path.join(remote, name), os.path.join(root, name))
      if (i + 1) % max(1, len(todo) // 10) == 0 or i + 1 == len(todo):
        log(f'  {i + 1}/{len(todo)} files, {copied / 2**20:,.0f} MB, '
            f'{copied / 2**20 / max(time.time() - started, 1e-9):,.0f} MB/s')
    wrong = problems(root, manifest)
    if wrong:
      raise UserError(f'The copy of {remote} in {root} does not match its manifest '
                      f'({"; ".join(wrong[:3])}): the bucket changed while copying? '
                      f'Delete {root} and run again.')
    files.atomic_write_json(manifest_path, manifest)  # Last: the copy is complete.
  return out

