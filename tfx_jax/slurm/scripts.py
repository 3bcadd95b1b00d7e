"""The batch scripts of a grid's jobs and the sbatch commands that submit them.

Every task runs the main job (`python -m tfx_jax.main`) on its runs
(`--config.sweep.runs`), in the background so that the batch shell can pass
on SLURM's SIGTERM (`--signal=B:TERM@S`, or `scancel --signal=TERM --batch`):
the run saves a checkpoint and exits 143, and the task requeues itself
(`scontrol requeue`) to resume where it stopped. A task of several processes
(several nodes or `--ntasks`) starts them with srun and `--multihost`:
jax.distributed reads SLURM's environment.
"""

from __future__ import annotations

import dataclasses
import os
import shlex

from tfx_jax.errors import UserError
from tfx_jax.slurm.plan import Job

# sbatch options the launcher sets itself, and their short forms.
OWN = {'--array': '-a', '--dependency': '-d', '--output': '-o', '--error': '-e',
       '--job-name': '-J', '--chdir': '-D', '--signal': None, '--open-mode': None,
       '--wrap': None, '--parsable': None, '--requeue': None, '--no-requeue': None,
       '--kill-on-invalid-dep': None}
COUNTS = {'--nodes': '-N', '--ntasks': '-n', '--ntasks-per-node': None}
SHORT_WITH_VALUE = set('AabcDdeGiJLMmNnopqSstwx')
PREEMPTED = 143  # The main job stopped at a checkpoint on SIGTERM (preemption.EXIT_CODE).


def options(argv: list[str]) -> list[tuple[str, str | None, list[str]]]:
  """sbatch options as (long or short name, value, their tokens)."""
  out, i = [], 0
  while i < len(argv):
    token = argv[i]
    if token.startswith('--'):
      name, eq, value = token.partition('=')
      out.append((name, value if eq else None, [token]))
    elif token.startswith('-') and len(token) > 1:
      name, value, tokens = token[:2], token[2:] or None, [token]
      if value is None and token[1] in SHORT_WITH_VALUE and i + 1 < len(argv):
        value, tokens = argv[i + 1], [token, argv[i + 1]]
        i += 1
      out.append((name, value, tokens))
    else:
      raise UserError(f'{token!r} after -- is not an sbatch option; pass sbatch options '
                      f'only, e.g. -- --gres=gpu:4 --time=12:00:00.')
    i += 1
  return out


def check_options(argv: list[str]) -> int:
  """UserError for an option the launcher sets; returns the processes a task has."""
  counts = {}
  for name, value, _ in options(argv):
    own = next((k for k, short in OWN.items() if name in (k, short)), None)
    if own:
      raise UserError(f'sbatch option {name} is set by tfx_jax.slurm itself (see '
                      f'docs/slurm.md); drop it from the options after --.')
    count = next((k for k, short in COUNTS.items() if name in (k, short)), None)
    if count:
      if not (value or '').isdigit() or int(value) < 1:
        raise UserError(f'sbatch option {name} needs a number of 1 or more here, got '
                        f'{value!r}; e.g. {count}=2.')
      counts[count] = int(value)
  return counts.get('--ntasks') or counts.get('--nodes', 1) * counts.get('--ntasks-per-node', 1)


def one_process(argv: list[str]) -> list[str]:
  """The options without node and task counts: the report job's."""
  return [t for name, _, tokens in options(argv)
          if not any(name in (k, s) for k, s in COUNTS.items()) for t in tokens]


@dataclasses.dataclass(frozen=True)
class Settings:
  name: str  # Job name prefix.
  logs: str  # Scripts, logs and jobs.json.
  cwd: str
  main: tuple[str, ...]  # python -m tfx_jax.main --config... --workdir=W
  sbatch: tuple[str, ...]  # The user's sbatch options.
  processes: int = 1  # Per task: srun and --multihost when more than 1.
  local_shards: int = 1
  signal_seconds: int = 300
  setup: str = ''  # Shell lines before the job (module load ...).

  def script_path(self, job: Job) -> str:
    return os.path.join(self.logs, f'{job.key}.sbatch')

  def log_pattern(self, job: Job) -> str:
    return os.path.join(self.logs, f'{job.key}-%A_%a.out' if job.is_array else
                        f'{job.key}-%j.out')

  def log_path(self, job: Job, job_id: str, task: int | None) -> str:
    return self.log_pattern(job).replace('%A', job_id).replace('%a', str(task)).replace(
        '%j', job_id)


