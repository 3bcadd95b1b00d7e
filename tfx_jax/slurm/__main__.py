"""`python -m tfx_jax.slurm --config=CFG --workdir=W [--dry_run] [--wait] -- [sbatch
options]`: a config's grid as SLURM jobs (docs/slurm.md).

An array over the bases, an array over the transplants of each base task that
waits for it (afterok), and a report job after all of them. Run it again to
submit only what is unfinished.
"""

import os
import sys

import jax
from absl import flags

from tfx_jax import errors, files
from tfx_jax.errors import UserError
from tfx_jax.grid import checks, experiments
from tfx_jax.grid.workdir import Workdir
from tfx_jax.report import writer
from tfx_jax.slurm import plan, scripts, submit

errors.define_config_and_workdir('The grid\'s workdir, on a file system every node '
                                 'shares (or gs://).')
flags.DEFINE_bool('dry_run', False, 'Print the batch scripts and the sbatch commands; '
                  'submit and write nothing.')
flags.DEFINE_bool('wait', False, 'Block until every job has ended; exit 1 naming each '
                  'failed task and its log.')
flags.DEFINE_integer('runs_per_task', 1, 'Runs of one array task, trained one after '
                     'another (or by --local_shards processes).')
flags.DEFINE_string('logs', '', 'Scripts, logs and jobs.json (default WORKDIR/slurm); '
                    'needed with a gs:// workdir.')
flags.DEFINE_integer('local_shards', 1, 'Processes of a task on its node (main\'s '
                     '--local_shards): on a node of N GPUs, N runs at once, one per GPU.')
flags.DEFINE_integer('signal_seconds', 300, 'SIGTERM a task this long before its time '
                     'limit: it saves a checkpoint and requeues itself.')
flags.DEFINE_string('job_name', '', 'Prefix of the jobs\' names (default tfx-WORKDIR_NAME).')
flags.DEFINE_string('setup', '', 'Shell line(s) each job runs first, e.g. "module load cuda".')
flags.DEFINE_float('poll_seconds', 30, '--wait: how often to look at the queue.')
flags.mark_flags_as_required(['config', 'workdir'])
FLAGS = flags.FLAGS


def config_args(argv: list[str]) -> list[str]:
  """The --config flags given (file and overrides), for every job's main command."""
  end = argv.index('--') if '--' in argv else len(argv)
  out = []
  for i, arg in enumerate(argv[1:end], 1):
    if arg.startswith(('--config=', '--config.')):
      out.append(arg)
    elif arg == '--config' and i + 1 < end:
      out.append(f'--config={argv[i + 1]}')
  return out


def settings(workdir: str, processes: int, options: list[str]) -> scripts.Settings:
  logs = FLAGS.logs or os.path.join(workdir, 'slurm')
  if not files.is_local(logs):
    raise UserError(f'The scripts and logs need a directory the nodes share, not {logs!r}; '
                    f'with a gs:// workdir pass --logs=DIR.')
  if FLAGS.runs_per_task < 1:
    raise UserError(f'--runs_per_task must be 1 or more, got {FLAGS.runs_per_task}.')
  if FLAGS.signal_seconds < 1:
    raise UserError(f'--signal_seconds must be 1 or more, got {FLAGS.signal_seconds}.')
  if FLAGS.local_shards != 1 and processes > 1:
    raise UserError('--local_shards runs one node\'s processes itself; drop it, or drop '
                    'the node and task counts after --.')
  name = FLAGS.job_name or f'tfx-{os.path.basename(workdir.rstrip("/"))}'
  main = (sys.executable, '-m', 'tfx_jax.main', *config_args(sys.argv), f'--workdir={workdir}')
  return scripts.Settings(name, os.path.abspath(logs), os.getcwd(), main, tuple(options),
                          processes, FLAGS.local_shards, FLAGS.signal_seconds, FLAGS.setup)


def main(argv):
  jax.config.update('jax_platforms', 'cpu')  # Submits only; the environment is the jobs'.
  options = argv[1:]
  processes = scripts.check_options(options)
  config = errors.loaded_config(FLAGS)
  if config.sweep.runs or config.sweep.num_shards > 1:
    raise UserError('tfx_jax.slurm chooses each task\'s runs itself; drop --config.sweep.')
  workdir = FLAGS.workdir if not files.is_local(FLAGS.workdir) else os.path.abspath(
      FLAGS.workdir)
  s = settings(workdir, processes, options)
  if not FLAGS.dry_run:
    submit.check_idle(s.logs)
  groups = checks.prepare(config, workdir, write=False, this_host=False)
  specs = experiments.study(config, len(groups))
  held = Workdir(workdir)
  finished = {spec.run_id for spec in specs if held.finished(spec.run_id)}
  final = {spec.run_id for spec in specs if spec.treatment == 'base'
           and held.has_checkpoint(spec.run_id, experiments.total_steps(config, spec))}
  report = files.exists(os.path.join(workdir, writer.REPORT_DIR, 'findings.md'))
  jobs = plan.plan(specs, finished, final, FLAGS.runs_per_task, report)
  if not jobs:
    print(f'Nothing to submit: all {len(specs)} runs of {workdir} are finished and its '
          f'report is written.')
    return
  runs = sum(len(t) for job in jobs for t in job.tasks)
  if FLAGS.dry_run:
    checked = submit.dry_check(options)  # Refused before anything is printed.
    for job in jobs:
      print(f'==> {s.script_path(job)} <==\n{scripts.script(job, s)}')
    print(f'==> the sbatch commands (--dry_run: nothing submitted) <==\n'
          f'{scripts.submit_script(jobs, s)}')
    print(f'{len(jobs)} jobs for {runs} of {len(specs)} runs. {checked}')
    return
  submit.check_sbatch(options)
  checks.prepare(config, workdir, this_host=False)  # config.json before the first task.
  ids = submit.submit(jobs, s, log=lambda line: print(line, flush=True))
  print(f'{len(jobs)} jobs for {runs} of {len(specs)} runs; logs in {s.logs}. Follow them '
        f'with squeue --me and tail -f {s.logs}/*.out; run this command again to submit '
        f'what is left unfinished.', flush=True)
  if FLAGS.wait:
    failed = submit.wait(jobs, ids, s, held.finished, FLAGS.poll_seconds,
                         log=lambda line: print(line, flush=True))
    if failed:
      print('\n'.join(['Failed:', *failed]), file=sys.stderr)
      sys.exit(1)
    print(f'Done: results in {os.path.join(workdir, "results.csv")}, report in '
          f'{os.path.join(workdir, writer.REPORT_DIR)}.')


if __name__ == '__main__':
  errors.run(main)
