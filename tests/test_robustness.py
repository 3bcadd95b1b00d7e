"""Preemption and crashes lose nothing: SIGTERM, SIGKILL at random moments, and
corrupted checkpoints all end in the numbers of an uninterrupted run."""

import glob
import os
import random
import re
import signal
import subprocess
import time

import pytest

from conftest import NUMBERS, ROOT, RUNLOCAL, cli, cli_command, copy_runs, results

SUBSET = '--config.layers=(2,5)'  # 10 of the runlocal grid's 30 runs.


def start(workdir, *extra, session=False):
  """The CLI in the background, its stderr in WORKDIR.stderr (a pipe could fill);
  session: in a process group of its own, as a scheduler starts a job."""
  stderr = open(f'{workdir}.stderr', 'w')
  proc = subprocess.Popen(
      cli_command(f'--config={RUNLOCAL}', f'--workdir={workdir}', '--config.report=false',
                  *extra), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr,
      start_new_session=session)
  stderr.close()
  return proc


def stderr_of(workdir):
  with open(f'{workdir}.stderr') as f:
    return f.read()


def wait_for(path, proc, timeout=240):
  deadline = time.time() + timeout
  while not os.path.exists(path):
    assert proc.poll() is None, proc.args
    assert time.time() < deadline, f'{path} never appeared'
    time.sleep(0.05)


def finish_and_compare(workdir, reference, *extra):
  result = cli(f'--config={RUNLOCAL}', f'--workdir={workdir}', *extra)
  assert result.returncode == 0, result.stderr[-3000:]
  rows = results(workdir)
  for run_id, row in rows.items():
    assert [row[k] for k in NUMBERS] == [reference[run_id][k] for k in NUMBERS], run_id
  assert not glob.glob(os.path.join(workdir, '**', '*.tmp'), recursive=True)
  return rows, result


TWO_RUNS = ('--config.layers=(2,)', '--config.only=(selffer,)')  # baseB, then B2B.


def stopped_by(workdir, proc, signum, what):
  """(run id, step) of the one stderr line a stop signal leaves; asserts the
  exit code, the line and the saved checkpoint."""
  stderr = stderr_of(workdir)
  assert proc.returncode == 128 + signum, stderr[-2000:]
  assert len(stderr.strip().splitlines()) == 1, stderr[-2000:]
  match = re.search(what + r' in run (\S+) at step (\d+); its checkpoint '
                    r'is saved\. Run the same command again to resume\.', stderr)
  assert match, stderr[-2000:]
  run_id, step = match.group(1), int(match.group(2))
  assert os.path.isdir(os.path.join(workdir, 'runs', run_id, 'checkpoints', str(step)))
  assert not os.path.exists(os.path.join(workdir, 'runs', run_id, 'result.json'))
  return run_id, step


def left_in_group(pgid, grace=10):
  """The processes of group `pgid` still running after `grace` seconds (the
  resource tracker exits just after the job)."""
  deadline = time.time() + grace
  while time.time() < deadline:
    try:
      os.killpg(pgid, 0)
    except ProcessLookupError:
      return []
    time.sleep(0.1)
  return subprocess.run(['ps', '-o', 'pid,args', '-g', str(pgid)], capture_output=True,
                        text=True, check=False).stdout.splitlines()[1:]


