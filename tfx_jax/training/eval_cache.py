"""A task's evaluation batches, decoded once per grid and kept in memory.

Every run of a grid evaluates on the same centre crops of its half, every
eval_every steps: 450 evaluations a run on ImageNet. The first evaluation
decodes them (input_pipeline.EvalData, with its threads); every later one
reads them from memory:
- on the devices, as the global arrays the eval step takes, when they take at
  most DEVICE_FRACTION of each device's memory (for CPU devices: of the host's
  memory over its devices). Evaluation then moves nothing.
- else on the host, as padded uint8 batches, put on the devices batch by batch.
A half of ImageNet's validation set, 25,000 crops of 227x227x3, is 3.9 GB:
on 8 GPUs about 480 MB each.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping

import jax
import numpy as np
from jax.sharding import Mesh

from tfx_jax.training import steps

DEVICE_FRACTION = 1 / 8


def device_memory(device: jax.Device) -> int:
  """Bytes of memory of `device`: its allocator's limit, or for CPU devices
  (which report none) the host's memory over its local devices."""
  stats = device.memory_stats() if device.platform != 'cpu' else None
  if stats and stats.get('bytes_limit'):
    return int(stats['bytes_limit'])
  host = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
  return host // max(1, len(jax.local_devices(backend=device.platform)))


def on_devices(nbytes: int, mesh: Mesh, fraction: float = DEVICE_FRACTION) -> bool:
  """Whether eval data of `nbytes` in this process fits on its devices."""
  local = [d for d in mesh.devices.flat if d.process_index == jax.process_index()]
  return nbytes / len(local) <= fraction * device_memory(local[0])


class EvalCache(Iterable[Mapping[str, jax.Array]]):
  """`data`'s batches (this process's rows, possibly partial), padded to
  `batch_size` with a mask, as global arrays; loaded on the first iteration,
  from memory afterwards. `where`: 'auto' (`on_devices`), 'device' or 'host'."""

  def __init__(self, data, batch_size: int, mesh: Mesh, where: str = 'auto'):
    self.data, self._batch_size, self._mesh, self._where = data, batch_size, mesh, where
    self.num_examples = data.num_examples
    self.location = None  # 'device' or 'host', once loaded.
    self._batches = None

  def __len__(self) -> int:
    return len(self.data)

  def _on_devices(self, batch: Mapping[str, np.ndarray]) -> bool:
    if self._where != 'auto':
      return self._where == 'device'
    nbytes = sum(v.nbytes for v in batch.values()) * len(self.data)
    return on_devices(nbytes, self._mesh)

  def __iter__(self) -> Iterator[Mapping[str, jax.Array]]:
    if self._batches is not None:
      for batch in self._batches:
        yield batch if self.location == 'device' else steps.global_batch(batch, self._mesh)
      return
    kept, device = [], None
    for batch in self.data:
      batch = steps.pad_batch(batch, self._batch_size)
      device = self._on_devices(batch) if device is None else device
      placed = steps.global_batch(batch, self._mesh)
      kept.append(placed if device else batch)
      yield placed
    # Only a whole pass is kept: an evaluation stopped half-way loads again.
    self._batches, self.location = kept, 'device' if device else 'host'
