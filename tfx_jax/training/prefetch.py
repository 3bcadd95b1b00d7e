"""Batches put on the devices ahead of the step that needs them.

A background thread takes the host pipeline's next batches (grain's hand-over
from its workers, or the loading itself with none), makes them global device
arrays and queues up to `size` of them, while the training loop's thread only
dispatches steps. The state is the pipeline's state after the last batch the
loop took, so a checkpoint resumes on exactly the next one, whatever was
prefetched.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any, Callable

_END = object()


class DevicePrefetch(Iterator[Any]):
  """`data`'s batches, `put` on the devices `size` ahead, in a thread.

  `data` has get_state/set_state; so has this, counting only the batches taken
  from it. size 0: no thread, each batch put when it is taken.
  """

  def __init__(self, data, put: Callable[[Any], Any], size: int = 2):
    self._data, self._put, self._size = data, put, size
    self._state = None  # The state after the last batch taken; None: data's own.
    self._queue, self._thread, self._stop = None, None, threading.Event()

  def _fill(self, out: queue.Queue, stop: threading.Event) -> None:
    try:
      while not stop.is_set():
        batch = self._put(next(self._data))
        item = (batch, self._data.get_state())
        while not stop.is_set():
          try:
            out.put(item, timeout=0.1)
            break
          except queue.Full:
            pass
    except BaseException as e:  # pylint: disable=broad-except
      out.put((_END, e))  # Raised in the loop's thread, where the caller sees it.

  def __next__(self) -> Any:
    if not self._size:
      batch = self._put(next(self._data))
      self._state = self._data.get_state()
      return batch
    if self._thread is None:
      self._state = self._data.get_state() if self._state is None else self._state
      self._queue, self._stop = queue.Queue(self._size), threading.Event()
      self._thread = threading.Thread(target=self._fill, args=(self._queue, self._stop),
                                      name='device-prefetch', daemon=True)
      self._thread.start()
    batch, state = self._queue.get()
    if batch is _END:
      self.stop()
      raise state
    self._state = state
    return batch

  def get_state(self) -> Any:
    return self._data.get_state() if self._state is None else self._state

  def set_state(self, state: Any) -> None:
    self.stop()
    self._data.set_state(state)
    self._state = None

  def stop(self) -> None:
    """Stops the thread and drops what it prefetched; `data` is rewound to
    the state after the last batch taken (the next call starts there)."""
    if self._thread is None:
      return
    self._stop.set()
    while self._thread.is_alive():  # Unblocks a thread waiting to queue a batch.
      try:
        self._queue.get(timeout=0.1)
      except queue.Empty:
        pass
    self._thread = self._queue = None
    if self._state is not None:
      self._data.set_state(self._state)