def test_stop_signals_to_the_process_group_with_workers_at_two_moments(runlocal_grid,
                                                                       tmp_path):
  """As a scheduler or a TPU maintenance event stops a job, SIGTERM to every
  process of the job, 2 grain workers included; and as Ctrl-C in a terminal
  does, SIGINT to all of them: at 0 and 0.3 s after the grid made progress.
  Each time: exit 143 (130), one line, the step saved, no process left; then
  the resumed grid has an uninterrupted run's numbers."""
  workdir, stops = str(tmp_path), []
  # A checkpoint every 4 steps (a logistics field: the numbers stay the
  # reference's), so each stop comes a few steps after the last.
  flags = (*TWO_RUNS, '--config.num_workers=2', '--config.checkpoint_every=4')
  for delay, signum, what in ((0, signal.SIGTERM, r'Preempted \(SIGTERM\)'),
                              (0.3, signal.SIGINT, r'Interrupted \(Ctrl-C\)')):
    seen = set(glob.glob(os.path.join(workdir, 'runs', '*', 'checkpoints', '*')))
    proc = start(workdir, *flags, session=True)
    deadline = time.time() + 240
    while not set(glob.glob(os.path.join(workdir, 'runs', '*', 'checkpoints', '*'))) - seen:
      assert proc.poll() is None and time.time() < deadline, stderr_of(workdir)[-2000:]
      time.sleep(0.02)
    time.sleep(delay)
    os.killpg(proc.pid, signum)
    proc.wait(timeout=120)
    stops.append(stopped_by(workdir, proc, signum, what))
    assert not left_in_group(proc.pid)  # Workers too: nothing left running.
  assert len(set(stops)) == 2, stops  # Two different moments.
  rows, result = finish_and_compare(workdir, results(runlocal_grid[0]), *flags)
  run_id, step = stops[-1]
  assert f'resuming {run_id} from step {step}' in result.stdout
  assert set(rows) == {'m_n-baseB-s0', 'm_n-B2B-s0'}


def test_sigkill_at_three_random_moments(runlocal_grid, tmp_path):
  """Each kill comes a seeded random 0-1.5 s after the grid made progress (a new
  checkpoint), so it lands mid-grid however fast the machine is."""
  workdir = str(tmp_path)
  rng = random.Random(20141108)
  for _ in range(3):
    seen = set(glob.glob(os.path.join(workdir, 'runs', '*', 'checkpoints', '*')))
    proc = start(workdir, SUBSET)
    deadline = time.time() + 240
    while not set(glob.glob(os.path.join(workdir, 'runs', '*', 'checkpoints', '*'))) - seen:
      assert proc.poll() is None and time.time() < deadline, 'no progress to kill after'
      time.sleep(0.02)
    time.sleep(rng.uniform(0, 1.5))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  rows, _ = finish_and_compare(workdir, results(runlocal_grid[0]), SUBSET)
  assert len(rows) == 10  # No row lost, none duplicated.


