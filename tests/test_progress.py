"""The progress object: phases, a run's wall time across resumes, honest ETAs."""

import pytest

from tfx_jax import progress


class Clock:
  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


def test_phases_run_wall_time_and_etas():
  clock = Clock()
  p = progress.Progress(clock)
  p.start_grid(100)  # Two runs of 50 steps.
  p.start_run(0)
  assert p.eta(10) == '?' and p.seconds_per_step() is None
  with p.phase('compile'):
    clock.now += 30.0
  for _ in range(10):
    with p.phase('train'):
      clock.now += 0.5
    p.stepped()
  with p.phase('eval'):
    clock.now += 5.0
  with p.phase('io'):
    clock.now += 7.0
  # 10 steps cost 5 s of training and 5 s of evaluation: 1 s per step.
  # Compilation and I/O are left out of the run's time and of the ETAs.
  assert p.seconds_per_step() == pytest.approx(1.0)
  assert p.run_wall_s == pytest.approx(10.0)
  assert p.eta(40) == '0m40s' and p.grid_eta() == '1m30s'
  assert p.state() == {'wall_s': pytest.approx(10.0)}
  assert p.summary() == '0m47s; this process: 0m47s (compile 0m30s, eval 0m05s, io 0m07s, train 0m05s)'
  idle = progress.Progress(clock)  # A grid with nothing left to train: no empty brackets.
  assert idle.summary() == '0m00s; this process: 0m00s'


def test_a_resumed_run_keeps_its_wall_time_and_the_grid_its_steps():
  clock = Clock()
  p = progress.Progress(clock)
  p.start_grid(100)
  p.start_run(20, {'wall_s': 12.0})  # Resumed at step 20 of 50.
  with p.phase('train'):
    clock.now += 3.0
  p.stepped(3)
  assert p.run_wall_s == pytest.approx(15.0)
  assert p.grid_eta() == '1m17s'  # 77 steps left at 1 s per step.
  p.start_run(0)  # The next run starts from zero.
  assert p.run_wall_s == 0.0


def test_unknown_phase_is_refused():
  with pytest.raises(ValueError, match="Unknown phase 'training'"):
    with progress.Progress().phase('training'):
      pass
