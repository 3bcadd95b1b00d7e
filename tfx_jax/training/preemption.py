"""Preemption: on SIGTERM (how TPU VMs announce it) save and exit cleanly.

Single process: a SIGTERM handler sets a flag, checked after every step.
Several processes: JAX's preemption service (started by jax.distributed)
propagates the notice and names one step at which every process saves.
"""

from __future__ import annotations

import signal

import jax
from jax.experimental import multihost_utils

EXIT_CODE = 143  # 128 + SIGTERM: "stopped, checkpoint saved; run again to resume".


class Preempted(Exception):
  """Raised after the checkpoint of a preempted run has been written."""

  def __init__(self, run_id: str, step: int):
    super().__init__(f'Preempted (SIGTERM) in run {run_id} at step {step}; its '
                     f'checkpoint is saved. Run the same command again to resume.')
    self.run_id, self.step = run_id, step


class Watch:
  """`reached()`: True once at the step where every process must save.

  Counts the train steps of the whole process (`stepped()` after each), as
  JAX's sync protocol requires a counter that grows by one per step.
  """

  def __init__(self):
    self._multihost = jax.process_count() > 1
    self._signalled = False
    self._previous = None
    self.steps = 0
    if not self._multihost:
      self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    self._signalled = True

  def stepped(self) -> None:
    self.steps += 1

  def reached(self) -> bool:
    if self._multihost:
      return multihost_utils.reached_preemption_sync_point(self.steps)
    return self._signalled

  def close(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None
