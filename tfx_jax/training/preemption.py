"""Preemption: on SIGTERM (how TPU VMs announce it) or SIGINT (Ctrl-C) save
and exit cleanly.

Single process: a handler of both signals sets a flag, checked after every
step. Several processes: JAX's preemption service (started by
jax.distributed) propagates a SIGTERM and names one step at which every
process saves; SIGINT there stops at once (KeyboardInterrupt), and runs resume
from their last saved checkpoint.
"""

from __future__ import annotations

import signal

import jax
from jax.experimental import multihost_utils

from tfx_jax.errors import INTERRUPTED, Preempted  # noqa: F401  (preemption.Preempted: the loop raises it)

EXIT_CODE = 143  # 128 + SIGTERM: "stopped, checkpoint saved; run again to resume".
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Watch:
  """`reached()`: True once at the step where every process must save.

  Counts the train steps of the whole process (`stepped()` after each), as
  JAX's sync protocol requires a counter that grows by one per step.
  """

  def __init__(self):
    self._multihost = jax.process_count() > 1
    self.signum = None  # The signal received, once one is.
    self._previous = {}
    self.steps = 0
    if not self._multihost:
      self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    self.signum = signum

  def stepped(self) -> None:
    self.steps += 1

  def received(self) -> bool:
    """Whether this process got a stop signal (no sync between processes)."""
    return self.signum is not None

  def reached(self) -> bool:
    if self._multihost:
      if multihost_utils.reached_preemption_sync_point(self.steps):
        self.signum = signal.SIGTERM
    return self.signum is not None

  def close(self) -> None:
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)
    self._previous = {}