@pytest.mark.parametrize('damage', ['truncated', 'missing'])
def test_corrupted_latest_checkpoint_falls_back(runlocal_grid, tmp_path, damage):
  workdir = str(tmp_path / 'w')
  copy_runs(runlocal_grid[0], workdir, 'm_n-baseA-s0')  # The transplant trains at once.
  proc = start(workdir, '--config.layers=(2,)', '--config.only=(transfer,)')
  checkpoints = os.path.join(workdir, 'runs', 'm_n-A2B-s0', 'checkpoints')
  wait_for(os.path.join(checkpoints, '16'), proc)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  damaged = [f for f in glob.glob(os.path.join(checkpoints, '16', 'state', '**', '*'),
                                  recursive=True) if os.path.isfile(f)]
  assert damaged
  for path in damaged:
    if damage == 'missing':
      os.remove(path)
    else:
      with open(path, 'r+b') as f:
        f.truncate(os.path.getsize(path) // 2)
  rows, result = finish_and_compare(workdir, results(runlocal_grid[0]),
                                    '--config.layers=(2,)', '--config.only=(transfer,)')
  assert 'resuming m_n-A2B-s0 from step 8' in result.stdout
  assert 'unreadable' in result.stderr and os.path.isdir(os.path.join(checkpoints, 'corrupt-16'))
  assert set(rows) == {'m_n-baseA-s0', 'm_n-A2B-s0'}


def test_an_unreadable_final_checkpoint_of_a_finished_base_is_trained_again(runlocal_grid,
                                                                            tmp_path):
  workdir = str(tmp_path)
  copy_runs(runlocal_grid[0], workdir, 'm_n-baseA-s0')
  final = os.path.join(workdir, 'runs', 'm_n-baseA-s0', 'checkpoints', '24')
  for path in glob.glob(os.path.join(final, 'state', '**', '*'), recursive=True):
    if os.path.isfile(path):
      with open(path, 'r+b') as f:
        f.truncate(os.path.getsize(path) // 2)
  rows, result = finish_and_compare(workdir, results(runlocal_grid[0]),
                                    '--config.layers=(2,)', '--config.only=(transfer,)')
  assert 'final checkpoint of base m_n-baseA-s0 is unreadable' in result.stderr
  assert os.path.isdir(f'{final}/../corrupt-24')
  assert 'resuming m_n-baseA-s0 from step 16' in result.stdout
  assert {'m_n-baseA-s0', 'm_n-A2B-s0'} <= set(rows)


def test_an_unreadable_result_json_means_the_run_resumes(runlocal_grid, tmp_path):
  workdir = str(tmp_path)
  args = ('--config.layers=(1,)', '--config.only=(base,)')
  copy_runs(runlocal_grid[0], workdir, 'm_n-baseB-s0')
  path = os.path.join(workdir, 'runs', 'm_n-baseB-s0', 'result.json')
  with open(path, 'r+') as f:
    f.truncate(10)
  rows, result = finish_and_compare(workdir, results(runlocal_grid[0]), *args)
  assert result.stderr.strip().splitlines() == [
      f'warning: {path} is unreadable (JSONDecodeError); moved to '
      f'{os.path.dirname(path)}/result-unreadable.json: the run counts as unfinished and '
      f'resumes from its newest checkpoint.']
  assert 'resuming m_n-baseB-s0 from step 24' in result.stdout
  assert set(rows) == {'m_n-baseB-s0'}


def test_one_checkpoint_kept_is_enough_for_the_transplants(runlocal_grid, tmp_path):
  rows, _ = finish_and_compare(str(tmp_path), results(runlocal_grid[0]),
                               '--config.layers=(3,)', '--config.only=(transfer,)',
                               '--config.keep_checkpoints=1')
  assert set(rows) == {'m_n-baseA-s0', 'm_n-A3B-s0'}
  assert os.listdir(tmp_path / 'runs' / 'm_n-baseA-s0' / 'checkpoints') == ['24']


def test_a_second_job_on_a_workdir_in_use_is_refused(tmp_path):
  workdir = str(tmp_path / 'w')
  first = start(workdir, '--config.layers=(1,)', '--config.total_steps=2000',
                '--config.lr_step=1000')
  wait_for(os.path.join(workdir, 'runs', 'm_n-baseB-s0', 'checkpoints', '8'), first)
  second = cli(f'--config={RUNLOCAL}', f'--workdir={workdir}', '--config.layers=(1,)',
               '--config.total_steps=2000', '--config.lr_step=1000', '--config.report=false')
  assert second.returncode == 2, second.stderr[-2000:]
  assert second.stderr.strip().splitlines() == [second.stderr.strip()]
  assert f'is in use by process {first.pid} on ' in second.stderr
  first.send_signal(signal.SIGKILL)  # The kernel releases its lock.
  first.wait()
  checkpoints = os.path.join(workdir, 'runs', 'm_n-baseB-s0', 'checkpoints')
  steps = lambda: {int(n) for n in os.listdir(checkpoints) if n.isdigit()}
  third = start(workdir, '--config.layers=(1,)', '--config.total_steps=2000',
                '--config.lr_step=1000')
  wait_for(os.path.join(checkpoints, str(max(steps()) + 8)), third)  # It trains.
  third.send_signal(signal.SIGTERM)
  assert third.wait(timeout=120) == 143, stderr_of(workdir)[-2000:]
