"""Where the time goes and how long is left, after big_vision's `u.chrono`.

One `Progress` per process times its phases (compile, train, eval, io), keeps
the current run's wall time (its train and eval time over every resume, saved
in the run's checkpoints), and gives run and grid ETAs from the measured cost
per step, evaluations included, so they leave compilation and I/O out and never
touch storage.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Callable

PHASES = ('compile', 'train', 'eval', 'io')
_RUN_PHASES = ('train', 'eval')  # What a run's wall_s counts.


def fmt_time(seconds: float) -> str:
  seconds = int(round(seconds))
  h, m, s = seconds // 3600, seconds // 60 % 60, seconds % 60
  return f'{h}h{m:02d}m' if h else f'{m}m{s:02d}s'


class Progress:
  """Phase timers, the current run's wall time, and ETAs."""

  def __init__(self, clock: Callable[[], float] = time.perf_counter):
    self._clock = clock
    self._started = clock()
    self.totals: dict[str, float] = defaultdict(float)  # This process, by phase.
    self.run_wall_s = 0.0
    self._steps_timed = 0  # Steps whose train and eval time is in `totals`.
    self._grid_steps_left = 0

  @contextlib.contextmanager
  def phase(self, name: str):
    """Times the block as `name`; nested phases are not allowed."""
    if name not in PHASES:
      raise ValueError(f'Unknown phase {name!r}; known: {PHASES}.')
    start = self._clock()
    try:
      yield
    finally:
      seconds = self._clock() - start
      self.totals[name] += seconds
      if name in _RUN_PHASES:
        self.run_wall_s += seconds

  def start_grid(self, steps: int) -> None:
    """This process has `steps` train steps to run, over all its runs."""
    self._grid_steps_left = steps

  def start_run(self, step: int = 0, saved: dict | None = None) -> None:
    """A run starts at `step`, with the state `saved` by `state()` if resumed."""
    self.run_wall_s = float((saved or {}).get('wall_s', 0.0))
    self._grid_steps_left -= step

  def stepped(self, steps: int = 1) -> None:
    self._steps_timed += steps
    self._grid_steps_left -= steps

  def state(self) -> dict:
    """What a checkpoint keeps, so a resumed run's wall time stays right."""
    return {'wall_s': self.run_wall_s}

  def seconds_per_step(self) -> float | None:
    if not self._steps_timed:
      return None
    return sum(self.totals[p] for p in _RUN_PHASES) / self._steps_timed

  def eta(self, steps: int) -> str:
    per_step = self.seconds_per_step()
    return '?' if per_step is None else fmt_time(max(steps, 0) * per_step)

  def grid_eta(self) -> str:
    return self.eta(self._grid_steps_left)

  def summary(self) -> str:
    """Wall time since start, and this process's time by phase."""
    parts = ', '.join(f'{k} {fmt_time(v)}' for k, v in sorted(self.totals.items()))
    return (f'{fmt_time(self._clock() - self._started)}; this process: '
            f'{fmt_time(sum(self.totals.values()))}' + (f' ({parts})' if parts else ''))
