"""Talking to SLURM: submit the planned jobs (sbatch), remember them
(LOGS/jobs.json), refuse a second submission while the first is queued, and
follow the jobs to the end (`--wait`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence

from tfx_jax import files, progress
from tfx_jax.errors import UserError
from tfx_jax.slurm import scripts
from tfx_jax.slurm.plan import Job

JOBS_FILE = 'jobs.json'


# `scontrol ping` answers at once where a controller is up or known to be down;
# without a slurm.conf it retries for a minute.
PING_SECONDS = 10
# What sbatch says when it reaches no controller: not the options' fault.
UNREACHABLE = ('Unable to contact slurm controller', 'Unable to process configuration file',
               'Zero Bytes were transmitted', 'Socket timed out')


def _slurm(args: Sequence[str], check: bool = True,
           timeout: float = 120) -> subprocess.CompletedProcess:
  try:
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
  except FileNotFoundError:
    raise UserError(f'{args[0]} is not on PATH: run python -m tfx_jax.slurm on a SLURM '
                    f'login node, or pass --dry_run to see the jobs.') from None
  except subprocess.TimeoutExpired:
    raise UserError(f'{" ".join(args[:2])} gave no answer in {timeout:.0f} s: SLURM\'s '
                    f'controller does not answer; check it with scontrol ping, then run '
                    f'this again.') from None
  if check and done.returncode:
    raise subprocess.CalledProcessError(done.returncode, args, done.stdout, done.stderr)
  return done


def controller_down() -> str | None:
  """Why SLURM's controller does not answer, in `scontrol ping`'s words (its
  last line), or None when it answers (or scontrol is not installed)."""
  try:
    proc = subprocess.Popen(['scontrol', 'ping'], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
  except FileNotFoundError:  # sbatch --test-only tells then.
    return None
  try:
    out, err = proc.communicate(timeout=PING_SECONDS)
  except subprocess.TimeoutExpired:
    proc.kill()
    out, err = proc.communicate()
    first = (err.strip().splitlines() or [''])[0]
    return f'scontrol ping gave no answer in {PING_SECONDS} s' + (f': {first}' if first else '')
  if not proc.returncode:
    return None
  lines = [line.strip() for line in (out + err).splitlines()
           if line.strip() and not line.startswith('*')]
  return lines[-1] if lines else f'scontrol ping: exit code {proc.returncode}'


def _unreachable(why: str) -> UserError:
  return UserError(f'SLURM\'s controller does not answer ({why}): nothing was submitted, '
                   f'and the options after -- were not checked. Start slurmctld or ask the '
                   f'cluster\'s admins (check SLURM_CONF on this node), then run this again; '
                   f'--dry_run shows the jobs meanwhile.')


def check_sbatch(options: Sequence[str]) -> None:
  """The user's sbatch options, tried on the cluster with `sbatch --test-only`
  (nothing is submitted): a bad partition, account, gres or time is refused
  here; a controller that does not answer is named as such."""
  if shutil.which('sbatch') is None:
    _slurm(['sbatch'])  # Its one line: not on PATH.
  why = controller_down()
  if why:
    raise _unreachable(why)
  done = _slurm(['sbatch', '--test-only', *options, '--wrap=true'], check=False)
  if done.returncode:
    message = ' '.join(done.stderr.split()) or f'exit code {done.returncode}'
    if any(sign in message for sign in UNREACHABLE):
      raise _unreachable(message)
    raise UserError(f'sbatch refuses the options after -- ({" ".join(options)}): '
                    f'{message}; fix them and run this again.')


def dry_check(options: Sequence[str]) -> str:
  """--dry_run's check of the options: `check_sbatch` where sbatch is installed
  and a controller answers (UserError if it refuses them); else a line saying
  why they were not checked."""
  if not options:
    return 'No sbatch options after --.'
  if shutil.which('sbatch') is None:
    return 'The sbatch options were not checked: sbatch is not on PATH.'
  why = controller_down()
  if why:
    return f'The sbatch options were not checked: SLURM\'s controller does not answer ({why}).'
  check_sbatch(options)
  return 'sbatch --test-only accepts the options.'


def recorded(logs: str) -> list[dict]:
  path = os.path.join(logs, JOBS_FILE)
  return json.loads(files.read_text(path))['jobs'] if files.exists(path) else []


def queued(ids: Sequence[str]) -> set[str]:
  """Which of the job ids (arrays: their job id) are still pending or running."""
  if not ids:
    return set()
  out = _slurm(['squeue', '--me', '-h', '-o', '%F']).stdout.split()
  return set(ids) & set(out)


def check_idle(logs: str) -> None:
  """UserError while jobs of an earlier submission are still queued or running."""
  jobs = recorded(logs)
  live = queued([j['id'] for j in jobs])
  if live:
    names = ', '.join(f'{j["key"]} {j["id"]}' for j in jobs if j['id'] in live)
    raise UserError(f'Jobs of an earlier submission are still queued or running ({names}); '
                    f'wait for them (squeue --me), or cancel them (scancel '
                    f'{" ".join(sorted(live))}), then run this again.')


def submit(jobs: list[Job], s: scripts.Settings, log: Callable[[str], None]) -> dict[str, str]:
  """Writes the scripts and submits the jobs in order; returns key -> job id.
  If sbatch refuses one, the jobs already submitted are cancelled."""
  files.makedirs(s.logs)
  for job in jobs:
    files.atomic_write(s.script_path(job), scripts.script(job, s))
  ids: dict[str, str] = {}
  for job in jobs:
    done = _slurm(scripts.sbatch(job, s, ids), check=False)
    if done.returncode:
      if ids:
        _slurm(['scancel', *ids.values()], check=False)
      raise UserError(f'sbatch refused job {job.key}: {" ".join(done.stderr.split())}; '
                      f'the jobs submitted before it are cancelled.')
    ids[job.key] = done.stdout.strip().split(';')[0]
    log(f'Submitted {job.key}: job {ids[job.key]}'
        + (f', {len(job.tasks)} task(s)' if job.is_array else '')
        + (f', after {", ".join(sorted({k for k, _ in job.after}))}' if job.after else '')
        + '.')
  files.atomic_write_json(os.path.join(s.logs, JOBS_FILE), {
      'submitted': time.time(),
      'jobs': [{'key': job.key, 'id': ids[job.key], 'tasks': [list(t) for t in job.tasks],
                'log': s.log_pattern(job)} for job in jobs]})
  return ids


def state(job_id: str) -> str:
  """A finished job's state (COMPLETED, FAILED, CANCELLED...): sacct's, or
  scontrol's while the controller remembers the job; '' when neither knows."""
  done = _slurm(['sacct', '-n', '-X', '-P', '-j', job_id, '-o', 'State'], check=False)
  if not done.returncode and done.stdout.split():
    return done.stdout.split()[0]
  done = _slurm(['scontrol', '-o', 'show', 'job', job_id], check=False)
  fields = dict(f.split('=', 1) for f in done.stdout.split() if '=' in f)
  return fields.get('JobState', '') if not done.returncode else ''


