"""Talking to SLURM: submit the planned jobs (sbatch), remember them
(LOGS/jobs.json), refuse a second submission while the first is queued, and
follow the jobs to the end (`--wait`)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Sequence

from tfx_jax import files, progress
from tfx_jax.errors import UserError
from tfx_jax.slurm import scripts
from tfx_jax.slurm.plan import Job

JOBS_FILE = 'jobs.json'


def _slurm(args: Sequence[str], check: bool = True) -> subprocess.CompletedProcess:
  try:
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=120)
  except FileNotFoundError:
    raise UserError(f'{args[0]} is not on PATH: run python -m tfx_jax.slurm on a SLURM '
                    f'login node, or pass --dry_run to see the jobs.') from None
  if check and done.returncode:
    raise subprocess.CalledProcessError(done.returncode, args, done.stdout, done.stderr)
  return done


def check_sbatch(options: Sequence[str]) -> None:
  """The user's sbatch options, tried on the cluster with `sbatch --test-only`
  (nothing is submitted): a bad partition, account or gres is refused here."""
  done = _slurm(['sbatch', '--test-only', *options, '--wrap=true'], check=False)
  if done.returncode:
    message = ' '.join(done.stderr.split()) or f'exit code {done.returncode}'
    raise UserError(f'sbatch refuses the options after -- ({" ".join(options)}): '
                    f'{message}; fix them and run this again.')


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




