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

EXIT_CODE = 143  # 128 + SIGTERM: "stopped, checkpoint saved; run again to resume".
INTERRUPTED = 130  # 128 + SIGINT: the same after Ctrl-C.
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
  """Raised after the checkpoint of a preempted run has been written."""

  def __init__(self, run_id: str, step: int, signum: int = signal.SIGTERM):
    what = 'Interrupted (Ctrl-C)' if signum == signal.SIGINT else 'Preempted (SIGTERM)'
    super().__init__(f'{what} in run {run_id} at step {step}; its checkpoint is '
                     f'saved. Run the same command again to resume.')
    self.run_id, self.step, self.exit_code = run_id, step, 128 + signum


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