def _command(job: Job, s: Settings) -> str:
  multi = s.processes > 1 and job.is_array
  args = list(s.main)
  if job.is_array:
    args += ['--config.report=False'] + (['--multihost'] if multi else []) + (
        [f'--local_shards={s.local_shards}'] if s.local_shards != 1 else [])
  srun = 'srun --kill-on-bad-exit=1 ' if multi else ''
  runs = ' --config.sweep.runs="$runs"' if job.is_array else ''
  return srun + shlex.join(args) + runs


def script(job: Job, s: Settings) -> str:
  """The batch script of `job`."""
  what = (f'{len(job.tasks)} task(s) of at most {max(map(len, job.tasks))} run(s)'
          if job.is_array else 'results.csv and the report, after every task')
  lines = ['#!/bin/bash',
           f'# tfx_jax grid, job {job.key}: {what}.',
           '# Written by python -m tfx_jax.slurm; its rerun submits what is unfinished.',
           f'#SBATCH --job-name={s.name}-{job.key}',
           f'#SBATCH --output={s.log_pattern(job)}',
           '#SBATCH --open-mode=append',
           '#SBATCH --requeue',
           f'#SBATCH --signal=B:TERM@{s.signal_seconds}',
           f'#SBATCH --chdir={s.cwd}']
  if job.is_array:
    lines.append(f'#SBATCH --array=0-{len(job.tasks) - 1}')
  lines += ['set -uo pipefail']
  lines += [s.setup] if s.setup else []
  if job.is_array:
    lines += ['RUNS=(', *(f"  '{' '.join(t)}'" for t in job.tasks), ')',  # ids: [\w,.+-]
              'runs=${RUNS[$SLURM_ARRAY_TASK_ID]}',
              'echo "tfx_jax: task $SLURM_ARRAY_TASK_ID of $SLURM_JOB_NAME (job '
              '${SLURM_ARRAY_JOB_ID}_$SLURM_ARRAY_TASK_ID, restart ${SLURM_RESTART_COUNT:-0})'
              ' on $(hostname): $runs"']
  else:
    lines.append('echo "tfx_jax: $SLURM_JOB_NAME (job $SLURM_JOB_ID, restart '
                 '${SLURM_RESTART_COUNT:-0}) on $(hostname)"')
  lines += [f'{_command(job, s)} &',
            'pid=$!',
            '# SIGTERM (time limit, preemption): the run saves a checkpoint and exits '
            f'{PREEMPTED}.',
            'trap \'echo "tfx_jax: SIGTERM: saving a checkpoint"; kill -TERM "$pid"\' TERM',
            'status=0',
            'wait "$pid" || status=$?',
            'while kill -0 "$pid" 2>/dev/null; do  # wait returned for the trap',
            '  status=0',
            '  wait "$pid" || status=$?',
            'done',
            f'if [ "$status" -eq {PREEMPTED} ]; then',
            '  echo "tfx_jax: stopped at a checkpoint; requeueing job $SLURM_JOB_ID to resume"',
            '  scontrol requeue "$SLURM_JOB_ID" && exit 0',
            'fi',
            'exit "$status"']
  return '\n'.join(lines) + '\n'


def dependency(job: Job, ids: dict[str, str]) -> list[str]:
  """--dependency (afterok on each task or job `job` waits for) and, with it,
  --kill-on-invalid-dep: a dependency that failed cancels the job."""
  if not job.after:
    return []
  after = ':'.join(ids[key] if task is None else f'{ids[key]}_{task}'
                   for key, task in job.after)
  return [f'--dependency=afterok:{after}', '--kill-on-invalid-dep=yes']


def sbatch(job: Job, s: Settings, ids: dict[str, str]) -> list[str]:
  """The sbatch command of `job`, given the ids of the jobs submitted before it."""
  user = list(s.sbatch) if job.is_array else one_process(list(s.sbatch))
  return ['sbatch', '--parsable', *dependency(job, ids), *user, s.script_path(job)]


def variable(job: Job) -> str:
  return job.key.replace('-', '_')


def submit_script(jobs: list[Job], s: Settings) -> str:
  """The sbatch commands as a shell script (what --dry_run prints): each job's
  id in a variable the later ones depend on."""
  ids = {job.key: f'${{{variable(job)}%%;*}}' for job in jobs}  # sbatch --parsable: ID[;CLUSTER]
  lines = ['#!/bin/bash', '# The sbatch commands of python -m tfx_jax.slurm, in order.',
           'set -euo pipefail']
  for job in jobs:
    command = sbatch(job, s, ids)
    quoted = ' '.join(shlex.quote(a) if '$' not in a else f'"{a}"' for a in command)
    lines.append(f'{variable(job)}=$({quoted})')
  lines.append('echo "Submitted: ' + ' '.join(f'{job.key} ${variable(job)}' for job in jobs)
               + '"')
  return '\n'.join(lines) + '\n'