def wait(jobs: list[Job], ids: dict[str, str], s: scripts.Settings,
         finished: Callable[[str], bool], poll_seconds: float,
         log: Callable[[str], None]) -> list[str]:
  """Blocks until none of the jobs is queued; returns a line per failed task
  (its runs unfinished) or failed report job, naming its log."""
  every = [run for job in jobs for task in job.tasks for run in task]
  start, last = time.time(), None
  while True:
    live = queued(list(ids.values()))
    done = sum(map(finished, every))
    line = (f'{done}/{len(every)} runs finished; '
            + (f'queued or running: {", ".join(k for k in ids if ids[k] in live)}'
               if live else 'every job has ended'))
    if line != last:
      log(f'[{progress.fmt_time(time.time() - start)}] {line}')
      last = line
    if not live:
      break
    time.sleep(poll_seconds)
  failed = []
  for job in jobs:
    for k, task in enumerate(job.tasks):
      left = [r for r in task if not finished(r)]
      if left:
        failed.append(_failure(f'task {k} of {job.key}', f'{ids[job.key]}_{k}',
                               s.log_path(job, ids[job.key], k), f'left {", ".join(left)} '
                               f'unfinished'))
    ended = '' if job.is_array else state(ids[job.key])
    if ended not in ('COMPLETED', ''):
      failed.append(_failure(job.key, ids[job.key], s.log_path(job, ids[job.key], None),
                             f'ended {ended}', ended))
  return failed


def _failure(what: str, job_id: str, log: str, how: str, ended: str | None = None) -> str:
  if files.exists(log):
    return f'{what} (job {job_id}) {how}: see {log}'
  ended = state(job_id) if ended is None else ended
  return f'{what} (job {job_id}) {how}; it never started ({ended or "no state"}): a job it ' \
         f'waits for failed'




